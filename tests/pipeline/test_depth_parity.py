"""Both Depth Pro backends give the same depth and field of view from the same weights.

Only where Apple's `depth_pro` is importable (the `depth-pro-apple` extra); skipped
otherwise. Uses a narrow, shallow Depth Pro on the real 1536 x 1536 grid (a few seconds
per forward on a CPU), built by `bench/depth_parity.py`, which also runs the full size.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("depth_pro")

from bench.depth_parity import (
    EXAMPLE,
    SMALL,
    apple_model,
    build_pair,
    compare,
    convert_state_dict,
    example_rgb,
    hf_config,
)


@pytest.fixture(scope="module")
def pair():
    return build_pair(SMALL, seed=0)


@pytest.fixture(scope="module")
def rgb():
    return example_rgb(EXAMPLE, 256)


@pytest.fixture(scope="module")
def outputs(pair, rgb):
    apple, hf = pair
    return apple.estimate(rgb), hf.estimate(rgb)


def test_conversion_fills_every_transformers_weight_with_the_right_shape():
    from transformers import DepthProForDepthEstimation

    converted = convert_state_dict(apple_model(SMALL).state_dict())
    with torch.device("meta"):
        expected = DepthProForDepthEstimation(hf_config(SMALL)).state_dict()
    assert sorted(converted) == sorted(expected)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {
        k: tuple(v.shape) for k, v in expected.items()}


def test_backends_agree_on_canonical_inverse_depth_and_fov(outputs):
    ref, other = outputs
    assert ref.kind == other.kind == "canonical-inverse"
    assert ref.values.shape == other.values.shape == (1536, 1536)
    stats = compare(ref, other)
    assert stats["lit_fraction"] > 0.5, "random weights gave a mostly empty map: vacuous test"
    assert stats["max_rel_pixel"] < 1e-5
    assert stats["fov_abs_diff"] < 1e-5


def test_the_comparison_sees_one_changed_weight(pair, rgb, outputs):
    _, hf = pair
    ref, _ = outputs
    head = hf.model.head.layers[2]
    original = head.weight
    head.weight = torch.nn.Parameter(original * 1.05)  # a copy: Apple's tensor is shared
    try:
        changed = hf.estimate(rgb)
    finally:
        head.weight = original
    assert compare(ref, changed)["mean_rel"] > 1e-3

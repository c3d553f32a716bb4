"""Our code against the real `sharp` package (skipped where it is not installed).

- `write_ply` vs `sharp.utils.gaussians.save_ply`: byte for byte.
- `unproject` vs `unproject_gaussians` with the intrinsics of SHARP's `predict_image`.
- The depth injection on a real `RGBGaussianPredictor`. The official size runs 175 s
  per forward on a 2-core CPU, so this one is built from SHARP's own classes with
  `PredictorParams()` defaults except a tiny ViT (64 px tiles, 4 tokens wide) and
  narrow decoders, so its working grid is 256 x 256. That needs SHARP's
  `use_patch_overlap=False`: its tile merge hard-codes a 3-token overlap meant for
  24-token tiles. The same check on the full-size model runs with SHARP_WATCH_SLOW=1.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("sharp.models")

from sharp.models import PredictorParams, RGBGaussianPredictor, create_predictor
from sharp.models.alignment import create_alignment
from sharp.models.composer import GaussianComposer
from sharp.models.decoders import MultiresConvDecoder
from sharp.models.encoders import SlidingPyramidNetwork
from sharp.models.encoders.vit_encoder import TimmViT
from sharp.models.gaussian_decoder import create_gaussian_decoder
from sharp.models.heads import DirectPredictionHead
from sharp.models.initializer import create_initializer
from sharp.models.monodepth import (
    MonodepthDensePredictionTransformer,
    create_monodepth_adaptor,
)
from sharp.models.presets import ViTConfig
from sharp.utils.gaussians import save_ply, unproject_gaussians

from bench.ply_write import random_gaussians
from pipeline import (
    DepthSettings,
    LoadedImage,
    Pipeline,
    RawDepth,
    SharpStage,
    write_ply,
)
from pipeline.depth.prepare import two_layers
from pipeline.gaussians import Gaussians, covariances, unproject

F_PX = 3100.5


@pytest.mark.parametrize(("width", "height", "n"), [
    (4032, 3024, 20_000), (1080, 1920, 20_000), (4032, 3024, 1), (4032, 3024, 4_097),
    (4032, 3024, 100_003), (4032, 3024, 2 * 768 * 768)])
def test_write_ply_matches_save_ply_byte_for_byte(tmp_path: Path, width: int, height: int,
                                                  n: int) -> None:
    """At SHARP's N and at counts that are not multiples of the write chunk (4,096) or of
    any CPU's vector width, so vectorised bodies and scalar tails fall in other places."""
    gaussians = random_gaussians(n)
    theirs, ours = tmp_path / "sharp.ply", tmp_path / "ours.ply"
    save_ply(gaussians, F_PX, (height, width), theirs)
    write_ply(ours, gaussians, F_PX, (width, height))
    expected = theirs.read_bytes()
    assert len(expected) > n * 14 * 4
    assert ours.read_bytes() == expected


def _sharp_intrinsics(f_px: float, width: int, height: int) -> torch.Tensor:
    """The 4x4 intrinsics `predict_image` hands to `unproject_gaussians`
    (docs/upstream-contract.md#from-ndc-to-metres)."""
    k = torch.tensor([[f_px, 0, width / 2, 0], [0, f_px, height / 2, 0],
                      [0, 0, 1, 0], [0, 0, 0, 1]]).float()
    k[0] *= 1536 / width
    k[1] *= 1536 / height
    return k


@pytest.mark.parametrize(("width", "height"), [(4032, 3024), (1080, 1920), (1536, 1536)])
def test_unproject_matches_sharp(width: int, height: int) -> None:
    ndc = random_gaussians(20_000, seed=1)
    theirs = unproject_gaussians(ndc, torch.eye(4), _sharp_intrinsics(F_PX, width, height),
                                 (1536, 1536))
    ours = unproject(Gaussians(*ndc), F_PX, width, height)

    mean_error = (ours.mean_vectors - theirs.mean_vectors).norm(dim=-1)
    assert float((mean_error / theirs.mean_vectors.norm(dim=-1)).max()) < 1e-6
    cov_theirs, cov_ours = covariances(Gaussians(*theirs)), covariances(ours)
    cov_error = (cov_ours - cov_theirs).norm(dim=(-2, -1)) / cov_theirs.norm(dim=(-2, -1))
    assert float(cov_error.max()) < 1e-5
    # Scales may come in another order; compared relative to each Gaussian's largest,
    # since SHARP's fp32 covariance loses the smallest ones' last digits.
    s_ours = ours.singular_values.sort(dim=-1).values
    s_theirs = theirs.singular_values.sort(dim=-1).values
    assert float(((s_ours - s_theirs).abs() / s_theirs[..., -1:]).max()) < 1e-5
    assert torch.equal(ours.colors, ndc.colors)
    assert torch.equal(ours.opacities, ndc.opacities)


def _tiny_vit(hooks: list[int] | None) -> TimmViT:
    config = ViTConfig(in_chans=3, embed_dim=32, depth=4, num_heads=2, init_values=1e-5,
                       img_size=64, patch_size=16, global_pool="",
                       intermediate_features_ids=hooks)
    return TimmViT(config)


def small_real_predictor(seed: int = 0) -> RGBGaussianPredictor:
    """SHARP's `RGBGaussianPredictor` wired as `create_predictor` does, at a 256 px grid.

    Random init copies one depth head into both layers, which would make every
    back/front ratio exactly 1; here the second head differs, and its bias is set so
    that on the test photo half the pixels have the layers the other way round.
    """
    torch.manual_seed(seed)
    params = PredictorParams()
    dims_encoder, dims_decoder = [16, 16, 32, 32], [16] * 5
    encoder = SlidingPyramidNetwork([dims_decoder[0], *dims_encoder], _tiny_vit([0, 1, 2, 3]),
                                    _tiny_vit(None), use_patch_overlap=False)
    decoder = MultiresConvDecoder(dims_encoder=[dims_decoder[0], *dims_encoder],
                                  dims_decoder=dims_decoder)
    monodepth = create_monodepth_adaptor(
        MonodepthDensePredictionTransformer(encoder, decoder, last_dims=(32, 1)),
        params.monodepth_adaptor, params.num_monodepth_layers, params.sorting_monodepth)
    monodepth.replicate_head(params.num_monodepth_layers)
    params.gaussian_decoder.dims_decoder = (16,) * 5
    feature_model = create_gaussian_decoder(params.gaussian_decoder,
                                            dims_depth_features=monodepth.get_feature_dims())
    initializer = create_initializer(params.initializer)
    composer = GaussianComposer(
        delta_factor=params.delta_factor, min_scale=params.min_scale,
        max_scale=params.max_scale, color_activation_type=params.color_activation_type,
        opacity_activation_type=params.opacity_activation_type, color_space=params.color_space,
        scale_factor=params.gaussian_decoder.stride // params.initializer.stride,
        base_scale_on_predicted_mean=params.base_scale_on_predicted_mean,
    )
    predictor = RGBGaussianPredictor(
        init_model=initializer, monodepth_model=monodepth, feature_model=feature_model,
        prediction_head=DirectPredictionHead(feature_dim=feature_model.dim_out,
                                             num_layers=initializer.num_layers),
        gaussian_composer=composer,
        scale_map_estimator=create_alignment(params.depth_alignment,
                                             depth_decoder_dim=dims_decoder[-1]),
    )
    predictor.eval()
    last = predictor.monodepth_model.monodepth_predictor.head[4]
    with torch.no_grad():
        last.weight[1] += 0.2 * torch.randn_like(last.weight[1])
        last.bias.fill_(0.3)
        image = SharpStage(predictor).resize_input(_photo_pixels())
        disparity = predictor.monodepth_model(image).disparity
        last.bias[1] += (disparity[:, 0] - disparity[:, 1]).median()
    return predictor


class Capture:
    """Records what SHARP's initializer and Gaussian decoder receive in one forward."""

    def __init__(self, predictor: torch.nn.Module) -> None:
        self.seen: dict[str, Any] = {}
        self._handles = [
            predictor.init_model.register_forward_pre_hook(self._init),
            predictor.feature_model.register_forward_pre_hook(self._features, with_kwargs=True),
        ]

    def _init(self, _module: Any, args: tuple[Any, ...]) -> None:
        self.seen["depth"] = args[1].detach().clone()

    def _features(self, _module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.seen["encodings"] = [e.detach().clone() for e in kwargs["encodings"]]

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


@pytest.fixture(scope="module")
def predictor() -> RGBGaussianPredictor:
    return small_real_predictor()


def _photo(width: int = 96, height: int = 72, seed: int = 0) -> LoadedImage:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return LoadedImage(path=Path(f"photo{seed}.png"), rgb=rgb, exif_focal_35mm=None)


def _photo_pixels() -> torch.Tensor:
    return torch.from_numpy(_photo().rgb).permute(2, 0, 1)


def _known_depth(size: int, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(1, 1, size, size, generator=g) * 3 + 1).float()


def _run(predictor: torch.nn.Module, injector: Any) -> tuple[Any, dict[str, Any]]:
    capture = Capture(predictor)
    try:
        out = SharpStage(predictor).predict(_photo_pixels(), F_PX * 96 / 4032, injector)
    finally:
        capture.close()
    return out, capture.seen


def test_sharp_default_does_not_sort_its_two_layers(predictor: RGBGaussianPredictor) -> None:
    """Channel 0 is meant as the front, but SHARP's released parameters do not sort the
    layers (docs/upstream-contract.md#the-two-depth-layers-are-not-sorted)."""
    assert PredictorParams().sorting_monodepth is False
    out, seen = _run(predictor, None)
    internal = out.internal_depth
    assert torch.allclose(seen["depth"], internal, rtol=1e-6, atol=0)
    front_first = (internal[:, 0] <= internal[:, 1]).float().mean()
    assert 0.05 < float(front_first) < 0.95, "test model's layers must cross"


def test_injected_depth_reaches_sharp_init_ratio_mode(predictor: RGBGaussianPredictor) -> None:
    known = _known_depth(predictor.internal_resolution())
    _, own = _run(predictor, None)
    out, seen = _run(predictor, lambda internal: two_layers(known, internal, 1.0))

    internal = out.internal_depth
    expected = known * internal / internal.min(dim=1, keepdim=True).values
    assert torch.allclose(seen["depth"], expected, rtol=1e-6, atol=0)
    assert torch.allclose(seen["depth"].min(dim=1, keepdim=True).values, known, rtol=1e-6,
                          atol=0)
    assert not torch.allclose(seen["depth"], own["depth"], rtol=1e-2)
    for kept, original in zip(seen["encodings"], own["encodings"], strict=True):
        assert torch.equal(kept, original)


def test_injected_depth_reaches_sharp_init_fixed_mode(predictor: RGBGaussianPredictor) -> None:
    known = _known_depth(predictor.internal_resolution(), seed=3)
    _, seen = _run(predictor, lambda internal: two_layers(known, internal, 1.5))
    expected = torch.cat([known, known * 1.5], dim=1)
    assert torch.allclose(seen["depth"], expected, rtol=1e-6, atol=0)


def test_half_depth_halves_metric_means_and_scales(predictor: RGBGaussianPredictor) -> None:
    """SHARP's depth normalisation (docs/upstream-contract.md#depth-normalisation), through
    the product's own `depth_scale` knob."""
    pipe = Pipeline(sharp=SharpStage(predictor))
    size = predictor.internal_resolution()
    raw = RawDepth(values=_known_depth(size, seed=4).numpy().squeeze(), kind="metric",
                   model_id="test")
    photo = _photo(seed=1)
    full = pipe.predict(photo, DepthSettings(), raw)
    half = pipe.predict(photo, DepthSettings(depth_scale=0.5), raw)

    np.testing.assert_allclose(half.used_depth, 0.5 * full.used_depth, rtol=1e-6)
    a, b = full.gaussians, half.gaussians
    assert a.mean_vectors.shape == (1, 2 * (size // 2) ** 2, 3)
    for field in ("mean_vectors", "singular_values"):
        ratio = getattr(b, field) / getattr(a, field)
        assert float((ratio - 0.5).abs().max()) < 2e-6, field
    assert float((b.colors - a.colors).abs().max()) < 1e-6
    assert float((b.opacities - a.opacities).abs().max()) < 1e-6


@pytest.mark.skipif(os.environ.get("SHARP_WATCH_SLOW") != "1",
                    reason="full-size SHARP: minutes per forward on a CPU (SHARP_WATCH_SLOW=1)")
@pytest.mark.timeout(3600)
def test_full_size_sharp_injection() -> None:
    """The official `create_predictor(PredictorParams())`, random weights, fixed mode."""
    start = time.perf_counter()
    full = create_predictor(PredictorParams()).eval()
    assert full.internal_resolution() == 1536
    known = _known_depth(1536, seed=5)
    out, seen = _run(full, lambda internal: two_layers(known, internal, 1.5))
    assert torch.allclose(seen["depth"], torch.cat([known, 1.5 * known], dim=1), rtol=1e-6,
                          atol=0)
    assert out.gaussians_ndc.mean_vectors.shape == (1, 1_179_648, 3)
    print(f"full-size SHARP build + forward: {time.perf_counter() - start:.0f} s")

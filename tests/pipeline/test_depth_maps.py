"""External depth maps: safe loading, every format, the robust fit, and SHARP Custom's tuning."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import InputError
from pipeline.depth.external import load_depth_npy, resolve_depth_path
from pipeline.depth.prepare import (
    canonical_to_metric,
    external_to_metric,
    robust_line_fit,
    to_grid,
    tune,
    two_layers,
)


def _save(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path


def _scene(size: int = 64) -> torch.Tensor:
    """A plausible metric depth: a slanted floor from 1.5 m to 8 m."""
    rows = torch.linspace(8.0, 1.5, size)[:, None].expand(size, size)
    return rows.reshape(1, 1, size, size).clone()


def test_loads_float_and_squeezes_singleton_axes(tmp_path: Path) -> None:
    depth = np.full((1, 20, 30, 1), 2.5, dtype=np.float64)
    out = load_depth_npy(_save(tmp_path / "d.npy", depth))
    assert out.shape == (20, 30) and out.dtype == np.float32
    assert float(out.mean()) == pytest.approx(2.5)


@pytest.mark.parametrize(
    ("array", "reason"),
    [
        (np.array([[1.0, np.nan], [2.0, 3.0]]), "NaN or infinite"),
        (np.array([[1.0, np.inf], [2.0, 3.0]]), "NaN or infinite"),
        (np.array([[1.0, -0.5], [2.0, 3.0]]), "negative"),
        (np.zeros((4, 4)), "all zeros"),
        (np.ones((3, 4, 5)), "expected one 2-D map"),
        (np.ones(10), "expected one 2-D map"),
        (np.ones((4, 4), dtype=bool), "dtype bool"),
        (np.ones((4, 4), dtype=np.complex64), "dtype complex64"),
        (np.ones((2, 20000), dtype=np.float16), "out of range"),
    ],
)
def test_bad_maps_are_refused_with_the_reason(tmp_path: Path, array: np.ndarray,
                                              reason: str) -> None:
    path = _save(tmp_path / "bad.npy", array)
    with pytest.raises(InputError, match=reason) as info:
        load_depth_npy(path)
    assert info.value.path == path


def test_pickled_objects_are_refused_without_running_them(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Boom:
        def __reduce__(self):
            return (marker.write_text, ("pwned",))

    path = tmp_path / "evil.npy"
    np.save(path, np.array([Boom(), Boom()], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="pickled"):
        load_depth_npy(path)
    assert not marker.exists()
    raw = tmp_path / "raw.npy"
    raw.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(InputError, match=r"not a valid \.npy"):
        load_depth_npy(raw)
    assert not marker.exists()


def test_absurd_declared_shape_is_refused_before_loading(tmp_path: Path) -> None:
    path = tmp_path / "huge.npy"
    header = {"descr": "<f4", "fortran_order": False, "shape": (200000, 200000)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
    with pytest.raises(InputError, match="out of range"):
        load_depth_npy(path)


def test_truncated_data_is_reported(tmp_path: Path) -> None:
    path = _save(tmp_path / "t.npy", np.ones((64, 64), dtype=np.float32))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InputError, match="truncated"):
        load_depth_npy(path)


def test_depth_folder_is_matched_by_photo_stem(tmp_path: Path) -> None:
    _save(tmp_path / "cat.npy", np.ones((4, 4)))
    assert resolve_depth_path(tmp_path, Path("/photos/cat.jpg")) == tmp_path / "cat.npy"
    assert resolve_depth_path(tmp_path, Path("/photos/dog.jpg")) is None
    single = tmp_path / "cat.npy"
    assert resolve_depth_path(single, Path("/photos/dog.jpg")) == single
    with pytest.raises(InputError, match="not found"):
        resolve_depth_path(tmp_path / "missing.npy", Path("/photos/dog.jpg"))


def test_robust_fit_ignores_outliers() -> None:
    torch.manual_seed(0)
    x = torch.rand(10000)
    y = 3.0 * x + 0.5
    y[:800] = 50.0
    scale, shift = robust_line_fit(x, y)
    assert scale == pytest.approx(3.0, rel=1e-3) and shift == pytest.approx(0.5, abs=1e-3)


def test_metric_passes_through_and_relative_is_aligned_to_sharp() -> None:
    truth = _scene()
    out, used = external_to_metric(truth, "metric", truth * 1.7)
    assert used == "metric" and torch.equal(out, truth)

    relative = (truth - 1.5) / 6.5
    out, used = external_to_metric(relative, "relative", truth)
    assert used == "relative"
    assert torch.allclose(out, truth, rtol=1e-4)


def test_inverse_relative_is_aligned_in_disparity() -> None:
    truth = _scene()
    inverse = (1.0 / truth - 1 / 8.0) / (1 / 1.5 - 1 / 8.0)
    out, used = external_to_metric(inverse, "inverse-relative", truth)
    assert used == "inverse-relative"
    assert torch.allclose(out, truth, rtol=1e-4)


def test_auto_picks_the_format_that_fits() -> None:
    truth = _scene()
    assert external_to_metric(truth, "auto", truth)[1] == "metric"
    relative = (truth - 1.5) / 6.5
    assert external_to_metric(relative, "auto", truth)[1] == "relative"
    inverse = (1.0 / truth - 1 / 8.0) / (1 / 1.5 - 1 / 8.0)
    assert external_to_metric(inverse, "auto", truth)[1] == "inverse-relative"


def test_relative_map_running_backwards_is_an_error() -> None:
    truth = _scene()
    backwards = 1.0 - (truth - 1.5) / 6.5
    with pytest.raises(InputError, match="opposite"):
        external_to_metric(backwards, "relative", truth)


def test_tuning_is_scale_then_offset_then_clamp() -> None:
    depth = torch.tensor([0.0005, 1.0, 2.0, 90.0])
    out = tune(depth, 2.0, -0.5)
    assert out.tolist() == pytest.approx([0.001, 1.5, 3.5, 100.0])


def test_ratio_mode_keeps_sharps_back_to_front_ratio() -> None:
    internal = torch.tensor([2.0, 3.0]).reshape(1, 2, 1, 1).expand(1, 2, 2, 2)
    front = torch.full((1, 1, 2, 2), 4.0)
    layers = two_layers(front, internal, 1.0)
    assert layers[0, 0].flatten().tolist() == [4.0] * 4
    assert layers[0, 1].flatten().tolist() == [6.0] * 4


def test_ratio_mode_uses_the_nearer_layer_when_sharps_layers_are_unsorted() -> None:
    internal = torch.tensor([3.0, 2.0]).reshape(1, 2, 1, 1)
    layers = two_layers(torch.full((1, 1, 1, 1), 4.0), internal, 1.0)
    assert layers.flatten().tolist() == [6.0, 4.0]


def test_fixed_mode_multiplies_the_front() -> None:
    internal = torch.tensor([2.0, 3.0]).reshape(1, 2, 1, 1)
    layers = two_layers(torch.full((1, 1, 1, 1), 4.0), internal, 1.25)
    assert layers.flatten().tolist() == [4.0, 5.0]


def test_grid_resize_only_when_needed_and_antialiased_when_shrinking() -> None:
    square = torch.rand(32, 32)
    assert torch.equal(to_grid(square, 32)[0, 0], square)
    stripes = torch.zeros(64, 64)
    stripes[:, ::2] = 1.0
    shrunk = to_grid(stripes, 16)
    assert shrunk.shape == (1, 1, 16, 16)
    assert float(shrunk.std()) < 0.05, "shrinking must average, not alias"


def test_canonical_inverse_depth_uses_focal_over_width() -> None:
    canonical = torch.tensor([0.5, 0.25])
    assert canonical_to_metric(canonical, 1000.0, 2000).tolist() == [1.0, 2.0]

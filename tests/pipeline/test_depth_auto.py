"""Depth correctness: `auto` tells depth from disparity in any value range, the report
describes the surface SHARP was actually given where its two layers cross, and a depth
map shaped unlike the upright photo is flagged (or refused when it is turned)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from daemon.outputs import preview_png
from pipeline import DepthSettings, InputError, ModelSettings, Pipeline, SharpStage
from pipeline.depth.prepare import detect_format, external_to_metric, rank_correlation
from tests.support.sharp_double import build

RES = 64


def _scene(near: float, far: float, size: int = 96) -> torch.Tensor:
    """A floor running from `far` (top) to `near` (bottom) with a box standing on it."""
    depth = torch.linspace(far, near, size)[:, None].repeat(1, size)
    cols = torch.linspace(-1.0, 1.0, size)[None, :].expand(size, size)
    depth[(cols.abs() < 0.3) & (depth > (near + far) / 2)] = (near + far) / 2
    return depth.reshape(1, 1, size, size)


def _normalised(x: torch.Tensor) -> torch.Tensor:
    return (x - x.min()) / (x.max() - x.min())


MAPS = {  # name: (map from the true depth, the format auto must choose)
    "metric": (lambda t: t, "metric"),
    "relative 0-1": (_normalised, "relative"),
    "relative 0-255": (lambda t: (_normalised(t) * 255).round(), "relative"),
    "millimetres": (lambda t: t * 1000, "relative"),
    "inverse-relative 0-1": (lambda t: _normalised(1 / t), "inverse-relative"),
    "inverse-relative 0-255": (lambda t: (_normalised(1 / t) * 255).round(), "inverse-relative"),
}


@pytest.mark.parametrize("scene", [(1.5, 8.0), (0.5, 1.5), (0.3, 40.0)],
                         ids=["room", "close-up", "street"])
@pytest.mark.parametrize("name", list(MAPS))
def test_auto_tells_depth_from_disparity_in_every_value_range(name: str,
                                                              scene: tuple[float, float]) -> None:
    truth = _scene(*scene)
    generator = torch.Generator().manual_seed(0)
    noise = 1 + 0.1 * torch.randn(truth.shape, generator=generator)
    sharp = truth * 1.3 * noise.clamp(0.7, 1.3)  # SHARP's own depth: off in scale, noisy
    make, expected = MAPS[name]
    values = make(truth)
    assert detect_format(values, sharp) == expected
    injected, used = external_to_metric(values, "auto", sharp)
    assert used == expected
    assert rank_correlation(injected, truth) > 0.95, "near and far must not be swapped"
    if expected != "metric":
        error = ((injected - sharp).abs() / sharp).median()
        assert float(error) < 0.15, "a relative map is fitted to SHARP's depth"


def test_auto_refuses_a_map_unrelated_to_the_photo() -> None:
    truth = _scene(1.5, 8.0)
    noise = torch.rand(truth.shape, generator=torch.Generator().manual_seed(1)) * 255
    with pytest.raises(InputError, match="set depth_format explicitly"):
        external_to_metric(noise, "auto", truth)


def test_auto_takes_a_constant_map_as_depth_not_disparity() -> None:
    truth = _scene(1.5, 8.0)
    assert external_to_metric(torch.full_like(truth, 4.0), "auto", truth)[1] == "metric"


# ---------------------------------------------------------------- through the pipeline


def _photo(path: Path, width: int = RES, height: int = RES, orientation: int | None = None,
           seed: int = 0) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, exif=exif)
    return path


def _pipeline(sort_layers: bool = True) -> Pipeline:
    return Pipeline(ModelSettings(device="cpu"), sharp=SharpStage(build(RES, sort_layers)))


def _npy(path: Path, values: np.ndarray) -> Path:
    np.save(path, values.astype(np.float32))
    return path


def _sharp_layers(pipe: Pipeline, photo: Path) -> np.ndarray:
    result = pipe.run(photo, DepthSettings(depth_source="internal", save_internal_depth=True))
    assert result.internal_depth is not None
    return result.internal_depth


def test_a_disparity_export_in_0_255_is_injected_as_depth_the_right_way_round(
        tmp_path: Path) -> None:
    pipe = _pipeline()
    photo = _photo(tmp_path / "p.png")
    truth = _sharp_layers(pipe, photo)[0]
    disparity = np.round(255 * _normalised(torch.from_numpy(1 / truth)).numpy())
    result = pipe.run(photo, DepthSettings(depth_source="npy",
                                           external_depth=_npy(tmp_path / "d.npy", disparity)))
    assert result.depth_format == "inverse-relative"
    correlation = rank_correlation(torch.from_numpy(result.used_depth), torch.from_numpy(truth))
    assert correlation > 0.9


class DepthSpy:
    """The 2-layer depth SHARP's initializer receives: its own, or the injected one."""

    def __init__(self, pipe: Pipeline) -> None:
        self.depth = torch.empty(0)
        pipe.sharp.predictor.init_model.register_forward_pre_hook(self._seen)

    def _seen(self, _module: object, args: tuple) -> None:
        self.depth = args[1][0].clone()


def test_a_map_that_cannot_be_placed_fails_naming_the_map(tmp_path: Path) -> None:
    pipe = _pipeline()
    photo = _photo(tmp_path / "p.png")
    noise = np.random.default_rng(2).random((RES, RES)) * 255
    depth = _npy(tmp_path / "noise.npy", noise)
    with pytest.raises(InputError, match="set depth_format explicitly") as info:
        pipe.run(photo, DepthSettings(depth_source="npy", external_depth=depth))
    assert info.value.path == depth and str(info.value).startswith(f"{depth}: ")


@pytest.fixture
def crossed(tmp_path: Path) -> tuple[Pipeline, DepthSpy, Path, torch.Tensor]:
    """The SHARP double with its layers left unsorted, as SHARP's released params do, and
    SHARP's own two layers for the test photo."""
    pipe = _pipeline(sort_layers=False)
    spy = DepthSpy(pipe)
    photo = _photo(tmp_path / "p.png")
    pipe.run(photo, DepthSettings(depth_source="internal"))
    own = spy.depth
    crossing = own[0] > own[1]
    assert 0.05 < float(crossing.float().mean()) < 0.95, "the layers must cross somewhere"
    return pipe, spy, photo, own


def test_report_and_preview_show_sharps_nearer_layer_where_its_layers_cross(
        crossed: tuple[Pipeline, DepthSpy, Path, torch.Tensor]) -> None:
    pipe, _, photo, own = crossed
    nearer = own.min(dim=0).values.numpy()
    result = pipe.run(photo, DepthSettings(depth_source="internal", save_internal_depth=True))
    np.testing.assert_array_equal(result.used_depth, nearer)
    assert result.depth_range_m == (float(nearer.min()), float(nearer.max()))
    assert result.internal_depth is not None
    np.testing.assert_array_equal(result.internal_depth, own.sort(dim=0).values.numpy())
    assert preview_png(result.used_depth, result.internal_depth, result.image_size) == \
        preview_png(result.used_depth, nearer, result.image_size)


def test_report_shows_the_injected_surface_where_sharps_layers_cross(
        crossed: tuple[Pipeline, DepthSpy, Path, torch.Tensor], tmp_path: Path) -> None:
    pipe, spy, photo, _ = crossed
    ramp = np.linspace(1.0, 5.0, RES * RES, dtype=np.float32).reshape(RES, RES)
    result = pipe.run(photo, DepthSettings(depth_source="npy", depth_format="metric",
                                           external_depth=_npy(tmp_path / "d.npy", ramp)))
    injected = spy.depth
    assert not torch.allclose(injected[0], torch.from_numpy(ramp)), "channel 0 is not the front"
    np.testing.assert_allclose(injected.min(dim=0).values.numpy(), ramp, rtol=1e-5)
    np.testing.assert_allclose(result.used_depth, ramp, rtol=1e-5)
    assert result.depth_range_m == pytest.approx((1.0, 5.0), rel=1e-5)


# ---------------------------------------------------------------- a map shaped unlike the photo


@pytest.mark.parametrize("shape, outcome", [
    ((64, 48), None),                      # the upright photo's shape
    ((128, 96), None),                     # the same aspect at another size
    ((65, 48), None),                      # 1.5 % off: not worth a word
    ((64, 64), "stretched by 33%"),        # another aspect: used, with a warning
    ((48, 64), "turned by 90 degrees"),    # the photo's stored (unrotated) shape: refused
])
def test_a_map_shaped_unlike_the_upright_photo_is_flagged_or_refused(
        tmp_path: Path, shape: tuple[int, int], outcome: str | None) -> None:
    """The photo is stored 64x48 with EXIF orientation 6, so it is 48 wide, 64 high upright."""
    pipe = _pipeline()
    photo = _photo(tmp_path / "p.jpg", 64, 48, orientation=6)
    depth = _npy(tmp_path / "d.npy", np.full(shape, 2.0))
    settings = DepthSettings(depth_source="npy", external_depth=depth, depth_format="metric")
    if outcome == "turned by 90 degrees":
        with pytest.raises(InputError, match=outcome) as info:
            pipe.run(photo, settings)
        assert info.value.path == depth
        assert "depth map is 64x48 but the photo is 48x64" in str(info.value)
        return
    result = pipe.run(photo, settings)
    assert result.image_size == (48, 64)
    if outcome is None:
        assert result.warnings == []
    else:
        assert len(result.warnings) == 1 and outcome in result.warnings[0]
        assert result.warnings[0].startswith("d.npy: depth map is 64x64 but the photo is 48x64")


def test_a_nearly_square_photo_with_a_turned_map_is_only_warned_about(tmp_path: Path) -> None:
    """Turned or merely a little off cannot be told apart when the photo is almost square."""
    pipe = _pipeline()
    photo = _photo(tmp_path / "p.png", 100, 96)
    depth = _npy(tmp_path / "d.npy", np.full((100, 96), 2.0))
    result = pipe.run(photo, DepthSettings(depth_source="npy", external_depth=depth,
                                           depth_format="metric"))
    assert len(result.warnings) == 1 and "stretched by 9%" in result.warnings[0]

"""Depth injection into SHARP (the test double keeps SHARP's forward contract exactly)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import DepthSettings, ModelSettings, Pipeline, SharpStage, load_image
from pipeline.depth.transformers_backend import TransformersDepth
from tests.support.sharp_double import build
from tests.support.tiny_models import save_tiny_depth_pro

RES = 64


class Spy:
    """Records what SHARP's initializer and feature model receive."""

    def __init__(self, predictor: torch.nn.Module) -> None:
        self.depth: torch.Tensor | None = None
        self.encodings: list[torch.Tensor] = []
        self.factor: torch.Tensor | None = None
        predictor.init_model.register_forward_pre_hook(self._init)
        predictor.feature_model.register_forward_pre_hook(self._features, with_kwargs=True)
        predictor.register_forward_pre_hook(self._forward)

    def _init(self, _m: Any, args: tuple) -> None:
        self.depth = args[1].clone()

    def _features(self, _m: Any, _args: tuple, kwargs: dict) -> None:
        self.encodings = [t.clone() for t in kwargs["encodings"]]

    def _forward(self, _m: Any, args: tuple) -> None:
        self.factor = args[1].clone()


@pytest.fixture()
def photo(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
    return path


def _pipeline(sort_layers: bool = True) -> tuple[Pipeline, Spy]:
    predictor = build(RES, sort_layers=sort_layers)
    return Pipeline(ModelSettings(device="cpu"), sharp=SharpStage(predictor)), Spy(predictor)


def _npy(tmp_path: Path, depth: np.ndarray) -> Path:
    path = tmp_path / "depth.npy"
    np.save(path, depth.astype(np.float32))
    return path


def _internal(pipe: Pipeline, photo: Path) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """SHARP's own 2-layer depth and encoder features for `photo`, with no injection."""
    spy = Spy(pipe.sharp.predictor)
    pipe.run(photo, DepthSettings(depth_source="internal"))
    assert spy.depth is not None
    return spy.depth, spy.encodings


def test_ratio_mode_front_is_external_and_back_keeps_sharps_ratio(tmp_path: Path,
                                                                   photo: Path) -> None:
    pipe, spy = _pipeline()
    internal, encodings = _internal(pipe, photo)
    assert bool((internal[:, 0] <= internal[:, 1]).all()), "double must give sorted layers"
    external = np.linspace(1.0, 5.0, RES * RES).reshape(RES, RES)
    pipe.run(photo, DepthSettings(depth_source="npy", external_depth=_npy(tmp_path, external),
                                  depth_format="metric"))
    injected = spy.depth
    front = torch.from_numpy(external).float()
    assert torch.allclose(injected[0, 0], front, rtol=1e-5)
    expected_back = front * internal[0, 1] / internal[0, 0]
    assert torch.allclose(injected[0, 1], expected_back, rtol=1e-5)
    for kept, original in zip(spy.encodings, encodings, strict=True):
        assert torch.equal(kept, original), "encoder features must be SHARP's own"


def test_fixed_mode_back_is_front_times_factor(tmp_path: Path, photo: Path) -> None:
    pipe, spy = _pipeline()
    external = np.full((RES, RES), 2.0)
    pipe.run(photo, DepthSettings(depth_source="npy", external_depth=_npy(tmp_path, external),
                                  depth_format="metric", back_surface_factor=1.5))
    assert torch.allclose(spy.depth[0, 0], torch.full((RES, RES), 2.0), rtol=1e-6)
    assert torch.allclose(spy.depth[0, 1], torch.full((RES, RES), 3.0), rtol=1e-6)


def test_scale_and_offset_are_applied_then_clamped(tmp_path: Path, photo: Path) -> None:
    pipe, spy = _pipeline()
    external = np.full((RES, RES), 2.0)
    external[0, 0] = 0.1
    result = pipe.run(photo, DepthSettings(
        depth_source="npy", external_depth=_npy(tmp_path, external), depth_format="metric",
        depth_scale=0.8, depth_offset=-0.3, back_surface_factor=2.0))
    assert spy.depth[0, 0, 5, 5].item() == pytest.approx(2.0 * 0.8 - 0.3, rel=1e-6)
    assert spy.depth[0, 0, 0, 0].item() == pytest.approx(0.001, rel=1e-4)
    assert result.depth_range_m == pytest.approx((0.001, 1.3), rel=1e-4)


def test_ratio_mode_with_unsorted_sharp_layers_keeps_each_layer_ratio(tmp_path: Path,
                                                                      photo: Path) -> None:
    pipe, spy = _pipeline(sort_layers=False)
    internal, _ = _internal(pipe, photo)
    assert bool((internal[:, 0] > internal[:, 1]).any()), "double must give unsorted layers"
    pipe.run(photo, DepthSettings(depth_source="npy",
                                  external_depth=_npy(tmp_path, np.full((RES, RES), 3.0)),
                                  depth_format="metric"))
    nearest = internal.min(dim=1).values
    assert torch.allclose(spy.depth.min(dim=1).values, torch.full_like(nearest, 3.0), rtol=1e-5)
    assert torch.allclose(spy.depth, 3.0 * internal / nearest, rtol=1e-5)


def test_internal_mode_without_tuning_is_untouched_sharp(photo: Path) -> None:
    pipe, _ = _pipeline()
    plain = build(RES)
    result = pipe.run(photo, DepthSettings(depth_source="internal"))
    image = load_image(photo)
    factor = torch.tensor([result.f_px / image.width])
    with torch.inference_mode():
        reference = plain(pipe.sharp.resize_input(pipe.upload(image)), factor)
    ours = pipe.sharp.predict(pipe.upload(image), result.f_px).gaussians_ndc
    assert torch.equal(ours.mean_vectors, reference.mean_vectors)


def test_uniform_depth_scale_scales_the_whole_scene(photo: Path) -> None:
    pipe, _ = _pipeline()
    base = pipe.run(photo, DepthSettings(depth_source="internal"))
    half = pipe.run(photo, DepthSettings(depth_source="internal", depth_scale=0.5))
    assert torch.allclose(half.gaussians.mean_vectors, 0.5 * base.gaussians.mean_vectors,
                          rtol=1e-4, atol=1e-6)
    assert torch.allclose(half.gaussians.singular_values, 0.5 * base.gaussians.singular_values,
                          rtol=1e-4, atol=1e-6)
    assert torch.allclose(half.gaussians.colors, base.gaussians.colors, atol=1e-5)


def test_internal_depth_is_returned_when_asked(photo: Path) -> None:
    pipe, spy = _pipeline()
    result = pipe.run(photo, DepthSettings(depth_source="internal", save_internal_depth=True))
    assert result.internal_depth is not None and result.internal_depth.shape == (2, RES, RES)
    assert np.allclose(result.internal_depth, spy.depth[0].numpy(), rtol=1e-6)
    assert pipe.run(photo, DepthSettings(depth_source="internal")).internal_depth is None


def test_missing_npy_in_folder_falls_back_to_internal_with_a_warning(tmp_path: Path,
                                                                     photo: Path) -> None:
    folder = tmp_path / "depths"
    folder.mkdir()
    pipe, _ = _pipeline()
    result = pipe.run(photo, DepthSettings(depth_source="npy", external_depth=folder))
    assert result.depth_source == "internal"
    assert any("photo.npy" in w for w in result.warnings)


@pytest.fixture(scope="module")
def tiny_depth(tmp_path_factory: pytest.TempPathFactory) -> TransformersDepth:
    folder = save_tiny_depth_pro(tmp_path_factory.mktemp("depth") / "tiny-depth-pro")
    return TransformersDepth.load(str(folder), torch.device("cpu"), torch.float32)


def test_depth_pro_depth_and_focal_go_to_sharp_together(photo: Path,
                                                        tiny_depth: TransformersDepth) -> None:
    predictor = build(RES)
    spy = Spy(predictor)
    pipe = Pipeline(ModelSettings(device="cpu"), sharp=SharpStage(predictor),
                    depth_models={"depth-pro": tiny_depth})
    image = load_image(photo)
    raw = pipe.estimate_depth(image, DepthSettings())
    assert raw is not None and raw.kind == "canonical-inverse"
    object.__setattr__(raw, "fov_deg", 60.0)
    result = pipe.predict(image, DepthSettings(), raw)
    f_px = 0.5 * 64 / np.tan(np.radians(30.0))
    assert result.focal_origin == "depth-model" and result.f_px == pytest.approx(f_px)
    assert spy.factor.item() == pytest.approx(f_px / 64)
    canonical = torch.from_numpy(raw.values)[None, None]
    on_grid = torch.nn.functional.interpolate(canonical, size=(RES, RES), mode="bilinear",
                                              antialias=True)
    expected = ((f_px / 64) / on_grid.clamp(1e-4, 1e4)).clamp(0.001, 100.0)
    assert torch.allclose(spy.depth[:, :1], expected, rtol=1e-4)


def test_focal_override_beats_exif_and_model(photo: Path, tiny_depth: TransformersDepth) -> None:
    pipe = Pipeline(ModelSettings(device="cpu"), sharp=SharpStage(build(RES)),
                    depth_models={"depth-pro": tiny_depth})
    result = pipe.run(photo, DepthSettings(focal_mm=50.0))
    assert result.focal_origin == "override"
    assert result.f_px == pytest.approx(50.0 * np.hypot(64, 48) / np.hypot(36, 24))


def test_unusable_model_focal_falls_back_to_30mm(photo: Path,
                                                 tiny_depth: TransformersDepth) -> None:
    pipe = Pipeline(ModelSettings(device="cpu"), sharp=SharpStage(build(RES)),
                    depth_models={"depth-pro": tiny_depth})
    image = load_image(photo)
    raw = pipe.estimate_depth(image, DepthSettings())
    object.__setattr__(raw, "fov_deg", -12.0)
    result = pipe.predict(image, DepthSettings(), raw)
    assert result.focal_origin == "default-30mm"

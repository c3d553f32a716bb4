"""The pipeline's face: load models once, then photo -> depth -> SHARP -> metric Gaussians.

    pipe = Pipeline(ModelSettings())
    result = pipe.run("photo.jpg", DepthSettings())
    write_ply("photo.ply", result.gaussians, result.f_px, result.image_size)

The stages are also callable one by one (`estimate_depth`, `predict`) so a caller can
cache the depth model's output and overlap decoding and writing with GPU work.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .depth.apple_backend import AppleDepthPro
from .depth.base import DepthEstimator, RawDepth
from .depth.external import NpyMap, check_aspect, read_npy_for
from .depth.prepare import (
    canonical_to_metric,
    depth_range,
    external_to_metric,
    to_grid,
    tune,
    two_layers,
)
from .depth.sources import MODEL_SOURCES, SOURCES
from .depth.transformers_backend import TransformersDepth
from .device import depth_dtype, free_device_memory, pick_device
from .errors import InputError
from .gaussians import Gaussians, unproject
from .image import DEFAULT_MAX_PIXELS, LoadedImage, focal_mm_to_px, load_image
from .settings import DEFAULT_FOCAL_35MM, DepthSettings, ModelSettings
from .sharp_stage import SharpStage
from .weights import (
    DEPTH_PRO_URL,
    Progress,
    cached_checkpoint,
    local_hub_snapshot,
    weights_fingerprint,
)


@dataclass(frozen=True)
class Focal:
    """The one focal length both models use, and where it came from."""

    f_px: float
    origin: str
    estimated_by: str | None = None
    """The depth model whose estimate it is, when `origin` is `depth-model`."""


@dataclass
class Prediction:
    """Metric Gaussians for one photo plus what a report needs to explain them.

    `used_depth` and `depth_range_m` describe the front surface SHARP was given (per
    pixel the nearer of its two layers, which need not be channel 0); `internal_depth`
    is SHARP's own two layers, nearer first.
    """

    gaussians: Gaussians
    f_px: float
    focal_origin: str
    image_size: tuple[int, int]
    depth_source: str
    depth_format: str | None
    depth_model: str | None
    depth_range_m: tuple[float, float]
    used_depth: np.ndarray
    internal_depth: np.ndarray | None
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    focal_estimated_by: str | None = None


def resolve_focal(image: LoadedImage, settings: DepthSettings,
                  *raws: RawDepth | None) -> Focal:
    """Override, else EXIF, else the first depth model's estimate among `raws` (Depth Pro
    gives one, Depth Anything none), else SHARP's 30 mm default."""
    if settings.focal_mm is not None:
        return Focal(focal_mm_to_px(settings.focal_mm, image.width, image.height), "override")
    if image.exif_focal_35mm is not None:
        return Focal(focal_mm_to_px(image.exif_focal_35mm, image.width, image.height), "exif")
    for raw in (r for r in raws if r is not None):
        estimated = raw.focal_px(image.width)
        if estimated is not None:
            return Focal(estimated, "depth-model", raw.model_id)
    return Focal(focal_mm_to_px(DEFAULT_FOCAL_35MM, image.width, image.height), "default-30mm")


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


class Pipeline:
    """Resident models and the per-photo steps; models load lazily on first use."""

    def __init__(self, models: ModelSettings | None = None, *, sharp: SharpStage | None = None,
                 depth_models: dict[str, DepthEstimator] | None = None,
                 progress: Progress | None = None) -> None:
        self.models = models or ModelSettings()
        self.device = sharp.device if sharp is not None else pick_device(self.models.device)
        self._sharp = sharp
        self._depth: dict[str, DepthEstimator] = dict(depth_models or {})
        self.progress = progress

    @property
    def sharp(self) -> SharpStage:
        if self._sharp is None:
            m = self.models
            self._sharp = SharpStage.load(self.device, m.sharp_precision, m.sharp_checkpoint,
                                          m.sharp_factory, m.cache_dir, self.progress)
        return self._sharp

    def model_name(self, source: str) -> str | None:
        """The hub id or folder a source's transformers model loads from (the config's
        `depth_model` for `depth-pro`); None for sources without one."""
        if source == "depth-pro":
            return self.models.depth_model
        return SOURCES[source].hub_id if SOURCES[source].backend == "transformers" else None

    def depth_model(self, source: str) -> DepthEstimator:
        """The resident model behind a depth source (one of `MODEL_SOURCES`), loaded once."""
        if source not in self._depth:
            m = self.models
            dtype = depth_dtype(m.depth_precision, self.device)
            name = self.model_name(source)
            if SOURCES[source].backend == "apple":
                self._depth[source] = AppleDepthPro.load(m.depth_pro_checkpoint, self.device,
                                                         dtype, m.cache_dir, self.progress)
            elif name is not None:
                self._depth[source] = TransformersDepth.load(name, self.device, dtype,
                                                             m.cache_dir, self.progress)
            else:
                raise InputError(f"depth source {source!r} has no depth model")
        return self._depth[source]

    def load(self, depth_sources: tuple[str, ...] = ("depth-pro",)) -> None:
        """Load SHARP and the given depth models now rather than on the first photo."""
        _ = self.sharp
        for source in depth_sources:
            if source in MODEL_SOURCES:
                self.depth_model(source)

    def unload(self) -> None:
        """Drop every model and give the memory back (they reload on next use)."""
        self._sharp = None
        self._depth.clear()
        free_device_memory()

    def unload_depth(self, source: str) -> bool:
        """Drop one depth model (a compare's, between sources); True if it was loaded."""
        dropped = self._depth.pop(source, None) is not None
        if dropped:
            free_device_memory()
        return dropped

    @property
    def loaded_depth_sources(self) -> tuple[str, ...]:
        return tuple(self._depth)

    @property
    def loaded(self) -> bool:
        return self._sharp is not None

    def upload(self, image: LoadedImage) -> torch.Tensor:
        """The photo as uint8 `(3, H, W)` on the device (pinned, non-blocking on CUDA)."""
        pixels = torch.from_numpy(image.rgb).permute(2, 0, 1)
        if self.device.type == "cuda":
            return pixels.pin_memory().to(self.device, non_blocking=True)
        return pixels.to(self.device)

    def estimate_depth(self, image: LoadedImage, settings: DepthSettings,
                       pixels: torch.Tensor | None = None) -> RawDepth | None:
        """The depth model's raw output for this photo; None for `npy` and `internal`."""
        if settings.depth_source not in MODEL_SOURCES:
            return None
        model = self.depth_model(settings.depth_source)
        return model.estimate(self.upload(image) if pixels is None else pixels)

    def depth_model_id(self, settings: DepthSettings) -> str | None:
        if SOURCES[settings.depth_source].backend == "apple":
            return AppleDepthPro.model_id
        return self.model_name(settings.depth_source)

    def depth_cache_key(self, settings: DepthSettings) -> str | None:
        """Everything besides the photo that decides the depth model's raw output: the model,
        the precision it runs in, and its weights on disk (`weights_fingerprint`). None when
        the depth comes from no model, or the weights are not downloaded yet."""
        model_id = self.depth_model_id(settings)
        if model_id is None:
            return None
        m = self.models
        if SOURCES[settings.depth_source].backend == "apple":
            weights: Path | None = (Path(m.depth_pro_checkpoint) if m.depth_pro_checkpoint
                                    else cached_checkpoint(DEPTH_PRO_URL, m.cache_dir))
        elif Path(model_id).is_dir():
            weights = Path(model_id)
        else:
            weights = local_hub_snapshot(model_id, m.cache_dir)
        fingerprint = weights_fingerprint(weights) if weights is not None else None
        if fingerprint is None:
            return None
        precision = str(depth_dtype(m.depth_precision, self.device)).removeprefix("torch.")
        return f"{model_id}|{precision}|{fingerprint}"

    def run(self, path: Path | str, settings: DepthSettings | None = None, *,
            max_pixels: int = DEFAULT_MAX_PIXELS, within: Path | None = None) -> Prediction:
        """Decode (refusing photos over `max_pixels`), estimate depth and predict in one call;
        with `within`, the photo and any `.npy` are read only from inside that folder."""
        settings = settings or DepthSettings()
        timings: dict[str, float] = {}
        with _timed(timings, "decode"):
            image = load_image(path, max_pixels, within)
        pixels = self.upload(image)
        with _timed(timings, "depth"):
            raw = self.estimate_depth(image, settings, pixels)
        result = self.predict(image, settings, raw, pixels, within=within)
        result.timings = {**timings, **result.timings}
        return result

    @torch.inference_mode()
    def predict(self, image: LoadedImage, settings: DepthSettings, raw: RawDepth | None = None,
                pixels: torch.Tensor | None = None, *, within: Path | None = None,
                focal: Focal | None = None, npy: NpyMap | None = None) -> Prediction:
        """SHARP with the depth from `raw` (or the `.npy` / SHARP's own) injected; a `.npy`
        is read only from inside `within` when it is given, or taken as `npy` already read
        (by a daemon whose files this process cannot see). `focal` replaces the focal
        resolved from `raw` (a compare gives every source the same camera)."""
        focal = focal or resolve_focal(image, settings, raw)
        warnings: list[str] = []
        external, kind, source = self._external_values(image, settings, raw, warnings, within,
                                                       npy)
        tuned = settings.depth_scale != 1.0 or settings.depth_offset != 0.0
        injector = None
        chosen: dict[str, str] = {}
        if external is not None or tuned:
            def injector(internal: torch.Tensor) -> torch.Tensor:
                front = internal.min(dim=1, keepdim=True).values
                if external is not None:
                    on_grid = to_grid(external.to(internal.device), internal.shape[-1])
                    if kind == "canonical-inverse":
                        front = canonical_to_metric(on_grid, focal.f_px, image.width)
                    else:
                        try:
                            front, chosen["format"] = external_to_metric(
                                on_grid, kind or settings.depth_format, front)
                        except InputError as exc:  # a fit that fails names the map
                            raise InputError(exc.reason, source) from None
                front = tune(front, settings.depth_scale, settings.depth_offset)
                return two_layers(front, internal, settings.back_surface_factor)

        timings: dict[str, float] = {}
        pixels = self.upload(image) if pixels is None else pixels
        with _timed(timings, "sharp"):
            out = self.sharp.predict(pixels, focal.f_px, injector)
        with _timed(timings, "unproject"):
            gaussians = unproject(out.gaussians_ndc, focal.f_px, image.width, image.height)
        # SHARP's layers may cross (docs/upstream-contract.md#the-two-depth-layers-are-not-sorted):
        # per pixel the nearer one is the front surface.
        front = out.used_depth.min(dim=1, keepdim=True).values
        return Prediction(
            gaussians=gaussians,
            f_px=focal.f_px,
            focal_origin=focal.origin,
            image_size=(image.width, image.height),
            depth_source=settings.depth_source if external is not None else "internal",
            depth_format=chosen.get("format"),
            depth_model=raw.model_id if raw is not None else None,
            depth_range_m=depth_range(front),
            used_depth=front.float().cpu().numpy().squeeze(),
            internal_depth=(out.internal_depth.sort(dim=1).values.float().cpu().numpy().squeeze(0)
                            if settings.save_internal_depth else None),
            timings=timings,
            warnings=warnings,
            focal_estimated_by=focal.estimated_by,
        )

    def _external_values(self, image: LoadedImage, settings: DepthSettings,
                         raw: RawDepth | None, warnings: list[str],
                         within: Path | None, npy: NpyMap | None,
                         ) -> tuple[torch.Tensor | None, str | None, Path | None]:
        """The map to inject, its kind (None: an `.npy` in `depth_format`) and the `.npy` it
        came from; all None for no map."""
        if raw is not None:
            return torch.from_numpy(raw.values), raw.kind, None
        if settings.depth_source == "npy":
            assert settings.external_depth is not None
            found = npy or read_npy_for(settings.external_depth, image.path, within)
            path, depth = found.path, found.values
            if path is None or depth is None:
                warnings.append(f"no {image.path.stem}.npy in {settings.external_depth}; "
                                "using SHARP's own depth")
                return None, None, None
            stretched = check_aspect(depth.shape, (image.width, image.height), path)
            if stretched is not None:
                warnings.append(stretched)
            return torch.from_numpy(depth), None, path
        if settings.depth_source in MODEL_SOURCES:
            raise InputError(f"depth source {settings.depth_source} gave no depth", image.path)
        return None, None, None

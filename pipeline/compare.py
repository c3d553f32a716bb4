"""A/B depth compare: one photo through several depth sources, one result per source.

Every depth model runs first, each loaded once and, unless the caller keeps it resident,
dropped again right after (so at most one depth model sits next to SHARP, and a repeat
compare whose depths come from a cache loads none). Then ONE focal length is resolved
for the whole set (override, else EXIF, else the estimate of a source that gives one,
Depth Pro's, else 30 mm) and SHARP runs once per source with it: the PLYs differ only
in their depth, never in their camera. Depth Anything gives no focal estimate, so
without EXIF it borrows Depth Pro's when Depth Pro is in the set, and each report says
whose estimate it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .depth.base import RawDepth
from .depth.external import NpyMap
from .depth.sources import MODEL_SOURCES
from .image import LoadedImage
from .preview import SheetPanel, contact_sheet
from .runner import Pipeline, Prediction, resolve_focal
from .settings import DepthSettings

DepthProvider = Callable[[DepthSettings], tuple[RawDepth | None, bool]]
"""`settings -> (raw depth, whether it came from a cache)` for one source of the set."""


@dataclass
class SourceRun:
    """One source's result in a compare, and what its report needs beyond the prediction."""

    source: str
    prediction: Prediction
    from_cache: bool = False
    timings: dict[str, float] = field(default_factory=dict)


def _estimate(pipe: Pipeline, image: LoadedImage,
              pixels: torch.Tensor) -> DepthProvider:
    def estimate(settings: DepthSettings) -> tuple[RawDepth | None, bool]:
        return pipe.estimate_depth(image, settings, pixels), False
    return estimate


def run_compare(pipe: Pipeline, image: LoadedImage, settings: DepthSettings, *,
                pixels: torch.Tensor | None = None, depth: DepthProvider | None = None,
                keep: Iterable[str] = (), within: Path | None = None,
                stage: Callable[[str], None] = lambda name: None,
                npy: NpyMap | None = None) -> list[SourceRun]:
    """Each source of `settings.compare`, in its order, through SHARP with one shared focal.

    `depth` supplies a source's raw depth (a cache in front of the model; by default the
    model itself); models of sources not in `keep` are unloaded after their estimate.
    `stage` is told `depth` and `sharp` as the work moves on (the daemon's journal);
    `npy`: the `npy` source's map already read (`Pipeline.predict`).
    """
    pixels = pipe.upload(image) if pixels is None else pixels
    depth = depth or _estimate(pipe, image, pixels)
    kept = set(keep)
    raws: dict[str, RawDepth | None] = {}
    cached: dict[str, bool] = {}
    seconds: dict[str, float] = {}
    stage("depth")
    for source in settings.compare:
        if source not in MODEL_SOURCES:
            continue
        start = time.perf_counter()
        raws[source], cached[source] = depth(settings.for_source(source))
        if not cached[source]:
            seconds[source] = time.perf_counter() - start
        if source not in kept:
            pipe.unload_depth(source)
    focal = resolve_focal(image, settings, *raws.values())
    stage("sharp")
    runs = []
    for source in settings.compare:
        prediction = pipe.predict(image, settings.for_source(source), raws.get(source), pixels,
                                  within=within, focal=focal, npy=npy)
        timings = ({"depth": seconds[source]} if source in seconds else {}) | prediction.timings
        runs.append(SourceRun(source, prediction, cached.get(source, False), timings))
    return runs


def contact_sheet_png(image: LoadedImage, runs: list[SourceRun]) -> bytes:
    """A compare's contact sheet: the photo, then each source's injected depth labelled
    with its name, its model (or where its depth came from) and its range."""
    panels = []
    for run in runs:
        p = run.prediction
        low, high = p.depth_range_m
        if p.depth_model:
            where = p.depth_model.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        elif p.depth_source == "internal":
            where = "SHARP's own depth"
        else:
            where = "your .npy map"
        panels.append(SheetPanel(run.source, f"{where}, {low:.2f}-{high:.2f} m", p.used_depth))
    sources = ", ".join(r.source for r in runs)
    title = f"{image.path.name}: depth from {sources}, on one colour scale"
    return contact_sheet(image.rgb, panels, title, runs[0].prediction.image_size).png()

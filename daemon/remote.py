"""What a remote GPU worker runs for the daemon, and what travels between them.

The daemon that watches the folder stays the only owner of the journal, the depth cache
and the outputs: it sends a `PhotoRequest` (the decoded photo, its settings as plain
values, the cached raw depths it has and any external `.npy` already read, since the
worker cannot see the daemon's files) and gets a `PhotoReply` (the Gaussians as numpy
arrays, new raw depths to cache, or the pipeline's error as plain text). Nothing here
holds an OS path of the daemon's machine as a `Path` (a Windows path cannot be unpickled
on Linux). Each worker holds both models once, loaded by `ModelsPlugin` when the worker
starts (`sharp-watch cluster-worker`), never per photo.

Imports `distributed`: only the cluster path (`daemon.cluster`) and the worker command
import this module.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from distributed import Worker, WorkerPlugin, get_worker
from loguru import logger

from pipeline import (
    Gaussians,
    InputError,
    LoadedImage,
    ModelError,
    OutOfMemoryError,
    Pipeline,
    PipelineError,
    Prediction,
    RawDepth,
)
from pipeline.compare import SourceRun, run_compare
from pipeline.depth.external import NpyMap
from pipeline.depth.sources import MODEL_SOURCES
from pipeline.device import free_device_memory
from pipeline.settings import DepthSettings

from .results import Models
from .stage import device_failure

PLUGIN_NAME = "sharp-watch-models"
GPU_RESOURCE = "GPU"
"""The custom resource each worker offers once (`--resources GPU=1`) and each photo asks
for, so a worker runs one photo at a time."""
ERRORS: dict[str, type[PipelineError]] = {cls.__name__: cls for cls in (
    InputError, OutOfMemoryError, ModelError, PipelineError)}
"""The pipeline errors a reply can carry, by name (an exception object is not sent: its
path may not unpickle on the daemon's OS)."""

CachedDepth = tuple[str, RawDepth]
"""A raw depth and the cache key it was made under (model, precision, weights)."""


@dataclass
class PhotoRequest:
    """One photo for a remote worker: everything it needs, nothing it would have to read."""

    name: str
    """The photo's file name, for messages (the worker never opens it)."""
    rgb: np.ndarray
    exif_focal_35mm: float | None
    settings: dict[str, Any]
    """`DepthSettings.as_dict()`: plain values, readable on any OS."""
    cached: dict[str, CachedDepth] = field(default_factory=dict)
    """The daemon's cached raw depths for this photo, by source."""
    npy: NpyMap | None = None
    """The external `.npy`, read by the daemon (sources `npy`)."""
    keep: tuple[str, ...] = ()
    """A compare's depth models to keep resident after it (the daemon's default sources)."""


@dataclass
class PhotoReply:
    """A remote worker's answer: one prediction or a compare's runs, or an error."""

    prediction: dict[str, Any] | None = None
    compare: list[tuple[str, dict[str, Any], bool, dict[str, float]]] = field(
        default_factory=list)
    cache_hit: bool = False
    new_depths: dict[str, CachedDepth] = field(default_factory=dict)
    models: dict[str, Models] = field(default_factory=dict)
    """The models each source ran with, for its report (by depth source)."""
    error: tuple[str, str, str | None] | None = None
    """(error class name in `ERRORS`, reason, the name of the file it is about): the
    pipeline refused or failed the photo."""
    worker: str = ""
    """The worker's address (the log names where a photo ran)."""

    def raise_error(self, photo: Path, npy: Path | None = None) -> None:
        """Raise the remote pipeline error as the local pipeline would: naming the `.npy`
        it is about (the daemon's path of it), else `photo`."""
        if self.error is not None:
            kind, reason, about = self.error
            path = npy if npy is not None and about == npy.name else photo
            raise ERRORS.get(kind, PipelineError)(reason, path)

    def result(self) -> Prediction:
        assert self.prediction is not None
        return unpack_prediction(self.prediction)

    def runs(self) -> list[SourceRun]:
        return [SourceRun(source, unpack_prediction(packed), cached, timings)
                for source, packed, cached, timings in self.compare]


def request_for(image: LoadedImage, settings: DepthSettings, cached: dict[str, CachedDepth],
                npy: NpyMap | None, keep: tuple[str, ...]) -> PhotoRequest:
    """The request for one photo (the `npy` path is sent as its name only)."""
    if npy is not None and npy.path is not None:
        npy = NpyMap(Path(npy.path.name), npy.values)
    return PhotoRequest(image.path.name, image.rgb, image.exif_focal_35mm, settings.as_dict(),
                        cached, npy, keep)


def pack_prediction(prediction: Prediction) -> dict[str, Any]:
    """A prediction as plain values and numpy arrays (cheap to send, any OS)."""
    packed = {f.name: getattr(prediction, f.name) for f in dataclasses.fields(prediction)}
    packed["gaussians"] = tuple(t.detach().cpu().numpy() for t in prediction.gaussians)
    return packed


def unpack_prediction(packed: dict[str, Any]) -> Prediction:
    gaussians = Gaussians(*(torch.from_numpy(a) for a in packed["gaussians"]))
    return Prediction(**{**packed, "gaussians": gaussians})


class ModelsPlugin(WorkerPlugin):
    """The worker's resident models, loaded before it joins the scheduler (a photo never
    waits for a load, nor is a heartbeat missed during one); every photo uses them."""

    name = PLUGIN_NAME

    def __init__(self, pipe: Pipeline) -> None:
        self.pipe = pipe

    def setup(self, worker: Worker) -> None:
        logger.info("worker {}: models resident on {}", worker.address, self.pipe.device)


def resident_pipeline() -> Pipeline:
    """This worker's models, or an error saying how to start a worker that has them."""
    worker = get_worker()
    plugin = worker.plugins.get(PLUGIN_NAME)
    if not isinstance(plugin, ModelsPlugin):
        raise ModelError(f"Dask worker {worker.address} has no sharp-watch models; start GPU "
                         "workers with `sharp-watch cluster-worker` (docs/cluster.md)")
    return plugin.pipe


def run_photo(request: PhotoRequest) -> PhotoReply:
    """The GPU stage on a remote worker: depth (unless the daemon sent it), then SHARP."""
    reply = PhotoReply(worker=get_worker().address)
    pipe = resident_pipeline()
    try:
        try:
            _run(pipe, request, reply)
        except RuntimeError as exc:  # as a local stage does: a device failure fails the photo
            failure = device_failure(exc, f"{pipe.device} on {reply.worker}",
                                     Path(request.name))
            if failure is None:
                raise
            raise failure from exc
    except PipelineError as exc:
        if isinstance(exc, OutOfMemoryError):
            free_device_memory()
        reply.error = (type(exc).__name__, exc.reason,
                       exc.path.name if exc.path is not None else None)
    return reply


def _run(pipe: Pipeline, request: PhotoRequest, reply: PhotoReply) -> None:
    settings = DepthSettings(**{**request.settings, "external_depth": (
        Path(request.settings["external_depth"]) if request.settings["external_depth"]
        else None)})
    image = LoadedImage(Path(request.name), request.rgb, request.exif_focal_35mm)
    pixels = pipe.upload(image)

    def depth(source_settings: DepthSettings) -> tuple[RawDepth | None, bool]:
        """The daemon's cached raw depth if it was made as this worker would, else ours."""
        source = source_settings.depth_source
        if source not in MODEL_SOURCES:
            return None, False
        key = pipe.depth_cache_key(source_settings)
        sent = request.cached.get(source)
        if sent is not None and key is not None and sent[0] == key:
            return sent[1], True
        raw = pipe.estimate_depth(image, source_settings, pixels)
        if raw is not None and key is not None:
            reply.new_depths[source] = (key, raw)
        return raw, False

    reply.models = {  # the report says which machine made the result
        source: Models.of(pipe, settings.for_source(source))._replace(
            device=f"{pipe.device} on {reply.worker}") for source in settings.sources}
    if settings.compare:
        runs = run_compare(pipe, image, settings, pixels=pixels, depth=depth,
                           keep=request.keep, npy=request.npy)
        reply.compare = [(run.source, pack_prediction(run.prediction), run.from_cache,
                          run.timings) for run in runs]
        return
    t0 = time.perf_counter()
    raw, reply.cache_hit = depth(settings)
    seconds = time.perf_counter() - t0
    prediction = pipe.predict(image, settings, raw, pixels, npy=request.npy)
    if raw is not None and not reply.cache_hit:
        prediction.timings = {"depth": seconds, **prediction.timings}
    reply.prediction = pack_prediction(prediction)

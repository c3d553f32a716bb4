"""The models' step of a job, behind one interface: what a worker hands a photo to.

A `Worker` decodes, claims and writes; the step between (depth, SHARP) is a `Stage`.
`LocalStage` runs it on a `Pipeline` resident on one device of this machine; another
kind (a cluster slot) only has to return the same `StageOutput`: plain CPU data, so it
can come from anywhere. `build_stages` makes the daemon's list, one stage per worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from pipeline import (
    Gaussians,
    LoadedImage,
    ModelError,
    OutOfMemoryError,
    Pipeline,
    PipelineError,
    Prediction,
    RawDepth,
)
from pipeline.compare import DepthProvider, SourceRun, run_compare
from pipeline.depth.sources import MODEL_SOURCES
from pipeline.device import free_device_memory
from pipeline.settings import DepthSettings
from pipeline.weights import Progress

from .config import Config
from .depth_cache import DepthCache
from .jobs import Job
from .results import Models
from .sidecar import depth_root
from .status import Problems


class Interrupted(Exception):
    """A stage gave a photo back because the daemon is stopping (a cluster slot whose
    photo had not started on a worker): the job stays in the journal as it is and runs
    at the next start; nothing is reported against the photo."""


@dataclass
class StageOutput:
    """What a stage made of one photo, all on the CPU: a prediction, or a compare's runs
    (one per source), the seconds per step, and whether the depth came from the cache."""

    result: Prediction | None = None
    compare: list[SourceRun] = field(default_factory=list)
    cache_hit: bool = False
    timings: dict[str, float] = field(default_factory=dict)


class Stage(Protocol):
    """The models' step as a worker sees it.

    `label`: where it runs, for status ("cuda:0"). `overlap`: whether decoding the next
    photo and writing the last one on other threads pays (not when the models share the
    CPU's cores with them). `run` tells `progress` each step it reaches (`depth`,
    `sharp`: the journal's evidence) and raises `PipelineError`s: `OutOfMemoryError`
    (the worker retries once), another `ModelError` (the photo fails, retryable), or
    `Interrupted` once `stop` was called. `ready`: whether the worker may claim a photo
    for it now (a cluster slot only while enough GPU workers are connected).
    """

    label: str
    overlap: bool

    @property
    def loaded(self) -> bool: ...

    def load(self, sources: tuple[str, ...]) -> None: ...

    def unload(self) -> None: ...

    def run(self, job: Job, image: LoadedImage,
            progress: Callable[[str], None]) -> StageOutput: ...

    def models(self, settings: DepthSettings) -> Models:
        """The models that ran `settings` (one source's), for the report."""
        ...

    def vram_used_mb(self) -> float | None: ...

    def ready(self) -> bool: ...

    def stop(self) -> None:
        """The daemon is stopping: a photo still waiting to start is given back."""
        ...


class LocalStage:
    """The models resident on one device of this machine (its own `Pipeline`), with the
    daemon's shared depth cache in front of the depth model."""

    def __init__(self, config: Config, pipe: Pipeline, cache: DepthCache) -> None:
        self.config = config
        self.pipe = pipe
        self.cache = cache
        self.label = str(pipe.device)
        # Overlap pays only when the models run on an accelerator; on a CPU the decode and
        # write threads would just compete with the models for the same cores.
        self.overlap = pipe.device.type != "cpu"

    @property
    def loaded(self) -> bool:
        return self.pipe.loaded

    def load(self, sources: tuple[str, ...]) -> None:
        self.pipe.load(sources)

    def unload(self) -> None:
        self.pipe.unload()

    def models(self, settings: DepthSettings) -> Models:
        return Models.of(self.pipe, settings)

    def vram_used_mb(self) -> float | None:
        if self.pipe.device.type == "cuda" and torch.cuda.is_available():
            return torch.cuda.memory_allocated(self.pipe.device) / 2**20
        return None

    def ready(self) -> bool:
        return True

    def stop(self) -> None:
        """Nothing to give back: a local photo runs to its end (the worker waits for it)."""

    def run(self, job: Job, image: LoadedImage,
            progress: Callable[[str], None]) -> StageOutput:
        try:
            return self._run(job, image, progress)
        except OutOfMemoryError:
            free_device_memory()
            raise
        except PipelineError:
            raise
        except RuntimeError as exc:
            failure = device_failure(exc, self.label, job.photo)
            if failure is None:
                raise
            raise failure from exc

    def _cached_depth(self, job: Job, image: LoadedImage, pixels: torch.Tensor,
                      progress: Callable[[str], None]) -> DepthProvider:
        """A source's raw depth from the cache, else from its model (then cached)."""
        def depth(settings: DepthSettings) -> tuple[RawDepth | None, bool]:
            if settings.depth_source not in MODEL_SOURCES:
                return None, False
            key = self.pipe.depth_cache_key(settings)
            raw = self.cache.get(job.photo_hash, key)
            if raw is not None:
                return raw, True
            progress("depth")
            raw = self.pipe.estimate_depth(image, settings, pixels)
            if raw is not None:
                self.cache.put(job.photo_hash, key, raw)
            return raw, False
        return depth

    def _run(self, job: Job, image: LoadedImage,
             progress: Callable[[str], None]) -> StageOutput:
        out = StageOutput()
        settings = job.settings
        pixels = self.pipe.upload(image)
        within = depth_root(settings.external_depth, self.config.inputs)
        depth = self._cached_depth(job, image, pixels, progress)
        if settings.compare:
            # Keep resident only the depth model the daemon's own default uses.
            keep = tuple(s for s in self.config.defaults.sources if s in MODEL_SOURCES)
            out.compare = run_compare(self.pipe, image, settings, pixels=pixels, depth=depth,
                                      keep=keep, within=within, stage=progress)
            for source_run in out.compare:
                _to_cpu(source_run.prediction)
                for stage, seconds in source_run.timings.items():  # the job's: all sources
                    out.timings[stage] = out.timings.get(stage, 0.0) + seconds
            return out
        t0 = time.perf_counter()
        raw, out.cache_hit = depth(settings)
        if raw is not None and not out.cache_hit:
            out.timings["depth"] = time.perf_counter() - t0
        progress("sharp")
        want_internal = settings.save_internal_depth or self.config.daemon.preview
        out.result = self.pipe.predict(image, settings.replace(save_internal_depth=want_internal),
                                       raw, pixels, within=within)
        out.timings.update(out.result.timings)
        _to_cpu(out.result)
        return out


DEVICE_WORDS = ("cuda", "device", "hip", "mps")
"""Words in a torch RuntimeError that point at the device rather than at our code."""


def device_failure(exc: RuntimeError, device: str, photo: Path) -> ModelError | None:
    """A lost or failing device (driver reset, ECC error) as a `ModelError` for `photo`: it
    fails and is retried later while the other devices go on. None for any other error."""
    if not any(word in str(exc).lower() for word in DEVICE_WORDS):
        return None
    return ModelError(f"{photo}: the device {device} failed ({exc})", photo)


def _to_cpu(result: Prediction) -> None:
    """Copy the Gaussians off the GPU now: a writer thread touching GPU tensors would wait
    behind the next photo."""
    if result.gaussians.mean_vectors.device.type != "cpu":
        result.gaussians = Gaussians(*(t.cpu() for t in result.gaussians))


def build_stages(config: Config, cache: DepthCache, progress: Progress,
                 pipeline: Pipeline | None = None,
                 problems: Problems | None = None) -> list[Stage]:
    """The daemon's stages, one per worker: with `[cluster]`, one `DaskStage` per photo
    that may be in flight on the cluster (`daemon.cluster`; its trouble is reported in
    `problems`); else one `LocalStage` per device of `[models] device` (`pipeline`, when
    given, is the only one: tests pass theirs, loaded once)."""
    if config.cluster is not None:
        from .cluster import cluster_stages  # it imports this module

        return list(cluster_stages(config, cache, problems or Problems()))
    pipes = ([pipeline] if pipeline is not None else
             [Pipeline(config.model_settings(device)) for device in config.models.devices()])
    for pipe in pipes:
        pipe.progress = progress
    return [LocalStage(config, pipe, cache) for pipe in pipes]

"""The one GPU worker: jobs in journal order, with decoding and writing overlapped.

While the GPU runs photo N, a prefetch thread decodes photo N+1 and a writer thread
writes photo N-1's PLY and report, so the GPU waits on neither. On a CPU-only machine
the three steps run in turn on the worker thread instead (they would share the cores).
A job is marked done only after its files are renamed into place; until then the
journal says `running` (with the stage reached, the evidence for giving up on a photo
that keeps crashing the process) and a crash re-runs it (after deleting the names it
reserved). A prefetched decode is used only for the same job, path and content; a photo
that vanished or changed while queued is followed to a surviving copy with the same
content and settings before its job is dropped. No exception ends the worker thread:
it is reported in `Status.problems` and the loop carries on after a backoff.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from loguru import logger

from pipeline import (
    Gaussians,
    InputError,
    LoadedImage,
    OutOfMemoryError,
    OutputError,
    Pipeline,
    PipelineError,
    Prediction,
    RawDepth,
    load_image,
)
from pipeline.compare import DepthProvider, SourceRun, contact_sheet_png, run_compare
from pipeline.depth.sources import MODEL_SOURCES
from pipeline.device import free_device_memory
from pipeline.settings import DepthSettings

from .cluster import Abandoned, DaskStage
from .config import Config
from .depth_cache import DepthCache
from .jobs import Job
from .journal import Journal
from .outputs import OutputFolder
from .readiness import file_signature, looks_incomplete
from .results import Models, Origin, build_report, compare_names, compare_reports, result_names
from .sidecar import depth_root
from .status import Backoff, Board, JobEvent

OVERLAP_ON_CPU = False  # tests set this to run the prefetch and writer threads on a CPU


class Superseded(Exception):
    """The photo changed or vanished after it was queued; its new version has its own job."""


@dataclass
class _Run:
    """One job in flight between the worker and the writer."""

    job: Job
    started: float
    image: LoadedImage | None = None
    result: Prediction | None = None
    compare: list[SourceRun] = field(default_factory=list)
    cache_hit: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    models: dict[str, Models] = field(default_factory=dict)
    """The models of each source when a remote worker ran it (else this process's)."""


class Worker:
    """Runs queued jobs on the resident pipeline until stopped."""

    def __init__(self, config: Config, pipe: Pipeline, journal: Journal, cache: DepthCache,
                 outputs: OutputFolder, board: Board,
                 fail: Callable[[Job, str, bool, float], None],
                 content_hash: Callable[[Path], str | None],
                 surviving_copy: Callable[[Job], Path | None] = lambda job: None,
                 claimed: Callable[[], None] = lambda: None,
                 remote: DaskStage | None = None) -> None:
        """`remote`: this worker is one in-flight slot of a cluster (`daemon.cluster`): its
        GPU stage runs on a remote worker and it loads no models here."""
        self.config = config
        self.pipe = pipe
        self.journal = journal
        self.cache = cache
        self.outputs = outputs
        self.board = board
        self.fail = fail
        self.content_hash = content_hash
        self.surviving_copy = surviving_copy
        self.claimed = claimed  # a new attempt: the fatal-error record starts afresh
        self.remote = remote
        self.paused = threading.Event()
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.busy = False
        self._prefetch = ThreadPoolExecutor(1, thread_name_prefix="sharp-prefetch")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sharp-writer")
        self._decoded: tuple[str, Path, Future[LoadedImage]] | None = None
        self._writing: Future[None] | None = None
        self._last_work = time.monotonic()
        # Overlap pays only when the models run on an accelerator; on a CPU the decode and
        # write threads would just compete with the models for the same cores.
        # A cluster's slots overlap each other instead.
        self.overlap = (pipe.device.type != "cpu" or OVERLAP_ON_CPU) and remote is None
        name = "sharp-worker" if remote is None else f"sharp-worker_{remote.slot}"
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Finish the current job and its write; False if that took longer than `timeout`."""
        self.stopping.set()
        self.wake.set()
        self._thread.join(timeout)
        finished = not self._thread.is_alive()
        self._prefetch.shutdown(wait=False, cancel_futures=True)
        self._writer.shutdown(wait=finished)
        return finished

    @property
    def writing(self) -> bool:
        return self._writing is not None and not self._writing.done()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        if self.config.models.load_at_start and self.remote is None:
            self._load_models()
        backoff = Backoff()
        while not self.stopping.is_set():
            wait = self.board.problems.guarded("worker", self._next, backoff)
            if wait:
                self.stopping.wait(wait)
        self._wait_for_writer()

    def _next(self) -> None:
        """Claim and run the oldest queued job, or wait a little for one."""
        ready = self.remote is None or self.remote.ready()
        job = None if self.paused.is_set() or not ready else self.journal.next_queued()
        if job is None:
            self._maybe_unload()
            self.wake.wait(0.5)
            self.wake.clear()
            return
        claimed = None if self.stopping.is_set() else self.journal.claim(job.key)
        if claimed is None:
            return
        self.busy = True
        self.claimed()
        if claimed.suspect:
            self._wait_for_writer()  # it runs alone: a crash now is pinned on this photo
        try:
            self._run(claimed)
        except sqlite3.Error:
            raise  # the journal gave up (stopping): the job stays running, re-run at next start
        except Abandoned:
            logger.info("{}: stopping before the cluster ran it; it runs at the next start",
                        claimed.photo)
        except Exception as exc:
            logger.exception("unexpected error on {}", claimed.photo)
            self.fail(claimed, f"{claimed.photo}: failed with an unexpected error "
                      f"({type(exc).__name__}: {exc}); see the log", False, 0.0)
        finally:
            self.busy = False
            self._last_work = time.monotonic()
            self.board.set(current_file=None, stage=None)

    def _load_models(self) -> None:
        self.board.set(phase="loading")
        sources = tuple(s for s in self.config.defaults.sources if s in MODEL_SOURCES)
        try:
            self.pipe.load(sources)
            self.board.set(model_error=None)
        except Exception as exc:
            message = str(exc) if isinstance(exc, PipelineError) else repr(exc)
            logger.error("models could not be loaded: {}", message)
            self.board.set(model_error=message, last_error=message)
        finally:
            self.board.set(phase="running", download_progress=None, stage=None)

    def _maybe_unload(self) -> None:
        minutes = self.config.daemon.unload_after_minutes
        if (minutes > 0 and self.pipe.loaded and not self.writing
                and time.monotonic() - self._last_work >= minutes * 60):
            logger.info("idle for {:g} min: unloading models to free memory", minutes)
            self.pipe.unload()

    def _decode(self, job: Job) -> LoadedImage:
        """Read the photo if it is still the content the job was queued for."""
        if file_signature(job.photo) is None:
            raise Superseded(f"{job.photo} vanished before it was processed")
        current = self.content_hash(job.photo)
        if current is not None and current != job.photo_hash:
            raise Superseded(f"{job.photo} changed after it was queued")
        try:
            return load_image(job.photo, self.config.daemon.max_pixels, self.config.inputs)
        except InputError:
            raise
        except Exception as exc:  # a decoder bug on a hostile file is still a bad input
            raise InputError(f"image could not be decoded ({type(exc).__name__}: {exc})",
                             job.photo) from exc

    def _decoded_image(self, job: Job) -> LoadedImage:
        """The prefetched decode if it was of this job's path and still its content, else
        a fresh decode (which also finds a photo that vanished or changed since)."""
        pending, self._decoded = self._decoded, None
        if pending is not None and pending[:2] == (job.key, job.photo):
            try:
                image = pending[2].result()
            except Exception:  # judged again now: the file may have moved on since
                return self._decode(job)
            if self.content_hash(job.photo) == job.photo_hash:
                return image
        return self._decode(job)

    def _prefetch_next(self, job: Job) -> None:
        """Decode the next job while this one runs, unless either is a suspect (it was
        running when the process ended): a suspect runs alone, so a crash is pinned on the
        right photo."""
        if not self.overlap or job.suspect:
            return
        upcoming = None if self.paused.is_set() else self.journal.next_queued(job.seq)
        if upcoming is not None and not upcoming.suspect:
            self._decoded = (upcoming.key, upcoming.photo,
                             self._prefetch.submit(self._decode, upcoming))

    def _stage(self, job: Job, stage: str) -> None:
        self.board.set(stage=stage)
        self.journal.set_stage(job.key, stage)

    def _follow(self, job: Job, reason: str, drop: bool) -> bool:
        """The photo vanished or changed: run the job from its new name or a surviving copy,
        else drop it (with `drop`); False if the job stays as it is."""
        copy = self.surviving_copy(job)
        outcome = self.journal.supersede(job.key, job.photo, copy, drop)
        if outcome == "moved":
            logger.info("{}; running it from {} (same content and settings)", reason, copy)
        elif outcome == "renamed":
            logger.info("{}; running it under its new name", reason)
        elif outcome == "dropped":
            logger.info("{}; skipped", reason)
        return outcome != "stays"

    def _still_arriving(self, job: Job, exc: InputError) -> bool:
        """Whether a photo that failed to decode may still be being copied (a copy that
        paused longer than `stable_seconds`); then nobody is told it failed.

        Changed since it was read: this job is dropped, and the new content, which the
        intake notices, is queued as a job of its own. Cut short and unchanged: held
        quietly for `settle_report_seconds`, then read again; only a second failure of
        the same content is reported.
        """
        try:
            current = self.content_hash(job.photo)
        except InputError:  # swapped for a link leading out, say: the failure stands
            return False
        if current is not None and current != job.photo_hash:
            self._follow(job, f"{job.photo} changed while it was read", drop=True)
            return True
        wait = self.config.daemon.settle_report_seconds
        if looks_incomplete(job.photo, exc) and self.journal.hold(job.key, time.time() + wait):
            logger.info("{}: {}; it may still be being copied, so it is read again in {:.0f} s "
                        "(reported then if it has not changed)", job.photo, exc.reason, wait)
            return True
        return False

    def _run(self, job: Job) -> None:
        started = time.monotonic()
        run = _Run(job, started)
        self.board.set(current_file=str(job.photo), stage="decode")
        try:
            t0 = time.perf_counter()
            run.image = self._decoded_image(job)
            run.timings["decode"] = time.perf_counter() - t0
            self._prefetch_next(job)
            for attempt in (1, 2):
                try:
                    self._gpu(run)
                    break
                except OutOfMemoryError as exc:
                    free_device_memory()
                    if attempt == 2:
                        raise OutOfMemoryError(f"{exc.reason}, twice; try a smaller photo or "
                                               "a lower precision in config.toml",
                                               job.photo) from exc
                    logger.warning("{}: {}; freed GPU cache, retrying once", job.photo, exc)
        except Superseded as exc:
            self._follow(job, str(exc), drop=True)
            return
        except InputError as exc:
            # Gone at the moment of reading: renamed (follow it), else a clear failure.
            if file_signature(job.photo) is None and self._follow(job, str(exc), drop=False):
                return
            if self._still_arriving(job, exc):
                return
            self.fail(job, str(exc), False, time.monotonic() - started)
            return
        except PipelineError as exc:
            self.board.set(model_error=str(exc))
            self.fail(job, str(exc), True, time.monotonic() - started)
            return
        self.board.set(model_error=None, stage="write")
        self._wait_for_writer()
        if self.overlap:
            self._writing = self._writer.submit(self._write, run)
        else:
            self._write(run)

    def _cached_depth(self, job: Job, image: LoadedImage,
                      pixels: torch.Tensor) -> DepthProvider:
        """A source's raw depth from the cache, else from its model (then cached)."""
        def depth(settings: DepthSettings) -> tuple[RawDepth | None, bool]:
            if settings.depth_source not in MODEL_SOURCES:
                return None, False
            key = self.pipe.depth_cache_key(settings)
            raw = self.cache.get(job.photo_hash, key)
            if raw is not None:
                return raw, True
            self._stage(job, "depth")
            raw = self.pipe.estimate_depth(image, settings, pixels)
            if raw is not None:
                self.cache.put(job.photo_hash, key, raw)
            return raw, False
        return depth

    def _gpu(self, run: _Run) -> None:
        job, image = run.job, run.image
        assert image is not None
        if self.remote is not None:
            done = self.remote.run(job, image, lambda name: self._stage(job, name))
            run.result, run.compare, run.cache_hit = done.result, done.compare, done.cache_hit
            run.models = done.models
            run.timings.update(done.timings)
            return
        settings = job.settings
        pixels = self.pipe.upload(image)
        within = depth_root(settings.external_depth, self.config.inputs)
        depth = self._cached_depth(job, image, pixels)
        if settings.compare:
            # Keep resident only the depth model the daemon's own default uses.
            keep = tuple(s for s in self.config.defaults.sources if s in MODEL_SOURCES)
            run.compare = run_compare(self.pipe, image, settings, pixels=pixels, depth=depth,
                                      keep=keep, within=within,
                                      stage=lambda name: self._stage(job, name))
            for source_run in run.compare:
                _to_cpu(source_run.prediction)
                for stage, seconds in source_run.timings.items():  # the job's: all sources
                    run.timings[stage] = run.timings.get(stage, 0.0) + seconds
            return
        t0 = time.perf_counter()
        raw, run.cache_hit = depth(settings)
        if raw is not None and not run.cache_hit:
            run.timings["depth"] = time.perf_counter() - t0
        self._stage(job, "sharp")
        want_internal = settings.save_internal_depth or self.config.daemon.preview
        run.result = self.pipe.predict(image, settings.replace(save_internal_depth=want_internal),
                                       raw, pixels, within=within)
        run.timings.update(run.result.timings)
        _to_cpu(run.result)

    def _wait_for_writer(self) -> None:
        """Let the previous write finish; its failure is that job's, never the next one's."""
        if self._writing is not None:
            try:
                self._writing.result()
            except Exception:
                logger.exception("writer thread error (already reported for its job)")
            self._writing = None

    def _write_files(self, run: _Run, files: list[Path]) -> Path:
        """Reserve the names in the journal (adding them to `files`), then write them;
        returns the PLY to announce."""
        job = run.job
        origin = Origin(job.photo, job.photo_hash, job.key, job.settings)
        if run.compare:
            compare = compare_names(self.outputs.path, job.photo.stem, job.settings.compare,
                                    job.settings.save_internal_depth, job.settings.formats)
            files.extend(compare.all())
            self.journal.reserve_outputs(job.key, [str(p) for p in files])
            assert run.image is not None
            sheet = contact_sheet_png(run.image, run.compare)
            reports = compare_reports(origin, run.compare, run.models or self.pipe, compare, files,
                                      {"decode": run.timings.get("decode", 0.0)})
            self.outputs.write_compare(compare, run.compare, sheet, reports)
            return compare.plys[job.settings.compare[0]]
        assert run.result is not None
        names = result_names(self.outputs.path, job.photo.stem, self.config.daemon.preview,
                             job.settings.save_internal_depth, job.settings.formats)
        files.extend(names.all())
        self.journal.reserve_outputs(job.key, [str(p) for p in files])
        models = (run.models[job.settings.depth_source] if run.models
                  else Models.of(self.pipe, job.settings))
        report = build_report(origin, run.result, models=models,
                              timings=run.timings, from_cache=run.cache_hit, files=files)
        self.outputs.write_result(names, run.result, report)
        return names.ply

    def _write(self, run: _Run) -> None:
        job = run.job
        t0 = time.perf_counter()
        files: list[Path] = []
        try:
            self.outputs.ensure()
            ply = self._write_files(run, files)
            run.timings["write"] = time.perf_counter() - t0
            self.journal.finish(job.key, [str(p) for p in files], run.timings)
        except sqlite3.Error:
            # The journal gave up (stopping): the job stays running with its names reserved,
            # so the next start deletes them and runs the photo again.
            logger.warning("{}: the journal could not be written; it runs again at the next "
                           "start", job.photo)
            return
        except (OutputError, OSError) as exc:
            self.outputs.remove(files)
            message = str(exc) if isinstance(exc, OutputError) else f"cannot write results ({exc})"
            self.fail(job, message, True, time.monotonic() - run.started)
            return
        except Exception as exc:
            logger.exception("unexpected error writing {}", job.photo)
            self.fail(job, f"{job.photo}: internal error while writing ({exc!r})", True,
                      time.monotonic() - run.started)
            return
        self.outputs.clear_error(job.photo)
        seconds = time.monotonic() - run.started
        # One line per photo in the log comes from the job event's subscriber (the service's
        # log, `python -m daemon`); this one is for debugging only.
        logger.debug("{} -> {} ({:.2f} s, {})", job.photo.name, ply.name, seconds,
                     run.timings)
        self.board.emit(JobEvent(str(job.photo), "done", str(ply), None, seconds))


def _to_cpu(result: Prediction) -> None:
    """Copy the Gaussians off the GPU now: a writer thread touching GPU tensors would wait
    behind the next photo."""
    if result.gaussians.mean_vectors.device.type != "cpu":
        result.gaussians = Gaussians(*(t.cpu() for t in result.gaussians))


def vram_used_mb(pipe: Pipeline) -> float | None:
    if pipe.device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.memory_allocated(pipe.device) / 2**20
    return None

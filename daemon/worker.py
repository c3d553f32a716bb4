"""A worker: jobs in journal order through its stage, with decoding and writing overlapped.

The daemon runs one worker per stage (one per GPU, `daemon.stage`); the journal's claim
decides which worker runs a job, so each runs once. While the GPU runs photo N, a
prefetch thread decodes photo N+1 and a writer thread writes photo N-1's PLY and report,
so the GPU waits on neither. On a CPU-only machine
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

from loguru import logger

from pipeline import (
    InputError,
    LoadedImage,
    OutOfMemoryError,
    OutputError,
    PipelineError,
    load_image,
)
from pipeline.compare import contact_sheet_png
from pipeline.depth.sources import MODEL_SOURCES

from .config import Config
from .jobs import Job
from .journal import Journal
from .outputs import OutputFolder
from .readiness import file_signature, looks_incomplete
from .results import Origin, build_report, compare_names, compare_reports, result_names
from .stage import Interrupted, Stage, StageOutput
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
    output: StageOutput = field(default_factory=StageOutput)


class Crew:
    """The daemon's workers, and what they agree on: a suspect photo (running when the
    process ended) runs alone, so a crash now is pinned on it, not on a neighbour."""

    def __init__(self) -> None:
        self.workers: list[Worker] = []
        self.lock = threading.Lock()  # held to claim a job, so `solo` is seen by all
        self.solo = threading.Event()

    def others_idle(self, me: Worker) -> bool:
        return not any(w.busy or w.writing for w in self.workers if w is not me)


class Worker:
    """Runs queued jobs on its stage until stopped; the daemon has one per stage."""

    def __init__(self, config: Config, stage: Stage, journal: Journal, outputs: OutputFolder,
                 board: Board, fail: Callable[[Job, str, bool, float], None],
                 content_hash: Callable[[Path], str | None],
                 surviving_copy: Callable[[Job], Path | None] = lambda job: None,
                 claimed: Callable[[], None] = lambda: None, crew: Crew | None = None,
                 name: str = "worker") -> None:
        self.config = config
        self.stage = stage
        self.journal = journal
        self.outputs = outputs
        self.board = board
        self.fail = fail
        self.content_hash = content_hash
        self.surviving_copy = surviving_copy
        self.claimed = claimed  # a new attempt: the fatal-error record starts afresh
        self.crew = crew or Crew()
        self.crew.workers.append(self)
        self.name = name  # in status problems: "worker", or "worker 2 (cuda:1)"
        self.slot = board.add_worker(stage.label)
        self.paused = threading.Event()
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.busy = False
        self._prefetch = ThreadPoolExecutor(1, thread_name_prefix="sharp-prefetch")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sharp-writer")
        self._decoded: tuple[str, Path, Future[LoadedImage]] | None = None
        self._writing: Future[None] | None = None
        self._last_work = time.monotonic()
        self.overlap = stage.overlap or OVERLAP_ON_CPU
        self._thread = threading.Thread(target=self._loop, name="sharp-worker", daemon=True)

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
        if self.config.models.load_at_start:
            self._load_models()
        backoff = Backoff()
        while not self.stopping.is_set():
            wait = self.board.problems.guarded(self.name, self._next, backoff)
            if wait:
                self.stopping.wait(wait)
        self._wait_for_writer()

    def _next(self) -> None:
        """Claim and run the oldest queued job, or wait a little for one."""
        ready = not self.paused.is_set() and self.stage.ready()
        job = self.journal.next_queued() if ready else None
        if job is None:
            self._maybe_unload()
            self.wake.wait(0.5)
            self.wake.clear()
            return
        with self.crew.lock:
            solo = self.crew.solo.is_set()
            claimed = None if solo or self.stopping.is_set() else self.journal.claim(job.key)
            if claimed is not None:
                self.busy = True
                if claimed.suspect:
                    self.crew.solo.set()
        if claimed is None:  # another worker took it, or a suspect is running alone
            if solo:
                self.stopping.wait(0.05)
            return
        self.claimed()
        try:
            if claimed.suspect:  # it runs alone: a crash now is pinned on this photo
                self._wait_for_writer()
                while not self.crew.others_idle(self) and not self.stopping.is_set():
                    self.stopping.wait(0.02)
            self._run(claimed)
        except sqlite3.Error:
            raise  # the journal gave up (stopping): the job stays running, re-run at next start
        except Interrupted:
            logger.info("{}: given back as the daemon stops; it runs at the next start",
                        claimed.photo)
        except Exception as exc:
            logger.exception("unexpected error on {}", claimed.photo)
            self.fail(claimed, f"{claimed.photo}: failed with an unexpected error "
                      f"({type(exc).__name__}: {exc}); see the log", False, 0.0)
        finally:
            if claimed.suspect:
                self.crew.solo.clear()
            self.busy = False
            self._last_work = time.monotonic()
            self.board.work(self.slot, None, None)

    def _load_models(self) -> None:
        self.board.set(phase="loading")
        sources = tuple(s for s in self.config.defaults.sources if s in MODEL_SOURCES)
        try:
            self.stage.load(sources)
            self.board.set(model_error=None)
        except Exception as exc:
            message = str(exc) if isinstance(exc, PipelineError) else repr(exc)
            logger.error("models could not be loaded: {}", message)
            self.board.set(model_error=message, last_error=message)
        finally:
            self.board.set(phase="running", download_progress=None)

    def _maybe_unload(self) -> None:
        minutes = self.config.daemon.unload_after_minutes
        if (minutes > 0 and self.stage.loaded and not self.writing
                and time.monotonic() - self._last_work >= minutes * 60):
            logger.info("idle for {:g} min: unloading models to free memory", minutes)
            self.stage.unload()

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
        self.board.work(self.slot, str(job.photo), stage)
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
        self.board.work(self.slot, str(job.photo), "decode")
        try:
            t0 = time.perf_counter()
            run.image = self._decoded_image(job)
            decode = time.perf_counter() - t0
            self._prefetch_next(job)
            for attempt in (1, 2):
                try:
                    run.output = self.stage.run(job, run.image,
                                                lambda name: self._stage(job, name))
                    run.output.timings = {"decode": decode, **run.output.timings}
                    break
                except OutOfMemoryError as exc:
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
        self.board.set(model_error=None)
        self.board.work(self.slot, str(job.photo), "write")
        self._wait_for_writer()
        if self.overlap:
            self._writing = self._writer.submit(self._write, run)
        else:
            self._write(run)

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
        job, out = run.job, run.output
        origin = Origin(job.photo, job.photo_hash, job.key, job.settings)
        if out.compare:
            with self.outputs.reserved(lambda held: compare_names(
                    self.outputs.path, job.photo.stem, job.settings.compare,
                    job.settings.save_internal_depth, job.settings.formats, held)) as compare:
                files.extend(compare.all())
                self.journal.reserve_outputs(job.key, [str(p) for p in files])
                assert run.image is not None
                sheet = contact_sheet_png(run.image, out.compare)
                reports = compare_reports(origin, out.compare, self.stage.models, compare,
                                          files, {"decode": out.timings.get("decode", 0.0)})
                self.outputs.write_compare(compare, out.compare, sheet, reports)
            return compare.plys[job.settings.compare[0]]
        assert out.result is not None
        with self.outputs.reserved(lambda held: result_names(
                self.outputs.path, job.photo.stem, self.config.daemon.preview,
                job.settings.save_internal_depth, job.settings.formats, held)) as names:
            files.extend(names.all())
            self.journal.reserve_outputs(job.key, [str(p) for p in files])
            report = build_report(origin, out.result, models=self.stage.models(job.settings),
                                  timings=out.timings, from_cache=out.cache_hit, files=files)
            self.outputs.write_result(names, out.result, report)
        return names.ply

    def _write(self, run: _Run) -> None:
        job = run.job
        t0 = time.perf_counter()
        files: list[Path] = []
        try:
            self.outputs.ensure()
            ply = self._write_files(run, files)
            run.output.timings["write"] = time.perf_counter() - t0
            self.journal.finish(job.key, [str(p) for p in files], run.output.timings)
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
                     run.output.timings)
        self.board.emit(JobEvent(str(job.photo), "done", str(ply), None, seconds))

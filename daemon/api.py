"""The daemon's face: start, stop, pause, resume, status, subscribe. `service/` wraps this.

    daemon = Daemon(load_config(None))
    daemon.start()          # returns at once; watcher, intake and worker threads run
                            # (one worker per device of `[models] device`)
    ...
    daemon.stop()
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock, Timeout
from loguru import logger

from pipeline import Pipeline, PipelineError

from .config import Config, ConfigError, check_folders, inside
from .crashes import CrashRecord, crashed_thread, first_line
from .depth_cache import DepthCache
from .folder_lock import FolderInUse, FolderLock
from .intake import Intake
from .jobs import Job, finished_results
from .journal import Journal
from .outputs import OutputFolder
from .readiness import file_signature
from .stage import Stage, build_stages
from .status import Board, JobEvent, Status
from .watcher import is_photo
from .worker import Crew, Worker

IDLE_GRACE = 0.3


class DaemonError(RuntimeError):
    """The daemon cannot start (another one runs on the same state folder or the same
    inputs or outputs folder, say)."""


class Daemon:
    """Watch the inputs folder and turn every photo into a PLY, with models kept resident."""

    def __init__(self, config: Config, pipeline: Pipeline | None = None,
                 record_crashes: bool = False) -> None:
        """`pipeline`: the one pipeline to run on (tests pass theirs, loaded once), else one
        is made per device of `[models] device`. `record_crashes`: this process's fatal
        errors are recorded for the next start (see `daemon.crashes`); for a process that
        runs nothing but the daemon."""
        self.config = config
        self.record_crashes = record_crashes
        self.board = Board()
        self._pipeline = pipeline
        state = config.daemon.state_dir
        self.outputs = OutputFolder(config.outputs, config.inputs)
        self._lock_file = FileLock(str(state / "daemon.lock"), timeout=0, thread_local=False)
        self._folder_locks = [FolderLock(folder, role, config.source) for role, folder in
                              (("inputs", config.inputs), ("outputs", config.outputs))]
        self._crashes = CrashRecord(state)
        self.journal: Journal | None = None
        self.cache: DepthCache | None = None
        self.intake: Intake | None = None
        self.stages: list[Stage] = []
        self.workers: list[Worker] = []

    def start(self) -> None:
        """Open the journal, recover interrupted jobs, then watch and work (non-blocking)."""
        if self.board.phase == "running":
            return
        try:
            check_folders(self.config, str(self.config.source or "config"))
        except ConfigError as exc:
            raise DaemonError(str(exc)) from None
        state = self.config.daemon.state_dir
        for folder in (state, self.config.inputs, self.config.outputs):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                reason = exc.strerror or exc
                raise DaemonError(f"cannot create folder {folder} ({reason})") from None
        try:
            self._lock_file.acquire()
        except Timeout:
            raise DaemonError(f"another sharp-watch daemon is already using {state}") from None
        self._lock_folders()
        self.journal = self._open_journal(state / "journal.sqlite3")
        self.cache = DepthCache(state / "depth-cache", self.config.daemon.depth_cache_mb)
        try:
            self.stages = build_stages(self.config, self.cache, self._progress, self._pipeline,
                                       self.board.problems)
        except PipelineError as exc:  # a device this machine lacks, say
            self.journal.close()
            self._release_locks()
            raise DaemonError(str(exc)) from None
        for tmp in self.outputs.clean_temp():
            logger.info("removed leftover temp file {}", tmp.name)
        record = self._crashes.take()
        if record is not None:
            logger.error("the last run ended with a fatal error ({}); the photos it was working "
                         "on run alone, after the others. Where it crashed:\n{}",
                         first_line(record), crashed_thread(record))
        if self.record_crashes:
            self._crashes.arm()
        stale, given_up = self.journal.recover(first_line(record) if record else None)
        self.outputs.remove([Path(p) for p in stale])
        for job, error in given_up:
            self._report_failure(job.photo, error, 0.0)
        self.board.set(workers=[])
        crew = Crew()
        self.workers = [Worker(self.config, stage, self.journal, self.outputs, self.board,
                               self._failed_job, self._content_hash, self._surviving_copy,
                               self._crashes.clear, crew,
                               "worker" if len(self.stages) == 1 else f"worker {n} ({stage.label})")
                        for n, stage in enumerate(self.stages, 1)]
        self.intake = Intake(self.config, self.journal, self._wake, self._failed_photo,
                             self._stuck, self.board.problems, renewed=self._relock_folders)
        logger.info("watching {} -> {} with {} worker(s) on {}", self.config.inputs,
                    self.config.outputs, len(self.workers),
                    ", ".join(stage.label for stage in self.stages))
        self.board.set(phase="running")
        self.intake.start()
        for worker in self.workers:
            worker.start()

    def _wake(self) -> None:
        for worker in self.workers:
            worker.wake.set()

    def _lock_folders(self) -> None:
        """Hold the inputs' and the outputs' folder locks, or release everything and refuse."""
        for lock in self._folder_locks:
            try:
                warning = lock.acquire()
            except FolderInUse as exc:
                self._release_locks()
                raise DaemonError(str(exc)) from None
            if warning is not None:
                logger.warning("{}", warning)

    def _relock_folders(self) -> None:
        """A folder made again lost its lock file: lock the new one. Another daemon that
        took it meanwhile is reported, not fought (this one keeps running)."""
        for lock in self._folder_locks:
            try:
                warning = lock.renew()
            except FolderInUse as exc:
                self.board.problems.report("folder lock", str(exc), exc)
                continue
            if warning is not None:
                logger.warning("{}", warning)

    def _release_locks(self) -> None:
        for lock in self._folder_locks:
            lock.release()
        if self._lock_file.is_locked:
            self._lock_file.release()

    def _open_journal(self, path: Path) -> Journal:
        """The journal; a damaged one is moved aside, and a fresh one learns the results
        already in the outputs folder, so no photo is done twice."""
        try:
            journal = Journal(path, self.board.problems)
        except (sqlite3.Error, OSError) as exc:
            self._release_locks()
            raise DaemonError(f"cannot open the journal {path} ({exc})") from None
        if journal.damaged_copy is not None:
            logger.warning("journal {} was damaged ({}); moved it aside as {} and started a "
                           "fresh one", path, journal.damage, journal.damaged_copy.name)
        if journal.fresh:
            found = journal.seed_done(finished_results(self.config.outputs))
            if found:
                logger.info("fresh journal: {} result(s) already in {} will not be made again",
                            found, self.config.outputs)
        return journal

    def stop(self, timeout: float = 30.0) -> None:
        """Stop watching, finish (or after `timeout`, abandon) the current job, release.

        A job abandoned here is not counted against its photo (see `Journal.recover`), and
        a journal that is locked or full does not hold the stop up.
        """
        for worker in self.workers:
            worker.stopping.set()  # claims nothing new from here on
        for stage in self.stages:
            stage.stop()  # a cluster slot gives back a photo not yet started
        if self.journal is not None:
            self.journal.abort.set()
            self.journal.mark_stopping()
        if self.intake is not None:
            self.intake.stop()
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            if not worker.stop(max(0.0, deadline - time.monotonic())):
                logger.warning("{}: current job abandoned; it runs again at the next start",
                               worker.name)
        if self.journal is not None:
            # Also when a job was abandoned: its thread must not touch the journal (or write
            # results, which it reserves there first) once another daemon may own them.
            self.journal.close()
        self._release_locks()
        self._crashes.disarm()
        self.board.idle()
        self.board.set(phase="stopped")

    def pause(self) -> None:
        """Keep watching and queueing; run nothing after the current job."""
        for worker in self.workers:
            worker.paused.set()

    def resume(self) -> None:
        for worker in self.workers:
            worker.paused.clear()
            worker.wake.set()

    def rerun(self, photo: Path | str) -> Path:
        """Queue a photo of the inputs folder now, skipping the settle wait: for a sidecar
        just written whole (the viewer's Apply). Raises ValueError naming what is wrong."""
        path = Path(photo)
        if self.intake is None:
            raise ValueError("sharp-watch is not running")
        if not path.is_absolute() or not inside(path, self.config.inputs):
            raise ValueError(f"{path} is not in the inputs folder {self.config.inputs}")
        if not is_photo(path) or file_signature(path) is None:
            raise ValueError(f"{path} is not a photo sharp-watch can read")
        self.intake.rush(path)
        return path

    def subscribe(self, callback: Callable[[JobEvent], None]) -> None:
        """`callback(event)` runs on a daemon thread after every finished or failed job."""
        self.board.subscribe(callback)

    def status(self) -> Status:
        b = self.board
        journal = self.journal if b.phase != "stopped" else None
        counts = journal.counts() if journal is not None else {}
        suspects = tuple(journal.suspects()) if journal is not None else ()
        with b.lock:
            state = b.phase
            busy = b.busy_worker()
            if state == "running":
                if self.workers and self.workers[0].paused.is_set():
                    state = "paused"
                elif b.model_error is not None:
                    state = "error"
                elif busy is not None:
                    state = "working"
                else:
                    state = "idle"
            stage = busy.stage if busy is not None else None
            return Status(state=state, current_file=busy.current_file if busy else None,
                          stage="downloading" if b.download_progress is not None else stage,
                          queue_length=counts.get("queued", 0), done=b.done, failed=b.failed,
                          last_error=b.last_error, vram_used_mb=self._vram_used_mb(),
                          download_progress=b.download_progress,
                          inputs=str(self.config.inputs), outputs=str(self.config.outputs),
                          problems=self._problems() if state != "stopped" else (),
                          suspects=suspects, workers=tuple(b.workers))

    def _vram_used_mb(self) -> float | None:
        """All workers' GPU memory in use; None where none has a GPU."""
        used = [mb for mb in (stage.vram_used_mb() for stage in self.stages) if mb is not None]
        return sum(used) if used else None

    def _problems(self) -> tuple[str, ...]:
        """Each failing or stalled thread's line, and any thread that has ended (a bug)."""
        parts = [(w.name, w) for w in self.workers] + [("intake", self.intake)]
        ended = tuple(f"{name}: thread has stopped unexpectedly (see the log); restart "
                      "sharp-watch" for name, part in parts if part is not None and not part.alive)
        return self.board.problems.lines() + ended

    def wait_until_idle(self, timeout: float) -> bool:
        """True once nothing is settling, queued, running or being written.

        Idle must hold for `IDLE_GRACE` seconds in a row, so a file event still on its
        way from the operating system is not missed.
        """
        deadline = time.monotonic() + timeout
        idle_since: float | None = None
        while time.monotonic() < deadline:
            if not self._idle():
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= IDLE_GRACE:
                return True
            time.sleep(0.02)
        return False

    def _idle(self) -> bool:
        if self.journal is None or self.intake is None or not self.workers:
            return False
        counts = self.journal.counts()
        return (self.intake.idle and counts["queued"] == 0 and counts["running"] == 0
                and not any(w.busy or w.writing for w in self.workers))

    def _content_hash(self, path: Path) -> str | None:
        if self.intake is None:
            return None
        return self.intake.content_hash(path, self.config.inputs)

    def _surviving_copy(self, job: Job) -> Path | None:
        return self.intake.surviving_copy(job) if self.intake is not None else None

    def _progress(self, name: str, fraction: float) -> None:
        self.board.set(download_progress=None if fraction >= 1.0 else max(0.0, fraction))

    def _report_failure(self, photo: Path, message: str, seconds: float) -> None:
        # The log line per failed photo comes from the event's subscriber (as for done ones).
        logger.debug("{}", message)
        if self.outputs.write_error(photo, message) is None:
            logger.error("could not write {}", self.outputs.error_path(photo))
        self.board.emit(JobEvent(str(photo), "failed", None, message, seconds))

    def _failed_job(self, job: Job, message: str, retryable: bool, seconds: float) -> None:
        assert self.journal is not None
        if self.journal.fail(job.key, message, retryable) is not None and retryable:
            # An automatic retry that failed again for a passing reason: the note is brought
            # up to date, but a second event would notify the user of what they know.
            logger.info("{} (retried later)", message)
            self.outputs.write_error(job.photo, message)
            return
        self._report_failure(job.photo, message, seconds)

    def _failed_photo(self, photo: Path, key: str, message: str) -> None:
        self._report_failure(photo, message, 0.0)

    def _stuck(self, path: Path, seconds: float) -> None:
        message = (f"{path}: still being written or locked after {seconds:.0f} s; it will be "
                   "processed as soon as it stops changing")
        logger.warning("{}", message)
        self.outputs.write_error(path, message)
        self.board.set(last_error=message)


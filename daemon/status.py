"""What the daemon reports outward: a status snapshot, one event per finished job, and
the problems of its long-lived threads.

A thread that hits trouble (journal locked by another program, disk full, inputs folder
replaced by a file, a bug) never dies: it reports the trouble here once, backs off, and
retries until the cause goes away, which it reports once too. Status shows each
ongoing problem as one line.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from loguru import logger

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
STALL_AFTER_S = 60.0


@dataclass(frozen=True)
class WorkerStatus:
    """One worker: where its models run ("cuda:0"), and the photo and stage it is on."""

    device: str
    current_file: str | None = None
    stage: str | None = None


@dataclass(frozen=True)
class Status:
    """A snapshot for the tray, the CLI and tests; counts are since this start.

    `state`: starting, loading, idle, working, paused, error (models failed to load or
    run; cleared by the next success) or stopped. `stage`: decode, depth, sharp, write,
    downloading, or None. `problems`: one line per long-lived thread that is failing or
    stalled (journal locked, disk full, inputs folder gone...), empty when all is well.
    `suspects`: one line per photo that was running when the process ended (a crash, a
    kill): it runs alone after the others, or was given up on after crashing it.
    `workers`: each worker (one per device); `current_file` and `stage` are the first
    busy one's.
    """

    state: str
    current_file: str | None
    stage: str | None
    queue_length: int
    done: int
    failed: int
    last_error: str | None
    vram_used_mb: float | None
    download_progress: float | None
    inputs: str
    outputs: str
    problems: tuple[str, ...] = ()
    suspects: tuple[str, ...] = ()
    workers: tuple[WorkerStatus, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class JobEvent:
    """One finished (`done`) or failed (`failed`) photo."""

    photo: str
    outcome: str
    output: str | None
    error: str | None
    seconds: float

    def line(self) -> str:
        """One log line: file, outcome, time, and the result or the reason."""
        name = os.path.basename(self.photo)
        if self.outcome == "done":
            return f"{name}: done in {self.seconds:.1f} s -> {self.output}"
        return f"{name}: {self.outcome} after {self.seconds:.1f} s: {self.error}"


class Backoff:
    """How long a failing loop waits before its next try: 0.5 s, doubling up to 30 s."""

    def __init__(self, first: float = BACKOFF_FIRST_S, cap: float = BACKOFF_MAX_S) -> None:
        self.first = first
        self.cap = cap
        self._next = first

    def next(self) -> float:
        delay, self._next = self._next, min(self._next * 2, self.cap)
        return delay

    def reset(self) -> None:
        self._next = self.first


def thread_role() -> str:
    """`worker`, `intake`, `writer`, `prefetch`... for the calling thread (`daemon` otherwise)."""
    name = threading.current_thread().name
    return name.removeprefix("sharp-").split("_")[0] if name.startswith("sharp-") else "daemon"


def describe(exc: BaseException) -> str:
    """One line a user can act on, for the log and `Status.problems`."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, sqlite3.Error):
        lower = text.lower()
        if "locked" in lower or "busy" in lower:
            return f"journal is locked by another program ({text})"
        if "full" in lower:
            return f"the drive holding the journal is full ({text})"
        if "malformed" in lower or "not a database" in lower:
            return f"the journal is damaged ({text}); restart sharp-watch to rebuild it"
        return f"journal cannot be used ({text})"
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return f"{type(exc).__name__}: {text}"


def _expected(exc: BaseException) -> bool:
    """Trouble from outside (journal, disk), worth one line; anything else gets a traceback."""
    return isinstance(exc, (sqlite3.Error, OSError))


class Problems:
    """Ongoing trouble of the daemon's threads, one entry per thread and topic.

    `report` and `clear` log only when the state changes, so a thread retrying every
    few seconds writes two lines in all, not one per try.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failing: dict[tuple[str, str], tuple[str, float]] = {}
        self._busy: dict[str, tuple[str, float]] = {}

    def report(self, name: str, reason: str, exc: BaseException | None = None,
               topic: str = "") -> None:
        with self._lock:
            previous = self._failing.get((name, topic))
            if previous is not None and previous[0] == reason:
                return
            self._failing[(name, topic)] = (reason, time.time())
        traceback = exc if exc is not None and not _expected(exc) else None
        logger.opt(exception=traceback).warning("{}: {}; retrying", name, reason)

    def clear(self, name: str, topic: str = "") -> None:
        with self._lock:
            previous = self._failing.pop((name, topic), None)
        if previous is not None:
            logger.info("{}: working again after {:.0f} s ({})", name,
                        time.time() - previous[1], previous[0])

    @contextmanager
    def busy(self, name: str, what: str) -> Iterator[None]:
        """Mark `name` as busy with `what`: reported as stalled after `STALL_AFTER_S`."""
        with self._lock:
            self._busy[name] = (what, time.monotonic())
        try:
            yield
        finally:
            with self._lock:
                self._busy.pop(name, None)

    def lines(self) -> tuple[str, ...]:
        now = time.monotonic()
        with self._lock:
            failing = sorted(self._failing.items())
            stalled = sorted((name, what, now - start) for name, (what, start)
                             in self._busy.items() if now - start >= STALL_AFTER_S)
        out = [f"{name}: {reason} since {time.strftime('%H:%M:%S', time.localtime(since))}; "
               "retrying" for (name, _), (reason, since) in failing]
        out += [f"{name}: no progress for {seconds:.0f} s on {what}"
                for name, what, seconds in stalled]
        return tuple(out)

    def guarded(self, name: str, step: Callable[[], None], backoff: Backoff) -> float:
        """Run one loop step; on any exception report it and return how long to wait before
        the next try (0 after a success, which also clears the report)."""
        try:
            step()
        except Exception as exc:
            self.report(name, describe(exc), exc)
            return backoff.next()
        backoff.reset()
        self.clear(name)
        return 0.0


class Board:
    """The live, mutable state behind `Status`, shared by the daemon's threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.problems = Problems()
        self.phase = "starting"
        self.model_error: str | None = None
        self.workers: list[WorkerStatus] = []
        self.done = 0
        self.failed = 0
        self.last_error: str | None = None
        self.download_progress: float | None = None
        self._subscribers: list[Callable[[JobEvent], None]] = []

    def set(self, **changes: Any) -> None:
        with self.lock:
            for name, value in changes.items():
                setattr(self, name, value)

    def add_worker(self, device: str) -> int:
        """A new worker's slot (its index in `workers`)."""
        with self.lock:
            self.workers.append(WorkerStatus(device))
            return len(self.workers) - 1

    def work(self, slot: int, current_file: str | None, stage: str | None) -> None:
        """What the worker in `slot` is on now (None, None: nothing)."""
        with self.lock:
            self.workers[slot] = dataclasses.replace(self.workers[slot],
                                                     current_file=current_file, stage=stage)

    def idle(self) -> None:
        """Every worker on nothing (the daemon stopped)."""
        with self.lock:
            self.workers = [WorkerStatus(w.device) for w in self.workers]

    def busy_worker(self) -> WorkerStatus | None:
        """The first worker on a photo; call with `lock` held."""
        return next((w for w in self.workers if w.current_file is not None), None)

    def subscribe(self, callback: Callable[[JobEvent], None]) -> None:
        with self.lock:
            self._subscribers.append(callback)

    def emit(self, event: JobEvent) -> None:
        """Count the outcome and tell every subscriber; a failing subscriber is only logged."""
        with self.lock:
            if event.outcome == "done":
                self.done += 1
            else:
                self.failed += 1
                self.last_error = event.error
            subscribers = list(self._subscribers)
        failed = False
        for callback in subscribers:
            try:
                callback(event)
            except Exception as exc:
                failed = True
                name = getattr(callback, "__qualname__", type(callback).__name__)
                self.problems.report("events", f"subscriber {name} failed ({describe(exc)})",
                                     exc)
        if not failed:
            self.problems.clear("events")

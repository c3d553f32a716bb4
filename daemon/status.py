"""What the daemon reports outward: a status snapshot and one event per finished job."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loguru import logger


@dataclass(frozen=True)
class Status:
    """A snapshot for the tray, the CLI and tests; counts are since this start.

    `state`: starting, loading, idle, working, paused, error (models failed to load or
    run; cleared by the next success) or stopped. `stage`: decode, depth, sharp, write,
    downloading, or None. `problems`: one line per long-lived thread that is failing or
    stalled (journal locked, disk full, inputs folder gone...), empty when all is well.
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


class Board:
    """The live, mutable state behind `Status`, shared by the daemon's threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.phase = "starting"
        self.model_error: str | None = None
        self.current_file: str | None = None
        self.stage: str | None = None
        self.done = 0
        self.failed = 0
        self.last_error: str | None = None
        self.download_progress: float | None = None
        self._subscribers: list[Callable[[JobEvent], None]] = []

    def set(self, **changes: Any) -> None:
        with self.lock:
            for name, value in changes.items():
                setattr(self, name, value)

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
        for callback in subscribers:
            try:
                callback(event)
            except Exception:
                logger.exception("a job-event subscriber raised; ignored")

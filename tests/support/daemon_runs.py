"""Watching an in-process `Daemon` run: wait for it to go idle, record its events and log
lines, list its results and count SHARP's forwards. For tests that drop files into a
running daemon (`running_daemon` in tests/conftest.py starts one)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from loguru import logger

from daemon import Daemon, JobEvent
from pipeline import Pipeline


def settle(daemon: Daemon, timeout: float = 60.0) -> None:
    """Let watchdog deliver recent events, then wait for the daemon to go idle."""
    time.sleep(0.4)
    assert daemon.wait_until_idle(timeout), f"daemon not idle after {timeout} s"


def plys(outputs: Path, stem: str | None = None) -> list[Path]:
    """The result PLYs in `outputs`, oldest first; with `stem`, only those of the photo with
    that stem (read from each report, so `cat` never matches `cat_2`'s results)."""
    found = sorted(outputs.glob("*.ply"), key=lambda p: p.stat().st_mtime_ns)
    return [p for p in found if stem is None or stem_of(p) == stem]


def reports(outputs: Path) -> list[dict[str, Any]]:
    """The JSON reports of the results in `outputs`, oldest first."""
    return [json.loads(p.with_suffix(".json").read_text(encoding="utf-8"))
            for p in plys(outputs)]


def stem_of(ply: Path) -> str:
    """The stem of the photo a result was made from, as its report names it."""
    return json.loads(ply.with_suffix(".json").read_text(encoding="utf-8"))["photo"].rsplit(
        "/", 1)[-1].rsplit(".", 1)[0]


@contextmanager
def events_of(daemon: Daemon) -> Iterator[list[JobEvent]]:
    """Every job event the daemon sends from now on."""
    seen: list[JobEvent] = []
    daemon.subscribe(seen.append)
    yield seen


@contextmanager
def log_lines() -> Iterator[list[str]]:
    """Every log record while the block runs, as `LEVEL message` (with any traceback)."""
    lines: list[str] = []

    def sink(message: Any) -> None:
        record = message.record
        text = f"{record['level'].name} {record['message']}"
        if record["exception"] is not None:
            text += " Traceback"
        lines.append(text)

    handle = logger.add(sink, level="DEBUG")
    try:
        yield lines
    finally:
        logger.remove(handle)


def sharp_calls(pipe: Pipeline) -> int:
    """How many forwards the SHARP double of `pipe` has run (tests/support/sharp_double.py)."""
    return int(pipe.sharp.predictor.calls)

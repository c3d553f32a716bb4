"""Logging: loguru to the console and to a rotating, retained file in the per-user log dir.

The libraries underneath log through the standard `logging` module with their own
stderr handlers; `route_library_logging` swaps those for one that forwards into loguru,
so everything lands in the same file, warnings included. Tracebacks go to the file only.

Messages carry file names, which anyone who can drop a file chooses: `_escape_record`
writes their control characters as escapes before any sink sees them, and a traceback's
lines are indented, so no name can move the terminal's cursor or forge a log line. The
log folder and file are the owner's alone (POSIX modes; on Windows the per-user AppData
folder is already private).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import traceback
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from loguru import logger

if TYPE_CHECKING:
    from daemon.status import JobEvent

from .text import printable

LOG_NAME = "sharp-watch.log"
LIBRARIES = ("torch", "transformers", "huggingface_hub", "watchdog", "PIL", "filelock")
_LIBRARY_SETUP = ("torch", "transformers.utils.logging", "huggingface_hub.utils.logging")
FILE_FORMAT = ("{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {thread.name} | {name}:{line} | "
               "{message}\n{extra[trace]}")
TRACE_INDENT = "    "
"""Every traceback line starts with this, so none can pass for a record of its own."""


class InterceptHandler(logging.Handler):
    """Forwards standard `logging` records to loguru, keeping level and caller."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        frame: FrameType | None = logging.currentframe()
        depth = 2
        while frame is not None and frame.f_code.co_filename == logging.__file__:
            frame, depth = frame.f_back, depth + 1
        logger.opt(depth=depth, exception=record.exc_info).log(level, record.getMessage())


def _console_format(record: Any) -> str:
    return "<green>{time:HH:mm:ss}</green> <level>{level: <7}</level> {message}\n"


def _file_format(record: Any) -> str:
    """A function, not the string: loguru would append its own, unescaped `{exception}`."""
    return FILE_FORMAT


def _escape_record(record: Any) -> None:
    """Loguru patcher: escape the message; render any traceback as indented, escaped lines."""
    record["message"] = printable(record["message"])
    trace = ""
    if record["exception"] is not None:
        kind, value, tb = record["exception"]
        text = "".join(traceback.format_exception(kind, value, tb))
        trace = "".join(f"{TRACE_INDENT}{printable(line)}\n"
                        for line in text.rstrip("\n").split("\n"))
    record["extra"]["trace"] = trace


def _owner_only(path: str, flags: int) -> int:
    """Opener for the log file: created 0600, and an older, wider file is narrowed."""
    fd = os.open(path, flags, 0o600)
    if sys.platform != "win32":
        os.fchmod(fd, 0o600)
    return fd


def setup(log_dir: Path, level: str = "INFO", console: bool = True) -> Path:
    """Send logs to the console (when there is one) and to `<log_dir>/sharp-watch.log`."""
    log_dir = Path(log_dir)
    if not log_dir.is_dir():
        log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = log_dir / LOG_NAME
    logger.remove()
    logger.configure(patcher=_escape_record)
    if console and sys.stderr is not None:
        logger.add(sys.stderr, level=level.upper(), format=_console_format, colorize=None)
    file_level = min(logger.level(level.upper()).no, logger.level("INFO").no)
    logger.add(path, level=file_level, format=_file_format, opener=_owner_only,
               rotation="10 MB", retention=5, encoding="utf-8", enqueue=True)
    logging.basicConfig(handlers=[InterceptHandler()], level=logging.INFO, force=True)
    logging.captureWarnings(True)
    return path


def route_library_logging() -> None:
    """Make torch, transformers, huggingface_hub and watchdog log into loguru.

    Their logging is configured on import (each adds its own stderr handler), so they are
    imported first and then given the forwarding handler instead.
    """
    for module in _LIBRARY_SETUP:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    transformers_logging = sys.modules.get("transformers.utils.logging")
    if transformers_logging is not None:
        transformers_logging.get_logger()
    for name in LIBRARIES:
        library = logging.getLogger(name)
        library.handlers = [InterceptHandler()]
        library.propagate = False


def log_job(event: JobEvent) -> None:
    """`Daemon.subscribe` callback: the daemon logs its per-photo detail at DEBUG only, so
    this is the one INFO/WARNING line per photo."""
    if event.outcome == "done":
        logger.info(event.line())
    else:
        logger.warning(event.line())

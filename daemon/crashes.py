"""The evidence that a photo crashed the process: Python's fatal-error record.

`faulthandler` writes a record to a file when the process dies of a fatal signal
(SIGSEGV, SIGFPE, SIGABRT, SIGBUS, SIGILL) or, on Windows, of a fatal exception (an access
violation...). Nothing writes one when the process is killed from outside: SIGKILL,
TerminateProcess (Task Manager, `os.kill` on Windows), a power cut, a logoff. So at the
next start the journal's `running` jobs ended either with a record (a crash, which
counts against the photo) or without one (an interruption, which alone never gives a
photo up); `Journal.recover` weighs them.

The record is `<state_dir>/fatal-error.txt`. It is emptied whenever a photo is claimed,
so a record (Windows also writes one for an exception that is then handled) belongs to
the attempts running at the end. A clean stop deletes it. Only the process's entry
points arm it (`python -m daemon`, `sharp-watch run`): the handler is process-wide, and
a program that embeds the daemon may have its own.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import threading
from pathlib import Path
from typing import BinaryIO

RECORD_NAME = "fatal-error.txt"
_MARKERS = ("Fatal Python error", "Windows fatal exception")


class CrashRecord:
    """The fatal-error record of one state folder: read the last run's, arm this run's."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / RECORD_NAME
        self._file: BinaryIO | None = None
        self._lock = threading.Lock()

    def take(self) -> str | None:
        """The record the last run left, whole (None if it ended without one), removed."""
        try:
            text = self.path.read_bytes().decode("utf-8", "replace")
        except OSError:
            return None
        with contextlib.suppress(OSError):
            self.path.unlink()
        return text.strip() if any(marker in text for marker in _MARKERS) else None

    def arm(self) -> None:
        """Have a fatal error of this process write its record here."""
        self._file = open(self.path, "wb")  # noqa: SIM115 - open until `disarm`
        faulthandler.enable(self._file, all_threads=True)

    def clear(self) -> None:
        """A new attempt starts: an earlier record belongs to no photo still running."""
        with self._lock:
            if self._file is not None:
                os.ftruncate(self._file.fileno(), 0)
                os.lseek(self._file.fileno(), 0, os.SEEK_SET)

    def disarm(self) -> None:
        """A clean stop: no record, no file."""
        with self._lock:
            file, self._file = self._file, None
        if file is None:
            return
        faulthandler.disable()
        file.close()
        with contextlib.suppress(OSError):
            self.path.unlink()


def first_line(record: str) -> str:
    """The line that names the fatal error (`Fatal Python error: Segmentation fault`)."""
    return next((line.strip() for line in record.splitlines()
                 if any(marker in line for marker in _MARKERS)), record.strip())


def crashed_thread(record: str) -> str:
    """The frames of the thread that crashed, innermost first (the record lists every
    thread's)."""
    if "Current thread " not in record:
        return ""
    block = record.split("Current thread ", 1)[1].split("\n\n", 1)[0]
    return "\n".join(line.strip() for line in block.splitlines()[1:])

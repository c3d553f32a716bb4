"""When a noted file is complete: same size and mtime for a while, and openable for reading.

A copy in progress keeps changing size or mtime; on Windows it is also locked, so the
open check fails until the copier closes it. Several events for one path collapse into
one pending entry, which is also how saving a sidecar twice quickly runs its photo once.
A file that never settles is reported once (and still waited for), never dropped.

A copy can also pause longer than the stability window (USB, MTP, a network share, a
phone app) and be read half-written. `looks_incomplete` tells such a decode failure
(empty, or the decoder ran out of data) from a damaged file, so the worker can wait for
the rest instead of reporting a good photo as failed.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

Signature = tuple[int, int, int, int]


@dataclass
class _Pending:
    first_seen: float
    signature: Signature | None
    stable_since: float
    reported: bool = False


def file_signature(path: Path) -> Signature | None:
    """(size, mtime, file id, ctime), or None when the path is gone or not a regular file.

    The file id and ctime catch new content that kept the old size and modification time
    (copy tools that preserve times): a replaced file has a new id, and on POSIX any
    write or `utime` moves ctime, which no copy tool can set.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns


def openable(path: Path) -> bool:
    """Whether another program still holds the file (Windows locks files being copied)."""
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError:
        return False
    return True


_CUT_SHORT = ("truncated", "unexpected end", "end of file", "premature end")
"""What decoders say when the data stops early (Pillow: "image file is truncated",
"Truncated File Read"; libheif: "Unexpected end of file")."""


def looks_incomplete(path: Path, error: BaseException) -> bool:
    """Whether a decode failure of `path` is what a copy still in progress gives: the file
    is empty, a decoder under `error` ran out of data, or a WebP is shorter than its header
    says (libwebp only says "could not create decoder object"). A damaged or foreign file
    (bit flips, garbage, not an image) is not: it fails at once."""
    signature = file_signature(path)
    if signature is not None and signature[0] == 0:
        return True
    cause = error.__cause__
    while cause is not None:
        if isinstance(cause, EOFError) or any(w in str(cause).lower() for w in _CUT_SHORT):
            return True
        cause = cause.__cause__
    return signature is not None and _short_riff(path, signature[0])


def _short_riff(path: Path, size: int) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    declared = int.from_bytes(head[4:8], "little") + 8
    return len(head) == 12 and head[:4] == b"RIFF" and head[8:] == b"WEBP" and declared > size


class Settler:
    """Pending paths and the one rule that says when each is ready."""

    def __init__(self, stable_seconds: float, report_after: float,
                 clock=time.monotonic) -> None:
        self.stable_seconds = stable_seconds
        self.report_after = report_after
        self.clock = clock
        self._pending: dict[Path, _Pending] = {}
        self._lock = threading.Lock()

    def note(self, path: Path) -> None:
        """`path` changed (or may have): restart its stability window."""
        now = self.clock()
        with self._lock:
            entry = self._pending.get(path)
            if entry is None:
                self._pending[path] = _Pending(now, file_signature(path), now)
            else:
                entry.signature = file_signature(path)
                entry.stable_since = now

    def pending(self, path: Path) -> bool:
        with self._lock:
            return path in self._pending

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def poll(self) -> tuple[list[Path], list[tuple[Path, float]]]:
        """Paths ready now, and paths first seen long ago that are still changing."""
        now = self.clock()
        ready: list[Path] = []
        stuck: list[tuple[Path, float]] = []
        with self._lock:
            for path, entry in list(self._pending.items()):
                signature = file_signature(path)
                if signature is None:
                    del self._pending[path]
                    continue
                if signature != entry.signature:
                    entry.signature = signature
                    entry.stable_since = now
                elif now - entry.stable_since >= self.stable_seconds and openable(path):
                    del self._pending[path]
                    ready.append(path)
                    continue
                if not entry.reported and now - entry.first_seen >= self.report_after:
                    entry.reported = True
                    stuck.append((path, now - entry.first_seen))
        return ready, stuck

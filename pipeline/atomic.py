"""Atomic, durable file writes: a reader sees the old file or the whole new one, never a part.

One path for every writer (PLYs, reports, previews, the depth cache, the control file,
downloads): a temp file beside the target, flushed and `fsync`ed, renamed over the target
with `os.replace` (retried while Windows reports the file locked by an antivirus scanner,
the search indexer or a viewer), then on POSIX an `fsync` of the folder so the rename
itself survives a power cut. Temp names carry `TEMP_SUFFIX`, so start-up clean-up removes
only our own leftovers and never another program's `.tmp` files.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from .errors import OutputError

TEMP_SUFFIX = ".sharp-watch.tmp"
_TEMP_NAME = re.compile(r"^\..+\.\d+-\d+" + re.escape(TEMP_SUFFIX) + "$", re.DOTALL)
REPLACE_DELAYS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
"""Waits between tries of a rename refused with PermissionError (about 3 s in all): a virus
scan or the indexer holds a new file for well under a second; a viewer can hold it longer,
and then the write fails with a clear note and is retried later."""
MAX_PATH = 260
"""Windows' path length limit unless `LongPathsEnabled` is set (it is off by default)."""
WINDOWS = sys.platform == "win32"
_LONG_PATH_ERRNOS = {errno.ENOENT, errno.EINVAL, errno.ENAMETOOLONG}
_LONG_PATH_WINERRORS = {3, 206}  # ERROR_PATH_NOT_FOUND, ERROR_FILENAME_EXCED_RANGE
_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows only: no newline translation


def temp_path(path: Path) -> Path:
    """The temp name `path` is written under: hidden, ours, unique per process and thread."""
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}{TEMP_SUFFIX}")


def is_temp_name(name: str) -> bool:
    """True only for names `temp_path` makes (a leftover of ours after a crash)."""
    return _TEMP_NAME.match(name) is not None


def temp_files(folder: Path, target_name: str | None = None) -> list[Path]:
    """Our temp files in `folder`: all of them, or only those of `target_name`."""
    try:
        names = [entry.name for entry in os.scandir(folder)]
    except OSError:
        return []
    prefix = None if target_name is None else f".{target_name}."
    return [folder / n for n in names
            if is_temp_name(n) and (prefix is None or n.startswith(prefix))]


def replace(src: Path, dst: Path, delays: Sequence[float] = REPLACE_DELAYS,
            sleep: Callable[[float], None] = time.sleep) -> None:
    """`os.replace`, tried again after each of `delays` while it raises `PermissionError`."""
    for delay in (*delays, None):
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            if delay is None:
                raise
            sleep(delay)


def fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable. POSIX only: Windows cannot open a folder as a file,
    and NTFS journals the rename itself."""
    if WINDOWS:
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems (network, FUSE) refuse fsync on a folder; the data is synced
    finally:
        os.close(fd)


def describe_write_error(exc: OSError, path: Path, replacing: bool = False) -> str:
    """What went wrong writing `path`, in words a person can act on."""
    length = len(str(temp_path(path)))
    winerror = getattr(exc, "winerror", None)
    if WINDOWS and length >= MAX_PATH and (exc.errno in _LONG_PATH_ERRNOS
                                           or winerror in _LONG_PATH_WINERRORS):
        return (f"the path is {length} characters long, over Windows' {MAX_PATH}-character "
                "limit; turn on long paths (set LongPathsEnabled, see the README's "
                "troubleshooting) or choose a shorter outputs folder")
    if replacing and isinstance(exc, PermissionError):
        return (f"another program (antivirus, search indexer or a viewer) kept {path.name} "
                f"locked for {sum(REPLACE_DELAYS):.0f} s; it will be tried again later")
    if exc.errno == errno.ENAMETOOLONG:
        return "the file name is too long for this file system"
    return exc.strerror or str(exc)


def atomic_write(path: Path | str, data: bytes | Callable[[BinaryIO], None],
                 mode: int = 0o666, durable: bool = True) -> Path:
    """Write `data` (bytes, or a function writing to the open file) to `path` atomically.

    `mode` is the new file's permission bits before the umask (0o600: owner only).
    `durable=False` skips the fsyncs, for files that are cheap to lose (cache entries).
    Raises `OutputError` naming `path`; nothing is left behind on failure.
    """
    path = Path(path)
    tmp = temp_path(path)
    replacing = False
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, mode)
        with os.fdopen(fd, "wb") as out:
            if callable(data):
                data(out)
            else:
                out.write(data)
            out.flush()
            if durable:
                os.fsync(out.fileno())
        replacing = True
        replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path.name} "
                          f"({describe_write_error(exc, path, replacing)})", path) from exc
    if durable:
        fsync_folder(path.parent)
    return path

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
import stat
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
MAX_NAME_BYTES = 255 - len("..") - 20 - len("-") - 20 - len(TEMP_SUFFIX)
"""The longest name (UTF-8 bytes) whose temp name still fits a file system's 255: the temp
name adds two dots, a process id and a thread id (up to 20 digits each) and the suffix."""
WINDOWS = sys.platform == "win32"
_LONG_PATH_ERRNOS = {errno.ENOENT, errno.EINVAL, errno.ENAMETOOLONG}
_LONG_PATH_WINERRORS = {3, 206}  # ERROR_PATH_NOT_FOUND, ERROR_FILENAME_EXCED_RANGE


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


def replace(src: Path, dst: Path, delays: Sequence[float] | None = None) -> None:
    """`os.replace`, tried again after each of `delays` (`REPLACE_DELAYS`) while it raises
    `PermissionError` (Windows: another process has `src` or `dst` open)."""
    for delay in (*(REPLACE_DELAYS if delays is None else delays), None):
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            if delay is None:
                raise
            time.sleep(delay)


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


def private_folder(folder: Path) -> Path:
    """Create `folder` (0700: this user only) or tighten it to that.

    For state that shows what the user's photos are (journal, depth maps). A folder of
    another user's stays as it is. On Windows `chmod` only toggles read-only: privacy
    there comes from the per-user `%LOCALAPPDATA%` folder's access list.
    """
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):  # not ours, or a file system without modes
        os.chmod(folder, 0o700)
    return folder


def private_file(path: Path, create: bool = True) -> Path:
    """`path` readable and writable by this user only (0600), created empty if missing
    (unless `create` is false), before anyone writes to it."""
    if create:
        path.touch(mode=0o600)
    with contextlib.suppress(OSError):  # missing (create=False), or not ours
        os.chmod(path, 0o600)
    return path


def describe_write_error(exc: OSError, path: Path, replacing: bool = False) -> str:
    """What went wrong writing `path`, in words a person can act on."""
    length = len(os.path.abspath(temp_path(path)))
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
                 mode: int = 0o666, durable: bool = True, keep_mode: bool = False) -> Path:
    """Write `data` (bytes, or a function writing to the open file) to `path` atomically.

    `mode` is the new file's permission bits before the umask (0o600: owner only).
    `keep_mode=True`: a file that replaces one gets that one's permission bits instead
    (a user's 0600 file stays 0600), on POSIX; on Windows `chmod` only toggles read-only
    and the folder's access list applies to the new file as it did to the old.
    `durable=False` skips the fsyncs, for files that are cheap to lose (cache entries).
    Raises `OutputError` naming `path`; nothing is left behind on failure.
    """
    path = Path(path)
    tmp = temp_path(path)
    replacing = False
    try:
        tmp.unlink(missing_ok=True)  # a crashed process's leftover under a reused id
        with open(tmp, "xb", opener=lambda name, flags: os.open(name, flags, mode)) as out:
            if keep_mode and not WINDOWS:
                with contextlib.suppress(FileNotFoundError):
                    os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
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
        _discard(tmp)
        raise OutputError(f"cannot write {path.name} "
                          f"({describe_write_error(exc, path, replacing)})", path) from exc
    except BaseException:
        _discard(tmp)
        raise
    if durable:
        fsync_folder(path.parent)
    return path


def _discard(tmp: Path) -> None:
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)

"""One daemon per folder: an operating-system lock on a hidden file in the inputs and in
the outputs folder.

The per-user lock (`daemon.lock` in the state folder) guards the state, not the folders:
two configs with different `state_dir`s on the same inputs would both start and make
every result twice. So a daemon also locks `.sharp-watch.lock` in its inputs folder and
in its outputs folder, and refuses to start, naming the other daemon (pid, host, config
file), when either is held.

- The lock is the operating system's (`flock` on POSIX, a byte-range lock on Windows,
  which an SMB share passes on to its server), so it ends with the process: a killed
  daemon never leaves a stale one behind.
- The file sits in the folder itself, so every spelling of the folder (a link or
  junction, another letter case on Windows, a trailing slash) reaches the same file.
- The file holds who took it, for the message a refused daemon shows. Windows' locks
  are mandatory (nobody can read the bytes they cover), so the lock covers one byte far
  past that text.
- The name starts with a dot, which the watcher, the results and the gallery skip; on
  Windows the file is also marked hidden. A clean stop deletes it.

Where no lock can be taken (a read-only folder, a file system without locks) a warning
names the folder and the reason, and the daemon runs without that guard.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCK_NAME = ".sharp-watch.lock"
LOCK_OFFSET = 1 << 30  # the byte Windows locks: far past the holder's text, which stays readable
_HOLDER_BYTES = 64 * 1024
_CONTENDED = frozenset({errno.EACCES, errno.EAGAIN, errno.EWOULDBLOCK, errno.EDEADLK})
FILE_ATTRIBUTE_HIDDEN = 0x2


class FolderInUse(RuntimeError):
    """Another process holds the folder's lock; the message names it."""


@dataclass(frozen=True)
class OsLock:
    """The operating system's side: try to lock an open file (False: another process
    holds it; OSError: no lock can be had here), unlock it, hide the file, and whether
    the file is deleted before it is unlocked (POSIX) or after (Windows)."""

    lock: Callable[[int], bool]
    unlock: Callable[[int], None]
    hide: Callable[[Path], None]
    delete_while_held: bool


def posix_lock(fcntl: Any) -> OsLock:
    """`flock` on the whole file: held per open file, so two locks in one process clash too.

    The file is deleted while still locked, so a daemon starting meanwhile either finds
    it locked or creates a new one; never two holders of two files.
    """

    def lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in _CONTENDED:
                return False
            raise
        return True

    return OsLock(lock, lambda fd: fcntl.flock(fd, fcntl.LOCK_UN), lambda path: None, True)


def windows_lock(msvcrt: Any, kernel32: Any) -> OsLock:
    """`msvcrt.locking` on the one byte at `LOCK_OFFSET` (it locks from the file position).

    Windows cannot delete a file another process has open, so the file is deleted after
    it is closed: a daemon that opened it meanwhile keeps it, locked or not.
    """

    def at_offset(fd: int, mode: int) -> None:
        os.lseek(fd, LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, mode, 1)

    def lock(fd: int) -> bool:
        try:
            at_offset(fd, msvcrt.LK_NBLCK)
        except OSError as exc:
            if exc.errno in _CONTENDED:
                return False
            raise
        return True

    def hide(path: Path) -> None:
        kernel32.SetFileAttributesW(str(path), FILE_ATTRIBUTE_HIDDEN)  # cosmetic if it fails

    return OsLock(lock, lambda fd: at_offset(fd, msvcrt.LK_UNLCK), hide, False)


def _platform_lock() -> OsLock:
    if sys.platform == "win32":
        import ctypes
        import msvcrt

        return windows_lock(msvcrt, ctypes.windll.kernel32)
    import fcntl

    return posix_lock(fcntl)


OS_LOCK = _platform_lock()


def open_lock_file(path: Path) -> int:
    """The lock file, created if needed; never truncated (its text is the holder's)."""
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


class FolderLock:
    """The lock of one folder, taken for one role (inputs or outputs) of this daemon."""

    def __init__(self, folder: Path, role: str, config: Path | None) -> None:
        self.folder = folder
        self.role = role
        self.path = folder / LOCK_NAME
        self.holder = {"pid": os.getpid(), "host": socket.gethostname(), "role": role,
                       "config": str(config) if config is not None else None}
        self._fd: int | None = None

    def acquire(self) -> str | None:
        """Take the lock. Raises `FolderInUse` naming the daemon that holds it; returns a
        warning (and holds nothing) when no lock can be taken in this folder."""
        try:
            fd = open_lock_file(self.path)
        except OSError as exc:
            return self._unguarded(f"cannot create {self.path.name} there "
                                   f"({exc.strerror or exc})")
        try:
            locked = OS_LOCK.lock(fd)
        except OSError as exc:
            os.close(fd)
            return self._unguarded(f"its file system offers no file locks "
                                   f"({exc.strerror or exc})")
        if not locked:
            other = _read_holder(fd)
            os.close(fd)
            raise FolderInUse(self._refusal(other))
        self._fd = fd
        with contextlib.suppress(OSError):  # only the message of a refused daemon needs it
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, json.dumps(self.holder).encode())
        OS_LOCK.hide(self.path)
        return None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if OS_LOCK.delete_while_held and _same_file(fd, self.path):
            with contextlib.suppress(OSError):
                self.path.unlink()
        try:
            OS_LOCK.unlock(fd)
        finally:
            os.close(fd)
        if not OS_LOCK.delete_while_held:
            with contextlib.suppress(OSError):  # another daemon has it open: theirs now
                self.path.unlink()

    def renew(self) -> str | None:
        """Lock the folder again if its lock file is no longer the one held (the folder was
        deleted and made again: the old lock went with it). Raises `FolderInUse` when
        another daemon took the new folder meanwhile; returns `acquire`'s warning."""
        if self._fd is not None and _same_file(self._fd, self.path):
            return None
        self.release()
        return self.acquire()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _unguarded(self, reason: str) -> str:
        return (f"cannot lock the {self.role} folder {self.folder}: {reason}; a second "
                "sharp-watch on this folder would not be noticed")

    def _refusal(self, other: dict[str, Any]) -> str:
        role = other.get("role")
        used = f"the {role} folder of" if role in ("inputs", "outputs") else "used by"
        who = (f"pid {other.get('pid', '?')} on {other.get('host', '?')}, config "
               f"{other.get('config') or 'built-in defaults'}" if other else "still starting")
        return (f"{self.folder} (this config's {self.role} folder) is already {used} another "
                f"sharp-watch ({who}); two on one folder would make every result "
                "twice. Stop that one first, or choose other folders")


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, _HOLDER_BYTES).decode("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _same_file(fd: int, path: Path) -> bool:
    """Whether `path` is still the file open as `fd` (not one a later daemon made in a
    recreated folder)."""
    try:
        here, held = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (held.st_dev, held.st_ino)

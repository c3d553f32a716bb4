"""One daemon per user: a lock file plus the files that tell commands how to reach it.

All live in the per-user state dir. `control.json` holds the pid and port; `control.secret`
holds a fresh random token for this run, created with mode 0600 on POSIX so only the
owner can read it (on Windows the per-user AppData folder is already private to the user).
The lock is an OS file lock, so a crashed daemon never leaves a stale one behind; it is
not thread-local (filelock's default is), because tray Quit releases it from another
thread than the one that took it. It lives in the daemon beside the control channel that
reads these files.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from pipeline.atomic import atomic_write

LOCK_NAME = "instance.lock"
INFO_NAME = "control.json"
SECRET_NAME = "control.secret"


@dataclass(frozen=True)
class Endpoint:
    """How to reach a running daemon."""

    pid: int
    port: int
    secret: str


class AlreadyRunning(RuntimeError):
    """Another `run` of this user holds the lock."""

    def __init__(self, state_dir: Path, pid: int | None, port: int | None) -> None:
        where = f"pid {pid}, control port {port}" if pid else "still starting"
        super().__init__(f"sharp-watch is already running ({where}); state dir {state_dir}. "
                         "Use `sharp-watch status` or `sharp-watch stop`.")
        self.pid = pid
        self.port = port


class Instance:
    """Holds the per-user lock for the life of `run` and publishes the control endpoint."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self._lock = FileLock(str(self.state_dir / LOCK_NAME), thread_local=False)
        self.secret = secrets.token_urlsafe(32)

    def acquire(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            info = _read_info(self.state_dir)
            raise AlreadyRunning(self.state_dir, info.get("pid"), info.get("port")) from None

    def publish(self, port: int) -> None:
        """Write the secret (owner-only) and then the pid/port that point at it."""
        atomic_write(self.state_dir / SECRET_NAME, self.secret.encode(), mode=0o600)
        info = json.dumps({"pid": os.getpid(), "port": port})
        atomic_write(self.state_dir / INFO_NAME, info.encode(), mode=0o600)

    def release(self) -> None:
        for name in (INFO_NAME, SECRET_NAME):
            (self.state_dir / name).unlink(missing_ok=True)
        self._lock.release()


def read_endpoint(state_dir: Path) -> Endpoint | None:
    """The running daemon's endpoint as published, or None when nothing was published."""
    info = _read_info(state_dir)
    try:
        secret = (Path(state_dir) / SECRET_NAME).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    if not isinstance(info.get("pid"), int) or not isinstance(info.get("port"), int):
        return None
    return Endpoint(info["pid"], info["port"], secret)


def _read_info(state_dir: Path) -> dict:
    try:
        data = json.loads((Path(state_dir) / INFO_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}

"""Per-user locks released from another thread than the one that took them.

filelock's `FileLock` is thread-local by default: a lock taken in one thread reads as not
held in another, so a release there does nothing and the lock stays taken until the
process exits. Tray Quit stops the daemon from the tray's thread, so both the instance
lock and the daemon's state-folder lock must not be thread-local.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from daemon import Daemon, DaemonError
from daemon.instance import AlreadyRunning, Instance


def in_thread(action: Callable[[], object], name: str) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name=name)
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    if errors:
        raise errors[0]


def test_instance_lock_taken_in_one_thread_is_released_from_another(tmp_path):
    first = Instance(tmp_path)
    in_thread(first.acquire, "A")
    with pytest.raises(AlreadyRunning):
        Instance(tmp_path).acquire()
    with pytest.raises(AlreadyRunning):
        in_thread(Instance(tmp_path).acquire, "C")
    in_thread(first.release, "B")
    second = Instance(tmp_path)
    second.acquire()
    second.release()


def test_daemon_started_in_one_thread_is_stopped_from_another(daemon_config, tiny_pipeline):
    first = Daemon(daemon_config, tiny_pipeline)
    in_thread(first.start, "main-like")
    try:
        with pytest.raises(DaemonError, match="already using"):
            Daemon(daemon_config, tiny_pipeline).start()
    finally:
        in_thread(first.stop, "tray-poll")
    second = Daemon(daemon_config, tiny_pipeline)
    second.start()
    second.stop()

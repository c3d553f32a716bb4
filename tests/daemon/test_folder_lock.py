"""One daemon per folder, whatever its state folder: a second one on the same inputs or
outputs refuses to start and names the first (`daemon.folder_lock`)."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import daemon.folder_lock as folder_lock
from daemon import Config, Daemon, DaemonError
from daemon.config import DaemonConfig, FolderConfig
from daemon.folder_lock import LOCK_NAME, LOCK_OFFSET, FolderInUse, FolderLock
from daemon.jobs import finished_results
from daemon.naming import NOTE_SUFFIX
from daemon.results import list_results
from pipeline import Pipeline
from tests.conftest import wait_for, write_photo
from tests.support.daemon_runs import log_lines

REPO = Path(__file__).resolve().parents[2]


def _other_state(config: Config, tmp_path: Path, name: str = "state2", **folders: Path) -> Config:
    return dataclasses.replace(
        config, daemon=dataclasses.replace(config.daemon, state_dir=tmp_path / name),
        folders=dataclasses.replace(config.folders, **folders), source=tmp_path / f"{name}.toml")


def _run(config_file: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "daemon", "--config", str(config_file)],
                                cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                                stdout=out, stderr=out)


@pytest.mark.timeout(300)
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_second_daemon_on_the_same_folders_refuses_and_a_killed_one_blocks_nothing(
        make_daemon_config: Callable[..., Config], config_toml: Callable[[Config], Path],
        tmp_path: Path) -> None:
    first = make_daemon_config(stable_seconds=0.1)
    first_file = config_toml(first)
    second_file = tmp_path / "second.toml"
    second_file.write_text(first_file.read_text().replace(
        str(first.daemon.state_dir), str(tmp_path / "state2")))
    for i in range(5):
        write_photo(first.inputs / f"p{i}.jpg", seed=i)
    log = tmp_path / "first.log"
    running = _run(first_file, log)
    try:
        assert wait_for(lambda: len(list(first.outputs.glob("*.ply"))) == 5, 120), \
            log.read_text()[-3000:]
        refused = subprocess.run(
            [sys.executable, "-m", "daemon", "--config", str(second_file)], cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
            timeout=120)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        message = refused.stderr
        assert "cannot start:" in message and str(first.inputs) in message
        assert f"pid {running.pid} on {socket.gethostname()}, config {first_file}" in message
        assert "inputs folder of another sharp-watch" in message
        assert not (tmp_path / "state2" / "journal.sqlite3").exists()
    finally:
        running.send_signal(signal.SIGKILL)
        running.wait(30)
    assert (first.inputs / LOCK_NAME).exists()  # a killed daemon leaves its file...
    log2 = tmp_path / "second.log"
    second = _run(second_file, log2)  # ...and no lock: the OS ended it with the process
    try:
        assert wait_for(lambda: "inputs:" in log2.read_text(), 120), log2.read_text()[-3000:]
        assert wait_for(lambda: "5 result(s) already in" in log2.read_text(), 30)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0
    assert len(list(first.outputs.glob("*.ply"))) == 5


@pytest.mark.parametrize("spelling", ["link", "trailing slash", "dot segments"])
def test_the_same_folder_under_another_spelling_is_refused(
        running_daemon, daemon_config: Config, tiny_pipeline: Pipeline, tmp_path: Path,
        spelling: str) -> None:
    running_daemon()
    inputs = daemon_config.inputs
    if spelling == "link":
        (tmp_path / "alias").symlink_to(inputs, target_is_directory=True)
        other = tmp_path / "alias"
    elif spelling == "trailing slash":
        other = Path(str(inputs) + os.sep)
    else:
        other = inputs / ".." / inputs.name / "."
    config = _other_state(daemon_config, tmp_path, inputs=other, outputs=tmp_path / "out2")
    with pytest.raises(DaemonError, match="inputs folder of another sharp-watch") as caught:
        Daemon(config, tiny_pipeline).start()
    assert f"pid {os.getpid()}" in str(caught.value)
    assert str(daemon_config.source or "built-in defaults") in str(caught.value)
    assert not (tmp_path / "state2" / "journal.sqlite3").exists()
    assert not (tmp_path / "out2" / LOCK_NAME).exists()  # the refused daemon let go of it


def test_the_same_outputs_with_other_inputs_are_refused(
        running_daemon, daemon_config: Config, tiny_pipeline: Pipeline, tmp_path: Path) -> None:
    running_daemon()
    config = _other_state(daemon_config, tmp_path, inputs=tmp_path / "in2")
    with pytest.raises(DaemonError, match="outputs folder of another sharp-watch"):
        Daemon(config, tiny_pipeline).start()
    assert not (tmp_path / "in2" / LOCK_NAME).exists()


def test_lock_files_are_never_photos_results_or_notes_and_go_with_a_clean_stop(
        running_daemon, daemon_config: Config) -> None:
    d = running_daemon()
    write_photo(daemon_config.inputs / "photo.jpg")
    assert wait_for(lambda: d.status().done == 1) and d.wait_until_idle(30)
    for folder in (daemon_config.inputs, daemon_config.outputs):
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert d.intake is not None
    d.intake.rescan(catchup=True)
    assert not d.intake.settler.pending(daemon_config.inputs / LOCK_NAME)
    assert [r.name for r in list_results(daemon_config.outputs)] == [
        p.name for p in daemon_config.outputs.glob("photo_*.ply")]
    assert list(daemon_config.outputs.glob(f"*{NOTE_SUFFIX}")) == []
    assert len(finished_results(daemon_config.outputs)) == 1
    assert d.status().failed == 0
    d.stop()
    assert not (daemon_config.inputs / LOCK_NAME).exists()
    assert not (daemon_config.outputs / LOCK_NAME).exists()


@pytest.mark.parametrize(("where", "error", "reason"), [
    ("open", PermissionError(errno.EACCES, "Permission denied"), "cannot create"),
    ("open", OSError(errno.EROFS, "Read-only file system"), "Read-only file system"),
    ("lock", OSError(errno.ENOLCK, "No locks available"), "offers no file locks"),
    ("lock", OSError(errno.EOPNOTSUPP, "Operation not supported"), "offers no file locks"),
])
def test_a_folder_that_cannot_be_locked_is_named_in_a_warning_and_the_daemon_runs(
        running_daemon, daemon_config: Config, monkeypatch: pytest.MonkeyPatch, where: str,
        error: OSError, reason: str) -> None:
    def fail(*_: Any) -> Any:
        raise error

    if where == "open":
        monkeypatch.setattr(folder_lock, "open_lock_file", fail)
    else:
        monkeypatch.setattr(folder_lock, "OS_LOCK",
                            dataclasses.replace(folder_lock.OS_LOCK, lock=fail))
    with log_lines() as lines:
        d = running_daemon()
    warnings = [line for line in lines if line.startswith("WARNING") and "cannot lock" in line]
    assert len(warnings) == 2, lines
    for line, folder in zip(warnings, (daemon_config.inputs, daemon_config.outputs),
                            strict=True):
        assert str(folder) in line and reason in line and "would not be noticed" in line
    write_photo(daemon_config.inputs / "photo.jpg")
    assert wait_for(lambda: d.status().done == 1)


class _FakeMsvcrt:
    """`msvcrt.locking` as Windows does it: byte ranges from the file position, one holder
    per range across all handles, and an unlock only of a range this handle holds."""

    LK_UNLCK, LK_NBLCK = 0, 2

    def __init__(self) -> None:
        self.held: dict[tuple[int, int, int], int] = {}  # (dev, inode, offset) -> fd

    def locking(self, fd: int, mode: int, nbytes: int) -> None:
        st = os.fstat(fd)
        where = (st.st_dev, st.st_ino, os.lseek(fd, 0, os.SEEK_CUR))
        assert nbytes == 1
        if mode == self.LK_NBLCK:
            if where in self.held:
                raise OSError(errno.EACCES, "Permission denied")
            self.held[where] = fd
        elif self.held.get(where) == fd:
            del self.held[where]
        else:
            raise OSError(errno.EACCES, "Permission denied")


def test_windows_byte_range_lock_leaves_the_holder_readable(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    msvcrt, hidden = _FakeMsvcrt(), []
    kernel32 = SimpleNamespace(SetFileAttributesW=lambda path, flags: hidden.append(
        (path, flags)))
    monkeypatch.setattr(folder_lock, "OS_LOCK", folder_lock.windows_lock(msvcrt, kernel32))
    first = FolderLock(tmp_path, "inputs", tmp_path / "a.toml")
    assert first.acquire() is None
    assert [offset for _, _, offset in msvcrt.held] == [LOCK_OFFSET]
    assert (tmp_path / LOCK_NAME).stat().st_size < LOCK_OFFSET  # the text is outside the lock
    assert hidden == [(str(tmp_path / LOCK_NAME), folder_lock.FILE_ATTRIBUTE_HIDDEN)]
    second = FolderLock(tmp_path, "outputs", tmp_path / "b.toml")
    with pytest.raises(FolderInUse, match=r"already the inputs folder of another sharp-watch "
                                          rf"\(pid {os.getpid()} on .*, config .*a\.toml\)"):
        second.acquire()
    first.release()
    assert msvcrt.held == {} and not (tmp_path / LOCK_NAME).exists()
    assert second.acquire() is None and second.held
    second.release()


def test_posix_lock_is_per_open_file_so_one_process_cannot_take_it_twice(tmp_path: Path) -> None:
    first, second = FolderLock(tmp_path, "inputs", None), FolderLock(tmp_path, "inputs", None)
    assert first.acquire() is None
    with pytest.raises(FolderInUse, match="config built-in defaults"):
        second.acquire()
    first.release()
    assert second.acquire() is None
    second.release()


def test_a_refused_daemon_holds_no_lock_of_its_own(
        running_daemon, daemon_config: Config, tiny_pipeline: Pipeline, tmp_path: Path) -> None:
    """Refused on its outputs, it let go of the inputs it had locked: a third daemon on those
    inputs starts."""
    running_daemon()
    refused = _other_state(daemon_config, tmp_path, inputs=tmp_path / "in2")
    with pytest.raises(DaemonError):
        Daemon(refused, tiny_pipeline).start()
    third = Config(folders=FolderConfig(tmp_path / "in2", tmp_path / "out3"),
                   models=daemon_config.models, defaults=daemon_config.defaults,
                   daemon=DaemonConfig(state_dir=tmp_path / "state3"),
                   service=daemon_config.service)
    running_daemon(third)


def test_an_inputs_folder_made_again_is_locked_again(running_daemon, daemon_config: Config,
                                                     tmp_path: Path) -> None:
    """The lock file went with the deleted folder: the daemon locks the new one, so a second
    daemon is still refused there."""
    from tests.support.daemon_runs import plys, settle

    d = running_daemon()
    inputs = daemon_config.inputs
    old = os.stat(inputs / LOCK_NAME)
    for entry in inputs.iterdir():
        entry.unlink()
    inputs.rmdir()
    inputs.mkdir()
    write_photo(inputs / "after.jpg", seed=3)
    assert wait_for(lambda: len(plys(daemon_config.outputs, "after")) == 1, 30)
    settle(d)
    new = os.stat(inputs / LOCK_NAME)
    assert (new.st_dev, new.st_ino) != (old.st_dev, old.st_ino)
    with pytest.raises(FolderInUse, match="already the inputs folder of another sharp-watch"):
        FolderLock(inputs, "inputs", None).acquire()

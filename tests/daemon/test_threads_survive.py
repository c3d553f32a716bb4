"""The daemon's long-lived threads never die and never go quiet.

A locked or full journal, a bug in a loop, a failing event subscriber, an inputs folder
replaced by a file: each is one line in `Status.problems` (and one in the log), the
threads carry on, and the work resumes by itself when the cause goes away. A name that
is not valid Unicode, or a huge file named like a photo, holds up no other photo. A
watcher that loses every event still gets every photo done, through the periodic rescan.

Faults are injected into our own code only: our journal's connection, our modules'
functions, our watcher's handler.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import daemon.intake
import daemon.journal
import daemon.watcher
from daemon import Config, Daemon
from daemon.intake import Intake
from daemon.journal import Journal
from daemon.status import Board, JobEvent
from daemon.watcher import scan
from tests.conftest import wait_for, write_photo
from tests.support.daemon_runs import events_of, log_lines, plys, settle


def problems_of(d: Daemon) -> tuple[str, ...]:
    return d.status().problems


def stems(outputs: Path) -> list[str]:
    return sorted(p.stem.rsplit("_", 1)[0] for p in plys(outputs))


# ---------------------------------------------------------------- the journal


@pytest.mark.timeout(120)
def test_journal_locked_by_another_program_is_reported_and_work_resumes_when_released(
        running_daemon, daemon_config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon.journal, "BUSY_TIMEOUT_S", 0.2)
    d = running_daemon()
    inputs, outputs = daemon_config.inputs, daemon_config.outputs
    d.pause()
    write_photo(inputs / "queued before.jpg", seed=1)
    assert wait_for(lambda: d.status().queue_length == 1, 20)
    other = sqlite3.connect(daemon_config.daemon.state_dir / "journal.sqlite3",
                            isolation_level=None, timeout=5)
    other.execute("BEGIN EXCLUSIVE")
    try:
        d.resume()
        for i in range(3):
            write_photo(inputs / f"while locked {i}.jpg", seed=10 + i)
        assert wait_for(lambda: {p.split(":")[0] for p in problems_of(d)} >= {"worker", "intake"},
                        30), problems_of(d)
        for line in problems_of(d):
            assert "journal is locked by another program (database is locked) since" in line
            assert line.endswith("; retrying")
        time.sleep(1.5)  # locked for a while: nothing runs, nothing dies
        assert d.workers and d.intake is not None
        assert d.workers[0].alive and d.intake.alive
        assert plys(outputs) == []
    finally:
        other.execute("ROLLBACK")
        other.close()
    settle(d, 60)
    assert stems(outputs) == ["queued before", "while locked 0", "while locked 1",
                              "while locked 2"]
    assert problems_of(d) == ()


class _FullDrive:
    """Our journal's connection, except that every transaction fails as on a full drive."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.active = True
        self.refused = 0

    def execute(self, sql: str, *args: Any) -> Any:
        if self.active and sql.startswith("BEGIN"):
            self.refused += 1
            raise sqlite3.OperationalError("database or disk is full")
        return self._db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


@pytest.mark.timeout(120)
def test_journal_on_a_full_drive_is_reported_and_work_resumes_when_there_is_room(
        running_daemon, daemon_config: Config) -> None:
    d = running_daemon()
    inputs, outputs = daemon_config.inputs, daemon_config.outputs
    write_photo(inputs / "before.jpg", seed=20)
    settle(d)
    assert d.journal is not None
    full = _FullDrive(d.journal._db)
    d.journal._db = full  # type: ignore[assignment]
    with log_lines() as lines:
        for i in range(3):
            write_photo(inputs / f"full {i}.jpg", seed=21 + i)
        assert wait_for(lambda: any("the drive holding the journal is full (database or disk "
                                    "is full)" in p for p in problems_of(d)), 30), problems_of(d)
        time.sleep(2.0)
        refused = full.refused
        full.active = False
        settle(d, 60)
    assert refused >= 3
    assert stems(outputs) == ["before", "full 0", "full 1", "full 2"]
    assert problems_of(d) == ()
    reports = [line for line in lines if "database or disk is full" in line]
    assert len(reports) <= 2, reports  # once per thread that hit it, not once per retry
    assert [line for line in lines if "Traceback" in line] == []


@pytest.mark.timeout(60)
def test_unexpected_error_in_the_worker_loop_is_a_problem_not_a_dead_thread(
        running_daemon, daemon_config: Config) -> None:
    d = running_daemon()
    assert d.workers
    left = {"n": 3}
    real = d.workers[0]._maybe_unload

    def broken() -> None:
        if left["n"] > 0:
            left["n"] -= 1
            raise ValueError("boom in the worker loop")
        real()

    with log_lines() as lines:  # capturing before the first failure can be logged
        d.workers[0]._maybe_unload = broken  # type: ignore[method-assign]
        assert wait_for(lambda: any("worker: ValueError: boom in the worker loop" in p
                                    for p in problems_of(d)), 10)
        assert wait_for(lambda: left["n"] == 0 and problems_of(d) == (), 20), problems_of(d)
        write_photo(daemon_config.inputs / "after the bug.jpg", seed=30)
        settle(d)
    assert stems(daemon_config.outputs) == ["after the bug"]
    reports = [line for line in lines if line.startswith("WARNING") and "boom" in line]
    assert len(reports) == 1 and reports[0].endswith("Traceback")  # once, with its traceback
    assert sum("Traceback" in line for line in lines) == 1
    assert any(line.startswith("INFO worker: working again") for line in lines)


def test_failing_event_subscriber_is_one_problem_and_the_others_still_get_events() -> None:
    board = Board()
    got: list[JobEvent] = []

    def broken(event: JobEvent) -> None:
        raise ValueError("subscriber boom")

    board.subscribe(broken)
    board.subscribe(got.append)
    with log_lines() as lines:
        for i in range(5):
            board.emit(JobEvent(f"p{i}.jpg", "done", f"p{i}.ply", None, 1.0))
    assert [e.photo for e in got] == [f"p{i}.jpg" for i in range(5)]
    assert board.done == 5
    (line,) = board.problems.lines()
    assert line.startswith("events: subscriber ") and "broken failed (ValueError: " \
        "subscriber boom) since " in line
    assert sum("subscriber boom" in entry for entry in lines) == 1


# ---------------------------------------------------------------- one photo never blocks the rest


@pytest.mark.timeout(90)
@pytest.mark.skipif(sys.platform != "linux", reason="file names are bytes only on Linux")
def test_name_that_is_not_valid_unicode_gets_a_result_and_holds_up_no_other_photo(
        running_daemon, daemon_config: Config, tmp_path: Path) -> None:
    d = running_daemon()
    staging = tmp_path / "staging"
    names = [b"caf\xe9.jpg", b"good one.jpg", b"good two.jpg"]
    for index, name in enumerate(names):
        write_photo(staging / os.fsdecode(name), seed=40 + index)
    inputs = os.fsencode(daemon_config.inputs)
    with events_of(d) as seen:
        for name in names:  # all at once: they become ready in the same intake step
            os.rename(os.fsencode(staging) + b"/" + name, inputs + b"/" + name)
        settle(d)
    assert sorted((os.fsencode(Path(e.photo).name), e.outcome) for e in seen) == [
        (name, "done") for name in names], [e.error for e in seen]
    assert len(plys(daemon_config.outputs)) == 3
    assert d.journal is not None
    stored = {row["photo"] for row in d.journal.all()}
    assert inputs + b"/caf\xe9.jpg" in stored  # kept losslessly, as the bytes on disk


def _sparse(path: Path, size: int, head: bytes = b"") -> Path:
    """A file of `size` bytes that costs no disk: `head`, then a hole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return path


def _jpeg_declaring(tmp_path: Path, width: int, height: int) -> bytes:
    """A small real JPEG whose header (SOF0) claims `width` x `height` pixels."""
    data = bytearray(write_photo(tmp_path / "header src.jpg", seed=50).read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def _spy_hashes(monkeypatch: pytest.MonkeyPatch,
                hold: Callable[[Path], bool] = lambda _: False,
                release: threading.Event | None = None) -> list[str]:
    """Names the intake hashes; a name for which `hold` is true waits for `release`."""
    hashed: list[str] = []
    real = daemon.intake.file_sha256

    def spy(path: Path, within: Path | None = None) -> str:
        hashed.append(Path(path).name)
        if hold(Path(path)) and release is not None:
            release.wait(60)
        return real(path, within)

    monkeypatch.setattr(daemon.intake, "file_sha256", spy)
    return hashed


@pytest.mark.timeout(90)
def test_file_too_large_to_be_a_photo_is_refused_without_being_read(
        running_daemon, make_daemon_config: Callable[..., Config], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    hashed = _spy_hashes(monkeypatch)
    config = make_daemon_config(max_pixels=1_000_000)  # at most 72 MiB for a photo
    d = running_daemon(config)
    with events_of(d) as seen:
        _sparse(tmp_path / "staging" / "huge.jpg", 4 * 2**30)
        os.rename(tmp_path / "staging" / "huge.jpg", config.inputs / "huge.jpg")
        write_photo(config.inputs / "small.jpg", seed=51)
        settle(d)
    outcomes = {Path(e.photo).name: e for e in seen}
    assert outcomes["small.jpg"].outcome == "done"
    error = outcomes["huge.jpg"].error or ""
    assert outcomes["huge.jpg"].outcome == "failed"
    assert "huge.jpg: file is 4.0 GiB" in error and "max_pixels (1,000,000 pixels)" in error
    assert "huge.jpg" not in hashed
    assert "4.0 GiB" in d.outputs.error_path(config.inputs / "huge.jpg").read_text()


@pytest.mark.timeout(90)
def test_header_declaring_too_many_pixels_is_refused_before_hashing(
        running_daemon, daemon_config: Config, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    hashed = _spy_hashes(monkeypatch)
    d = running_daemon()
    head = _jpeg_declaring(tmp_path, 12_000, 12_000)
    with events_of(d) as seen:
        _sparse(tmp_path / "staging" / "giant.jpg", 80 * 2**20, head)
        os.rename(tmp_path / "staging" / "giant.jpg", daemon_config.inputs / "giant.jpg")
        settle(d)
    assert [e.outcome for e in seen] == ["failed"]
    assert "12000x12000 = 144 MP, over the limit of 120 MP (max_pixels)" in (seen[0].error or "")
    assert hashed == []


@pytest.mark.timeout(120)
def test_large_photo_is_hashed_while_smaller_photos_go_ahead(
        running_daemon, daemon_config: Config, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    hashed = _spy_hashes(monkeypatch, lambda path: path.name == "big.jpg", release)
    d = running_daemon()
    inputs, outputs = daemon_config.inputs, daemon_config.outputs
    head = write_photo(tmp_path / "big src.jpg", seed=52).read_bytes()
    try:
        with events_of(d) as seen:
            _sparse(tmp_path / "staging" / "big.jpg", 70 * 2**20, head)
            os.rename(tmp_path / "staging" / "big.jpg", inputs / "big.jpg")
            assert wait_for(lambda: "big.jpg" in hashed, 20)
            write_photo(inputs / "small 1.jpg", seed=53)
            write_photo(inputs / "small 2.jpg", seed=54)
            assert wait_for(lambda: len(plys(outputs)) == 2, 30), \
                "small photos waited for a large one's hash"
            assert not release.is_set()
            release.set()
            settle(d)
    finally:
        release.set()
    assert sorted((Path(e.photo).name, e.outcome) for e in seen) == [
        ("big.jpg", "done"), ("small 1.jpg", "done"), ("small 2.jpg", "done")]


# ---------------------------------------------------------------- the inputs folder and the watcher


@pytest.mark.timeout(90)
def test_inputs_folder_replaced_by_a_file_is_one_problem_then_recovers(
        running_daemon, daemon_config: Config) -> None:
    d = running_daemon()
    inputs = daemon_config.inputs
    with log_lines() as lines:
        shutil.rmtree(inputs)
        inputs.write_text("not a folder")
        assert wait_for(lambda: any("inputs folder was replaced by a file" in p
                                    for p in problems_of(d)), 10), problems_of(d)
        (line,) = problems_of(d)
        assert line.startswith("watcher: ") and str(inputs) in line
        time.sleep(4.0)
        assert problems_of(d) == (line,)
        inputs.unlink()
        assert wait_for(inputs.is_dir, 40), "the inputs folder was not created again"
        time.sleep(0.5)
        write_photo(inputs / "back.jpg", seed=60)
        assert wait_for(lambda: len(plys(daemon_config.outputs)) == 1, 30)
        settle(d)
    assert sum(e.startswith("WARNING") and "replaced by a file" in e for e in lines) == 1, lines
    assert sum(e.startswith("INFO watcher: working again") for e in lines) == 1, lines
    assert [entry for entry in lines if "Traceback" in entry] == []
    assert problems_of(d) == ()


@pytest.mark.timeout(90)
def test_watcher_that_delivers_no_events_still_gets_every_photo_done(
        running_daemon, make_daemon_config: Callable[..., Config],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon.watcher._Handler, "dispatch", lambda self, event: None)
    config = make_daemon_config(rescan_seconds=0.5)
    d = running_daemon(config)
    inputs, outputs = config.inputs, config.outputs
    time.sleep(0.5)  # after the start-up catch-up: only a rescan can find these
    for i in range(5):
        write_photo(inputs / f"unseen {i}.jpg", seed=70 + i)
    assert wait_for(lambda: len(plys(outputs)) == 5, 30), "photos without events were lost"
    (inputs / "unseen 0.toml").write_text("depth_scale = 1.5\n")
    assert wait_for(lambda: len(plys(outputs)) == 6, 30), "a sidecar without events was lost"
    settle(d)
    assert stems(outputs) == ["unseen 0", "unseen 0", "unseen 1", "unseen 2", "unseen 3",
                              "unseen 4"]


def test_rescan_does_not_go_round_a_folder_that_leads_back_up(tmp_path: Path) -> None:
    """What a Windows junction to a parent does; a bind mount makes the same loop here."""
    import subprocess

    inputs = tmp_path / "in"
    write_photo(inputs / "top.jpg")
    loop = inputs / "sub" / "loop"
    loop.mkdir(parents=True)
    write_photo(inputs / "sub" / "inner.jpg", seed=1)
    if subprocess.run(["mount", "--bind", str(inputs), str(loop)],
                      capture_output=True).returncode != 0:
        pytest.skip("bind mounts are not allowed here")
    try:
        listing = scan(inputs, True)
    finally:
        subprocess.run(["umount", str(loop)], check=True)
    assert listing is not None
    assert sorted(Path(p).relative_to(inputs).as_posix() for p in listing) == [
        "sub/inner.jpg", "top.jpg"]


def test_rescan_of_ten_thousand_files_notes_only_what_changed(
        daemon_config: Config, tmp_path: Path) -> None:
    inputs = daemon_config.inputs
    inputs.mkdir(parents=True)
    for i in range(10_000):
        (inputs / f"p{i:05d}.jpg").write_bytes(b"x")
    journal = Journal(tmp_path / "j.sqlite3")
    intake = Intake(daemon_config, journal, lambda: None, lambda *a: None, lambda *a: None)
    noted: list[Path] = []
    intake.note = lambda path, catchup=False: noted.append(path)  # type: ignore[method-assign]
    intake.rescan(catchup=True)
    assert len(noted) == 10_000
    noted.clear()
    t0 = time.perf_counter()
    listing = scan(inputs, False)
    listed = time.perf_counter() - t0
    t0 = time.perf_counter()
    intake.rescan()
    unchanged = time.perf_counter() - t0
    assert listing is not None and len(listing) == 10_000 and noted == []
    with open(inputs / "p04242.jpg", "ab") as f:
        f.write(b"y")
    intake.rescan()
    assert noted == [inputs / "p04242.jpg"]
    journal.close()
    print(f"rescan of 10,000 files: listing {listed * 1000:.0f} ms, "
          f"rescan with nothing changed {unchanged * 1000:.0f} ms")

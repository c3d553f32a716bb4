"""A photo is given up only for crashes it caused, and never blocks the others.

Evidence decides (`daemon.crashes`): a fatal error (segfault, abort) leaves a record, a
kill does not. Real daemon processes are killed with SIGKILL while the photo runs, or
brought down by the SHARP double on one photo; the journal policy is checked directly.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daemon import Config
from daemon.crashes import RECORD_NAME, CrashRecord, crashed_thread, first_line
from daemon.jobs import settings_to_json
from daemon.journal import MAX_CRASHES, MAX_INTERRUPTIONS, Journal
from pipeline import DepthSettings
from service import cli
from tests.conftest import stop_process, wait_for, write_photo

REPO = Path(__file__).resolve().parents[2]
CRASH = "Fatal Python error: Segmentation fault"
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and POSIX signals")


def build_crashing() -> Any:
    """The SHARP double, which takes its process down on a photo of one flat colour.

    `CRASH_HOW`: `abort` (`os.abort`, SIGABRT) or `segfault` (a read of address 0 through
    ctypes). Each forward first leaves `<ns>-flat` or `<ns>-photo` in `CRASH_MARKER`, so a
    test sees what ran in which order; `SLOW_SHARP_SECONDS` makes the other photos slow.
    """
    from tests.support.sharp_double import build

    model = build()
    marker = Path(os.environ["CRASH_MARKER"])
    how = os.environ.get("CRASH_HOW", "abort")
    delay = float(os.environ.get("SLOW_SHARP_SECONDS", "0"))
    forward = model.forward

    def crashing_forward(image: Any, *args: Any, **kwargs: Any) -> Any:
        flat = float(image.std(dim=(-2, -1)).max()) < 0.01  # one colour
        marker.mkdir(parents=True, exist_ok=True)
        (marker / f"{time.monotonic_ns()}-{'flat' if flat else 'photo'}").touch()
        if flat and how == "abort":
            os.abort()
        if flat:
            ctypes.string_at(0)
        time.sleep(delay)
        return forward(image, *args, **kwargs)

    model.forward = crashing_forward
    return model


def _flat_photo(path: Path) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), (90, 120, 150)).save(path)
    return path


def _config(make_daemon_config: Callable[..., Config]) -> Config:
    base = make_daemon_config(stable_seconds=0.1)
    return dataclasses.replace(base, models=dataclasses.replace(
        base.models, sharp_factory="tests.daemon.test_crash_evidence:build_crashing"))


def _start(config_file: Path, marker: Path, log: Path, how: str = "abort",
           delay: float = 0.0, service: bool = False) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CRASH_MARKER": str(marker), "CRASH_HOW": how,
           "SLOW_SHARP_SECONDS": str(delay), "PYTHONPATH": str(REPO),
           "XDG_CONFIG_HOME": str(log.parent / "xdg")}
    command = (["-m", "service", "run", "--no-tray"] if service else ["-m", "daemon"])
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, *command, "--config", str(config_file)],
                                cwd=REPO, env=env, stdout=out, stderr=out)


def _forwards(marker: Path) -> list[str]:
    """What SHARP ran, in order: `flat` or `photo`."""
    if not marker.is_dir():
        return []
    return [name.split("-")[1] for name in sorted(os.listdir(marker), key=lambda n: int(
        n.split("-")[0]))]


def _jobs(state_dir: Path) -> dict[str, dict[str, Any]]:
    with sqlite3.connect(state_dir / "journal.sqlite3") as db:
        db.row_factory = sqlite3.Row
        return {Path(row["photo"]).name: dict(row) for row in db.execute("SELECT * FROM jobs")}


# ---------------------------------------------------------------- kills it did not cause


@pytest.mark.timeout(600)
@pytest.mark.parametrize("kills", [3, 10])
def test_kills_while_a_photo_runs_never_give_it_up(make_daemon_config, config_toml,
                                                   tmp_path: Path, kills: int) -> None:
    config = _config(make_daemon_config)
    config_file, marker, log = config_toml(config), tmp_path / "marker", tmp_path / "d.log"
    write_photo(config.inputs / "good.jpg", seed=1)
    for round_index in range(kills):
        process = _start(config_file, marker, log, delay=60)
        try:
            assert wait_for(lambda n=round_index: len(_forwards(marker)) > n, 120), \
                log.read_text()[-3000:]
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(30)
        job = _jobs(config.daemon.state_dir)["good.jpg"]
        assert (job["state"], job["stage"]) == ("running", "sharp")
    process = _start(config_file, marker, log)
    try:
        assert wait_for(lambda: _jobs(config.daemon.state_dir)["good.jpg"]["state"] == "done",
                        120), log.read_text()[-3000:]
    finally:
        stop_process(process)
    job = _jobs(config.daemon.state_dir)["good.jpg"]
    assert (job["attempts"], job["crashes"], job["interruptions"]) == (kills + 1, 0, 0)
    assert _forwards(marker) == ["photo"] * (kills + 1)
    assert len(list(config.outputs.glob("good_*.ply"))) == 1
    assert list(config.outputs.glob("*.error.txt")) == []
    assert not (config.daemon.state_dir / RECORD_NAME).exists()  # a clean stop removes it


# ---------------------------------------------------------------- a photo that crashes


@pytest.mark.timeout(600)
def test_photo_that_crashes_the_process_runs_alone_after_the_others_then_is_given_up(
        make_daemon_config, config_toml, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(make_daemon_config)
    config_file, marker, log = config_toml(config), tmp_path / "marker", tmp_path / "d.log"
    state = config.daemon.state_dir
    _flat_photo(config.inputs / "flat.jpg")  # the smallest file: queued first
    goods = [write_photo(config.inputs / f"good{i}.jpg", seed=10 + i) for i in range(3)]
    for run in range(MAX_CRASHES):
        process = _start(config_file, marker, log)
        try:
            assert process.wait(180) == -signal.SIGABRT, log.read_text()[-3000:]
        finally:
            process.kill()
        assert "Fatal Python error: Aborted" in (state / RECORD_NAME).read_text()
        if run == 0:
            assert _forwards(marker) == ["flat"]  # it was first, and alone
        elif run == 1:  # now a suspect: every other photo ran first, then it, alone
            assert _forwards(marker) == ["flat", "photo", "photo", "photo", "flat"]
            assert {p.name for p in goods} <= {n for n, j in _jobs(state).items()
                                               if j["state"] == "done"}
    process = _start(config_file, marker, log, service=True)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    try:
        assert wait_for(lambda: cli.main(["status", "--config", str(config_file)]) == 0, 120), \
            log.read_text()[-3000:]
        assert wait_for(lambda: _jobs(state)["flat.jpg"]["state"] == "failed", 60)
        capsys.readouterr()
        assert cli.main(["status", "--config", str(config_file)]) == 0
        status = capsys.readouterr().out
    finally:
        stop_process(process)
    assert _forwards(marker) == ["flat", "photo", "photo", "photo", "flat", "flat"]
    note = (config.outputs / "flat.jpg.error.txt").read_text()
    for text in (note, status):
        assert "crashed 3 times in a row while this photo was at the sharp stage" in text
        assert "Fatal Python error: Aborted" in text
    assert "suspect:" in status and "flat.jpg" in status
    assert "failed: 1" in status
    for good in goods:
        assert len(list(config.outputs.glob(f"{good.stem}_*.ply"))) == 1
    assert list(config.outputs.glob("flat_*.ply")) == []


@pytest.mark.timeout(300)
def test_a_segfault_leaves_a_record_that_counts_as_a_crash(make_daemon_config, config_toml,
                                                           tmp_path: Path) -> None:
    config = _config(make_daemon_config)
    config_file, marker, log = config_toml(config), tmp_path / "marker", tmp_path / "d.log"
    _flat_photo(config.inputs / "flat.jpg")
    process = _start(config_file, marker, log, how="segfault")
    try:
        assert process.wait(180) == -signal.SIGSEGV, log.read_text()[-3000:]
    finally:
        process.kill()
    record = CrashRecord(config.daemon.state_dir).take()
    assert record is not None and first_line(record) == CRASH
    frames = crashed_thread(record).splitlines()  # the stack the log shows, innermost first
    assert all(frame.startswith('File "') for frame in frames[:2]), frames
    # ctypes' own frame may come first: the crash is inside the call the photo made
    assert any(frame.endswith("in crashing_forward") for frame in frames[:2]), frames
    journal = Journal(config.daemon.state_dir / "journal.sqlite3")
    journal.recover(first_line(record))
    job = journal.get(journal.all()[0]["key"])
    assert job is not None and (job["state"], job["crashes"], job["interruptions"]) == (
        "queued", 1, 0)
    journal.close()


def test_a_kill_leaves_no_record_and_a_clean_stop_no_file(tmp_path: Path) -> None:
    record = CrashRecord(tmp_path)
    assert record.take() is None
    (tmp_path / RECORD_NAME).write_text("")  # armed, then killed: an empty file
    assert record.take() is None and not (tmp_path / RECORD_NAME).exists()
    (tmp_path / RECORD_NAME).write_text("Windows fatal exception: access violation\n\n"
                                        "Current thread 0x1 (most recent call first):\n")
    text = record.take()
    assert text is not None and first_line(text) == "Windows fatal exception: access violation"


# ---------------------------------------------------------------- the policy, in the journal


def _journal(tmp_path: Path, *names: str) -> Journal:
    journal = Journal(tmp_path / "j.sqlite3")
    for name in names:
        journal.submit(name, tmp_path / f"{name}.jpg", name, settings_to_json(DepthSettings()))
    return journal


def _attempt(journal: Journal, key: str, stage: str, crash: str | None = None) -> list[str]:
    assert journal.claim(key) is not None
    journal.set_stage(key, stage)
    return [error for _, error in journal.recover(crash)[1]]


def test_ends_without_a_trace_give_up_only_after_a_long_run_at_one_stage(tmp_path: Path) -> None:
    assert MAX_INTERRUPTIONS > 10  # ten kills by the user never give a photo up
    journal = _journal(tmp_path, "k")
    for stage in ("sharp", "depth") * 15 + ("decode",):  # a stage change starts a new run
        assert _attempt(journal, "k", stage) == []
    for _ in range(MAX_INTERRUPTIONS - 2):
        assert _attempt(journal, "k", "sharp") == []
    row = journal.get("k")
    assert row is not None and (row["state"], row["crashes"], row["interruptions"]) == (
        "queued", 0, MAX_INTERRUPTIONS - 2)
    assert _attempt(journal, "k", "sharp") == []
    (error,) = _attempt(journal, "k", "sharp")
    assert f"ended without a trace {MAX_INTERRUPTIONS} times in a row" in error
    assert "out of memory" in error and "saved again" in error


def test_suspects_run_after_every_other_queued_photo_and_say_so(tmp_path: Path) -> None:
    journal = _journal(tmp_path, "a", "b")
    assert _attempt(journal, "a", "sharp", CRASH) == []
    journal.submit("c", tmp_path / "c.jpg", "c", settings_to_json(DepthSettings()))
    order = []
    while (job := journal.next_queued()) is not None:
        order.append((job.key, job.suspect))
        journal.claim(job.key)
        journal.finish(job.key, [], {})
    assert order == [("b", False), ("c", False), ("a", True)]
    assert journal.suspects() == []  # done: nothing to say
    journal.submit("d", tmp_path / "d.jpg", "d", settings_to_json(DepthSettings()))
    assert _attempt(journal, "d", "depth") == []
    (line,) = journal.suspects()
    assert line.startswith(f"{tmp_path / 'd.jpg'}: sharp-watch ended while this photo ran")
    assert "1 end(s) without a trace at the depth stage" in line and "runs alone" in line
    journal.close()


def test_a_journal_from_before_evidence_retries_the_photos_it_gave_up(tmp_path: Path) -> None:
    """Its counts were kills as much as crashes: they become interruptions."""
    path = tmp_path / "j.sqlite3"
    journal = _journal(tmp_path, "given-up", "counted")
    journal.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE jobs SET state = 'failed', error = 'interrupted 3 times', crashes = 3,"
                   " crash_stage = 'sharp' WHERE key = 'given-up'")
        db.execute("UPDATE jobs SET crashes = 2, crash_stage = 'depth' WHERE key = 'counted'")
        db.execute("DROP INDEX jobs_suspects")
        db.execute("DROP INDEX jobs_held")
        for column in ("interruptions", "interruption_stage", "hold_until"):
            db.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
    journal = Journal(path)
    rows = {row["key"]: row for row in journal.all()}
    assert [(rows[k]["state"], rows[k]["error"], rows[k]["crashes"], rows[k]["interruptions"],
             rows[k]["interruption_stage"]) for k in ("given-up", "counted")] == [
        ("queued", None, 0, 3, "sharp"), ("queued", None, 0, 2, "depth")]
    journal.close()

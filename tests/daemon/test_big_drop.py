"""A big drop is queued quickly and loses nothing: submissions go to the journal many to a
transaction, one listing of the folder serves every photo's sidecar lookup, a burst of
events triggers a rescan (watchers lose events in bursts), and a kill before a batch is
committed is made good by the start-up scan. `bench/big_drop.py` measures the speed."""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import daemon.intake
import daemon.watcher
from bench.big_drop import photo_bytes
from daemon import Config
from daemon.jobs import settings_to_json
from daemon.journal import Journal
from pipeline import DepthSettings
from tests.conftest import wait_for
from tests.daemon.test_crash import _start
from tests.daemon.test_stress import audit_outputs, run_to_completion
from tests.support.daemon_runs import log_lines


def _drop(inputs: Path, count: int, start: int = 0) -> list[Path]:
    inputs.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, data in enumerate(photo_bytes(start + count)[start:], start):
        path = inputs / f"drop {index:05d}.jpg"
        path.write_bytes(data)
        paths.append(path)
    return paths


def _rows(state_dir: Path) -> int:
    try:
        with sqlite3.connect(f"file:{state_dir / 'journal.sqlite3'}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])
    except sqlite3.Error:
        return 0


@pytest.mark.timeout(600)
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL")
def test_kill_in_the_middle_of_a_drop_then_restart_gives_each_photo_one_result(
        make_daemon_config: Callable[..., Config], config_toml: Callable[[Config], Path],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = make_daemon_config(stable_seconds=0.1)
    config = dataclasses.replace(base, models=dataclasses.replace(
        base.models, sharp_factory="tests.daemon.test_crash:build_slow"))
    config_file, count = config_toml(config), 300
    process = _start(config_file, tmp_path / "marker", delay=600)  # the worker stays on one
    try:
        assert wait_for(lambda: (config.daemon.state_dir / "journal.sqlite3").exists(), 120)
        writer = threading.Thread(target=_drop, args=(config.inputs, count))
        writer.start()
        assert wait_for(lambda: _rows(config.daemon.state_dir) > 0, 60)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        committed = _rows(config.daemon.state_dir)
        writer.join()
    finally:
        process.kill()
    assert 0 < committed < count, f"the kill did not land mid-drop ({committed} of {count})"
    monkeypatch.setenv("SLOW_SHARP_MARKER", str(tmp_path / "marker"))  # no delay now
    run_to_completion(config_file, tmp_path / "daemon.log",
                      lambda: len(list(config.outputs.glob("*.ply"))) >= count, 400)
    audit_outputs(config, {f"drop {i:05d}": 1 for i in range(count)})


@pytest.mark.timeout(180)
def test_photos_whose_events_a_burst_lost_are_found_long_before_the_periodic_rescan(
        running_daemon, make_daemon_config: Callable[..., Config],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What Windows' change buffer does when it overflows: events stop, with no error."""
    delivered, passed = {"n": 0}, 3 * daemon.intake.BURST_EVENTS  # about 500 photos' events
    real = daemon.watcher._Handler.dispatch

    def overflowing(self: Any, event: Any) -> None:
        delivered["n"] += 1
        if delivered["n"] <= passed:
            real(self, event)

    monkeypatch.setattr(daemon.watcher._Handler, "dispatch", overflowing)
    config = make_daemon_config(rescan_seconds=3600.0)
    count, trickle = 1500, 100
    rescans = {"n": 0}
    dropped = threading.Event()
    real_rescan = daemon.intake.Intake.rescan

    def rescan_while_the_copy_goes_on(self: Any, catchup: bool = False) -> int:
        """After each of the first two rescans that follow the drop, more photos arrive
        (their events lost too): a rescan that finds fewer than a burst's worth must not
        end the burst."""
        noted = real_rescan(self, catchup)
        if not catchup and dropped.is_set() and rescans["n"] < 2:
            _drop(config.inputs, trickle, count + rescans["n"] * trickle)
            rescans["n"] += 1
        return noted

    monkeypatch.setattr(daemon.intake.Intake, "rescan", rescan_while_the_copy_goes_on)
    d = running_daemon(config)
    d.pause()
    _drop(config.inputs, count)
    dropped.set()
    assert delivered["n"] > 2 * passed  # more events were lost than delivered
    total = count + 2 * trickle
    assert wait_for(lambda: d.status().queue_length == total, 120), d.status().queue_length


@pytest.mark.timeout(180)
def test_the_folder_is_listed_once_per_drop_not_once_per_photo(
        running_daemon, daemon_config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    """For each photo's sidecar (any letter case) the folder used to be listed: 10,000
    photos, 10,000 listings of 10,000 names."""
    listings = {"n": 0}
    real = os.scandir
    inputs = str(daemon_config.inputs)

    def counting(path: Any = ".") -> Any:
        if threading.current_thread().name == "sharp-intake" and os.fspath(path) == inputs:
            listings["n"] += 1
        return real(path)

    d = running_daemon()
    d.pause()
    monkeypatch.setattr(os, "scandir", counting)
    count = 500
    (daemon_config.inputs / "drop 00007.TOML").write_text("depth_scale = 1.5\n")
    _drop(daemon_config.inputs, count)
    assert wait_for(lambda: d.status().queue_length == count, 120)
    assert listings["n"] < 50, listings
    assert d.journal is not None
    tuned = [job for job in d.journal.all() if job["settings"] != settings_to_json(
        daemon_config.defaults)]
    assert [Path(os.fsdecode(job["photo"])).name for job in tuned] == ["drop 00007.jpg"]


@pytest.mark.timeout(120)
def test_a_batch_the_journal_refuses_is_submitted_again_whole(
        running_daemon, daemon_config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal locked by another program in the middle of a batch: the batch is rolled
    back, reported once, and every photo of it is queued once the lock goes."""
    real = Journal.submit
    calls = {"n": 0}

    def locked_once(self: Journal, *args: Any, **kwargs: Any) -> str:
        calls["n"] += 1
        if calls["n"] == 40:
            raise sqlite3.OperationalError("database is locked")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Journal, "submit", locked_once)
    d = running_daemon()
    d.pause()
    with log_lines() as lines:
        _drop(daemon_config.inputs, 100)
        assert wait_for(lambda: d.status().queue_length == 100, 60), d.status()
        assert wait_for(lambda: d.status().problems == (), 30)
    assert d.journal is not None and len(d.journal.all()) == 100
    assert [line for line in lines if "journal is locked" in line and "WARNING" in line]
    assert d.status().failed == 0


def test_a_batch_is_one_transaction_and_all_or_nothing(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    settings = settings_to_json(DepthSettings())
    seen_by_others: list[int] = []
    with journal.batch():
        for i in range(50):
            assert journal.submit(f"k{i}", tmp_path / f"{i}.jpg", f"h{i}", settings) == "queued"
        other = threading.Thread(target=lambda: seen_by_others.append(journal.counts()["queued"]))
        other.start()
        other.join()
        assert journal.next_queued() is not None  # this thread sees its own writes
    assert seen_by_others == [0] and journal.counts()["queued"] == 50
    with pytest.raises(RuntimeError), journal.batch():
        journal.submit("lost", tmp_path / "lost.jpg", "h", settings)
        raise RuntimeError("the intake failed mid-batch")
    assert journal.get("lost") is None and journal.counts()["queued"] == 50
    journal.close()

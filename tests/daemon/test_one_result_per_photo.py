"""Every photo gets exactly one result for its content and settings.

Our own results are never read back as photos; a job follows a surviving copy or a new
name; new content that kept the old size and time is new work; a photo is given up as
"crashes the daemon" only on evidence, never for graceful stops; an empty or damaged
journal neither redoes finished photos nor stops the daemon; retryable failures are
retried without a restart; each finished photo is one line in the log.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import daemon.intake
import daemon.journal
import daemon.worker
import pipeline.atomic
from daemon import Config, ConfigError, Daemon, DaemonError
from daemon.config import FolderConfig, parse_config
from daemon.intake import Intake
from daemon.jobs import settings_to_json
from daemon.journal import Journal
from pipeline import DepthSettings, Pipeline
from service import logs
from tests.conftest import wait_for, write_photo
from tests.support.daemon_runs import events_of, log_lines, plys, reports, settle, sharp_calls

# ---------------------------------------------------------------- our own results


def _folders(inputs: str, outputs: str, recursive: bool = False) -> dict[str, Any]:
    return {"folders": {"inputs": inputs, "outputs": outputs, "recursive": recursive}}


@pytest.mark.parametrize(("inputs", "outputs", "recursive", "words"), [
    ("photos", "photos", False, "same folder"),
    ("photos", "photos/", True, "same folder"),
    ("photos", "photos/results", True, "is inside inputs"),
    ("photos", "photos/a/b/results", True, "is inside inputs"),
])
def test_outputs_that_would_be_read_back_are_refused_naming_both_folders(
        tmp_path: Path, inputs: str, outputs: str, recursive: bool, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_folders(inputs, outputs, recursive), "c.toml", tmp_path)
    message = str(caught.value)
    assert message.startswith("c.toml: [folders] ") and words in message
    assert str(tmp_path / "photos") in message


def test_outputs_reached_through_a_link_are_refused(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "photos", target_is_directory=True)
    with pytest.raises(ConfigError, match="same folder"):
        parse_config(_folders("photos", "alias"), "c.toml", tmp_path)


@pytest.mark.parametrize(("inputs", "outputs", "recursive"), [
    ("photos", "photos/results", False),   # not watched: results are never seen
    ("results/incoming", "results", True),  # results go into outputs itself, not below it
    ("photos", "photos-results", True),     # a name that merely starts the same
])
def test_separate_folders_are_accepted(tmp_path: Path, inputs: str, outputs: str,
                                       recursive: bool) -> None:
    config = parse_config(_folders(inputs, outputs, recursive), "c.toml", tmp_path)
    assert config.outputs == tmp_path / outputs


def test_daemon_refuses_to_start_on_outputs_equal_to_inputs(
        make_daemon_config: Callable[..., Config], tiny_pipeline: Pipeline,
        tmp_path: Path) -> None:
    config = make_daemon_config(folders=FolderConfig(tmp_path / "both", tmp_path / "both"))
    with pytest.raises(DaemonError, match="outputs and inputs are the same folder"):
        Daemon(config, tiny_pipeline).start()


def test_intake_never_reads_the_outputs_folder_inside_a_watched_tree(
        make_daemon_config: Callable[..., Config], tmp_path: Path) -> None:
    """Defence in depth behind the config check (a junction can lead there on Windows)."""
    inputs = tmp_path / "in"
    config = make_daemon_config(folders=FolderConfig(inputs, inputs / "out", recursive=True))
    write_photo(inputs / "photo.jpg")
    write_photo(inputs / "sub" / "other.jpg", seed=1)
    write_photo(inputs / "out" / "photo_20260101-000000_depth.png", seed=2)
    journal = Journal(tmp_path / "j.sqlite3")
    intake = Intake(config, journal, lambda: None, lambda *a: None, lambda *a: None)
    intake.rescan(catchup=True)
    intake.note(inputs / "out" / "late_depth.png")
    assert [p for p in (inputs / "photo.jpg", inputs / "sub" / "other.jpg",
                        inputs / "out" / "photo_20260101-000000_depth.png",
                        inputs / "out" / "late_depth.png") if intake.settler.pending(p)] == [
        inputs / "photo.jpg", inputs / "sub" / "other.jpg"]
    journal.close()


# ---------------------------------------------------------------- copies and renames


@pytest.mark.timeout(60)
def test_job_follows_the_surviving_copy_when_the_name_it_kept_is_deleted(
        running_daemon, daemon_config: Config) -> None:
    d = running_daemon()
    inputs = daemon_config.inputs
    d.pause()
    first = write_photo(inputs / "first.jpg", seed=3)
    assert wait_for(lambda: d.status().queue_length == 1, 20)
    (inputs / "second.jpg").write_bytes(first.read_bytes())
    assert d.journal is not None
    assert wait_for(lambda: [Path(os.fsdecode(r["photo"])).name for r in d.journal.all()]
                    == ["second.jpg"], 20)
    (inputs / "second.jpg").unlink()
    with events_of(d) as seen:
        d.resume()
        settle(d)
    assert [(Path(e.photo).name, e.outcome) for e in seen] == [("first.jpg", "done")]
    assert [r["photo"] for r in reports(daemon_config.outputs)] == [str(first)]


def _hold_decode(monkeypatch: pytest.MonkeyPatch,
                 name: str) -> tuple[threading.Event, threading.Event]:
    """Hold the worker's decode of `name` until `release` is set; `reading` says it began."""
    release, reading = threading.Event(), threading.Event()
    real = daemon.worker.load_image

    def held(path: Path, *args: Any, **kwargs: Any) -> Any:
        if Path(path).name == name and not release.is_set():
            reading.set()
            release.wait(30)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(daemon.worker, "load_image", held)
    return release, reading


@pytest.mark.timeout(60)
def test_photo_renamed_while_it_is_being_read_runs_under_its_new_name(
        running_daemon, daemon_config: Config, monkeypatch: pytest.MonkeyPatch,
        overlap: bool) -> None:
    """The decode (the prefetch, with `overlap`) read the old name after the rename: the job
    must neither take that result nor fail; it runs from the new name."""
    release, prefetching = _hold_decode(monkeypatch, "before.jpg")
    d = running_daemon()
    inputs = daemon_config.inputs
    d.pause()
    write_photo(inputs / "a first.jpg", 32, 24, seed=4)  # smaller: queued first
    write_photo(inputs / "before.jpg", 64, 48, seed=5)
    assert wait_for(lambda: d.status().queue_length == 2, 20)
    with events_of(d) as seen:
        d.resume()
        try:
            assert wait_for(prefetching.is_set, 20), "the second photo was not read"
            os.rename(inputs / "before.jpg", inputs / "after.jpg")
            assert d.journal is not None
            assert wait_for(lambda: any(Path(os.fsdecode(r["photo"])).name == "after.jpg"
                                        for r in d.journal.all()), 20)
        finally:
            release.set()
        settle(d)
    assert sorted((Path(e.photo).name, e.outcome) for e in seen) == [
        ("a first.jpg", "done"), ("after.jpg", "done")], [e.error for e in seen]
    assert sorted(Path(r["photo"]).name for r in reports(daemon_config.outputs)) == [
        "a first.jpg", "after.jpg"]


@pytest.mark.timeout(60)
def test_photo_overwritten_while_its_prefetched_decode_waits_gets_one_result_for_the_new_content(
        running_daemon, daemon_config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    """The prefetch decoded the new content for the old content's job: never used."""
    monkeypatch.setattr(daemon.worker, "OVERLAP_ON_CPU", True)
    release, prefetching = _hold_decode(monkeypatch, "second.jpg")
    d = running_daemon()
    inputs = daemon_config.inputs
    d.pause()
    write_photo(inputs / "a first.jpg", 32, 24, seed=16)  # smaller: queued first
    photo = write_photo(inputs / "second.jpg", 64, 48, seed=17)
    assert wait_for(lambda: d.status().queue_length == 2, 20)
    d.resume()
    try:
        assert wait_for(prefetching.is_set, 20), "the second photo was not prefetched"
        write_photo(photo, 64, 48, seed=18)
        assert d.journal is not None
        assert wait_for(lambda: len(d.journal.all()) == 3, 20)  # the new content's job
    finally:
        release.set()
    settle(d)
    new = hashlib.sha256(photo.read_bytes()).hexdigest()
    assert sorted((Path(r["photo"]).name, r["photo_sha256"] == new)
                  for r in reports(daemon_config.outputs)) == [
        ("a first.jpg", False), ("second.jpg", True)]


# ---------------------------------------------------------------- same size, same time


def _tiff(path: Path, seed: int) -> bytes:
    """An uncompressed TIFF: equal sizes for equal dimensions, whatever the pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(pixels).save(tmp, format="TIFF")
    data = tmp.read_bytes()
    tmp.unlink()
    return data


def _overwrite_keeping_size_and_time(path: Path, data: bytes) -> None:
    """What `cp --preserve=timestamps` does: same name, same size, same mtime, new bytes."""
    before = path.stat()
    assert len(data) == before.st_size
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


@pytest.mark.timeout(60)
def test_new_content_with_the_old_size_and_time_is_new_work(
        running_daemon, daemon_config: Config, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen through its file event, even where the signature cannot tell (on Windows an
    overwrite in place keeps the file id and the creation time that `st_ctime` holds)."""
    real = daemon.intake.file_signature

    def windows_like(path: Path) -> Any:
        signature = real(path)
        return None if signature is None else (signature[0], signature[1], 1, 1)

    monkeypatch.setattr(daemon.intake, "file_signature", windows_like)
    d = running_daemon()
    photo = daemon_config.inputs / "kept times.tif"
    old, new = _tiff(tmp_path / "a.tif", 6), _tiff(tmp_path / "b.tif", 7)
    photo.write_bytes(old)
    settle(d)
    _overwrite_keeping_size_and_time(photo, new)
    settle(d)
    assert sorted(r["photo_sha256"] for r in reports(daemon_config.outputs)) == sorted(
        hashlib.sha256(data).hexdigest() for data in (old, new))


@pytest.mark.timeout(90)
def test_new_content_with_the_old_size_and_time_while_stopped_is_new_work(
        running_daemon, daemon_config: Config, tmp_path: Path) -> None:
    photo = daemon_config.inputs / "while off.tif"
    old, new = _tiff(tmp_path / "a.tif", 8), _tiff(tmp_path / "b.tif", 9)
    photo.parent.mkdir(parents=True)
    photo.write_bytes(old)
    first = running_daemon()
    settle(first)
    first.stop()
    _overwrite_keeping_size_and_time(photo, new)
    settle(running_daemon())
    assert sorted(r["photo_sha256"] for r in reports(daemon_config.outputs)) == sorted(
        hashlib.sha256(data).hexdigest() for data in (old, new))


# ---------------------------------------------------------------- when to give up on a photo


def _journal_with_one_job(tmp_path: Path) -> Journal:
    journal = Journal(tmp_path / "j.sqlite3")
    journal.submit("k", tmp_path / "p.jpg", "h", settings_to_json(DepthSettings()))
    return journal


CRASH = "Fatal Python error: Segmentation fault"


def _interrupt(journal: Journal, stage: str | None, crash: str | None = None) -> list[str]:
    """One attempt that reached `stage` (None: only claimed), then a restart after a run
    that ended with the fatal error `crash` (None: killed without a trace)."""
    journal.claim("k")
    if stage == "stopped":
        journal.mark_stopping()
    elif stage == "write":
        journal.reserve_outputs("k", ["/out/p.ply"])
    elif stage is not None:
        journal.set_stage("k", stage)
    _, given_up = journal.recover(crash)
    return [error for _, error in given_up]


@pytest.mark.parametrize("stage", ["stopped", "write"])
def test_graceful_stops_and_kills_while_writing_never_give_a_photo_up(
        tmp_path: Path, stage: str) -> None:
    journal = _journal_with_one_job(tmp_path)
    for _ in range(10):
        assert _interrupt(journal, stage) == []
    row = journal.get("k")
    assert row is not None and row["state"] == "queued" and row["crashes"] == 0


def test_only_repeated_crashes_at_the_same_stage_give_a_photo_up(tmp_path: Path) -> None:
    journal = _journal_with_one_job(tmp_path)
    for stage in ("sharp", "decode", "sharp", "depth", "sharp", "write", "sharp"):
        assert _interrupt(journal, stage, CRASH) == []  # never three in a row at one stage
    assert _interrupt(journal, "stopped", CRASH) == []  # a stop neither counts nor resets
    assert _interrupt(journal, "sharp") == []  # nor does a kill without a record
    assert _interrupt(journal, "sharp", CRASH) == []
    (error,) = _interrupt(journal, "sharp", CRASH)
    assert "crashed 3 times in a row while this photo was at the sharp stage" in error
    assert CRASH in error and "until the photo is saved again" in error
    assert journal.get("k")["state"] == "failed"  # type: ignore[index]
    settings = settings_to_json(DepthSettings())
    assert journal.submit("k", tmp_path / "p.jpg", "h", settings, event_driven=False) == "failed"
    assert journal.submit("k", tmp_path / "p.jpg", "h", settings, event_driven=True) == "queued"
    assert journal.get("k")["crashes"] == 0  # type: ignore[index]


def test_a_finished_attempt_clears_the_crash_count(tmp_path: Path) -> None:
    journal = _journal_with_one_job(tmp_path)
    assert _interrupt(journal, "sharp", CRASH) == [] and _interrupt(journal, "sharp") == []
    journal.claim("k")
    journal.fail("k", "disk full", retryable=True)
    row = journal.get("k")
    assert row is not None and (row["crashes"], row["interruptions"]) == (0, 0)


@pytest.mark.timeout(120)
def test_graceful_stops_that_abandon_a_photo_never_count_against_it(
        make_daemon_config: Callable[..., Config], tiny_pipeline: Pipeline,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Three stops that each give up waiting for the same photo, then a normal run."""
    config = make_daemon_config()
    predictor = tiny_pipeline.sharp.predictor
    real = predictor.forward
    entered = threading.Event()
    hold = threading.Event()  # set: forward blocks (until the test ends)
    release = threading.Event()

    def forward(*args: Any, **kwargs: Any) -> Any:
        if hold.is_set():
            entered.set()
            release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(predictor, "forward", forward)
    write_photo(config.inputs / "slow.jpg", seed=10)
    hold.set()
    try:
        for _ in range(3):
            entered.clear()
            d = Daemon(config, tiny_pipeline)
            d.start()
            assert wait_for(entered.is_set, 30)
            d.stop(timeout=0.3)
        hold.clear()
        d = Daemon(config, tiny_pipeline)
        with events_of(d) as seen:
            d.start()
            try:
                settle(d)
            finally:
                d.stop()
    finally:
        release.set()
    assert [(Path(e.photo).name, e.outcome) for e in seen] == [("slow.jpg", "done")]
    assert len(plys(config.outputs)) == 1
    assert list(config.outputs.glob("*.error.txt")) == []


# ---------------------------------------------------------------- the journal file


@pytest.mark.timeout(90)
@pytest.mark.parametrize("damage", ["empty", "garbage", "deleted"])
def test_lost_or_damaged_journal_redoes_no_finished_photo(
        running_daemon, daemon_config: Config, tiny_pipeline: Pipeline, damage: str) -> None:
    inputs, outputs = daemon_config.inputs, daemon_config.outputs
    write_photo(inputs / "one.jpg", seed=11)
    write_photo(inputs / "two.jpg", seed=12)
    (inputs / "two.toml").write_text("depth_scale = 1.5\n")
    first = running_daemon()
    settle(first)
    first.stop()
    assert len(plys(outputs)) == 2
    path = daemon_config.daemon.state_dir / "journal.sqlite3"
    for leftover in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)
    if damage == "deleted":
        path.unlink()
    else:
        path.write_bytes(b"" if damage == "empty" else b"not a journal at all " * 300)
    calls = sharp_calls(tiny_pipeline)
    write_photo(inputs / "three.jpg", seed=13)
    with log_lines() as lines:
        again = running_daemon()
        settle(again)
    assert sharp_calls(tiny_pipeline) - calls == 1  # only the new photo
    assert sorted(p.stem.rsplit("_", 1)[0] for p in plys(outputs)) == ["one", "three", "two"]
    assert any("2 result(s) already in" in line for line in lines), lines
    aside = list(path.parent.glob("journal.sqlite3.damaged-*"))
    if damage == "garbage":
        assert len(aside) == 1 and aside[0].read_bytes().startswith(b"not a journal")
        assert any(line.startswith("WARNING") and "was damaged (file is not a database)" in line
                   and aside[0].name in line for line in lines), lines
    else:
        assert aside == []


def test_journal_is_written_with_synchronous_full(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    journal.close()


def test_path_that_is_not_valid_unicode_is_stored_losslessly(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    photo = Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.jpg"))
    journal.submit("k", photo, "h", settings_to_json(DepthSettings()))
    journal.store_hash(photo, (1, 2, 3, 4), "h")
    job = journal.next_queued()
    assert job is not None and os.fsencode(job.photo) == os.fsencode(photo)
    assert journal.cached_hash(photo, (1, 2, 3, 4)) == "h"
    assert journal.paths_with_hash("h") == [photo]
    journal.close()


# ---------------------------------------------------------------- retries without a restart


class _PlyWriteFault:
    """`open` for `pipeline.atomic`: writing a PLY fails as on a full disk while active."""

    def __init__(self) -> None:
        self.active = True
        self.failures = 0

    def __call__(self, file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if self.active and ".ply" in os.fspath(file) and any(c in mode for c in "wax+"):
            self.failures += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(file))
        return open(file, mode, *args, **kwargs)


@pytest.mark.timeout(90)
def test_write_failure_that_goes_away_is_retried_without_a_restart(
        running_daemon, daemon_config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon.journal, "RETRY_FIRST_S", 0.5)
    fault = _PlyWriteFault()
    monkeypatch.setattr(pipeline.atomic, "open", fault, raising=False)
    d = running_daemon()
    photo = daemon_config.inputs / "retried.jpg"
    note = d.outputs.error_path(photo)
    with events_of(d) as seen:
        write_photo(photo, seed=14)
        assert wait_for(lambda: fault.failures >= 3, 30), "the failure was not retried"
        assert os.strerror(errno.ENOSPC) in note.read_text()
        assert [e.outcome for e in seen] == ["failed"]  # retries that fail again stay quiet
        assert plys(daemon_config.outputs) == []
        fault.active = False
        assert wait_for(lambda: len(plys(daemon_config.outputs)) == 1, 30)
        settle(d)
    assert [e.outcome for e in seen] == ["failed", "done"]
    assert not note.exists()


# ---------------------------------------------------------------- one log line per photo


@pytest.mark.timeout(60)
def test_each_finished_or_failed_photo_is_one_line_in_the_log(
        running_daemon, daemon_config: Config) -> None:
    d = running_daemon()
    d.subscribe(logs.log_job)  # what `sharp-watch run` does
    with log_lines() as lines:
        write_photo(daemon_config.inputs / "logged.jpg", seed=15)
        settle(d)
        (daemon_config.inputs / "broken.jpg").write_bytes(b"not a photo")
        settle(d)
    shown = [line for line in lines if line.startswith(("INFO", "WARNING", "ERROR"))]
    assert [line for line in shown if "logged" in line] == [
        next(line for line in shown if "logged.jpg: done in" in line)], shown
    assert [line for line in shown if "broken" in line] == [
        next(line for line in shown if "broken.jpg: failed after" in line)], shown


def test_config_key_rescan_seconds_is_checked_and_documented() -> None:
    assert parse_config({"daemon": {"rescan_seconds": 5}}).daemon.rescan_seconds == 5.0
    for bad in (0, -1):
        with pytest.raises(ConfigError,
                           match=r"\[daemon\] rescan_seconds must be a finite number > 0"):
            parse_config({"daemon": {"rescan_seconds": bad}})
    shipped = (Path(__file__).resolve().parents[2] / "config.toml").read_text(encoding="utf-8")
    assert "\nrescan_seconds = 30.0\n" in shipped

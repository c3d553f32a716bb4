"""Several workers in one daemon (`[models] device = ["cpu", "cpu"]`): each job runs once,
on one of them; names never collide; a failing device fails only its photo; status
shows each worker. Tiny models, one stage per worker (`daemon.stage.LocalStage`)."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import daemon.stage
from daemon import ConfigError, Daemon
from daemon.config import FolderConfig, ModelConfig, parse_config
from daemon.jobs import file_sha256, job_key, settings_to_json
from daemon.journal import Journal
from daemon.outputs import OutputFolder
from daemon.results import result_names
from pipeline import OutOfMemoryError
from tests.conftest import wait_for, write_photo
from tests.support.daemon_runs import events_of

Run = Callable[..., daemon.stage.StageOutput]


@pytest.fixture
def two_workers(make_daemon_config, running_daemon, tmp_path: Path) -> Callable[[], Daemon]:
    """A daemon on two CPU workers (each its own tiny pipeline), watching sub-folders too."""
    def start() -> Daemon:
        config = make_daemon_config(folders=FolderConfig(tmp_path / "inputs",
                                                         tmp_path / "outputs", recursive=True))
        config = dataclasses.replace(config, models=dataclasses.replace(
            config.models, device=("cpu", "cpu")))
        return running_daemon(config, own_models=True)

    return start


def spy(monkeypatch: pytest.MonkeyPatch, before: Callable[[object, Path], None]) -> list:
    """Every stage run as (stage, photo), after `before(stage, photo)` (which may raise,
    inside the stage: as the models would)."""
    calls: list[tuple[object, Path]] = []
    real: Run = daemon.stage.LocalStage._run

    def run(self, job, image, progress):
        calls.append((self, job.photo))
        before(self, job.photo)
        return real(self, job, image, progress)

    monkeypatch.setattr(daemon.stage.LocalStage, "_run", run)
    return calls


def test_twenty_photos_run_once_each_on_both_workers_with_distinct_names(
        two_workers, monkeypatch, tmp_path):
    both = threading.Event()

    def first_waits_for_the_other(stage: object, photo: Path) -> None:
        # The first photo holds its worker until the other worker has started one, so the
        # test does not depend on how the threads happen to be scheduled.
        if len({id(s) for s, _ in calls}) > 1:
            both.set()
        elif len(calls) == 1:
            assert both.wait(30), "the second worker never started a photo"

    calls = spy(monkeypatch, first_waits_for_the_other)
    d = two_workers()
    inputs = tmp_path / "inputs"
    photos = [write_photo(inputs / f"d{n}" / "shot.jpg", seed=n) for n in range(10)]
    photos += [write_photo(inputs / f"p{n}.jpg", seed=10 + n) for n in range(10)]
    with events_of(d) as events:
        assert wait_for(lambda: d.status().done + d.status().failed >= 20, 120)
        assert d.wait_until_idle(30)
    assert [e.outcome for e in events] == ["done"] * 20
    ran = [photo for _, photo in calls]
    assert sorted(map(str, ran)) == sorted(map(str, photos))  # each once, none twice
    assert len({id(stage) for stage, _ in calls}) == 2
    outputs = [Path(e.output) for e in events if e.output]
    assert len({p.name.casefold() for p in outputs}) == 20
    assert len([p for p in outputs if p.name.startswith("shot_")]) == 10
    assert sorted(tmp_path.joinpath("outputs").glob("*.ply")) == sorted(outputs)
    status = d.status()
    assert [w.device for w in status.workers] == ["cpu", "cpu"]
    assert all(w.current_file is None for w in status.workers)


@pytest.mark.parametrize(("error", "words"), [
    (OutOfMemoryError("out of memory during sharp"), "twice"),
    (RuntimeError("CUDA error: the device was lost"), "the device cpu failed"),
])
def test_a_failing_device_fails_only_its_photo(two_workers, monkeypatch, tmp_path, error,
                                              words):
    doomed: list[Path] = []

    def fail_the_first(stage: object, photo: Path) -> None:
        if not doomed:
            doomed.append(photo)
        if photo == doomed[0]:
            raise error

    calls = spy(monkeypatch, fail_the_first)
    d = two_workers()
    for n in range(6):
        write_photo(tmp_path / "inputs" / f"p{n}.jpg", seed=n)
    with events_of(d) as events:
        assert wait_for(lambda: d.status().done + d.status().failed >= 6, 120)
    failed = [e for e in events if e.outcome == "failed"]
    assert len(failed) == 1 and failed[0].photo == str(doomed[0]) and words in failed[0].error
    assert d.status().done == 5
    tries = [stage for stage, photo in calls if photo == doomed[0]]
    assert len(tries) == (2 if isinstance(error, OutOfMemoryError) else 1)  # OOM: once more
    assert len(set(map(id, tries))) == 1  # on the same worker
    assert d.status().problems == () and all(w.alive for w in d.workers)


def test_status_lists_each_worker_with_its_device_photo_and_stage(two_workers, monkeypatch,
                                                                 tmp_path):
    release = threading.Event()
    spy(monkeypatch, lambda stage, photo: release.wait(30))
    d = two_workers()
    for seed, name in enumerate(("a.jpg", "b.jpg")):
        write_photo(tmp_path / "inputs" / name, seed=seed)
    try:
        assert wait_for(lambda: all(w.current_file for w in d.status().workers), 60)
        status = d.status()
        assert {(w.device, Path(w.current_file or "").name, w.stage)
                for w in status.workers} == {("cpu", "a.jpg", "decode"), ("cpu", "b.jpg", "decode")}
        assert status.state == "working" and status.current_file == status.workers[0].current_file
        assert status.as_dict()["workers"][1]["device"] == "cpu"
    finally:
        release.set()
    assert wait_for(lambda: d.status().done == 2, 60)


def test_claim_gives_a_job_to_exactly_one_of_many_threads(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite3")
    journal.submit("k", tmp_path / "a.jpg", "hash", "{}")
    won: list[object] = []
    barrier = threading.Barrier(8)

    def claim() -> None:
        barrier.wait()
        won.append(journal.claim("k"))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    journal.close()
    assert sum(job is not None for job in won) == 1


def test_names_held_by_one_writer_are_not_chosen_by_another(tmp_path):
    outputs = OutputFolder(tmp_path)

    def choose(held):
        return result_names(tmp_path, "shot", True, False, held=held)

    with outputs.reserved(choose) as first, outputs.reserved(choose) as second:
        assert not {p.name for p in first.all()} & {p.name for p in second.all()}
    with outputs.reserved(choose) as again:  # released: the first name is free again
        assert again.ply == first.ply


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_all_devices_is_the_cpu_without_a_gpu():
    assert parse_config({"models": {"device": "all"}}).models.devices() == ("cpu",)
    assert ModelConfig(device=("cpu", "cpu")).devices() == ("cpu", "cpu")
    assert parse_config({"models": {"device": "cpu"}}).model_settings().device == "cpu"


@pytest.mark.parametrize(("device", "words"), [
    ("gpu0", "unknown device 'gpu0'; use auto, all, cpu, mps, cuda or cuda:N"),
    (["cuda:0", "cuda:x"], "unknown device 'cuda:x'"),
    ([], "the list is empty"),
    (["all", "cpu"], "mixes auto or all with others"),
    (3, "must be a list of device names"),
])
def test_a_bad_device_is_a_config_error_naming_it(device, words):
    with pytest.raises(ConfigError, match=r"\[models\] device") as caught:
        parse_config({"models": {"device": device}}, "my.toml")
    assert words in str(caught.value) and "my.toml" in str(caught.value)


def test_a_suspect_photo_runs_alone_while_the_other_worker_waits(two_workers, monkeypatch,
                                                                   tmp_path, daemon_config):
    inputs = tmp_path / "inputs"
    suspect = write_photo(inputs / "suspect.jpg", seed=99)
    photo_hash = file_sha256(suspect)
    settings = daemon_config.defaults
    journal = Journal(tmp_path / "state" / "journal.sqlite3")  # it was running at a kill
    key = job_key(photo_hash, settings, None)
    journal.submit(key, suspect, photo_hash, settings_to_json(settings))
    assert journal.claim(key) is not None
    journal.close()
    running: list[Path] = []
    overlapped: list[tuple[Path, ...]] = []
    lock = threading.Lock()
    real: Run = daemon.stage.LocalStage._run

    def run(self, job, image, progress):
        with lock:
            running.append(job.photo)
            overlapped.append(tuple(running))
        try:
            time.sleep(0.05)  # room for an overlap, were it allowed
            return real(self, job, image, progress)
        finally:
            with lock:
                running.remove(job.photo)

    monkeypatch.setattr(daemon.stage.LocalStage, "_run", run)
    for n in range(4):
        write_photo(inputs / f"p{n}.jpg", seed=n)
    d = two_workers()
    assert wait_for(lambda: d.status().done == 5, 120)
    assert [seen for seen in overlapped if suspect in seen] == [(suspect,)]
    assert len(overlapped) == 5

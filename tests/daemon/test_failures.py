"""Every bad input fails only its own photo, with an error file, and the daemon carries on."""

from __future__ import annotations

import errno
import os
import shutil

import numpy as np
import pytest

import daemon.outputs
from pipeline import OutOfMemoryError, Pipeline
from pipeline.atomic import temp_path
from tests.conftest import entries, wait_for
from tests.support.files import npy_bytes


def _good_jpeg_bytes(make_photo, tmp_path) -> bytes:
    return make_photo(tmp_path / "src" / "good.jpg", 64, 48).read_bytes()


def _drop(path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


BAD_PHOTOS = {
    "corrupt.jpg": (lambda good: b"\xff\xd8\xff" + bytes(range(256)) * 8, "not a readable image"),
    "truncated.jpg": (lambda good: good[: len(good) // 3], "truncated"),
    "text.png": (lambda good: b"hello, not a picture\n", "not a readable image"),
    "empty.jpg": (lambda good: b"", "not a readable image"),
}


@pytest.mark.parametrize("name", sorted(BAD_PHOTOS))
def test_bad_photo_gets_error_file_and_next_photo_succeeds(running_daemon, make_daemon_config,
                                                           make_photo, tmp_path, name):
    make_bytes, needle = BAD_PHOTOS[name]
    good = _good_jpeg_bytes(make_photo, tmp_path)
    events = []
    # A truncated or empty file may be a copy still under way: reported once it has stayed
    # unchanged this long (tests/test_stalled_copy.py).
    daemon_config = make_daemon_config(settle_report_seconds=1.0)
    d = running_daemon(daemon_config, events=events)
    _drop(daemon_config.inputs / name, make_bytes(good))
    assert wait_for(lambda: events)
    assert events[0].outcome == "failed" and needle in events[0].error
    error_text = (daemon_config.outputs / f"{name}.error.txt").read_text()
    assert name in error_text and needle in error_text
    _drop(daemon_config.inputs / "next.jpg", good)
    assert wait_for(lambda: len(events) == 2) and d.wait_until_idle(30)
    assert events[1].outcome == "done"
    assert d.status().failed == 1 and d.status().done == 1
    # A fixed input (new content) clears the failure.
    _drop(daemon_config.inputs / name, make_photo(tmp_path / "fixed" / name, seed=7).read_bytes())
    assert wait_for(lambda: len(events) == 3) and d.wait_until_idle(30)
    assert events[2].outcome == "done"
    assert not (daemon_config.outputs / f"{name}.error.txt").exists()


def test_oversized_photo_is_refused(running_daemon, make_daemon_config, make_photo):
    config = make_daemon_config(max_pixels=5000)
    events = []
    running_daemon(config, events=events)
    make_photo(config.inputs / "huge.jpg", 100, 100)
    assert wait_for(lambda: events)
    assert events[0].outcome == "failed" and "max_pixels" in events[0].error
    assert "max_pixels" in (config.outputs / "huge.jpg.error.txt").read_text()
    make_photo(config.inputs / "small.jpg", 64, 48)
    assert wait_for(lambda: len(events) == 2) and events[1].outcome == "done"


@pytest.mark.parametrize("array, needle", [
    (np.array([_Boom()], dtype=object), "Python objects"),
    (np.full((8, 8), np.nan, dtype=np.float32), "NaN"),
    (np.ones((2, 3, 4, 5), dtype=np.float32), "shape"),
    (np.array(["a", "b"]), "dtype"),
])
def test_bad_npy_fails_photo_without_running_pickles(running_daemon, daemon_config, make_photo,
                                                     array, needle, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    inputs = daemon_config.inputs
    inputs.mkdir(parents=True)
    (inputs / "d.npy").write_bytes(npy_bytes(array, allow_pickle=True))
    (inputs / "n.toml").write_text('external_depth = "d.npy"\n')
    make_photo(inputs / "n.jpg")
    events = []
    d = running_daemon(events=events)
    assert wait_for(lambda: events) and d.wait_until_idle(30)
    assert events[0].outcome == "failed" and needle in events[0].error
    assert "d.npy" in (daemon_config.outputs / "n.jpg.error.txt").read_text()
    assert not (tmp_path / "PWNED").exists()
    # Fixing the .npy re-runs the photo that uses it.
    _drop(inputs / "d.npy", npy_bytes(np.full((48, 64), 2.0, dtype=np.float32)))
    assert wait_for(lambda: len(events) == 2) and d.wait_until_idle(30)
    assert events[1].outcome == "done"
    assert not (daemon_config.outputs / "n.jpg.error.txt").exists()


def test_unwritable_output_folder_fails_job_then_recovers(running_daemon, daemon_config,
                                                          make_photo):
    events = []
    d = running_daemon(events=events)
    shutil.rmtree(daemon_config.outputs)
    daemon_config.outputs.write_text("a file where the outputs folder should be")
    make_photo(daemon_config.inputs / "w.jpg")
    assert wait_for(lambda: events)
    assert events[0].outcome == "failed" and "outputs folder" in events[0].error
    assert d.status().last_error == events[0].error
    daemon_config.outputs.unlink()
    make_photo(daemon_config.inputs / "w2.jpg", seed=3)
    assert wait_for(lambda: len(events) == 2) and events[1].outcome == "done"
    assert len(list(daemon_config.outputs.glob("w2_*.ply"))) == 1


def test_disk_full_leaves_no_partial_files(running_daemon, daemon_config, make_photo,
                                           monkeypatch, overlap):
    real = daemon.outputs.write_ply
    state = {"fail": True}

    def full_disk(path, *args):
        if state["fail"]:
            with open(temp_path(path), "wb") as f:
                f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, *args)

    monkeypatch.setattr(daemon.outputs, "write_ply", full_disk)
    events = []
    d = running_daemon(events=events)
    make_photo(daemon_config.inputs / "full.jpg")
    assert wait_for(lambda: events) and d.wait_until_idle(30)
    assert events[0].outcome == "failed" and "No space left" in events[0].error
    assert "No space left" in (daemon_config.outputs / "full.jpg.error.txt").read_text()
    assert sorted(p.name for p in entries(daemon_config.outputs)) == ["full.jpg.error.txt"]
    state["fail"] = False
    make_photo(daemon_config.inputs / "after.jpg", seed=5)
    assert wait_for(lambda: len(events) == 2) and events[1].outcome == "done"
    job = next(j for j in d.journal.all() if j["photo"].endswith("full.jpg"))
    assert (job["state"], job["retryable"]) == ("failed", 1)


class _OomPipeline(Pipeline):
    """The tiny models, with SHARP raising out-of-memory for the first `ooms` calls."""

    def __init__(self, base: Pipeline, ooms: int) -> None:
        super().__init__(base.models, sharp=base.sharp,
                         depth_models={"depth-pro": base.depth_model("depth-pro")})
        self.ooms = ooms
        self.predict_calls = 0

    def predict(self, *args, **kwargs):
        self.predict_calls += 1
        if self.predict_calls <= self.ooms:
            raise OutOfMemoryError("GPU out of memory during SHARP")
        return super().predict(*args, **kwargs)


@pytest.mark.parametrize("ooms, outcome", [(1, "done"), (2, "failed")])
def test_out_of_memory_retries_once_then_fails(running_daemon, daemon_config, make_photo,
                                               tiny_pipeline, ooms, outcome):
    pipe = _OomPipeline(tiny_pipeline, ooms)
    events = []
    d = running_daemon(pipeline=pipe, events=events)
    make_photo(daemon_config.inputs / "big.jpg")
    assert wait_for(lambda: events) and d.wait_until_idle(30)
    assert [e.outcome for e in events] == [outcome]
    assert pipe.predict_calls == 2
    if outcome == "failed":
        assert "out of memory" in events[0].error and "twice" in events[0].error
        make_photo(daemon_config.inputs / "next.jpg", seed=9)
        assert wait_for(lambda: len(events) == 2) and events[1].outcome == "done"


def test_symlink_in_an_external_depth_folder_cannot_escape_inputs(running_daemon, daemon_config,
                                                                  make_photo, tmp_path):
    inputs = daemon_config.inputs
    (inputs / "maps").mkdir(parents=True)
    np.save(tmp_path / "secret.npy", np.ones((8, 8), dtype=np.float32))
    os.symlink(tmp_path / "secret.npy", inputs / "maps" / "m.npy")
    (inputs / "m.toml").write_text('external_depth = "maps"\n')
    make_photo(inputs / "m.jpg")
    events = []
    d = running_daemon(events=events)
    assert wait_for(lambda: events) and d.wait_until_idle(30)
    assert events[0].outcome == "failed" and "outside the inputs folder" in events[0].error


def test_photo_deleted_after_queueing_is_dropped_quietly(running_daemon, daemon_config,
                                                         make_photo, overlap):
    events = []
    d = running_daemon(events=events)
    d.pause()
    photo = make_photo(daemon_config.inputs / "gone.jpg")
    assert wait_for(lambda: d.status().queue_length == 1)
    photo.unlink()
    make_photo(daemon_config.inputs / "stays.jpg", seed=2)
    assert wait_for(lambda: d.status().queue_length == 2)
    d.resume()
    assert wait_for(lambda: events) and d.wait_until_idle(30)
    assert [(e.photo, e.outcome) for e in events] == [(str(daemon_config.inputs / "stays.jpg"),
                                                       "done")]
    assert d.journal.counts() == {"queued": 0, "running": 0, "done": 1, "failed": 0}

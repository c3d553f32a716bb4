"""The daemon under stress: bursts, slow writers, file-system and model faults,
path abuse, and SIGKILL at random moments. CI-sized; `bench/soak.py` runs the long versions.

Faults are injected only into our own code paths (the `open` our writers use, the
pipeline instance's methods, the SHARP double's forward), never into installed packages.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch
from plyfile import PlyData

import daemon.outputs
import daemon.readiness
import daemon.worker
import pipeline.atomic
from daemon import Config
from daemon.config import FolderConfig
from pipeline import DepthSettings, OutOfMemoryError, Pipeline
from tests.conftest import stop_process, wait_for, write_photo
from tests.support.daemon_runs import events_of, plys, settle, sharp_calls, stem_of

REPO = Path(__file__).resolve().parents[2]
GAUSSIANS = 2 * 32 * 32  # the SHARP double at resolution 64
RESULT_SUFFIXES = (".ply", ".json", ".png", ".npy")


# ---------------------------------------------------------------- helpers


def plys_quiet(outputs: Path) -> list[Path]:
    """PLYs now, without reading their reports (they may be mid-write)."""
    return list(outputs.glob("*.ply")) if outputs.is_dir() else []


def temp_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.name.endswith(".tmp"))


def check_complete_ply(path: Path) -> None:
    ply = PlyData.read(str(path))
    assert ply["vertex"].count == GAUSSIANS, path
    report = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    assert path.name in report["files"]


class FaultyOpen:
    """`open` for our writers' modules: writes fail with `code` after `after` bytes."""

    def __init__(self, code: int, after: int = 100) -> None:
        self.code = code
        self.after = after
        self.active = True
        self.failures = 0

    def __call__(self, file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = open(file, mode, *args, **kwargs)  # noqa: SIM115 - returned to the caller
        if not self.active or not any(c in mode for c in "wax+"):
            return handle
        return _FailingWriter(handle, self)


class _FailingWriter:
    def __init__(self, handle: Any, fault: FaultyOpen) -> None:
        self._handle = handle
        self._fault = fault
        self._written = 0

    def write(self, data: bytes) -> int:
        room = max(self._fault.after - self._written, 0)
        if len(data) > room:
            self._handle.write(data[:room])
            self._handle.flush()
            self._fault.failures += 1
            raise OSError(self._fault.code, os.strerror(self._fault.code))
        self._written += len(data)
        return self._handle.write(data)

    def __enter__(self) -> _FailingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def inject_write_fault(monkeypatch: pytest.MonkeyPatch, code: int) -> FaultyOpen:
    """Make every file our PLY writer and our atomic writer open fail with `code`."""
    fault = FaultyOpen(code)
    monkeypatch.setattr(pipeline.atomic, "open", fault, raising=False)
    return fault


class RssSampler:
    """Peak RSS of this process while a block runs (sampled every 10 ms)."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.01)

    def __enter__(self) -> RssSampler:
        self.base = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------- burst


@pytest.mark.timeout(240)
def test_burst_each_photo_processed_exactly_once_with_bounded_memory(
        running_daemon, daemon_config: Config, tiny_pipeline: Pipeline) -> None:
    d = running_daemon()
    inputs, outputs = daemon_config.inputs, daemon_config.outputs
    calls = sharp_calls(tiny_pipeline)
    with RssSampler() as single:
        write_photo(inputs / "single.jpg", seed=10_000)
        settle(d)
    assert len(plys(outputs)) == 1
    count = 100
    with events_of(d) as seen, RssSampler() as burst:
        for i in range(count):
            write_photo(inputs / f"burst {i:03d}.jpg", seed=i)
        settle(d, 180)
    assert sharp_calls(tiny_pipeline) - calls == count + 1
    done = [e for e in seen if e.outcome == "done"]
    assert len(done) == count and len({e.photo for e in done}) == count
    for i in range(count):
        found = plys(outputs, f"burst {i:03d}")
        assert len(found) == 1, f"burst {i:03d}: {len(found)} PLYs"
    assert d.status().done == count + 1 and d.status().failed == 0
    growth = burst.peak - single.peak
    print(f"single-file peak RSS {single.peak / 2**20:.0f} MiB, burst of {count} "
          f"{burst.peak / 2**20:.0f} MiB ({growth / 2**20:+.0f} MiB)")
    assert burst.peak <= single.peak * 1.25 + 64 * 2**20


# ---------------------------------------------------------------- slow writers


def _jpeg_bytes(tmp: Path, width: int, height: int, seed: int) -> bytes:
    write_photo(tmp, width, height, seed)
    data = tmp.read_bytes()
    tmp.unlink()
    return data


def _record_reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Path, int]]:
    """Every photo the worker decodes, with its size at that moment."""
    reads: list[tuple[Path, int]] = []
    real = daemon.worker.load_image

    def spy(path: Path, *args: Any) -> Any:
        reads.append((Path(path), Path(path).stat().st_size))
        return real(path, *args)

    monkeypatch.setattr(daemon.worker, "load_image", spy)
    return reads


@pytest.mark.timeout(60)
def test_photo_written_at_one_megabyte_per_second_is_read_once_complete(
        running_daemon, make_daemon_config: Callable[..., Config],
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    reads = _record_reads(monkeypatch)
    daemon_config = make_daemon_config(stable_seconds=1.0)  # the shipped default
    d = running_daemon(daemon_config)
    data = _jpeg_bytes(tmp_path / "src.jpg", 1800, 1350, 1)
    assert len(data) > 1_000_000
    target = daemon_config.inputs / "slow.jpg"
    chunk = 16 * 1024
    with events_of(d) as seen, open(target, "wb") as out:
        for start in range(0, len(data), chunk):
            out.write(data[start:start + chunk])
            out.flush()
            time.sleep(chunk / 1_000_000)
    settle(d)
    assert reads == [(target, len(data))]
    assert [e.outcome for e in seen] == ["done"]
    assert len(plys(daemon_config.outputs)) == 1


@pytest.mark.timeout(60)
def test_written_truncated_rewritten_runs_once_on_the_final_content(
        running_daemon, make_daemon_config: Callable[..., Config],
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    reads = _record_reads(monkeypatch)
    daemon_config = make_daemon_config(stable_seconds=1.0)  # the shipped default
    d = running_daemon(daemon_config)
    first = _jpeg_bytes(tmp_path / "a.jpg", 320, 240, 2)
    final = _jpeg_bytes(tmp_path / "b.jpg", 400, 300, 3)
    target = daemon_config.inputs / "rewritten.jpg"
    with events_of(d) as seen:
        target.write_bytes(first)
        with open(target, "r+b") as out:
            out.truncate(0)
        with open(target, "wb") as out:
            for start in range(0, len(final), 4096):
                out.write(final[start:start + 4096])
                out.flush()
                time.sleep(0.01)
        settle(d)
    assert reads == [(target, len(final))]
    assert [e.outcome for e in seen] == ["done"]
    report = json.loads(plys(daemon_config.outputs)[0].with_suffix(".json").read_text())
    assert report["photo_sha256"] == hashlib.sha256(final).hexdigest()


@pytest.mark.timeout(60)
def test_file_that_keeps_growing_is_reported_then_processed_not_dropped(
        running_daemon, make_daemon_config: Callable[..., Config], tmp_path: Path) -> None:
    config = make_daemon_config(settle_report_seconds=1.0)
    d = running_daemon(config)
    target = config.inputs / "growing.jpg"
    target.write_bytes(_jpeg_bytes(tmp_path / "g.jpg", 64, 48, 4))
    error_file = config.outputs / "growing.jpg.error.txt"
    with events_of(d) as seen:
        deadline = time.monotonic() + 2.5
        with open(target, "ab") as out:
            while time.monotonic() < deadline:
                out.write(b"\0" * 512)
                out.flush()
                time.sleep(0.05)
        assert error_file.is_file(), "a file that keeps growing was not reported"
        assert "still being written" in error_file.read_text()
        assert "growing.jpg" in (d.status().last_error or "")
        assert plys(config.outputs) == []
        settle(d)
    assert [e.outcome for e in seen] == ["done"]
    assert len(plys(config.outputs)) == 1
    assert not error_file.exists(), "the stale 'still being written' note was not cleared"


@pytest.mark.timeout(60)
def test_file_that_stays_locked_is_reported_then_processed(
        running_daemon, make_daemon_config: Callable[..., Config],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows locks a file being copied; `openable` is what sees that lock."""
    unlocked = threading.Event()
    real = daemon.readiness.openable
    monkeypatch.setattr(daemon.readiness, "openable",
                        lambda path: unlocked.is_set() and real(path))
    config = make_daemon_config(settle_report_seconds=1.0)
    d = running_daemon(config)
    write_photo(config.inputs / "locked.jpg", seed=5)
    assert wait_for(lambda: (config.outputs / "locked.jpg.error.txt").is_file(), 10)
    assert plys(config.outputs) == []
    unlocked.set()
    settle(d)
    assert len(plys(config.outputs)) == 1


# ---------------------------------------------------------------- file-system faults


@pytest.mark.timeout(90)
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_write_fault_fails_clearly_leaves_nothing_partial_and_recovers(
        running_daemon, daemon_config: Config, tiny_pipeline: Pipeline,
        monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    fault = inject_write_fault(monkeypatch, code)
    d = running_daemon()
    outputs = daemon_config.outputs
    with events_of(d) as seen:
        write_photo(daemon_config.inputs / "full.jpg", seed=6)
        settle(d)
        assert fault.failures >= 1
        assert [e.outcome for e in seen] == ["failed"]
        assert os.strerror(code) in (seen[0].error or "")
        assert "full" in (seen[0].error or "") or str(outputs) in (seen[0].error or "")
        assert [p for p in outputs.iterdir() if p.suffix in RESULT_SUFFIXES] == []
        assert temp_files(outputs) == []
        fault.active = False
        write_photo(daemon_config.inputs / "after.jpg", seed=7)
        settle(d)
        assert [e.outcome for e in seen] == ["failed", "done"]
    d.stop()
    again = running_daemon()
    settle(again)
    assert len(plys(outputs, "full")) == 1, "the photo that hit the fault was lost"
    assert len(plys(outputs, "after")) == 1
    assert not (outputs / "full.jpg.error.txt").exists()


@pytest.mark.timeout(60)
def test_outputs_folder_deleted_while_running_is_recreated(
        running_daemon, daemon_config: Config) -> None:
    d = running_daemon()
    write_photo(daemon_config.inputs / "one.jpg", seed=8)
    settle(d)
    shutil.rmtree(daemon_config.outputs)
    write_photo(daemon_config.inputs / "two.jpg", seed=9)
    settle(d)
    assert len(plys(daemon_config.outputs, "two")) == 1
    assert temp_files(daemon_config.outputs) == []


@pytest.mark.timeout(60)
def test_outputs_path_taken_by_a_file_fails_clearly_then_recovers(
        running_daemon, daemon_config: Config) -> None:
    d = running_daemon()
    shutil.rmtree(daemon_config.outputs)
    daemon_config.outputs.write_text("not a folder")
    with events_of(d) as seen:
        write_photo(daemon_config.inputs / "blocked.jpg", seed=10)
        settle(d)
    assert [e.outcome for e in seen] == ["failed"]
    assert str(daemon_config.outputs) in (seen[0].error or "")
    daemon_config.outputs.unlink()
    d.stop()
    settle(running_daemon())
    assert len(plys(daemon_config.outputs, "blocked")) == 1


@pytest.mark.timeout(60)
def test_inputs_folder_deleted_is_recreated_and_watched(
        running_daemon, daemon_config: Config) -> None:
    d = running_daemon()
    shutil.rmtree(daemon_config.inputs)
    assert wait_for(daemon_config.inputs.is_dir, 5), "the daemon did not recreate inputs"
    time.sleep(0.5)
    write_photo(daemon_config.inputs / "back.jpg", seed=11)
    assert wait_for(lambda: len(plys(daemon_config.outputs)) == 1, 20)
    settle(d)


@pytest.mark.timeout(60)
def test_inputs_folder_deleted_and_recreated_by_the_user_is_watched_again(
        running_daemon, daemon_config: Config) -> None:
    d = running_daemon()
    write_photo(daemon_config.inputs / "before.jpg", seed=12)
    settle(d)
    shutil.rmtree(daemon_config.inputs)
    daemon_config.inputs.mkdir()
    time.sleep(2.5)
    write_photo(daemon_config.inputs / "after.jpg", seed=13)
    assert wait_for(lambda: len(plys(daemon_config.outputs, "after")) == 1, 20), (
        "a photo dropped into the re-created inputs folder was never processed")
    settle(d)


@pytest.mark.timeout(60)
def test_photo_deleted_after_queueing_is_skipped_and_the_next_runs(
        running_daemon, daemon_config: Config) -> None:
    d = running_daemon()
    d.pause()
    victim = write_photo(daemon_config.inputs / "gone.jpg", seed=14)
    assert wait_for(lambda: d.status().queue_length == 1, 10)
    victim.unlink()
    with events_of(d) as seen:
        d.resume()
        settle(d)
        write_photo(daemon_config.inputs / "kept.jpg", seed=15)
        settle(d)
    assert [(Path(e.photo).name, e.outcome) for e in seen] == [("kept.jpg", "done")]
    counts = d.journal.counts() if d.journal else {}
    assert counts["queued"] == 0 and counts["running"] == 0


@pytest.mark.timeout(60)
def test_photo_deleted_at_the_moment_of_reading_fails_clearly(
        running_daemon, daemon_config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    real = daemon.worker.load_image

    def vanish_first(path: Path, *args: Any) -> Any:
        if Path(path).name == "racy.jpg":
            Path(path).unlink(missing_ok=True)
        return real(path, *args)

    monkeypatch.setattr(daemon.worker, "load_image", vanish_first)
    d = running_daemon()
    with events_of(d) as seen:
        write_photo(daemon_config.inputs / "racy.jpg", seed=16)
        settle(d)
        write_photo(daemon_config.inputs / "fine.jpg", seed=17)
        settle(d)
    outcomes = {Path(e.photo).name: e for e in seen}
    assert outcomes["fine.jpg"].outcome == "done"
    assert outcomes["racy.jpg"].outcome == "failed"
    assert "not found" in (outcomes["racy.jpg"].error or "")


LONG_STEM = "long " + "x" * 225


@pytest.mark.timeout(90)
@pytest.mark.parametrize("name", [
    "with spaces and  double  spaces.jpg",
    "фото праздник 写真 🙂 ñ.jpg",
    "#%&{}$!'@+`=.jpg",
    f"{LONG_STEM}.jpg",
    f"{'é' * 118}.jpg",
])
def test_awkward_names_get_a_result(running_daemon, daemon_config: Config, name: str) -> None:
    assert len(name.encode()) <= 255
    d = running_daemon()
    with events_of(d) as seen:
        write_photo(daemon_config.inputs / name, seed=18)
        settle(d)
        write_photo(daemon_config.inputs / "plain.jpg", seed=28)
        settle(d)
    outcomes = [(Path(e.photo).name, e.outcome) for e in seen]
    assert outcomes == [(name, "done"), ("plain.jpg", "done")], [e.error for e in seen]
    found = plys(daemon_config.outputs)
    assert len(found) == 2
    for ply in found:
        check_complete_ply(ply)
    assert all(len(p.name.encode()) <= 255 for p in daemon_config.outputs.iterdir())


@pytest.mark.timeout(90)
def test_paths_over_the_windows_260_character_limit_work(
        running_daemon, make_daemon_config: Callable[..., Config], tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100) / ("e" * 100) / ("f" * 60)
    config = make_daemon_config(folders=FolderConfig(deep / "inputs", deep / "outputs"))
    d = running_daemon(config)
    photo = config.inputs / "deep photo.jpg"
    assert len(str(photo)) > 260
    with events_of(d) as seen:
        write_photo(photo, seed=19)
        settle(d)
    assert [e.outcome for e in seen] == ["done"]
    check_complete_ply(plys(config.outputs)[0])


# ---------------------------------------------------------------- model faults


def _fail_for(name: str, times: int, error: Callable[[], BaseException],
              real: Callable[..., Any], photo_of: Callable[..., Path]) -> Callable[..., Any]:
    """`real`, except that its first `times` calls for photo `name` raise `error()`."""
    left = {"n": times}

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if photo_of(*args, **kwargs).name == name and left["n"] > 0:
            left["n"] -= 1
            raise error()
        return real(*args, **kwargs)

    wrapped.left = left  # type: ignore[attr-defined]
    return wrapped


def _image_arg(image: Any, *_: Any, **__: Any) -> Path:
    return image.path


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("times", "outcome"), [(1, "done"), (5, "failed")])
def test_depth_out_of_memory_retries_once_then_fails_and_the_next_job_runs(
        running_daemon, make_daemon_config: Callable[..., Config], tiny_pipeline: Pipeline,
        monkeypatch: pytest.MonkeyPatch, times: int, outcome: str) -> None:
    fake = _fail_for("oom.jpg", times,
                     lambda: OutOfMemoryError("GPU out of memory during depth estimation"),
                     tiny_pipeline.estimate_depth, _image_arg)
    monkeypatch.setattr(tiny_pipeline, "estimate_depth", fake)
    daemon_config = make_daemon_config(defaults=DepthSettings())
    d = running_daemon(daemon_config)
    with events_of(d) as seen:
        write_photo(daemon_config.inputs / "oom.jpg", seed=20)
        settle(d)
        write_photo(daemon_config.inputs / "next.jpg", seed=21)
        settle(d)
    assert times - fake.left["n"] == min(times, 2), "expected exactly one retry"
    result = {Path(e.photo).name: e for e in seen}
    assert result["oom.jpg"].outcome == outcome
    assert result["next.jpg"].outcome == "done"
    if outcome == "failed":
        error = result["oom.jpg"].error or ""
        assert "oom.jpg" in error and "out of memory" in error.lower()
        assert (daemon_config.outputs / "oom.jpg.error.txt").is_file()
    assert d.status().state == "idle"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("error", [
    lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    lambda: RuntimeError("CUDA error: an illegal memory access was encountered"),
], ids=["cuda-oom", "runtime-error"])
def test_sharp_raising_fails_that_job_clearly_and_the_model_stays_usable(
        running_daemon, daemon_config: Config, tiny_pipeline: Pipeline,
        monkeypatch: pytest.MonkeyPatch, error: Callable[[], BaseException]) -> None:
    predictor = tiny_pipeline.sharp.predictor
    real = predictor.forward
    broken = threading.Event()
    broken.set()

    def forward(*args: Any, **kwargs: Any) -> Any:
        if broken.is_set():
            raise error()
        return real(*args, **kwargs)

    monkeypatch.setattr(predictor, "forward", forward)
    d = running_daemon()
    with events_of(d) as seen:
        write_photo(daemon_config.inputs / "sharp fails.jpg", seed=22)
        settle(d)
        broken.clear()
        write_photo(daemon_config.inputs / "sharp works.jpg", seed=23)
        settle(d)
    result = {Path(e.photo).name: e for e in seen}
    failure = result["sharp fails.jpg"]
    assert failure.outcome == "failed"
    assert "sharp fails.jpg" in (failure.error or "")
    assert (daemon_config.outputs / "sharp fails.jpg.error.txt").is_file()
    assert result["sharp works.jpg"].outcome == "done"
    assert d.status().state == "idle" and d.status().failed == 1


# ---------------------------------------------------------------- path abuse


def _depth_npy(path: Path) -> Path:
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.full((48, 64), 2.0, np.float32))
    return path


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink-file", "symlink-folder",
                                  "dotdot-inside-then-out"])
def test_external_depth_outside_inputs_is_refused(
        running_daemon, daemon_config: Config, tmp_path: Path, kind: str) -> None:
    inputs = daemon_config.inputs
    inputs.mkdir(parents=True, exist_ok=True)
    secret = _depth_npy(tmp_path / "elsewhere" / "photo.npy")
    value = {
        "dotdot": "../elsewhere/photo.npy",
        "absolute": str(secret),
        "symlink-file": "link.npy",
        "symlink-folder": "linkdir/photo.npy",
        "dotdot-inside-then-out": "sub/../../elsewhere/photo.npy",
    }[kind]
    (inputs / "sub").mkdir()
    if kind == "symlink-file":
        (inputs / "link.npy").symlink_to(secret)
    if kind == "symlink-folder":
        (inputs / "linkdir").symlink_to(secret.parent, target_is_directory=True)
    (inputs / "photo.toml").write_text(f"external_depth = {json.dumps(value)}\n")
    d = running_daemon()
    with events_of(d) as seen:
        write_photo(inputs / "photo.jpg", seed=24)
        settle(d)
    assert [e.outcome for e in seen] == ["failed"]
    error = seen[0].error or ""
    assert "photo.toml" in error and "outside the inputs folder" in error
    assert plys(daemon_config.outputs) == []
    assert "outside" in (daemon_config.outputs / "photo.jpg.error.txt").read_text()


@pytest.mark.timeout(60)
def test_external_depth_inside_inputs_is_used(running_daemon, daemon_config: Config) -> None:
    """The control for the refusals above: the same sidecar pointing inside works."""
    inputs = daemon_config.inputs
    _depth_npy(inputs / "depths" / "photo.npy")
    (inputs / "photo.toml").write_text('external_depth = "depths/photo.npy"\n')
    d = running_daemon()
    with events_of(d) as seen:
        write_photo(inputs / "photo.jpg", seed=25)
        settle(d)
    assert [e.outcome for e in seen] == ["done"]
    report = json.loads(plys(daemon_config.outputs)[0].with_suffix(".json").read_text())
    assert report["depth"]["source"] == "npy"


# ---------------------------------------------------------------- bad inputs at daemon level


BAD_SIDECARS = [b"depth_scael = 2.0\n", b"depth_scale = nan\n", b"depth_scale = -inf\n",
                b'depth_scale = "2"\n', b"depth_scale = 1e400\n", b"focal_mm = 0\n",
                b"back_surface_factor = 0.5\n", b"depth_scale = " + b"[" * 2000 + b"]" * 2000,
                b"\xff\xfe depth_scale = 2\n", b"depth_scale = 2\ndepth_scale = 3\n",
                b"x = 1\n" * 20000, b'depth_source = "\u202edepth-pro"\n',
                b"save_internal_depth = 1\n", b"[defaults]\ndepth_scale = 2.0\n"]


@pytest.mark.timeout(120)
def test_fuzzed_inputs_each_fail_alone_and_the_next_good_photo_succeeds(
        running_daemon, daemon_config: Config, tmp_path: Path) -> None:
    from tests.pipeline.test_fuzzed_loaders import Case, image_corpus, npy_corpus

    inputs = daemon_config.inputs
    d = running_daemon()
    unique: dict[str, Case] = {}
    for case in image_corpus(tmp_path / "corpus", 120, seed=7):
        if case.expect == "error" and case.path.suffix.lower() in (".jpg", ".png", ".heic"):
            unique.setdefault(hashlib.sha256(case.path.read_bytes()).hexdigest(), case)
    bad_images = list(unique.values())
    bad_npys = [c for c in npy_corpus(tmp_path / "npys", 40, tmp_path / "marker")
                if c.expect == "error"][:12]
    with events_of(d) as seen:
        for index, case in enumerate(bad_images[:20]):
            shutil.copy(case.path, inputs / f"bad{index:02d}{case.path.suffix}")
        for index, case in enumerate(bad_npys):
            shutil.copy(case.path, inputs / f"depth{index:02d}.npy")
            write_photo(inputs / f"depth{index:02d}.jpg", seed=100 + index)
            (inputs / f"depth{index:02d}.toml").write_text(
                f'external_depth = "depth{index:02d}.npy"\n')
        for index, document in enumerate(BAD_SIDECARS):
            (inputs / f"side{index:02d}.toml").write_bytes(document)
            write_photo(inputs / f"side{index:02d}.jpg", seed=200 + index)
        settle(d, 90)
        write_photo(inputs / "good after all that.jpg", seed=26)
        settle(d)
    failed = {Path(e.photo).name for e in seen if e.outcome == "failed"}
    expected = {f"bad{i:02d}{c.path.suffix}" for i, c in enumerate(bad_images[:20])}
    expected |= {f"depth{i:02d}.jpg" for i in range(len(bad_npys))}
    expected |= {f"side{i:02d}.jpg" for i in range(len(BAD_SIDECARS))}
    assert failed == expected
    assert [e.outcome for e in seen if Path(e.photo).name == "good after all that.jpg"] == ["done"]
    for name in expected:
        note = daemon_config.outputs / f"{name}.error.txt"
        assert note.is_file() and note.read_text().strip(), name
        if name.startswith("side"):
            assert f"{Path(name).stem}.toml" in note.read_text(), note.read_text()
    assert not (tmp_path / "marker").exists()


# ---------------------------------------------------------------- crash anywhere


def start_daemon(config_file: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as err:
        return subprocess.Popen([sys.executable, "-m", "daemon", "--config", str(config_file)],
                                cwd=REPO, stdout=err, stderr=err)


def kill_rounds(config_file: Path, outputs: Path, log: Path, kills: int, rng: random.Random,
                on_round: Callable[[int], None] | None = None) -> list[str]:
    """Start `python -m daemon` and SIGKILL it at a random moment, `kills` times.

    Most kills land a random 0-0.6 s after the round's first new PLY (so mid-job, in any
    stage); about one in four lands at a random moment of start-up and recovery instead.
    Returns when each kill happened, for the failure message.
    """
    moments = []
    for index in range(kills):
        if on_round is not None:
            on_round(index)
        before = len(plys_quiet(outputs))
        proc = start_daemon(config_file, log)
        started = time.monotonic()
        try:
            if rng.random() < 0.25:
                time.sleep(rng.uniform(0.5, 8.0))
            elif wait_for(lambda b=before: len(plys_quiet(outputs)) > b, 60):
                time.sleep(rng.uniform(0.0, 0.6))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        moments.append(f"{time.monotonic() - started:.2f}s")
    return moments


def run_to_completion(config_file: Path, log: Path, done: Callable[[], bool],
                      timeout: float) -> None:
    proc = start_daemon(config_file, log)
    try:
        assert wait_for(done, timeout), f"not finished after {timeout} s; see {log}"
        time.sleep(1.0)
    finally:
        stop_process(proc)


def tally_outputs(config: Config, versions: dict[str, int]) -> dict[str, Any]:
    """Results against what each photo stem should have: counts and any disagreement."""
    outputs = config.outputs
    by_stem: dict[str, list[Path]] = {}
    incomplete = []
    for ply in plys_quiet(outputs):
        try:
            check_complete_ply(ply)
        except (AssertionError, OSError, ValueError, KeyError) as exc:
            incomplete.append(f"{ply.name}: {exc!r}")
            continue
        by_stem.setdefault(stem_of(ply), []).append(ply)
    db = sqlite3.connect(config.daemon.state_dir / "journal.sqlite3")
    rows = db.execute("SELECT state, outputs FROM jobs").fetchall()
    db.close()
    states = [state for state, _ in rows]
    listed = {Path(p).name for state, out in rows if state == "done" for p in json.loads(out)}
    present = {p.name for p in outputs.iterdir() if p.suffix in RESULT_SUFFIXES}
    return {
        "processed": sum(1 for s in versions if s in by_stem),
        "duplicated": sum(max(len(by_stem.get(s, [])) - n, 0) for s, n in versions.items()),
        "lost": sorted(s for s, n in versions.items() if len(by_stem.get(s, [])) < n),
        "unexpected": sorted(set(by_stem) - set(versions)),
        "incomplete": incomplete,
        "temp_files": [p.name for p in temp_files(outputs)],
        "error_notes": [p.name for p in outputs.glob("*.error.txt")],
        "journal_done": states.count("done"),
        "journal_open": len(states) - states.count("done") - states.count("failed"),
        "journal_vs_files": sorted(listed ^ present),
    }


def audit_outputs(config: Config, versions: dict[str, int]) -> dict[str, Any]:
    """Exactly one complete result per settings version, no temp files, journal agrees."""
    tally = tally_outputs(config, versions)
    assert tally["lost"] == [] and tally["duplicated"] == 0, tally
    assert tally["incomplete"] == [] and tally["unexpected"] == [], tally
    assert tally["temp_files"] == [], "temp files left in outputs"
    assert tally["error_notes"] == [], tally["error_notes"]
    assert tally["journal_done"] == sum(versions.values()) and tally["journal_open"] == 0, tally
    assert tally["journal_vs_files"] == [], "journal and files disagree"
    return tally


@pytest.mark.timeout(300)
def test_sigkill_at_random_moments_then_restart_finishes_every_photo_exactly_once(
        make_daemon_config: Callable[..., Config], config_toml: Callable[[Config], Path],
        tmp_path: Path) -> None:
    config = make_daemon_config(stable_seconds=0.1)
    versions = crash_run(config, config_toml(config), tmp_path / "daemon.log", photos=10,
                         kills=5, rng=random.Random(7))
    assert sum(versions.values()) > 10, "no photo was retuned between kills"
    audit_outputs(config, versions)


def crash_run(config: Config, config_file: Path, log: Path, photos: int, kills: int,
              rng: random.Random) -> dict[str, int]:
    """Photos in, `kills` SIGKILLs, two done photos retuned midway, then a clean run.

    Returns how many results each photo stem must end with (one per settings version).
    """
    for i in range(photos):
        write_photo(config.inputs / f"p{i:03d}.jpg", width=160, height=120, seed=300 + i)
    versions = {f"p{i:03d}": 1 for i in range(photos)}

    def retune(round_index: int) -> None:
        if round_index == kills // 2:
            done = sorted({re.sub(r"_\d{8}-\d{6}(-\d+)?$", "", p.stem)
                           for p in plys_quiet(config.outputs)})
            for stem in done[:2]:
                (config.inputs / f"{stem}.toml").write_text("depth_scale = 1.5\n")
                versions[stem] = 2

    moments = kill_rounds(config_file, config.outputs, log, kills, rng, retune)
    total = sum(versions.values())
    run_to_completion(config_file, log, lambda: len(plys_quiet(config.outputs)) >= total,
                      60 + 2 * photos)
    print(f"kills at {', '.join(moments)} after start")
    return versions




@pytest.mark.timeout(60)
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_sidecar_pointing_at_a_fifo_fails_that_photo_and_hangs_nothing(
        running_daemon, daemon_config: Config) -> None:
    inputs = daemon_config.inputs
    inputs.mkdir(parents=True, exist_ok=True)
    os.mkfifo(inputs / "pipe.npy")
    (inputs / "piped.toml").write_text('external_depth = "pipe.npy"\n')
    d = running_daemon()
    with events_of(d) as seen:
        write_photo(inputs / "piped.jpg", seed=29)
        settle(d, 20)
        write_photo(inputs / "unpiped.jpg", seed=30)
        settle(d, 20)
    result = {Path(e.photo).name: e for e in seen}
    assert result["piped.jpg"].outcome == "failed"
    assert "regular file" in (result["piped.jpg"].error or "")
    assert result["unpiped.jpg"].outcome == "done"

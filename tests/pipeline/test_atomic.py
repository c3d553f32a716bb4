"""`pipeline.atomic`: durable writes (fsync order), Windows sharing violations and long
paths (simulated through our module's `WINDOWS`, `os.replace` and `open`), our temp names
only, owner-only files; and the checkpoint download that uses it (`pipeline.weights`)."""

from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path
from typing import Any

import pytest

import pipeline.atomic as atomic
import pipeline.weights as weights
from pipeline import ModelError, OutputError
from pipeline.atomic import atomic_write, is_temp_name, temp_files, temp_path


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every fsync (of a file or a folder) and replace, in order, as pipeline.atomic does them."""
    seen: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        seen.append(("fsync", "folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        seen.append(("replace", Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    return seen


@pytest.fixture
def no_waits(monkeypatch: pytest.MonkeyPatch) -> tuple[float, ...]:
    delays = (0.001,) * len(atomic.REPLACE_DELAYS)
    monkeypatch.setattr(atomic, "REPLACE_DELAYS", delays)
    return delays


def _sharing_violation() -> PermissionError:
    """What `os.replace` raises on Windows while a scanner or viewer holds the file."""
    exc = PermissionError(13, "Access is denied")
    exc.winerror = 32  # type: ignore[attr-defined]
    return exc


def _refuse_replace(monkeypatch: pytest.MonkeyPatch, times: int) -> list[int]:
    """`os.replace` as pipeline.atomic sees it fails `times` times, then works."""
    tries: list[int] = []
    real = os.replace

    def replace(src: Any, dst: Any) -> None:
        tries.append(1)
        if len(tries) <= times:
            raise _sharing_violation()
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    return tries


# ---------------------------------------------------------------- durability


def test_file_is_fsynced_before_the_rename_and_the_folder_after(tmp_path, calls,
                                                                monkeypatch) -> None:
    monkeypatch.setattr(atomic, "WINDOWS", False)
    target = atomic_write(tmp_path / "a.ply", b"data")
    assert target.read_bytes() == b"data"
    assert calls == [("fsync", "file"), ("replace", "a.ply"), ("fsync", "folder")]


def test_writer_function_output_is_fsynced_too(tmp_path, calls) -> None:
    atomic_write(tmp_path / "b.bin", lambda out: out.write(b"x" * 100_000))
    assert (tmp_path / "b.bin").stat().st_size == 100_000
    assert calls == [("fsync", "file"), ("replace", "b.bin"), ("fsync", "folder")]


def test_not_durable_skips_every_fsync(tmp_path, calls) -> None:
    atomic_write(tmp_path / "c.npy", b"cache", durable=False)
    assert calls == [("replace", "c.npy")]


def test_on_windows_no_folder_is_opened_or_fsynced(tmp_path, calls, monkeypatch) -> None:
    monkeypatch.setattr(atomic, "WINDOWS", True)
    opened: list[str] = []
    real_open = os.open

    def spy(path: Any, flags: int, mode: int = 0o777) -> int:
        opened.append(str(path))
        return real_open(path, flags, mode)

    monkeypatch.setattr(atomic.os, "open", spy)
    atomic_write(tmp_path / "d.ply", b"data")
    assert calls == [("fsync", "file"), ("replace", "d.ply")]
    assert opened == [str(temp_path(tmp_path / "d.ply"))]


# ---------------------------------------------------------------- sharing violations


@pytest.mark.parametrize("refusals", [1, 3, 6])
def test_rename_refused_a_few_times_still_writes_and_leaves_nothing(
        tmp_path, monkeypatch, no_waits, refusals) -> None:
    (tmp_path / "e.ply").write_bytes(b"old")
    tries = _refuse_replace(monkeypatch, refusals)
    atomic_write(tmp_path / "e.ply", b"new")
    assert len(tries) == refusals + 1
    assert (tmp_path / "e.ply").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.ply"]


def test_rename_refused_throughout_is_an_output_error_saying_it_will_be_retried(
        tmp_path, monkeypatch, no_waits) -> None:
    (tmp_path / "f.ply").write_bytes(b"old")
    tries = _refuse_replace(monkeypatch, 10**6)
    with pytest.raises(OutputError) as info:
        atomic_write(tmp_path / "f.ply", b"new")
    assert len(tries) == len(no_waits) + 1
    message = str(info.value)
    assert str(tmp_path / "f.ply") in message
    assert "another program" in message and "tried again later" in message
    assert (tmp_path / "f.ply").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.ply"]


def test_retries_wait_the_documented_delays(tmp_path, monkeypatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(atomic.time, "sleep", waits.append)
    _refuse_replace(monkeypatch, 2)
    atomic_write(tmp_path / "g.ply", b"x")
    assert waits == list(atomic.REPLACE_DELAYS[:2])
    assert 1.0 <= sum(atomic.REPLACE_DELAYS) <= 10.0


def test_other_errors_are_not_retried(tmp_path, monkeypatch, no_waits) -> None:
    tries: list[int] = []

    def replace(src: Any, dst: Any) -> None:
        tries.append(1)
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(OutputError, match="cross-device"):
        atomic_write(tmp_path / "h.ply", b"x")
    assert tries == [1] and list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- long paths


def _long_path_open(monkeypatch: pytest.MonkeyPatch, exc: OSError) -> None:
    """`open` as pipeline.atomic sees it fails as Windows does for paths of 260+ characters."""
    def fake_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if len(os.path.abspath(file)) >= atomic.MAX_PATH:
            raise exc
        return open(file, *args, **kwargs)

    monkeypatch.setattr(atomic, "open", fake_open, raising=False)


def _winerror(exc: OSError, code: int) -> OSError:
    exc.winerror = code  # type: ignore[attr-defined]
    return exc


def _deep_folder(root: Path, length: int) -> Path:
    folder = root
    while len(str(folder)) < length:
        folder = folder / ("d" * 40)
    folder.mkdir(parents=True)
    return folder


@pytest.mark.parametrize("exc", [
    _winerror(FileNotFoundError(errno.ENOENT, "The system cannot find the path specified"), 3),
    _winerror(OSError(errno.EINVAL, "The filename or extension is too long"), 206),
], ids=["winerror-3", "winerror-206"])
def test_path_over_260_characters_names_the_path_and_long_paths_setting(
        tmp_path, monkeypatch, exc) -> None:
    monkeypatch.setattr(atomic, "WINDOWS", True)
    _long_path_open(monkeypatch, exc)
    target = _deep_folder(tmp_path, 240) / "photo_20260101-120000.ply"
    with pytest.raises(OutputError) as info:
        atomic_write(target, b"x")
    message = str(info.value)
    assert str(target) in message
    assert "LongPathsEnabled" in message and "260" in message
    assert list(target.parent.iterdir()) == []


def test_short_path_error_gets_no_long_path_hint(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(atomic, "WINDOWS", True)
    missing = tmp_path / "gone" / "a.ply"
    with pytest.raises(OutputError) as info:
        atomic_write(missing, b"x")
    assert "LongPathsEnabled" not in str(info.value) and str(missing) in str(info.value)


def test_long_path_hint_only_on_windows(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(atomic, "WINDOWS", False)
    _long_path_open(monkeypatch, _winerror(FileNotFoundError(errno.ENOENT, "No such file"), 3))
    target = _deep_folder(tmp_path, 270) / "a.ply"
    with pytest.raises(OutputError) as info:
        atomic_write(target, b"x")
    assert "LongPathsEnabled" not in str(info.value)


# ---------------------------------------------------------------- temp files


def test_temp_names_are_ours_only(tmp_path) -> None:
    ours = temp_path(tmp_path / "photo_20260101-120000.ply")
    assert is_temp_name(ours.name)
    foreign = [".photo.jpg.tmp", ".~lock.tmp", ".photo.ply.1234.tmp", "photo.sharp-watch.tmp",
               "~$report.tmp", ".sharp-watch.tmp"]
    for name in foreign:
        assert not is_temp_name(name), name
        (tmp_path / name).write_bytes(b"theirs")
    ours.write_bytes(b"ours")
    assert temp_files(tmp_path) == [ours]
    assert temp_files(tmp_path, "photo_20260101-120000.ply") == [ours]
    assert temp_files(tmp_path, "other.ply") == []


def test_a_leftover_under_our_own_temp_name_does_not_block_the_write(tmp_path) -> None:
    target = tmp_path / "a.json"
    temp_path(target).write_bytes(b"from a crashed process whose id was reused")
    atomic_write(target, b"{}")
    assert target.read_bytes() == b"{}" and temp_files(tmp_path) == []


def test_a_failing_writer_function_leaves_no_temp_file(tmp_path) -> None:
    def broken(out: Any) -> None:
        out.write(b"half")
        raise ValueError("the data could not be made")

    with pytest.raises(ValueError, match="could not be made"):
        atomic_write(tmp_path / "a.ply", broken)
    assert list(tmp_path.iterdir()) == []


def test_every_name_we_make_still_fits_with_its_temp_name() -> None:
    from daemon.results import MAX_STEM_BYTES

    longest = "é" * (MAX_STEM_BYTES // 2) + "_20260101-120000-999_internal_depth.npy"
    assert len(longest.encode()) <= atomic.MAX_NAME_BYTES
    tmp = f".{longest}.{2**64 - 1}-{2**64 - 1}{atomic.TEMP_SUFFIX}"
    assert len(tmp.encode()) <= 255


# ---------------------------------------------------------------- owner only


@pytest.mark.skipif(atomic.WINDOWS, reason="POSIX modes")
def test_private_folder_and_files_are_owner_only_under_the_usual_umask(
        tmp_path, usual_umask) -> None:
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    for folder in (tmp_path / "new" / "state", loose):
        assert stat.S_IMODE(atomic.private_folder(folder).stat().st_mode) == 0o700
    existing = tmp_path / "old.sqlite3"
    existing.write_bytes(b"")
    existing.chmod(0o644)
    for path in (tmp_path / "new.sqlite3", existing):
        assert stat.S_IMODE(atomic.private_file(path).stat().st_mode) == 0o600
    assert not atomic.private_file(tmp_path / "absent-wal", create=False).exists()
    entry = atomic_write(tmp_path / "entry.npy", b"x", mode=0o600, durable=False)
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert stat.S_IMODE(atomic_write(tmp_path / "r.ply", b"x").stat().st_mode) == 0o644


# ---------------------------------------------------------------- downloads


class _Response(io.BytesIO):
    status = 200

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def _serve(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(weights.urllib.request, "urlopen",
                        lambda request, timeout: _Response(data))


def test_download_is_fsynced_before_it_is_moved_into_place(tmp_path, monkeypatch,
                                                           calls) -> None:
    payload = os.urandom(3 * 2**20 + 5)
    _serve(monkeypatch, payload)
    path = weights.fetch_checkpoint("https://example.invalid/model.pt", tmp_path)
    assert path.read_bytes() == payload
    assert calls == [("fsync", "file"), ("replace", "model.pt"), ("fsync", "folder")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "model.pt.lock"]


def test_download_waits_out_a_scanner_holding_the_new_file(tmp_path, monkeypatch,
                                                           no_waits) -> None:
    _serve(monkeypatch, b"weights")
    tries = _refuse_replace(monkeypatch, 2)
    path = weights.fetch_checkpoint("https://example.invalid/model.pt", tmp_path)
    assert path.read_bytes() == b"weights" and len(tries) == 3
    assert not (tmp_path / "model.pt.part").exists()


def test_download_that_cannot_be_moved_into_place_is_a_clear_model_error(
        tmp_path, monkeypatch, no_waits) -> None:
    _serve(monkeypatch, b"weights")
    _refuse_replace(monkeypatch, 10**6)
    with pytest.raises(ModelError) as info:
        weights.fetch_checkpoint("https://example.invalid/model.pt", tmp_path)
    assert str(tmp_path / "model.pt") in str(info.value)
    assert "another program" in str(info.value)
    assert not (tmp_path / "model.pt").exists()

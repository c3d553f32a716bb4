"""Names and writes in the outputs folder: valid and distinct on Windows,
one error note per photo, only our temp files cleaned, durable writes, and Windows'
sharing violations and long paths met with a clear note while the daemon carries on.

Windows is simulated through our own modules (`pipeline.atomic.WINDOWS`, `os.replace` and
`open` as `pipeline.atomic` calls them, `daemon.results`' clock), never by patching
installed packages.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Callable
from datetime import datetime
from pathlib import Path, PurePath
from typing import Any

import pytest

import daemon.results as results
import pipeline.atomic as atomic
from daemon import Config, Daemon, JobEvent
from daemon.config import FolderConfig
from daemon.naming import note_name, windows_name_problem, windows_safe_name
from daemon.outputs import OutputFolder
from daemon.results import MAX_STEM_BYTES, timestamped_path
from pipeline.atomic import temp_path
from tests.conftest import entries, small_prediction, small_report, wait_for, write_photo
from tests.support.daemon_runs import settle

WHEN = datetime(2026, 11, 24, 3, 15, 0)
STAMP = "20261124-031500"
BAD_NAMES = ["CON", "con.txt", "Nul.tar.gz", "COM1.ply", "lpt9.json", "COM¹.x", "aux .txt",
             "PRN", "a.", "a ", "photo.jpg.", "a:b.ply", "what?.png", 'say "hi".ply', "a|b",
             "tab\there.ply", "back\\slash.ply", "", "LPT0.ply"]
GOOD_NAMES = ["CONSOLE.ply", "con_20261124.ply", "COM10.ply", "a.b", "photo.jpg.error.txt",
              "._x", "nul_.txt", "CO%4E.jpg.error.txt", "a%2Fphoto.jpg.error.txt", "é.ply"]


# ---------------------------------------------------------------- the validator


@pytest.mark.parametrize("name", BAD_NAMES)
def test_names_windows_cannot_create_are_named_as_such_and_made_safe(name: str) -> None:
    assert windows_name_problem(name) is not None
    safe = windows_safe_name(name)
    assert windows_name_problem(safe) is None, safe
    assert len(safe) >= len(name)


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_names_windows_accepts_are_left_alone(name: str) -> None:
    assert windows_name_problem(name) is None
    assert windows_safe_name(name) == name


def test_problem_says_what_is_wrong() -> None:
    assert "reserves" in (windows_name_problem("com1.jpeg.error.txt") or "")
    assert "dot or a space" in (windows_name_problem("a.") or "")
    assert "':'" in (windows_name_problem("a:b") or "")


# ---------------------------------------------------------------- result names


def test_a_name_taken_in_another_letter_case_is_taken(tmp_path: Path) -> None:
    (tmp_path / f"Cat_{STAMP}.ply").write_bytes(b"x")
    assert timestamped_path(tmp_path, "cat", ".ply", WHEN).name == f"cat_{STAMP}-2.ply"
    assert timestamped_path(tmp_path, "CAT", ".ply", WHEN).name == f"CAT_{STAMP}-2.ply"
    assert timestamped_path(tmp_path, "dog", ".ply", WHEN).name == f"dog_{STAMP}.ply"


def test_a_taken_companion_takes_the_name(tmp_path: Path) -> None:
    (tmp_path / f"photo_{STAMP}_DEPTH.png").write_bytes(b"x")
    (tmp_path / f"photo_{STAMP}-2.JSON").write_bytes(b"x")
    got = timestamped_path(tmp_path, "photo", ".ply", WHEN, companions=(".json", "_depth.png"))
    assert got.name == f"photo_{STAMP}-3.ply"


@pytest.mark.parametrize("stem, expected", [
    ("aux.x", f"aux_.x_{STAMP}.ply"),
    ("NUL.tar", f"NUL_.tar_{STAMP}.ply"),
    ("CON", f"CON_{STAMP}.ply"),
    ("a:b", f"a_b_{STAMP}.ply"),
    ("a.", f"a._{STAMP}.ply"),
])
def test_result_names_are_valid_on_windows(tmp_path: Path, stem: str, expected: str) -> None:
    got = timestamped_path(tmp_path, stem, ".ply", WHEN)
    assert got.name == expected and windows_name_problem(got.name) is None


def test_long_stems_fit_with_every_companion_and_temp_name(tmp_path: Path) -> None:
    names = results.result_names(tmp_path, "é" * 200, preview=True, internal_depth=True)
    for path in names.all():
        assert len(path.name.encode()) <= atomic.MAX_NAME_BYTES, path.name
        assert len(temp_path(path).name.encode()) <= 255, path.name
    assert MAX_STEM_BYTES - 8 <= len(names.ply.stem.encode()) - len(f"_{STAMP}") <= MAX_STEM_BYTES


# ---------------------------------------------------------------- note names


TRICKY_PHOTOS = ["photo.jpg", "photo.png", "Photo.jpg", "a/photo.jpg", "a%2Fphoto.jpg",
                 "a%252Fphoto.jpg", "CON.jpg", "CO%4E.jpg", "con.png", "com1.jpeg",
                 "a/b/c.jpg", "a/b%2Fc.jpg", "a:b.jpg", "a%3Ab.jpg", "what?.png", "name .jpg",
                 "x" * 240 + ".jpg", "x" * 240 + ".png", "é" * 120 + "/p.jpg",
                 "é" * 120 + "/q.jpg"]


def test_every_photo_gets_its_own_valid_note_name() -> None:
    notes = [note_name(PurePath(p)) for p in TRICKY_PHOTOS]
    assert len(set(notes)) == len(notes)
    for photo, note in zip(TRICKY_PHOTOS, notes, strict=True):
        assert windows_name_problem(note) is None, (photo, note)
        assert note.endswith(".error.txt")
        assert len(temp_path(Path(note)).name.encode()) <= 255, photo


@pytest.mark.parametrize("photo, note", [
    ("photo.jpg", "photo.jpg.error.txt"),
    ("a/photo.jpg", "a%2Fphoto.jpg.error.txt"),
    ("CON.jpg", "CO%4E.jpg.error.txt"),
    ("nul.png", "nu%6C.png.error.txt"),
    ("100%.jpg", "100%25.jpg.error.txt"),
])
def test_note_names_read_like_the_photo(photo: str, note: str) -> None:
    assert note_name(PurePath(photo)) == note


def test_output_folder_names_notes_relative_to_the_inputs_folder(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    folder = OutputFolder(tmp_path / "out", inputs)
    assert folder.error_path(inputs / "a" / "p.jpg").name == "a%2Fp.jpg.error.txt"
    assert folder.error_path(Path("a/p.jpg")).name == "a%2Fp.jpg.error.txt"
    assert folder.error_path(tmp_path / "elsewhere" / "p.jpg").name == "p.jpg.error.txt"


# ---------------------------------------------------------------- temp clean-up, durability

FOREIGN_TEMPS = [".photo.jpg.tmp", ".~lock.tmp", ".a.ply.1234.tmp", ".a.ply.backup.tmp"]


def test_remove_and_clean_temp_touch_only_our_temp_files(tmp_path: Path) -> None:
    folder = OutputFolder(tmp_path)
    ours = [temp_path(tmp_path / "a.ply"), temp_path(tmp_path / "b.json")]
    for path in [*ours, *(tmp_path / n for n in FOREIGN_TEMPS), tmp_path / "a.ply"]:
        path.write_bytes(b"x")
    folder.remove([tmp_path / "a.ply"])
    assert not (tmp_path / "a.ply").exists() and not ours[0].exists() and ours[1].exists()
    assert folder.clean_temp() == [ours[1]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FOREIGN_TEMPS)


def test_every_result_file_and_note_is_fsynced_before_its_rename(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync-folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync")
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append(Path(dst).name)
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    folder = OutputFolder(tmp_path / "out", tmp_path / "in")
    folder.ensure()
    names = results.result_names(folder.path, "p", preview=True, internal_depth=True)
    folder.write_result(names, small_prediction(), small_report(names.all()))
    note = folder.write_error(tmp_path / "in" / "q.jpg", "broken")
    assert note is not None
    written = [p.name for p in (names.internal_depth, names.preview, names.report, names.ply,
                                note) if p is not None]
    assert events == [e for name in written for e in ("fsync", name, "fsync-folder")]


class _Bug(Exception):
    """Not an OSError: a bug in a writer."""


@pytest.mark.parametrize("failure", [_Bug, RuntimeError, KeyboardInterrupt, MemoryError])
@pytest.mark.parametrize("where", ["export", "ply"])
def test_any_exception_while_writing_leaves_no_file_and_goes_on_unchanged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str,
        failure: type[BaseException]) -> None:
    import daemon.outputs
    from pipeline.exports import EXPORTERS, Exporter

    def broken(path: Path, *_: object) -> Path:
        Path(path).write_bytes(b"half")  # a partial file under the final name
        raise failure("the writer broke")

    if where == "export":
        monkeypatch.setitem(EXPORTERS, "splat", Exporter(".splat", broken))
    else:  # the last file written: the report and every extra are on disk by then
        monkeypatch.setattr(daemon.outputs, "write_ply", broken)
    folder = OutputFolder(tmp_path)
    names = results.result_names(tmp_path, "p", preview=True, internal_depth=True,
                                 formats=("ply", "splat"))
    with pytest.raises(failure, match="the writer broke"):
        folder.write_result(names, small_prediction(), small_report(names.all()))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt])
def test_any_exception_while_writing_a_compare_leaves_no_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: type[BaseException]) -> None:
    import daemon.outputs
    from pipeline.compare import SourceRun

    real = daemon.outputs.write_ply_bytes

    def second_breaks(path: Path, data: Any) -> Path:
        if "internal" in Path(path).name:
            raise failure("the writer broke")
        return real(path, data)

    monkeypatch.setattr(daemon.outputs, "write_ply_bytes", second_breaks)
    names = results.compare_names(tmp_path, "p", ("depth-pro", "internal"), internal_depth=True)
    runs = [SourceRun(s, small_prediction()) for s in ("depth-pro", "internal")]
    reports = {r.source: small_report(names.all()) for r in runs}
    with pytest.raises(failure, match="the writer broke"):
        OutputFolder(tmp_path).write_compare(names, runs, b"png", reports)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- against the daemon


def _settle(d: Daemon, events: list[JobEvent] | None = None, count: int = 0) -> None:
    """Wait for `count` events in `events` (generous: the machine may be loaded), then for
    the daemon to go idle."""
    if events is not None:
        assert wait_for(lambda: len(events) >= count, 90), f"{len(events)} of {count} events"
    settle(d)


def _fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every result is named as if it finished in the same second."""
    class Frozen(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Frozen:
            return cls(2026, 11, 24, 3, 15, 0)

    monkeypatch.setattr(results, "datetime", Frozen)


def _drop_bad(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(f"not a picture: {path}".encode())  # distinct content, distinct job
    os.replace(tmp, path)


def _outcomes(events: list[JobEvent]) -> dict[str, str]:
    return {Path(e.photo).name: e.outcome for e in events}


@pytest.mark.timeout(90)
def test_names_differing_only_in_case_get_distinct_results(
        running_daemon: Callable[..., Daemon], daemon_config: Config,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _fixed_clock(monkeypatch)
    events: list[JobEvent] = []
    d = running_daemon(events=events)
    write_photo(daemon_config.inputs / "Cat.jpg", seed=1)
    write_photo(daemon_config.inputs / "cat.png", seed=2)
    _settle(d, events, 2)
    assert _outcomes(events) == {"Cat.jpg": "done", "cat.png": "done"}
    names = [p.name for p in entries(daemon_config.outputs)]
    assert len({n.casefold() for n in names}) == len(names) == 6, names
    plys = sorted(daemon_config.outputs.glob("*.ply"))
    photos = {json.loads(p.with_suffix(".json").read_text())["photo"] for p in plys}
    assert {Path(p).name for p in photos} == {"Cat.jpg", "cat.png"}


GOOD_ODD = ["CON.jpg", "nul.png", "com1.jpeg", "aux.x.jpg", "a..jpg", "name .jpg", "a:b.jpg",
            "LPT1.tar.png"]
BAD_ODD = ["PRN.jpg", "lpt1.x.png", "what?.png", "Con.jpg.jpeg"]


@pytest.mark.timeout(120)
def test_photos_with_windows_reserved_or_odd_names_get_valid_distinct_files(
        running_daemon: Callable[..., Daemon], daemon_config: Config,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _fixed_clock(monkeypatch)
    events: list[JobEvent] = []
    d = running_daemon(events=events)
    for seed, name in enumerate(GOOD_ODD):
        write_photo(daemon_config.inputs / name, seed=seed)
    for name in BAD_ODD:
        _drop_bad(daemon_config.inputs / name)
    _settle(d, events, len(GOOD_ODD) + len(BAD_ODD))
    assert _outcomes(events) == {**dict.fromkeys(GOOD_ODD, "done"),
                                 **dict.fromkeys(BAD_ODD, "failed")}
    files = [p.name for p in entries(daemon_config.outputs)]
    problems = {n: windows_name_problem(n) for n in files if windows_name_problem(n)}
    assert problems == {}
    assert len({n.casefold() for n in files}) == len(files)
    assert len(list(daemon_config.outputs.glob("*.ply"))) == len(GOOD_ODD)
    notes = list(daemon_config.outputs.glob("*.error.txt"))
    assert len(notes) == len(BAD_ODD)
    for name in BAD_ODD:
        note = daemon_config.outputs / note_name(PurePath(name))
        assert name in note.read_text(encoding="utf-8"), name


@pytest.mark.timeout(90)
def test_error_note_is_per_photo_not_per_stem(
        running_daemon: Callable[..., Daemon], daemon_config: Config) -> None:
    events: list[JobEvent] = []
    d = running_daemon(events=events)
    _drop_bad(daemon_config.inputs / "photo.jpg")
    _settle(d, events, 1)
    write_photo(daemon_config.inputs / "photo.png", seed=3)
    _settle(d, events, 2)
    assert _outcomes(events) == {"photo.jpg": "failed", "photo.png": "done"}
    note = daemon_config.outputs / "photo.jpg.error.txt"
    assert note.is_file(), "the png's success erased the jpg's failure note"
    assert "photo.jpg" in note.read_text()
    assert [p.name for p in daemon_config.outputs.glob("*.error.txt")] == [note.name]


@pytest.mark.timeout(90)
def test_photos_in_sub_folders_get_their_own_notes(
        running_daemon: Callable[..., Daemon], make_daemon_config: Callable[..., Config],
        tmp_path: Path) -> None:
    config = make_daemon_config(folders=FolderConfig(tmp_path / "inputs", tmp_path / "outputs",
                                                     recursive=True))
    events: list[JobEvent] = []
    d = running_daemon(config, events=events)
    _drop_bad(config.inputs / "a" / "photo.jpg")
    _drop_bad(config.inputs / "b" / "photo.jpg")
    _settle(d, events, 2)
    write_photo(config.inputs / "photo.jpg", seed=4)
    _settle(d, events, 3)
    outcomes = sorted((str(Path(e.photo).relative_to(config.inputs)), e.outcome) for e in events)
    assert outcomes == [("a/photo.jpg", "failed"), ("b/photo.jpg", "failed"),
                        ("photo.jpg", "done")]
    notes = {p.name: p.read_text() for p in config.outputs.glob("*.error.txt")}
    assert sorted(notes) == ["a%2Fphoto.jpg.error.txt", "b%2Fphoto.jpg.error.txt"]
    assert str(Path("a") / "photo.jpg") in notes["a%2Fphoto.jpg.error.txt"]
    assert str(Path("b") / "photo.jpg") in notes["b%2Fphoto.jpg.error.txt"]


@pytest.mark.timeout(60)
def test_start_removes_our_temp_files_and_no_one_elses(
        running_daemon: Callable[..., Daemon], daemon_config: Config) -> None:
    outputs = daemon_config.outputs
    outputs.mkdir(parents=True)
    ours = [temp_path(outputs / f"x_{STAMP}.ply"), temp_path(outputs / "x.jpg.error.txt")]
    for path in [*ours, *(outputs / n for n in FOREIGN_TEMPS)]:
        path.write_bytes(b"x")
    d = running_daemon()
    _settle(d)
    assert sorted(p.name for p in entries(outputs)) == sorted(FOREIGN_TEMPS)


# ---------------------------------------------------------------- sharing violations


def _lock_results(monkeypatch: pytest.MonkeyPatch, outputs: Path, stem: str,
                  times: int) -> list[str]:
    """`os.replace` as pipeline.atomic calls it refuses `stem`'s result files (PLY, report,
    preview) in `outputs` `times` times with Windows' sharing violation, as a virus scanner
    or viewer holding them would (other renames go through)."""
    refused: list[str] = []
    real = os.replace
    monkeypatch.setattr(atomic, "REPLACE_DELAYS", (0.01,) * 6)

    def replace(src: Any, dst: Any) -> None:
        dst = Path(dst)
        if (dst.parent == outputs and dst.suffix in (".ply", ".json", ".png")
                and dst.name.startswith(stem) and len(refused) < times):
            refused.append(dst.name)
            exc = PermissionError(13, "Access is denied")
            exc.winerror = 32  # type: ignore[attr-defined]
            raise exc
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    return refused


@pytest.mark.timeout(60)
def test_result_held_briefly_by_another_program_is_still_written(
        running_daemon: Callable[..., Daemon], daemon_config: Config,
        monkeypatch: pytest.MonkeyPatch) -> None:
    refused = _lock_results(monkeypatch, daemon_config.outputs, "scanned", 3)
    events: list[JobEvent] = []
    d = running_daemon(events=events)
    write_photo(daemon_config.inputs / "scanned.jpg", seed=5)
    _settle(d, events, 1)
    assert len(refused) == 3
    assert _outcomes(events) == {"scanned.jpg": "done"}
    assert sorted(p.suffix for p in entries(daemon_config.outputs)) == [".json", ".ply", ".png"]


@pytest.mark.timeout(60)
def test_result_held_throughout_gets_a_clear_note_and_the_next_photo_works(
        running_daemon: Callable[..., Daemon], daemon_config: Config,
        monkeypatch: pytest.MonkeyPatch) -> None:
    refused = _lock_results(monkeypatch, daemon_config.outputs, "locked", 10**6)
    events: list[JobEvent] = []
    d = running_daemon(events=events)
    write_photo(daemon_config.inputs / "locked.jpg", seed=6)
    _settle(d, events, 1)
    write_photo(daemon_config.inputs / "next.jpg", seed=7)
    _settle(d, events, 2)
    assert len(refused) == len(atomic.REPLACE_DELAYS) + 1
    assert _outcomes(events) == {"locked.jpg": "failed", "next.jpg": "done"}
    note = (daemon_config.outputs / "locked.jpg.error.txt").read_text()
    assert refused[0] in note and "another program" in note and "tried again" in note
    assert d.status().state == "idle"
    row = next(j for j in d.journal.all() if j["photo"].endswith("locked.jpg"))
    assert row["retryable"] == 1
    leftovers = [p.name for p in daemon_config.outputs.iterdir()
                 if "locked" in p.name and p.name != "locked.jpg.error.txt"]
    assert leftovers == []


# ---------------------------------------------------------------- long paths


def _windows_long_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our writer runs as on Windows without LongPathsEnabled: opening a path of 260 or more
    characters fails with ERROR_PATH_NOT_FOUND."""
    monkeypatch.setattr(atomic, "WINDOWS", True)

    def fake_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if len(os.path.abspath(file)) >= atomic.MAX_PATH:
            exc = FileNotFoundError(errno.ENOENT, "The system cannot find the path specified")
            exc.winerror = 3  # type: ignore[attr-defined]
            raise exc
        return open(file, *args, **kwargs)

    monkeypatch.setattr(atomic, "open", fake_open, raising=False)


def _folder_of_length(root: Path, length: int) -> Path:
    folder = root / "out"
    while len(str(folder)) + 40 < length:
        folder = folder / ("d" * 39)
    return folder / ("e" * (length - len(str(folder)) - 1))


@pytest.mark.timeout(60)
def test_results_past_260_characters_get_a_note_naming_the_path_and_the_fix(
        running_daemon: Callable[..., Daemon], make_daemon_config: Callable[..., Config],
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The note's temp path just fits; the longer result names do not."""
    note_tmp = len(temp_path(Path("p.jpg.error.txt")).name)  # this thread's id length
    outputs = _folder_of_length(tmp_path, atomic.MAX_PATH - 5 - note_tmp - 1)
    config = make_daemon_config(folders=FolderConfig(tmp_path / "inputs", outputs))
    _windows_long_paths(monkeypatch)
    events: list[JobEvent] = []
    d = running_daemon(config, events=events)
    write_photo(config.inputs / "p.jpg", seed=8)
    _settle(d, events, 1)
    assert _outcomes(events) == {"p.jpg": "failed"}
    note = (outputs / "p.jpg.error.txt").read_text()
    assert str(outputs) in note and "LongPathsEnabled" in note and "260" in note
    assert "LongPathsEnabled" in (events[0].error or "")
    assert [p.name for p in entries(outputs)] == ["p.jpg.error.txt"]


@pytest.mark.timeout(60)
def test_outputs_folder_past_260_characters_is_reported_and_the_daemon_carries_on(
        running_daemon: Callable[..., Daemon], make_daemon_config: Callable[..., Config],
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    outputs = _folder_of_length(tmp_path, 270)
    config = make_daemon_config(folders=FolderConfig(tmp_path / "inputs", outputs))
    _windows_long_paths(monkeypatch)
    events: list[JobEvent] = []
    d = running_daemon(config, events=events)
    write_photo(config.inputs / "p.jpg", seed=9)
    _settle(d, events, 1)
    write_photo(config.inputs / "q.jpg", seed=10)
    _settle(d, events, 2)
    assert _outcomes(events) == {"p.jpg": "failed", "q.jpg": "failed"}
    last = d.status().last_error or ""
    assert str(outputs) in last and "LongPathsEnabled" in last
    assert d.status().state == "idle"
    assert entries(outputs) == []

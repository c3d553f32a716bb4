"""Nothing outside the inputs folder is read.

Photos, sidecars and `.npy` depth maps are opened with the inputs folder to stay within,
and the check is made on the file actually opened, so a link leading out of the folder,
a linked sub-folder, or a file swapped for such a link after it was checked or queued is
refused with a note that names the file and never shows what the link leads to.

Linux tells the opened file's real path through `/proc/self/fd`; elsewhere (Windows,
macOS) the path is resolved again and must still be the file opened: `no_proc` runs the
same cases that way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import daemon.sidecar
import pipeline.image
from daemon import Config, Daemon, JobEvent
from daemon.config import FolderConfig
from daemon.sidecar import SidecarError, read_sidecar
from pipeline import DepthSettings, InputError, load_image
from pipeline.depth.external import load_depth_npy
from pipeline.image import open_regular_file
from tests.conftest import wait_for, write_photo
from tests.support.daemon_runs import plys, settle

SECRET_KEY = "aws_access_key_id"
CREDENTIALS = f'{SECRET_KEY} = "AKIAIOSFODNN7EXAMPLE"\n'


@pytest.fixture(params=["proc", "no-proc"])
def resolution(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of finding the opened file's real path: Linux's `/proc`, and the
    re-resolution Windows and macOS get (simulated by pointing our module elsewhere)."""
    if request.param == "no-proc":
        monkeypatch.setattr(pipeline.image, "FD_FOLDER", Path("/nonexistent-fd-folder"))
    elif not pipeline.image.FD_FOLDER.is_dir():
        pytest.skip("no /proc/self/fd here")
    return str(request.param)


@pytest.fixture
def places(tmp_path: Path) -> tuple[Path, Path]:
    """An inputs folder, and a private folder beside it holding a photo, a map and secrets."""
    inputs, private = tmp_path / "inputs", tmp_path / "private"
    inputs.mkdir()
    write_photo(private / "holiday.jpg", seed=1)
    np.save(private / "holiday.npy", np.full((48, 64), 2.0, np.float32))
    (private / "credentials").write_text(CREDENTIALS)
    return inputs, private


def _open(kind: str, path: Path, inputs: Path) -> object:
    """Open `path` the way the daemon opens a file of this kind."""
    if kind == "photo":
        return load_image(path, within=inputs)
    if kind == "depth map":
        return load_depth_npy(path, inputs)
    return read_sidecar(path.with_suffix(".jpg"), DepthSettings(), inputs)


CASES = {"photo": ("holiday.jpg", "x.jpg"), "depth map": ("holiday.npy", "x.npy"),
         "sidecar": ("credentials", "x.toml")}


@pytest.mark.parametrize("kind", list(CASES))
def test_a_link_out_of_the_inputs_folder_is_refused_without_showing_its_target(
        places: tuple[Path, Path], resolution: str, kind: str) -> None:
    inputs, private = places
    target, name = CASES[kind]
    link = inputs / name
    link.symlink_to(private / target)
    with pytest.raises(InputError) as info:
        _open(kind, link, inputs)
    message = str(info.value)
    assert info.value.path == link and message.startswith(f"{link}: ")
    assert f"is a link to a file outside {inputs}" in message
    assert SECRET_KEY not in message and "AKIA" not in message and "private" not in message


@pytest.mark.parametrize("kind", list(CASES))
def test_a_file_in_a_linked_folder_leading_out_is_refused(places: tuple[Path, Path],
                                                          resolution: str, kind: str) -> None:
    inputs, private = places
    target, name = CASES[kind]
    shutil.copy(private / target, private / name)
    (inputs / "album").symlink_to(private, target_is_directory=True)
    with pytest.raises(InputError, match="is a link to a file outside"):
        _open(kind, inputs / "album" / name, inputs)


@pytest.mark.parametrize("kind", list(CASES))
def test_links_that_stay_inside_the_inputs_folder_are_followed(places: tuple[Path, Path],
                                                               resolution: str,
                                                               kind: str) -> None:
    inputs, private = places
    target, name = CASES[kind]
    (inputs / "real").mkdir()
    if kind == "sidecar":
        (inputs / "real" / name).write_text("depth_scale = 0.5\n")
    else:
        shutil.copy(private / target, inputs / "real" / name)
    (inputs / name).symlink_to(Path("real") / name)
    (inputs / "linked").symlink_to("real", target_is_directory=True)
    for path in (inputs / name, inputs / "linked" / name):
        if kind == "photo":
            assert load_image(path, within=inputs).rgb.shape == (48, 64, 3)
        elif kind == "depth map":
            assert float(load_depth_npy(path, inputs).mean()) == 2.0
        else:
            settings, used = read_sidecar(path.with_suffix(".jpg"), DepthSettings(), inputs)
            assert used and settings.depth_scale == 0.5


def test_the_inputs_folder_may_itself_be_reached_through_a_link(places: tuple[Path, Path],
                                                               resolution: str,
                                                               tmp_path: Path) -> None:
    inputs, _ = places
    write_photo(inputs / "cat.jpg")
    alias = tmp_path / "alias"
    alias.symlink_to(inputs, target_is_directory=True)
    assert load_image(alias / "cat.jpg", within=alias).width == 64
    assert load_image(inputs / "cat.jpg", within=alias).width == 64


def test_a_sidecar_swapped_for_a_link_after_it_was_found_is_refused(
        places: tuple[Path, Path], resolution: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sidecar is a regular file inside inputs when it is looked up, and a link to a
    credentials file by the time it is opened."""
    inputs, private = places
    sidecar = inputs / "x.toml"
    sidecar.write_text("depth_scale = 0.5\n")
    find = daemon.sidecar.find_sidecar

    def find_then_swap(photo: Path) -> Path | None:
        found = find(photo)
        swapped = inputs / ".swap"
        swapped.symlink_to(private / "credentials")
        os.replace(swapped, sidecar)
        return found

    monkeypatch.setattr(daemon.sidecar, "find_sidecar", find_then_swap)
    with pytest.raises(SidecarError) as info:
        read_sidecar(inputs / "x.jpg", DepthSettings(), inputs)
    assert info.value.path == sidecar and "outside" in str(info.value)
    assert SECRET_KEY not in str(info.value)


def test_a_file_swapped_for_a_link_while_it_is_being_opened_is_refused(
        places: tuple[Path, Path], resolution: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The swap lands after the open and before the check: the opened file is no longer at
    its place (Linux reports it deleted; a re-resolved path leads to another file), so
    what was opened cannot be shown to be inside, and is refused."""
    inputs, private = places
    photo = write_photo(inputs / "cat.jpg", seed=3)
    real_path = pipeline.image._real_path

    def swap_then_resolve(fd: int, path: Path) -> Path:
        swapped = inputs / ".swap"
        swapped.symlink_to(private / "holiday.jpg")
        os.replace(swapped, photo)
        return real_path(fd, path)

    monkeypatch.setattr(pipeline.image, "_real_path", swap_then_resolve)
    with pytest.raises(InputError, match="replaced while it was being opened"):
        load_image(photo, within=inputs)


def test_windows_style_open_still_confines(places: tuple[Path, Path],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """No `O_NONBLOCK` and no `/proc`, as on Windows: links out refused, files inside read."""
    inputs, private = places
    monkeypatch.delattr(os, "O_NONBLOCK", raising=False)
    monkeypatch.setattr(pipeline.image, "FD_FOLDER", Path("C:/nonexistent"))
    (inputs / "x.jpg").symlink_to(private / "holiday.jpg")
    with pytest.raises(InputError, match="outside"):
        load_image(inputs / "x.jpg", within=inputs)
    write_photo(inputs / "y.jpg")
    with open_regular_file(inputs / "y.jpg", inputs) as f:
        assert f.read(2) == b"\xff\xd8"


def test_without_a_folder_to_stay_in_links_are_followed(places: tuple[Path, Path]) -> None:
    """The pipeline on its own (the `predict` CLI) reads what the user names."""
    inputs, private = places
    (inputs / "x.jpg").symlink_to(private / "holiday.jpg")
    assert load_image(inputs / "x.jpg").width == 64


# ---------------------------------------------------------------- the daemon


def _error_note(config: Config, stem: str) -> str:
    notes = list(config.outputs.glob(f"{stem}*.error.txt"))
    assert len(notes) == 1, notes
    return notes[0].read_text(encoding="utf-8")


@pytest.mark.timeout(90)
def test_daemon_refuses_a_linked_photo_and_sidecar_and_runs_the_rest(
        running_daemon: Callable[..., Daemon], daemon_config: Config,
        places: tuple[Path, Path]) -> None:
    inputs, private = places
    (inputs / "stolen.jpg").symlink_to(private / "holiday.jpg")
    write_photo(inputs / "tuned.jpg", seed=5)
    (inputs / "tuned.toml").symlink_to(private / "credentials")
    (inputs / "sub").mkdir()
    write_photo(inputs / "sub" / "real.jpg", seed=6)
    (inputs / "alias.jpg").symlink_to(Path("sub") / "real.jpg")
    events: list[JobEvent] = []
    d = running_daemon(events=events)
    write_photo(inputs / "plain.jpg", seed=7)
    settle(d)
    outcome = {Path(e.photo).name: e for e in events}
    assert {n: e.outcome for n, e in outcome.items()} == {
        "stolen.jpg": "failed", "tuned.jpg": "failed", "alias.jpg": "done", "plain.jpg": "done"}
    assert f"{inputs / 'stolen.jpg'}: is a link to a file outside" in outcome["stolen.jpg"].error
    assert f"{inputs / 'tuned.toml'}: is a link to a file outside" in outcome["tuned.jpg"].error
    for stem in ("stolen", "tuned"):
        note = _error_note(daemon_config, stem)
        assert "outside" in note and SECRET_KEY not in note and "AKIA" not in note
    reports = [json.loads(p.with_suffix(".json").read_text()) for p in plys(daemon_config.outputs)]
    assert sorted(Path(r["photo"]).name for r in reports) == ["alias.jpg", "plain.jpg"]
    private_hash = hashlib.sha256((private / "holiday.jpg").read_bytes()).hexdigest()
    assert d.journal is not None and d.journal.all()
    assert private_hash not in {row["photo_hash"] for row in d.journal.all()}, \
        "the linked-out photo was read (hashed) when it was queued"


@pytest.mark.timeout(90)
def test_daemon_recursive_refuses_a_sub_folder_linked_out_of_inputs(
        running_daemon: Callable[..., Daemon], daemon_config: Config,
        places: tuple[Path, Path]) -> None:
    """Linux's watcher and Python's `**` do not descend a symlinked folder, but Windows'
    junctions are walked like folders: the intake is handed the linked folder as the
    watcher hands it a folder moved in, and every photo under it is refused."""
    inputs, private = places
    config = dataclasses.replace(daemon_config, folders=FolderConfig(
        inputs, daemon_config.outputs, recursive=True))
    write_photo(inputs / "own" / "mine.jpg", seed=8)
    (inputs / "album").symlink_to(private, target_is_directory=True)
    events: list[JobEvent] = []
    d = running_daemon(config, events=events)
    settle(d)
    assert d.intake is not None
    d.intake.note(inputs / "album")
    settle(d)
    outcome = {Path(e.photo).name: e for e in events}
    assert outcome["mine.jpg"].outcome == "done"
    assert outcome["holiday.jpg"].outcome == "failed"
    assert (f"{inputs / 'album' / 'holiday.jpg'}: is a link to a file outside"
            in outcome["holiday.jpg"].error)
    assert [json.loads(p.with_suffix(".json").read_text())["photo"]
            for p in plys(config.outputs)] == [str(inputs / "own" / "mine.jpg")]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("swapped", ["photo", "depth map"])
def test_daemon_refuses_a_file_swapped_for_a_link_after_it_was_queued(
        running_daemon: Callable[..., Daemon], daemon_config: Config,
        places: tuple[Path, Path], swapped: str) -> None:
    """Queued while a regular file inside inputs, then replaced (same bytes, so the job is
    not superseded) by a link to the private copy before the worker opens it."""
    inputs, private = places
    photo = inputs / "holiday.jpg"
    shutil.copy(private / "holiday.npy", inputs / "holiday.npy")
    (inputs / "holiday.toml").write_text('external_depth = "holiday.npy"\n'
                                         'depth_format = "metric"\n')
    events: list[JobEvent] = []
    d = running_daemon(events=events)
    d.pause()
    shutil.copy(private / "holiday.jpg", inputs / ".holiday.jpg.tmp")
    os.replace(inputs / ".holiday.jpg.tmp", photo)
    assert wait_for(lambda: d.status().queue_length == 1, 30)
    victim = photo if swapped == "photo" else inputs / "holiday.npy"
    (inputs / ".link.tmp").symlink_to(private / victim.name)
    os.replace(inputs / ".link.tmp", victim)
    time.sleep(1.0)  # let the intake see the swap (it queues nothing new: same content)
    d.resume()
    settle(d)
    # A swapped depth map is also refused when the intake re-reads the sidecar; the job
    # queued before the swap is refused by the worker, at the moment it opens the file.
    assert events and all(e.outcome == "failed" for e in events)
    assert any(f"{victim}: is a link to a file outside" in (e.error or "") for e in events)
    assert plys(daemon_config.outputs) == []

"""Sidecar parsing: every key checked, nearest-key hints, external_depth kept inside inputs;
finding the sidecar in any letter case, and never blocking on or failing over its name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from loguru import logger

from daemon.sidecar import SidecarError, read_sidecar, sidecar_path
from pipeline import DepthSettings


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "photo.jpg").write_bytes(b"")
    (inputs / "depth.npy").write_bytes(b"")
    (tmp_path / "secret.npy").write_bytes(b"")
    return inputs


def _read(folder: Path, text: str | bytes, base: DepthSettings | None = None):
    data = text.encode() if isinstance(text, str) else text
    (folder / "photo.toml").write_bytes(data)
    return read_sidecar(folder / "photo.jpg", base or DepthSettings(), folder)


def test_no_sidecar_keeps_defaults(folder):
    base = DepthSettings(depth_scale=0.7)
    assert read_sidecar(folder / "photo.jpg", base, folder) == (base, False)


def test_every_key_applies(folder):
    settings, used = _read(folder, """
depth_scale = 0.8
depth_offset = -0.25
back_surface_factor = 1.5
external_depth = "depth.npy"
depth_format = "metric"
focal_mm = 35
save_internal_depth = true
""")
    assert used
    assert settings == DepthSettings(depth_scale=0.8, depth_offset=-0.25, back_surface_factor=1.5,
                                     depth_source="npy", external_depth=folder / "depth.npy",
                                     depth_format="metric", focal_mm=35.0,
                                     save_internal_depth=True)


def test_sidecar_overrides_only_what_it_names(folder):
    settings, _ = _read(folder, "depth_offset = 0.5\n", DepthSettings(depth_scale=0.7))
    assert (settings.depth_scale, settings.depth_offset) == (0.7, 0.5)


@pytest.mark.parametrize("text, needles", [
    ("depth_scael = 1\n", ["unknown key 'depth_scael'", "did you mean 'depth_scale'"]),
    ("zzz = 1\n", ["unknown key 'zzz'", "valid keys"]),
    ("depth_scale = true\n", ["depth_scale must be a number"]),
    ('depth_scale = "2"\n', ["depth_scale must be a number"]),
    ("depth_scale = 0\n", ["depth_scale must be a finite number > 0"]),
    ("depth_scale = inf\n", ["depth_scale", "finite"]),
    ("depth_offset = nan\n", ["depth_offset", "finite"]),
    ("depth_offset = 1e300\n", ["depth_offset"]),
    ("depth_scale = 1" + "0" * 400 + "\n", ["depth_scale must be a finite number"]),
    ('"' + "é" * 300 + '" = 1\n', ["unknown key 'éé", "...'"]),
    ("back_surface_factor = 0.5\n", ["back_surface_factor"]),
    ("focal_mm = -3\n", ["focal_mm"]),
    ('depth_source = "midas"\n', ["depth_source must be one of"]),
    ('depth_format = "log"\n', ["depth_format must be one of"]),
    ("save_internal_depth = 1\n", ["save_internal_depth must be true or false"]),
    ("[depth_scale]\nx = 1\n", ["depth_scale must be a number"]),
    ("depth_scale = [[[[1]]]]\n", ["depth_scale must be a number"]),
    ('depth_source = "npy"\n', ["needs external_depth"]),
    ("depth_scale = \n", ["not valid TOML"]),
    (b"\xff\xfe junk", ["not UTF-8"]),
    ("a = " + "[" * 5000 + "]" * 5000 + "\n", ["photo.toml"]),
    ("# " + "x" * 70000 + "\n", ["larger than"]),
])
def test_bad_sidecar_names_file_and_key(folder, text, needles):
    with pytest.raises(SidecarError) as info:
        _read(folder, text)
    message = str(info.value)
    assert str(folder / "photo.toml") in message
    for needle in needles:
        assert needle in message


@pytest.mark.parametrize("value", ["../secret.npy", "{root}/secret.npy", "missing.npy", ""])
def test_external_depth_must_resolve_inside_inputs(folder, value):
    value = value.format(root=folder.parent)
    with pytest.raises(SidecarError, match="external_depth"):
        _read(folder, f'external_depth = "{value}"\n')


def test_symlink_out_of_inputs_is_refused(folder):
    os.symlink(folder.parent / "secret.npy", folder / "link.npy")
    with pytest.raises(SidecarError, match="outside the inputs folder"):
        _read(folder, 'external_depth = "link.npy"\n')


def test_external_depth_folder_inside_inputs_is_allowed(folder):
    (folder / "maps").mkdir()
    settings, _ = _read(folder, 'external_depth = "maps"\n')
    assert settings.external_depth == folder / "maps" and settings.depth_source == "npy"


# ---------------------------------------------------------------- finding and opening it


@pytest.mark.timeout(20)
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs in this file namespace")
def test_a_fifo_named_like_a_sidecar_is_refused_without_blocking(folder):
    os.mkfifo(folder / "photo.toml")
    with pytest.raises(SidecarError) as info:
        read_sidecar(folder / "photo.jpg", DepthSettings(), folder)
    assert info.value.path == folder / "photo.toml"
    assert "not a regular file" in str(info.value)


def test_a_photo_name_whose_sidecar_name_cannot_exist_has_no_sidecar(folder):
    """255 bytes is the longest name most file systems allow; `.toml` is one byte longer
    than `.jpg`, so the sidecar name is too long to exist: no sidecar, not an error."""
    photo = folder / ("p" * 251 + ".jpg")
    photo.write_bytes(b"")
    base = DepthSettings(depth_scale=0.7)
    assert read_sidecar(photo, base, folder) == (base, False)


@pytest.mark.parametrize("name", ["PHOTO.TOML", "photo.Toml", "Photo.toml"])
def test_a_sidecar_is_found_in_any_letter_case(folder, name):
    (folder / name).write_text("depth_scale = 0.5\n")
    settings, used = read_sidecar(folder / "photo.jpg", DepthSettings(), folder)
    assert used and settings.depth_scale == 0.5
    assert sidecar_path(folder / "photo.jpg") == folder / name


@pytest.fixture
def warnings_logged():
    lines: list[str] = []
    handler = logger.add(lambda m: lines.append(str(m)), level="WARNING", format="{message}")
    yield lines
    logger.remove(handler)


@pytest.mark.parametrize("photo, used", [("photo.jpg", "photo.toml"), ("Photo.jpg", "PHOTO.TOML"),
                                         ("PHOTO.jpg", "PHOTO.TOML")])
def test_sidecars_differing_only_in_case_exact_name_wins_else_first_and_a_warning(
        folder, warnings_logged, photo, used):
    (folder / "photo.toml").write_text("depth_scale = 0.5\n")
    (folder / "PHOTO.TOML").write_text("depth_scale = 0.25\n")
    if len([p for p in folder.iterdir() if p.suffix.lower() == ".toml"]) < 2:
        pytest.skip("a case-insensitive file system holds only one of them")
    (folder / photo).write_bytes(b"")
    settings, _ = read_sidecar(folder / photo, DepthSettings(), folder)
    assert settings.depth_scale == {"photo.toml": 0.5, "PHOTO.TOML": 0.25}[used]
    assert len(warnings_logged) == 1
    assert "PHOTO.TOML, photo.toml differ only in letter case; using " + used in warnings_logged[0]


def test_a_single_sidecar_logs_no_warning(folder, warnings_logged):
    _read(folder, "depth_scale = 0.5\n")
    assert warnings_logged == []

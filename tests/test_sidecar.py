"""Sidecar parsing: every key checked, nearest-key hints, external_depth kept inside inputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon.sidecar import SidecarError, read_sidecar
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

"""`formats = [...]`: compressed exports beside the PLY, from the daemon, a compare and predict.

What the exports hold is checked against a real reader in
`tests/pipeline/test_exports.py`; here: that the setting reaches every writer, that each
file is listed in its report with its true size, that bad values name the file and the
format, and that the default leaves every earlier job key alone.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from daemon.config import ConfigError, parse_config
from daemon.jobs import job_key
from daemon.sidecar import SidecarError, apply_sidecar
from pipeline import DepthSettings
from pipeline.exports import EXPORTERS, SPLAT_RECORD
from pipeline.ply import ply_size
from pipeline.settings import EXPORT_FORMATS
from tests.conftest import wait_for
from tests.support.files import save_sidecar


def _spz_count(path: Path, version: int = 2) -> int:
    """The Gaussian count in an SPZ header (magic, version, count, ...), checking the
    version (by default the spz_version setting's default)."""
    with gzip.open(path, "rb") as f:
        header = struct.unpack("<III", f.read(12))
    assert header[:2] == (0x5053474E, version)
    return header[2]


def _vertex_count(ply: Path) -> int:
    with ply.open("rb") as f:
        for line in f:
            if line.startswith(b"element vertex "):
                return int(line.split()[2])
    raise AssertionError(f"{ply} has no vertex element")


def _check_report_sizes(report: dict, outputs: Path, own_name: str) -> None:
    """Every file the report lists, but itself, has its size in `file_bytes`, and it is true."""
    listed = set(report["files"]) - {own_name}
    assert set(report["file_bytes"]) >= {n for n in listed if not n.endswith(".json")}
    for name, size in report["file_bytes"].items():
        assert (outputs / name).stat().st_size == size, name


def test_the_format_names_are_the_exporters() -> None:
    assert set(EXPORT_FORMATS) == set(EXPORTERS)


def test_sidecar_formats_write_every_export_beside_the_ply(running_daemon, daemon_config,
                                                           make_photo) -> None:
    inputs, outputs = daemon_config.inputs, daemon_config.outputs
    inputs.mkdir(parents=True)
    save_sidecar(inputs / "cat.toml", 'formats = ["ply", "spz", "splat"]\n')
    save_sidecar(inputs / "owl.toml", 'formats = ["ply", "spz", "sog", "html"]\nspz_version = 3\n')
    make_photo(inputs / "cat.jpg")
    make_photo(inputs / "dog.jpg", seed=1)  # no sidecar: the default, PLY only
    make_photo(inputs / "owl.jpg", seed=2)
    events: list = []
    daemon = running_daemon(events=events)
    assert wait_for(lambda: len(events) == 3) and daemon.wait_until_idle(30)
    assert {e.outcome for e in events} == {"done"}

    (cat,) = outputs.glob("cat_*.ply")
    n = _vertex_count(cat)
    assert n > 0 and cat.stat().st_size == ply_size(n)
    spz, splat = cat.with_suffix(".spz"), cat.with_suffix(".splat")
    assert _spz_count(spz) == n
    assert splat.stat().st_size == n * SPLAT_RECORD.itemsize
    report = json.loads(cat.with_suffix(".json").read_text())
    assert report["settings"]["formats"] == ["ply", "spz", "splat"]
    assert {cat.name, spz.name, splat.name} <= set(report["files"])
    _check_report_sizes(report, outputs, cat.with_suffix(".json").name)

    (dog,) = outputs.glob("dog_*.ply")
    assert not list(outputs.glob("dog_*.spz")) and not list(outputs.glob("dog_*.splat"))
    dog_report = json.loads(dog.with_suffix(".json").read_text())
    assert dog_report["file_bytes"][dog.name] == dog.stat().st_size

    (owl,) = outputs.glob("owl_*.ply")  # SPZ version 3 as asked; the SOG and share page
    assert _spz_count(owl.with_suffix(".spz"), version=3) == _vertex_count(owl)
    with zipfile.ZipFile(owl.with_suffix(".sog")) as bundle:
        assert json.loads(bundle.read("meta.json"))["count"] == _vertex_count(owl)
    page = owl.with_suffix(".html").read_text(encoding="utf-8")
    assert "<title>owl.jpg - 3D photo</title>" in page  # the photo's name, not the result's
    owl_report = json.loads(owl.with_suffix(".json").read_text())
    assert owl_report["settings"]["spz_version"] == 3
    _check_report_sizes(owl_report, outputs, owl.with_suffix(".json").name)


def test_adding_a_format_to_the_sidecar_is_new_work(running_daemon, daemon_config,
                                                    make_photo) -> None:
    inputs, outputs = daemon_config.inputs, daemon_config.outputs
    inputs.mkdir(parents=True)
    make_photo(inputs / "cat.jpg")
    events: list = []
    daemon = running_daemon(events=events)
    assert wait_for(lambda: len(events) == 1) and daemon.wait_until_idle(30)
    assert not list(outputs.glob("*.spz"))
    save_sidecar(inputs / "cat.toml", 'formats = ["ply", "spz"]\n')
    assert wait_for(lambda: len(events) == 2) and daemon.wait_until_idle(30)
    assert [e.outcome for e in events] == ["done", "done"]
    assert len(list(outputs.glob("cat_*.ply"))) == 2
    (spz,) = outputs.glob("cat_*.spz")
    assert spz.with_suffix(".ply").exists()


def test_a_compare_writes_the_exports_of_every_source(running_daemon, daemon_config,
                                                      make_photo) -> None:
    inputs, outputs = daemon_config.inputs, daemon_config.outputs
    inputs.mkdir(parents=True)
    save_sidecar(inputs / "cat.toml",
           'compare = ["depth-pro", "internal"]\nformats = ["ply", "splat"]\n')
    make_photo(inputs / "cat.jpg")
    events: list = []
    daemon = running_daemon(events=events)
    assert wait_for(lambda: len(events) == 1) and daemon.wait_until_idle(30)
    assert events[0].outcome == "done", events[0]
    for source in ("depth-pro", "internal"):
        (ply,) = outputs.glob(f"cat_*_compare_{source}.ply")
        splat = ply.with_suffix(".splat")
        assert splat.stat().st_size == _vertex_count(ply) * SPLAT_RECORD.itemsize
        report = json.loads(ply.with_suffix(".json").read_text())
        assert splat.name in report["files"]
        _check_report_sizes(report, outputs, ply.with_suffix(".json").name)


@pytest.mark.parametrize("value, needles", [
    (["ply", "spzz"], ["unknown format 'spzz'", "did you mean 'spz'"]),
    (["spz"], ["must include 'ply'"]),
    (["ply", "ply"], ["ply more than once"]),
    ("ply", ["formats must be a list of format names"]),
    ([1], ["formats must be a list of format names"]),
])
def test_bad_formats_in_a_sidecar_name_the_file_and_the_format(tmp_path: Path, value: object,
                                                              needles: list[str]) -> None:
    sidecar = tmp_path / "photo.toml"
    with pytest.raises(SidecarError) as info:
        apply_sidecar({"formats": value}, sidecar, tmp_path / "photo.jpg", DepthSettings(),
                      tmp_path)
    message = str(info.value)
    assert str(sidecar) in message
    for needle in needles:
        assert needle in message


def test_formats_in_config_defaults_are_checked_and_used(tmp_path: Path) -> None:
    where = str(tmp_path / "config.toml")
    with pytest.raises(ConfigError, match=r"config.toml: \[defaults\] formats: unknown format "
                                          r"'glb'"):
        parse_config({"defaults": {"formats": ["ply", "glb"]}}, where, tmp_path)
    config = parse_config({"defaults": {"formats": ["ply", "spz"]}}, where, tmp_path)
    assert config.defaults.formats == ("ply", "spz")


def test_job_key_follows_the_formats_and_is_unchanged_by_the_default() -> None:
    photo = "cd" * 32
    plain = DepthSettings()
    old_style = {k: v for k, v in plain.as_dict().items()
                 if k not in ("compare", "formats", "spz_version")}
    blob = json.dumps({"photo": photo, "settings": old_style}, sort_keys=True,
                      separators=(",", ":"))
    assert job_key(photo, plain, None) == hashlib.sha256(blob.encode()).hexdigest()
    keys = {job_key(photo, DepthSettings(formats=f), None)
            for f in (("ply",), ("ply", "spz"), ("ply", "splat"), ("ply", "spz", "splat"),
                      ("ply", "sog"), ("ply", "html"))}
    assert len(keys) == 6
    spz3 = DepthSettings(formats=("ply", "spz"), spz_version=3)
    assert job_key(photo, spz3, None) not in keys  # another SPZ is another result


@pytest.mark.parametrize("value, needle", [
    (4, "spz_version must be a whole number in 2..3, got 4"),
    (1, "spz_version must be a whole number in 2..3, got 1"),
    ("2", "spz_version must be a whole number, got '2'"),
    (2.0, "spz_version must be a whole number, got 2.0"),
])
def test_a_bad_spz_version_in_a_sidecar_names_the_file_and_the_key(
        tmp_path: Path, value: object, needle: str) -> None:
    sidecar = tmp_path / "photo.toml"
    with pytest.raises(SidecarError) as info:
        apply_sidecar({"spz_version": value}, sidecar, tmp_path / "photo.jpg", DepthSettings(),
                      tmp_path)
    assert str(sidecar) in str(info.value) and needle in str(info.value)


def test_predict_writes_the_formats_it_is_asked_for(tmp_path: Path, tiny_depth_dir: Path,
                                                    make_photo) -> None:
    from service.cli import main
    from tests.conftest import SHARP_DOUBLE

    photo = make_photo(tmp_path / "in" / "cat.jpg")
    out = tmp_path / "out"
    code = main(["predict", "-i", str(photo), "-o", str(out), "--device", "cpu",
                 "--depth-model", str(tiny_depth_dir), "--sharp-factory", SHARP_DOUBLE,
                 "--formats", "ply, splat"])
    assert code == 0
    (ply,) = out.glob("cat_*.ply")
    splat = ply.with_suffix(".splat")
    records = np.frombuffer(splat.read_bytes(), dtype=SPLAT_RECORD)
    assert records.size == _vertex_count(ply)
    assert not list(out.glob("*.spz"))
    assert main(["predict", "-i", str(photo), "-o", str(out), "--device", "cpu",
                 "--depth-model", str(tiny_depth_dir), "--sharp-factory", SHARP_DOUBLE,
                 "--formats", "splat"]) == 2

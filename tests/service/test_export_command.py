"""`sharp-watch export RESULT.ply --formats ...`: a result's other formats made from its PLY,
beside it (and listed in its report) or in `-o`, all or nothing, never over a file."""

from __future__ import annotations

import errno
import gzip
import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from daemon.outputs import OutputFolder
from daemon.results import (
    Models,
    Origin,
    build_report,
    read_report,
    read_result,
    result_names,
)
from pipeline import DepthSettings, Prediction, write_ply
from pipeline.exports import EXPORTERS, Exporter
from pipeline.sog import sog_bytes
from service.cli import main
from tests.conftest import small_prediction
from tests.support.splat_reader import F_PX, SIZE, scene

ALL = "sog,spz,splat,html"


def _result(folder: Path, settings: DepthSettings | None = None, photo: str = "cat.jpg",
            n: int = 300) -> Path:
    """A result as the daemon writes it (PLY and report), of `n` Gaussians."""
    prediction = small_prediction()
    prediction = Prediction(**{**prediction.__dict__, "gaussians": scene(n), "f_px": F_PX,
                               "image_size": SIZE})
    settings = settings or DepthSettings()
    folder.mkdir(parents=True, exist_ok=True)
    names = result_names(folder, Path(photo).stem, preview=False, internal_depth=False,
                         formats=settings.formats)
    origin = Origin(folder / photo, "0" * 64, "1" * 64, settings)
    report = build_report(origin, prediction, models=Models(device="cpu"), timings={"sharp": 1},
                          from_cache=False, files=names.all())
    OutputFolder(folder).write_result(names, prediction, report)
    return names.ply


def _spz_version(path: Path) -> int:
    with gzip.open(path, "rb") as f:
        version: int = struct.unpack("<II", f.read(8))[1]
    return version


def test_export_writes_every_format_beside_the_ply_and_lists_them_in_its_report(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ply = _result(tmp_path)
    report_before = json.loads(ply.with_suffix(".json").read_text())
    assert main(["export", str(ply), "--formats", ALL]) == 0
    made = {fmt: ply.with_suffix(EXPORTERS[fmt].suffix) for fmt in ALL.split(",")}
    assert all(path.is_file() for path in made.values())
    assert made["sog"].read_bytes() == sog_bytes(scene(300))  # as its photo's run would have
    assert _spz_version(made["spz"]) == 2
    assert "<title>cat.jpg - 3D photo</title>" in made["html"].read_text(encoding="utf-8")
    out = capsys.readouterr().out
    for path in made.values():
        assert f"{path} (" in out
    assert f"listed in {ply.with_suffix('.json').name}" in out

    report = json.loads(ply.with_suffix(".json").read_text())
    assert report["files"] == report_before["files"] + [p.name for p in made.values()]
    assert report["file_bytes"] == {**report_before["file_bytes"],
                                    **{p.name: p.stat().st_size for p in made.values()}}
    unchanged = {k: v for k, v in report.items() if k not in ("files", "file_bytes")}
    assert unchanged == {k: v for k, v in report_before.items()
                         if k not in ("files", "file_bytes")}  # same job, settings, schema
    parsed = read_report(ply.with_suffix(".json"))
    assert parsed is not None and parsed.job == "1" * 64
    assert read_result(ply) is not None


def test_export_never_writes_over_a_file_and_then_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ply = _result(tmp_path, DepthSettings(formats=("ply", "spz")))  # the daemon made an .spz
    report = ply.with_suffix(".json").read_bytes()
    spz = ply.with_suffix(".spz").read_bytes()
    assert main(["export", str(ply), "--formats", "sog,spz"]) == 1
    err = capsys.readouterr().err
    assert f"{ply.with_suffix('.spz')}: already exists; nothing was written" in err
    assert not ply.with_suffix(".sog").exists()
    assert ply.with_suffix(".spz").read_bytes() == spz
    assert ply.with_suffix(".json").read_bytes() == report
    (tmp_path / (ply.stem + ".HTML")).write_bytes(b"mine")  # Windows sees one file
    assert main(["export", str(ply), "--formats", "html"]) == 1
    assert "already exists" in capsys.readouterr().err


def test_export_into_another_folder_leaves_the_result_alone(tmp_path: Path) -> None:
    ply = _result(tmp_path / "out")
    report = ply.with_suffix(".json").read_bytes()
    elsewhere = tmp_path / "to share"
    assert main(["export", str(ply), "-o", str(elsewhere), "--formats", "html,sog"]) == 0
    assert sorted(p.name for p in elsewhere.iterdir()) == [f"{ply.stem}.html", f"{ply.stem}.sog"]
    assert ply.with_suffix(".json").read_bytes() == report
    assert sorted(p.suffix for p in ply.parent.iterdir()) == [".json", ".ply"]


def test_the_spz_version_is_the_results_own_unless_given(tmp_path: Path) -> None:
    three = _result(tmp_path / "a", DepthSettings(spz_version=3))
    assert main(["export", str(three), "--formats", "spz"]) == 0
    assert _spz_version(three.with_suffix(".spz")) == 3
    again = _result(tmp_path / "b", DepthSettings(spz_version=3))
    assert main(["export", str(again), "--formats", "spz", "--spz-version", "2"]) == 0
    assert _spz_version(again.with_suffix(".spz")) == 2


def test_a_result_made_before_these_formats_existed_is_exported(tmp_path: Path) -> None:
    """Its report knows neither `spz_version` nor `sog` or `html`: version 2, its photo's
    name, and its report gains the files as any other."""
    ply = _result(tmp_path)
    path = ply.with_suffix(".json")
    old = json.loads(path.read_text())
    del old["settings"]["spz_version"], old["schema_version"]
    path.write_text(json.dumps(old))
    assert main(["export", str(ply), "--formats", "spz,html"]) == 0
    assert _spz_version(ply.with_suffix(".spz")) == 2
    assert "<h1>cat.jpg</h1>" in ply.with_suffix(".html").read_text(encoding="utf-8")
    report = json.loads(path.read_text())
    assert report["files"][-2:] == [f"{ply.stem}.spz", f"{ply.stem}.html"]
    assert "schema_version" not in report  # still the version 1 it was


def test_a_ply_without_a_report_is_exported_under_its_own_name(tmp_path: Path) -> None:
    ply = write_ply(tmp_path / "from elsewhere.ply", scene(100), F_PX, SIZE)
    assert main(["export", str(ply), "--formats", "html"]) == 0
    page = ply.with_suffix(".html").read_text(encoding="utf-8")
    assert "<h1>from elsewhere.ply</h1>" in page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["from elsewhere.html",
                                                          "from elsewhere.ply"]


@pytest.mark.parametrize(("data", "words"), [
    (b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\n"
     b"end_header\n\0\0\0\0", "vertex columns are x; expected SHARP's"),
    (b"\x89PNG\r\n", "no end_header"),
])
def test_a_ply_of_another_layout_is_refused_naming_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], data: bytes, words: str) -> None:
    ply = tmp_path / "other.ply"
    ply.write_bytes(data)
    assert main(["export", str(ply), "--formats", "sog"]) == 1
    err = capsys.readouterr().err
    assert f"error: {ply.absolute()}: " in err and words in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.ply"]


def test_a_missing_ply_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tmp_path / "gone.ply"), "--formats", "sog"]) == 1
    assert f"{tmp_path / 'gone.ply'}: cannot be read" in capsys.readouterr().err


@pytest.mark.parametrize(("formats", "words"), [
    ("sogg", "unknown format 'sogg'; did you mean 'sog'?"),
    ("ply", "list what to make from cat_"),
    ("sog,sog", "formats lists sog more than once"),
    ("", "list what to make from cat_"),
])
def test_bad_formats_are_named_and_nothing_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], formats: str, words: str) -> None:
    ply = _result(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["export", str(ply), "--formats", formats]) == 2
    assert words in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_bad_spz_version_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ply = _result(tmp_path)
    assert main(["export", str(ply), "--formats", "spz", "--spz-version", "4"]) == 2
    assert "spz_version must be a whole number in 2..3, got 4" in capsys.readouterr().err
    assert not ply.with_suffix(".spz").exists()


def test_a_write_failing_half_way_leaves_nothing_and_the_report_as_it_was(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(path: Path, *_: Any) -> Path:
        Path(path).write_bytes(b"half a page")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))

    monkeypatch.setitem(EXPORTERS, "html", Exporter(".html", full_disk))
    ply = _result(tmp_path)
    report = ply.with_suffix(".json").read_bytes()
    assert main(["export", str(ply), "--formats", "sog,spz,html"]) == 1
    err = capsys.readouterr().err
    assert f"error: {tmp_path}: cannot write results ({os.strerror(errno.ENOSPC)})" in err
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".ply"]
    assert ply.with_suffix(".json").read_bytes() == report


def test_export_options_come_from_the_report_the_daemon_writes(tmp_path: Path) -> None:
    """The daemon's own exports take the photo's name and spz_version the same way."""
    ply = _result(tmp_path, DepthSettings(formats=("ply", "spz", "html"), spz_version=3),
                  photo="garden.jpg")
    assert _spz_version(ply.with_suffix(".spz")) == 3
    assert "<h1>garden.jpg</h1>" in ply.with_suffix(".html").read_text(encoding="utf-8")

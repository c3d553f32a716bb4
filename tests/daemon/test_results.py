"""The result contract (`daemon.results`): a report is built from plain facts, written with
its schema version and read back by the one reader that the gallery, the viewer and the
journal rebuild (`daemon.jobs.finished_results`) share. Reports written before the version
field existed read as version 1; anything not one of our reports is skipped by all three."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from daemon.jobs import finished_results, settings_to_json
from daemon.outputs import OutputFolder
from daemon.results import (
    MAX_REPORT_BYTES,
    SCHEMA_VERSION,
    Compare,
    Focal,
    list_results,
    read_report,
    read_result,
    result_names,
)
from pipeline import DepthSettings
from tests.conftest import small_prediction, small_report

KEY, HASH = "1" * 64, "0" * 64


def _old_report(ply: Path, photo: Path) -> dict[str, Any]:
    """A report exactly as sharp-watch wrote it before reports carried a schema version."""
    return {"photo": str(photo), "photo_sha256": HASH, "job": KEY,
            "created": "2026-11-24T10:00:00+00:00", "settings": DepthSettings().as_dict(),
            "image_size": [64, 48], "focal": {"f_px": 50.0, "origin": "exif"},
            "depth": {"source": "depth-pro", "format": None, "model": "m",
                      "range_m": [1.0, 2.0], "from_cache": False},
            "models": {"depth": "m", "sharp": "s", "device": "cpu", "sharp_precision": "float32"},
            "gaussians": 6, "timings_s": {"decode": 0.5, "sharp": 1.5}, "warnings": [],
            "files": [ply.name, ply.with_suffix(".json").name],
            "file_bytes": {ply.name: 3}}


def _result(outputs: Path, name: str, report: dict[str, Any] | str) -> Path:
    """A PLY (its content is not read here) and the report beside it."""
    outputs.mkdir(parents=True, exist_ok=True)
    ply = outputs / f"{name}.ply"
    ply.write_bytes(b"ply")
    text = report if isinstance(report, str) else json.dumps(report)
    ply.with_suffix(".json").write_text(text, encoding="utf-8")
    return ply


def test_a_written_report_carries_its_version_and_reads_back_as_built(tmp_path: Path) -> None:
    names = result_names(tmp_path, "cat", preview=False, internal_depth=True)
    folder = OutputFolder(tmp_path)
    built = small_report(names.all(), tmp_path / "in" / "cat.jpg")
    folder.write_result(names, small_prediction(), built)

    data = json.loads(names.report.read_text(encoding="utf-8"))
    assert data["schema_version"] == SCHEMA_VERSION == 1
    assert data["focal"] == {"f_px": 100.0, "origin": "default-30mm", "estimated_by": None}
    assert data["depth"]["range_m"] == [1.0, 2.0] and data["image_size"] == [8, 8]
    assert "compare" not in data
    read = read_report(names.report)
    assert read is not None
    sizes = {p.name: p.stat().st_size for p in (names.ply, names.internal_depth) if p}
    assert read == built._replace(file_bytes=sizes)
    assert read.gaussians == 64 and read.seconds == 2.0 and read.models.device == "cpu"
    result = read_result(names.ply)
    assert result is not None and result.photo == tmp_path / "in" / "cat.jpg"


def test_a_compare_entry_is_written_and_read_as_one() -> None:
    from daemon.results import parse_report, report_json

    built = small_report([Path("a_compare_internal.ply")])._replace(
        compare=Compare("internal", ("depth-pro", "internal"), "a_compare.png"))
    data = json.loads(json.dumps(report_json(built)))
    assert data["compare"] == {"source": "internal", "sources": ["depth-pro", "internal"],
                               "contact_sheet": "a_compare.png"}
    assert parse_report(data) == built


def test_a_report_without_a_version_is_version_1_for_the_gallery_and_the_journal(
        tmp_path: Path) -> None:
    photo = tmp_path / "in" / "a.jpg"
    ply = _result(tmp_path / "out", "a_20261124-100000", _old_report(
        tmp_path / "out" / "a_20261124-100000.ply", photo))
    report = read_report(ply.with_suffix(".json"))
    assert report is not None and report.version == 1
    assert report.focal == Focal(50.0, "exif", None) and report.seconds == 2.0
    assert [r.ply for r in list_results(ply.parent)] == [ply]
    [finished] = finished_results(ply.parent)
    assert (finished.key, finished.photo, finished.photo_hash) == (KEY, photo, HASH)
    assert finished.settings_json == settings_to_json(DepthSettings())
    assert finished.outputs == (str(ply), str(ply.with_suffix(".json")))


def test_a_report_from_a_newer_version_is_not_read(tmp_path: Path) -> None:
    outputs = tmp_path / "out"
    ply = _result(outputs, "a", _old_report(outputs / "a.ply", tmp_path / "a.jpg")
                  | {"schema_version": SCHEMA_VERSION + 1})
    assert read_report(ply.with_suffix(".json")) is None
    assert list_results(outputs) == [] and finished_results(outputs) == []


def _bad(report: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {k: v for k, v in (report | changes).items() if v is not ...}


BAD_REPORTS: dict[str, Any] = {
    "not JSON": "{'photo': ",
    "a list": "[]",
    "nested too deep": "[" * 100_000 + "]" * 100_000,
    "version 0": lambda r: _bad(r, schema_version=0),
    "version as text": lambda r: _bad(r, schema_version="1"),
    "no photo": lambda r: _bad(r, photo=...),
    "no job": lambda r: _bad(r, job=...),
    "no photo hash": lambda r: _bad(r, photo_sha256=...),
    "settings a list": lambda r: _bad(r, settings=[]),
    "files a string": lambda r: _bad(r, files="a.ply"),
    "files not names": lambda r: _bad(r, files=[1, 2]),
    "PLY not listed": lambda r: _bad(r, files=["other.ply"]),
    "over 1 MiB": lambda r: json.dumps(r) + " " * MAX_REPORT_BYTES,
}


@pytest.mark.parametrize("bad", list(BAD_REPORTS), ids=list(BAD_REPORTS))
def test_a_report_not_of_ours_is_no_result_for_anyone(tmp_path: Path, bad: str) -> None:
    outputs = tmp_path / "out"
    good = _old_report(outputs / "a.ply", tmp_path / "a.jpg")
    make = BAD_REPORTS[bad]
    _result(outputs, "a", make(good) if callable(make) else make)
    _result(outputs, "b", _old_report(outputs / "b.ply", tmp_path / "b.jpg"))  # still read
    assert [r.name for r in list_results(outputs)] == ["b.ply"]
    assert [Path(f.outputs[0]).name for f in finished_results(outputs)] == ["b.ply"]


def test_a_report_whose_ply_is_gone_is_no_result(tmp_path: Path) -> None:
    outputs = tmp_path / "out"
    ply = _result(outputs, "a", _old_report(outputs / "a.ply", tmp_path / "a.jpg"))
    ply.unlink()
    assert read_report(ply.with_suffix(".json")) is not None  # the report alone is fine
    assert read_result(ply) is None
    assert list_results(outputs) == [] and finished_results(outputs) == []


def test_the_journal_skips_a_result_whose_key_or_settings_are_not_a_job_s(
        tmp_path: Path) -> None:
    outputs = tmp_path / "out"
    good = _old_report(outputs / "a.ply", tmp_path / "a.jpg")
    _result(outputs, "a", good | {"job": "short"})
    _result(outputs, "b", _old_report(outputs / "b.ply", tmp_path / "b.jpg")
            | {"settings": {"depth_scale": -1.0}})
    _result(outputs, "c", _old_report(outputs / "c.ply", tmp_path / "c.jpg")
            | {"settings": {"no_such_setting": 1}})
    assert len(list_results(outputs)) == 3  # the gallery still shows them
    assert finished_results(outputs) == []


def test_facts_only_shown_read_as_unknown_when_malformed(tmp_path: Path) -> None:
    outputs = tmp_path / "out"
    report = _old_report(outputs / "a.ply", tmp_path / "a.jpg") | {
        "focal": {"f_px": -5, "origin": 3}, "image_size": [64, "48"], "gaussians": True,
        "depth": {"range_m": [1.0, None], "from_cache": "no"}, "models": "cpu",
        "timings_s": {"sharp": 2.0, "depth": "fast", "decode": True}, "warnings": "w",
        "compare": {"source": "internal", "sources": "all"}}
    ply = _result(outputs, "a", json.dumps(report).replace('"fast"', "NaN"))
    read = read_report(ply.with_suffix(".json"))
    assert read is not None
    assert read.focal == Focal(None, None, None) and read.image_size is None
    assert read.gaussians is None and read.depth.range_m is None
    assert read.depth.from_cache is None and read.models.device is None
    assert read.timings == {"sharp": 2.0} and read.warnings == () and read.compare is None


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on Windows")
def test_a_fifo_report_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "a.json"
    os.mkfifo(fifo)
    answer: list[object] = []
    thread = threading.Thread(target=lambda: answer.append(read_report(fifo)), daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():  # let the blocked open go before failing
        with open(fifo, "wb"):
            pass
    assert answer == [None], "reading a FIFO named like a report must not block"

"""`sharp-watch predict` writes each result as the daemon does (`daemon.outputs`): the PLY,
its exports and internal depth plus a JSON report, all or nothing, listed by the gallery."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from plyfile import PlyData

from pipeline import DepthSettings
from pipeline.exports import EXPORTERS, Exporter, ExportOptions
from service.cli import main
from tests.conftest import SHARP_DOUBLE
from viewer.results import list_results, summary


def _predict(photo: Path, out: Path, depth_dir: Path, *argv: str) -> int:
    return main(["predict", "-i", str(photo), "-o", str(out), "--device", "cpu",
                 "--depth-model", str(depth_dir), "--sharp-factory", SHARP_DOUBLE, *argv])


def test_predict_writes_a_report_that_matches_its_ply_and_the_gallery_lists_it(
        tmp_path: Path, tiny_depth_dir: Path, make_photo: Callable[..., Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    photo = make_photo(tmp_path / "in" / "cat.jpg")
    out = tmp_path / "out"
    code = _predict(photo, out, tiny_depth_dir, "--depth-scale", "1.5", "--depth-offset", "0.25",
                    "--focal-mm", "35", "--save-internal-depth", "--formats", "ply,splat")
    assert code == 0
    (ply,) = out.glob("cat_*.ply")
    assert f"-> {ply}" in capsys.readouterr().out
    report = json.loads(ply.with_suffix(".json").read_text(encoding="utf-8"))

    expected = DepthSettings(depth_source="depth-pro", depth_scale=1.5, depth_offset=0.25,
                             focal_mm=35.0, save_internal_depth=True, formats=("ply", "splat"))
    assert report["settings"] == json.loads(json.dumps(expected.as_dict(), default=str))
    assert report["settings"]["depth_scale"] == 1.5
    assert report["photo"] == str(photo.absolute())
    stem = ply.stem
    assert sorted(report["files"]) == sorted([ply.name, f"{stem}.json", f"{stem}.splat",
                                              f"{stem}_internal_depth.npy"])
    assert sorted(p.name for p in out.iterdir()) == sorted(report["files"])
    for name, size in report["file_bytes"].items():
        assert (out / name).stat().st_size == size, name
    assert set(report["file_bytes"]) == set(report["files"]) - {f"{stem}.json"}

    data = PlyData.read(str(ply))
    assert report["gaussians"] == data["vertex"].count
    assert report["image_size"] == [int(v) for v in data["image_size"]["image_size"]] == [64, 48]
    assert report["focal"]["f_px"] == pytest.approx(float(data["intrinsic"]["intrinsic"][0]))
    assert report["focal"]["origin"] == "override"
    assert report["depth"]["source"] == "depth-pro" and report["depth"]["from_cache"] is False
    assert {"decode", "depth", "sharp"} <= set(report["timings_s"])
    assert report["models"]["device"] == "cpu" and isinstance(report["warnings"], list)
    assert np.load(out / f"{stem}_internal_depth.npy").shape[0] == 2

    (result,) = list_results(out)
    assert result.ply == ply and result.photo == photo.absolute()
    shown = summary(result)
    assert shown["settings"]["depth_scale"] == 1.5
    assert shown["image_size"] == (64, 48)
    assert shown["focal"] == {"f_px": report["focal"]["f_px"], "origin": "override"}
    assert shown["seconds"] and shown["seconds"] > 0 and not shown["has_preview"]


def test_a_write_failing_mid_way_leaves_no_partial_result_and_names_the_photo(
        tmp_path: Path, tiny_depth_dir: Path, make_photo: Callable[..., Path],
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(path: Path, *_: object) -> Path:
        Path(path).write_bytes(b"half an spz")  # a partial file under the final name
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))

    monkeypatch.setitem(EXPORTERS, "spz", Exporter(".spz", full_disk))
    photos = tmp_path / "in"
    make_photo(photos / "a.jpg", seed=1)
    make_photo(photos / "b.jpg", seed=2)
    out = tmp_path / "out"
    code = _predict(photos, out, tiny_depth_dir, "--depth-source", "internal",
                    "--save-internal-depth", "--formats", "ply,splat,spz")
    err = capsys.readouterr().err
    assert code == 1
    assert list(out.iterdir()) == []  # npy and splat (written before the spz) removed too
    assert list_results(out) == []
    for name in ("a.jpg", "b.jpg"):
        assert f"FAILED {photos / name}: cannot write results" in err
    assert os.strerror(errno.ENOSPC) in err and str(out) in err
    assert "2 of 2 photos failed" in err

    monkeypatch.undo()
    assert _predict(photos / "a.jpg", out, tiny_depth_dir, "--depth-source", "internal") == 0
    assert [r.photo.name for r in list_results(out)] == ["a.jpg"]


def test_an_export_warning_is_printed_and_kept_in_the_report(
        tmp_path: Path, tiny_depth_dir: Path, make_photo: Callable[..., Path],
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    real = EXPORTERS["splat"]

    def warns(path: Path, gaussians: object, f_px: float, size: tuple[int, int],
              warnings: list[str], options: ExportOptions) -> Path:
        warnings.append(f"{Path(path).name}: 3 Gaussians written transparent")
        return real.write(path, gaussians, f_px, size, warnings, options)

    monkeypatch.setitem(EXPORTERS, "splat", Exporter(".splat", warns))
    photo = make_photo(tmp_path / "in" / "cat.jpg")
    out = tmp_path / "out"
    assert _predict(photo, out, tiny_depth_dir, "--depth-source", "internal",
                    "--formats", "ply,splat") == 0
    (ply,) = out.glob("cat_*.ply")
    message = f"{ply.stem}.splat: 3 Gaussians written transparent"
    assert f"warning: cat.jpg: {message}" in capsys.readouterr().err
    report = json.loads(ply.with_suffix(".json").read_text(encoding="utf-8"))
    assert report["warnings"] == [message]

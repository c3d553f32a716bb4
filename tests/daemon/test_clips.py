"""A clip saved beside a result (`OutputFolder.save_clip`, what the viewer's Make a clip
calls) is written whole and listed in the result's report, or not at all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import daemon.outputs
from daemon.outputs import OutputFolder
from pipeline import OutputError
from pipeline.atomic import temp_files
from tests.conftest import write_photo
from tests.support.viewer_requests import write_result

VIDEO = b"\x00\x00\x00\x18ftypisom" + bytes(1000)


def test_a_clip_without_a_report_to_list_it_is_not_left(tmp_path: Path) -> None:
    ply = write_result(tmp_path, write_photo(tmp_path / "a.jpg"), "a_1")
    ply.with_suffix(".json").unlink()
    with pytest.raises(OutputError, match=r"a_1\.ply: has no report of sharp-watch's"):
        OutputFolder(tmp_path).save_clip(ply, "orbit", VIDEO, ".mp4")
    assert not (tmp_path / "a_1_orbit.mp4").exists() and list(temp_files(tmp_path)) == []


def test_a_report_that_cannot_be_rewritten_leaves_no_clip(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ply = write_result(tmp_path, write_photo(tmp_path / "a.jpg"), "a_1")
    report = ply.with_suffix(".json").read_bytes()

    def full_disk(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(daemon.outputs, "add_to_report", full_disk)
    with pytest.raises(OutputError, match="No space left on device"):
        OutputFolder(tmp_path).save_clip(ply, "dolly", VIDEO, ".mp4")
    assert not (tmp_path / "a_1_dolly.mp4").exists()
    assert ply.with_suffix(".json").read_bytes() == report


def test_the_share_page_is_made_once(tmp_path: Path) -> None:
    ply = write_result(tmp_path, write_photo(tmp_path / "a.jpg"), "a_1")
    page = OutputFolder(tmp_path).share_page(ply)
    assert page == tmp_path / "a_1.html"
    listed = json.loads(ply.with_suffix(".json").read_text())
    assert listed["files"][-1] == "a_1.html"
    page.write_bytes(b"kept")
    assert OutputFolder(tmp_path).share_page(ply).read_bytes() == b"kept"

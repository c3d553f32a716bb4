"""The viewer's Share and Make-a-clip routes, as a page (or any other local program) calls
them: `POST /api/share` makes the result's share page beside it, `POST /api/clip` saves a
clip the page encoded, `GET /files/takeaway` downloads either. Only with a live token,
only results in the outputs folder, only files their report lists, a clip's body only
of its declared format and size, written atomically and listed in the report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import viewer.server
from daemon.results import clip_path, takeaways
from pipeline.atomic import temp_files
from tests.support.viewer_requests import call, raw_status
from viewer.server import ViewerApp

MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(range(256)) * 4
WEBM = b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 4
NO_TOKEN = {"Authorization": ""}


def _report(app: ViewerApp) -> dict:
    return json.loads((app.place.outputs / "a_1.json").read_text(encoding="utf-8"))


def _clip(app: ViewerApp, data: bytes, kind: str = "video/mp4",
          query: str = "ply=a_1.ply&move=orbit",
          headers: dict[str, str] | None = None) -> tuple[int, object]:
    status, answer, _ = call(app, "POST", f"/api/clip?{query}", data,
                             {"Content-Type": kind, **(headers or {})})
    return status, answer


def test_a_clip_is_saved_beside_the_result_and_listed_in_its_report(viewer_app: ViewerApp) -> None:
    outputs = viewer_app.place.outputs
    before = _report(viewer_app)
    assert _clip(viewer_app, MP4) == (200, {"file": "a_1_orbit.mp4", "bytes": len(MP4)})
    assert (outputs / "a_1_orbit.mp4").read_bytes() == MP4
    assert _clip(viewer_app, WEBM, "video/webm; codecs=vp9", "ply=a_1.ply&move=wiggle")[1] == \
        {"file": "a_1_wiggle.webm", "bytes": len(WEBM)}
    assert _clip(viewer_app, MP4)[1] == {"file": "a_1_orbit-2.mp4", "bytes": len(MP4)}, \
        "a second clip of the same move never replaces the first"
    after = _report(viewer_app)
    clips = ["a_1_orbit.mp4", "a_1_wiggle.webm", "a_1_orbit-2.mp4"]
    assert after["files"] == [*before["files"], *clips]
    assert after["file_bytes"] == {"a_1_orbit.mp4": len(MP4), "a_1_wiggle.webm": len(WEBM),
                                   "a_1_orbit-2.mp4": len(MP4)}
    assert {k: v for k, v in after.items() if k not in ("files", "file_bytes")} == \
        {k: v for k, v in before.items() if k not in ("files", "file_bytes")}
    assert list(temp_files(outputs)) == [], "only whole files are left"
    status, data, response = call(viewer_app, "GET",
                                  "/files/takeaway?ply=a_1.ply&file=a_1_wiggle.webm")
    assert (status, data) == (200, WEBM)
    assert response.getheader("Content-Disposition") == \
        "attachment; filename*=UTF-8''a_1_wiggle.webm"
    assert response.getheader("Content-Type") == "application/octet-stream"
    viewer_app.index.refresh()
    card = call(viewer_app, "GET", "/api/gallery")[1]["results"][0]
    assert card["takeaways"] == clips
    (outputs / "a_1_orbit.mp4").unlink()
    card = call(viewer_app, "GET", "/api/gallery")[1]["results"][0]
    assert card["takeaways"] == clips[1:], "a file deleted by hand is not offered"


@pytest.mark.parametrize(("kind", "data", "query", "status"), [
    ("image/png", MP4, "ply=a_1.ply&move=orbit", 415),
    ("", MP4, "ply=a_1.ply&move=orbit", 415),
    ("video/mp4", WEBM, "ply=a_1.ply&move=orbit", 415),  # the body is not what it says
    ("video/webm", MP4, "ply=a_1.ply&move=orbit", 415),
    ("video/mp4", b"", "ply=a_1.ply&move=orbit", 415),
    ("video/mp4", MP4, "ply=a_1.ply&move=spin", 400),
    ("video/mp4", MP4, "ply=a_1.ply&move=..%2F..%2Fx", 400),
    ("video/mp4", MP4, "ply=a_1.ply", 400),
    ("video/mp4", MP4, "ply=..%2Fin%2Fa.ply&move=orbit", 404),
    ("video/mp4", MP4, "ply=%2Fetc%2Fpasswd&move=orbit", 404),
    ("video/mp4", MP4, "ply=nope.ply&move=orbit", 404),
    ("video/mp4", MP4, "move=orbit", 404),  # never "the newest" for a write
])
def test_a_bad_clip_is_refused_and_nothing_is_written(viewer_app: ViewerApp, kind: str,
                                                     data: bytes, query: str,
                                                     status: int) -> None:
    outputs = viewer_app.place.outputs
    files = sorted(os.listdir(outputs))
    report = _report(viewer_app)
    answer = _clip(viewer_app, data, kind, query)
    assert answer[0] == status and "error" in answer[1], answer
    assert sorted(os.listdir(outputs)) == files and _report(viewer_app) == report


def test_an_upload_over_the_limit_or_without_a_token_is_refused_unread(
        viewer_app: ViewerApp, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(viewer.server, "MAX_CLIP_BYTES", 64 * 1024)
    big = MP4 + bytes(64 * 1024)
    assert _clip(viewer_app, big)[0] == 413
    assert _clip(viewer_app, MP4[:8 * 1024], headers=NO_TOKEN)[0] == 401
    # Without a token only the small limit of every other request applies: a large body
    # is refused by the front door before it is read.
    head = (f"POST /api/clip?ply=a_1.ply&move=orbit HTTP/1.1\r\nHost: 127.0.0.1:"
            f"{viewer_app.port}\r\nContent-Type: video/mp4\r\nContent-Length: 60000\r\n\r\n")
    assert raw_status(viewer_app.port, head.encode()) == 413
    assert _clip(viewer_app, MP4, headers={"Authorization": "Bearer nope"})[0] == 401
    assert not list(viewer_app.place.outputs.glob("*.mp4"))
    assert _clip(viewer_app, MP4)[0] == 200, "under the limit, with the token"


def test_share_makes_the_page_once_and_lists_it(viewer_app: ViewerApp) -> None:
    outputs = viewer_app.place.outputs
    status, answer, _ = call(viewer_app, "POST", "/api/share", {"ply": "a_1.ply"})
    page = outputs / "a_1.html"
    assert (status, answer) == (200, {"file": "a_1.html", "bytes": page.stat().st_size})
    assert page.read_bytes().startswith(b"<!doctype html>")
    report = _report(viewer_app)
    assert "a_1.html" in report["files"] and report["file_bytes"]["a_1.html"] == answer["bytes"]
    made = page.stat().st_mtime_ns
    assert call(viewer_app, "POST", "/api/share", {"ply": "a_1.ply"})[:2] == (200, answer)
    assert page.stat().st_mtime_ns == made and _report(viewer_app) == report, \
        "a page that exists is handed out as it is"
    status, data, _ = call(viewer_app, "GET", "/files/takeaway?ply=a_1.ply&file=a_1.html")
    assert (status, data) == (200, page.read_bytes())
    assert list(temp_files(outputs)) == []


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/api/share", {"ply": "../in/a.ply"}),
    ("POST", "/api/share", {"ply": "/etc/passwd"}),
    ("POST", "/api/share", {"ply": ""}),
    ("POST", "/api/share", {"ply": 3}),
    ("POST", "/api/share", {}),
    ("GET", "/files/takeaway?ply=a_1.ply&file=..%2Fin%2Fa.jpg", None),
    ("GET", "/files/takeaway?ply=a_1.ply&file=a_1.ply", None),
    ("GET", "/files/takeaway?ply=a_1.ply&file=a_1.json", None),
    ("GET", "/files/takeaway?ply=a_1.ply&file=a_1_depth.png", None),
    ("GET", "/files/takeaway?ply=a_1.ply&file=a_1.html", None),  # not made yet
    ("GET", "/files/takeaway?ply=a_1.ply", None),
    ("GET", "/files/takeaway?ply=..%2Fa_1.ply&file=a_1.html", None),
])
def test_share_and_downloads_stay_in_the_outputs_folder(viewer_app: ViewerApp, method: str,
                                                        path: str, body: object) -> None:
    (viewer_app.place.outputs / "a_1.html").with_name("secret.html").write_text("x")
    status, answer, _ = call(viewer_app, method, path, body)
    assert 400 <= status < 500 and "error" in answer, (status, answer)
    assert not (viewer_app.place.outputs / "a_1.html").exists()


def test_share_and_downloads_need_the_token(viewer_app: ViewerApp) -> None:
    assert call(viewer_app, "POST", "/api/share", {"ply": "a_1.ply"}, NO_TOKEN)[0] == 401
    assert not (viewer_app.place.outputs / "a_1.html").exists()
    assert _clip(viewer_app, MP4)[0] == 200
    assert call(viewer_app, "GET", "/files/takeaway?ply=a_1.ply&file=a_1_orbit.mp4",
                headers=NO_TOKEN)[0] == 401


def test_a_ply_from_elsewhere_is_not_written_beside(viewer_app: ViewerApp) -> None:
    viewer_app.extra = viewer_app.place.outputs.parent / "elsewhere" / "b.ply"
    viewer_app.extra.parent.mkdir()
    (viewer_app.place.outputs / "a_1.ply").rename(viewer_app.extra)
    status, answer, _ = call(viewer_app, "POST", "/api/share", {"ply": "b.ply"})
    assert status == 400 and "not a result in the outputs folder" in answer["error"]
    assert _clip(viewer_app, MP4, query="ply=b.ply&move=orbit")[0] == 400
    assert sorted(p.name for p in viewer_app.extra.parent.iterdir()) == ["b.ply"]


def test_clip_names_and_takeaways() -> None:
    ply = Path("/nowhere/garden_20261201-101742.ply")
    assert clip_path(ply, "dolly", ".mp4").name == "garden_20261201-101742_dolly.mp4"
    with pytest.raises(ValueError, match="move is one of orbit, dolly, wiggle"):
        clip_path(ply, "../x", ".mp4")
    with pytest.raises(ValueError):
        clip_path(ply, "orbit", ".exe")
    files = ["g_compare_internal.ply", "g_compare_internal.json", "g_compare_internal.spz",
             "g_compare_internal_orbit.mp4", "g_compare_internal_wiggle-3.webm",
             "g_compare_depth-pro.ply", "g_compare_depth-pro.sog", "g_compare.png",
             "g_compare_internal_depth.png", "g_compare_internal_orbit.exe",
             "g_compare_internal_orbit-x.mp4"]
    assert takeaways("g_compare_internal.ply", files) == [
        "g_compare_internal.spz", "g_compare_internal_orbit.mp4",
        "g_compare_internal_wiggle-3.webm"]

"""The viewer without a browser: PLY reading, sidecar tuning, results, notes, access rules,
the HTTP API with a stand-in scene, the Apply-to-swap watcher, and import isolation."""

from __future__ import annotations

import http.client
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon import access
from pipeline import DepthSettings, write_ply
from service import launch
from tests.conftest import wait_for, write_photo
from tests.support.viewer_requests import call, gaussians, launch_key, viewer_session, write_result
from viewer import notes, results, server, tuning
from viewer.index import ResultIndex
from viewer.server import ViewerApp
from viewer.splat import SplatError, check_splat, median_depth, thinned_ply, vertical_fov

ROOT = Path(__file__).resolve().parents[2]


# --- splat ---------------------------------------------------------------------------------

def _check(path: Path) -> Any:
    with open(path, "rb") as f:
        return check_splat(path, f)


def _vertices(data: bytes) -> Any:
    """A PLY's bytes as plyfile reads them (an independent reader)."""
    import io

    from plyfile import PlyData

    return PlyData.read(io.BytesIO(data))


def test_splat_check_reads_the_header_and_the_median_depth(tmp_path: Path) -> None:
    g = gaussians(101)
    path = write_ply(tmp_path / "a.ply", g, 50.0, (64, 48))
    with open(path, "rb") as f:
        splat = check_splat(path, f)
        assert splat.count == 101 and splat.header.endswith(b"end_header\n")
        depth = median_depth(splat, f)
    assert depth == pytest.approx(float(np.median(g.mean_vectors[0, :, 2].numpy())), rel=1e-6)


@pytest.mark.parametrize(("data", "words"), [
    (b"not a ply at all", "no end_header"),
    (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n", "binary"),
    (b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\n"
     b"end_header\n\0\0\0\0", "vertex columns are x"),
    (b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty uchar x\n"
     b"end_header\n\0", "is not float"),
    (b"ply\nformat binary_little_endian 1.0\nelement face 1\nend_header\n", "no 'element vertex"),
])
def test_splat_refuses_other_files_naming_them(tmp_path: Path, data: bytes, words: str) -> None:
    path = tmp_path / "odd.ply"
    path.write_bytes(data)
    with pytest.raises(SplatError, match=words) as caught:
        _check(path)
    assert str(path) in str(caught.value)


def test_truncated_splat_is_named(tmp_path: Path) -> None:
    path = write_ply(tmp_path / "t.ply", gaussians(), 50.0, (64, 48))
    data = path.read_bytes()
    header = data.index(b"end_header\n") + len(b"end_header\n")
    path.write_bytes(data[:header + 56 + 30])  # one row and a bit of the next
    with pytest.raises(SplatError, match="promises 6 Gaussians but the file holds 1"):
        _check(path)


def test_thinning_keeps_a_fixed_subset_grown_to_cover_the_area(tmp_path: Path) -> None:
    """40 -> 10 Gaussians: each kept one's area grows by sqrt(4) = 2, so each axis by
    4 ** 0.25 (its log scale by ln(4) / 4); everything else, camera elements included,
    is the file's own."""
    path = write_ply(tmp_path / "a.ply", gaussians(40), 50.0, (64, 48))
    with open(path, "rb") as f:
        splat = check_splat(path, f)
        data = thinned_ply(splat, f, 10)
        assert thinned_ply(splat, f, 10) == data  # a fixed subset
        assert len(_vertices(thinned_ply(splat, f, 100))["vertex"].data) == 40
        with pytest.raises(ValueError, match="positive"):
            thinned_ply(splat, f, 0)
    full, few = _vertices(path.read_bytes()), _vertices(data)
    rows, kept = full["vertex"].data, few["vertex"].data
    assert len(kept) == 10
    index = [int(np.flatnonzero(rows["x"] == x)[0]) for x in kept["x"]]
    assert index == sorted(index) and len(set(index)) == 10
    for name in ("y", "z", "f_dc_0", "opacity", "rot_0", "rot_3"):
        np.testing.assert_array_equal(kept[name], rows[name][index])
    for name in ("scale_0", "scale_1", "scale_2"):
        np.testing.assert_allclose(kept[name], rows[name][index] + math.log(4) / 4, rtol=1e-6)
    assert [e.name for e in few.elements] == [e.name for e in full.elements]
    for element in full.elements[1:]:
        assert few[element.name].data.tobytes() == element.data.tobytes()


def test_field_of_view_from_the_report() -> None:
    assert vertical_fov(24.0, 48) == pytest.approx(math.pi / 2)
    with pytest.raises(ValueError):
        vertical_fov(0.0, 48)


# --- tuning --------------------------------------------------------------------------------

def test_tuning_keeps_comments_and_other_keys(tmp_path: Path) -> None:
    photo = write_photo(tmp_path / "p.jpg")
    (tmp_path / "p.toml").write_text("# my notes\ndepth_scale = 1.0  # first try\n\n"
                                     "save_internal_depth = true\n", encoding="utf-8")
    applied = tuning.apply_tuning(photo, {"depth_scale": 1.5, "focal_mm": 35,
                                          "depth_source": "internal"}, DepthSettings(), tmp_path)
    path, settings = applied.path, applied.settings
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# my notes\ndepth_scale = 1.5  # first try\n\n"
                           "save_internal_depth = true\n")
    assert "focal_mm = 35.0" in text and 'depth_source = "internal"' in text
    assert settings.depth_scale == 1.5 and settings.save_internal_depth is True
    settings = tuning.apply_tuning(photo, {"focal_mm": None}, DepthSettings(), tmp_path).settings
    assert "focal_mm" not in path.read_text(encoding="utf-8") and settings.focal_mm is None


def test_tuning_creates_a_sidecar_in_the_photos_letter_case(tmp_path: Path) -> None:
    photo = write_photo(tmp_path / "IMG.jpg")
    (tmp_path / "IMG.TOML").write_text("depth_offset = 0.5\n", encoding="utf-8")
    applied = tuning.apply_tuning(photo, {"depth_scale": 2.0}, DepthSettings(), tmp_path)
    assert applied.path.name == "IMG.TOML" and applied.settings.depth_offset == 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["IMG.TOML", "IMG.jpg"]


@pytest.mark.parametrize(("changes", "words"), [
    ({"depth_scale": -1.0}, "depth_scale must be a finite number > 0"),
    ({"depth_scale": float("nan")}, "finite"),
    ({"depth_scale": "big"}, "must be a number"),
    ({"depth_source": "magic"}, "depth_source must be one of"),
    ({"back_surface_factor": 0.5}, "back_surface_factor"),
    ({"external_depth": "x.npy"}, "cannot tune external_depth"),
])
def test_bad_values_write_nothing(tmp_path: Path, changes: dict[str, Any], words: str) -> None:
    photo = write_photo(tmp_path / "p.jpg")
    sidecar = tmp_path / "p.toml"
    sidecar.write_text("depth_scale = 1.25\n", encoding="utf-8")
    with pytest.raises(tuning.TuningError, match=words):
        tuning.apply_tuning(photo, changes, DepthSettings(), tmp_path)
    assert sidecar.read_text(encoding="utf-8") == "depth_scale = 1.25\n"


def test_a_broken_sidecar_is_named_and_left_alone(tmp_path: Path) -> None:
    photo = write_photo(tmp_path / "p.jpg")
    (tmp_path / "p.toml").write_text("depth_scale = = 2\n", encoding="utf-8")
    with pytest.raises(tuning.TuningError, match=r"p\.toml: the sidecar is not valid TOML"):
        tuning.apply_tuning(photo, {"depth_scale": 2.0}, DepthSettings(), tmp_path)


def test_tuning_writes_only_what_changed_so_the_rest_follows_the_defaults(
        tmp_path: Path) -> None:
    photo = write_photo(tmp_path / "p.jpg")
    config = DepthSettings(depth_scale=2.0)
    shown = {c["key"]: c["value"] for c in tuning.controls(config)}  # what the page showed
    applied = tuning.apply_tuning(photo, {**shown, "depth_offset": 0.25}, config, tmp_path)
    assert applied.written == {"depth_offset": 0.25}
    assert (tmp_path / "p.toml").read_text(encoding="utf-8") == "depth_offset = 0.25\n"
    later = DepthSettings(depth_scale=3.0)  # the config's [defaults] changed since
    assert tuning.current_settings(photo, later, tmp_path).depth_scale == 3.0
    again = tuning.apply_tuning(photo, {"depth_offset": 0.25, "depth_scale": 3.0}, later,
                                tmp_path)
    assert again.written == {} and again.settings == later.replace(depth_offset=0.25)
    assert (tmp_path / "p.toml").read_text(encoding="utf-8") == "depth_offset = 0.25\n"
    assert tuning.apply_tuning(write_photo(tmp_path / "q.jpg"), shown, config,
                               tmp_path).written == {}
    assert not (tmp_path / "q.toml").exists(), "nothing changed: no sidecar made"


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links here")
def test_tuning_refuses_a_sidecar_linked_out_of_the_inputs(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    photo = write_photo(inputs / "p.jpg")
    secret = tmp_path / "secret.toml"
    secret.write_text("depth_scale = 2.0  # not the viewer's to read\n", encoding="utf-8")
    os.symlink(secret, inputs / "p.toml")
    with pytest.raises(tuning.TuningError, match=r"p\.toml: is a link to a file outside"):
        tuning.apply_tuning(photo, {"depth_offset": 1.0}, DepthSettings(), inputs)
    assert (inputs / "p.toml").is_symlink(), "the link was not replaced by a copy"
    assert tuning.current_settings(photo, DepthSettings(), inputs) == DepthSettings()


def test_tuning_reads_a_huge_sidecar_no_further_than_the_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import daemon.sidecar

    photo = write_photo(tmp_path / "p.jpg")
    with open(tmp_path / "p.toml", "wb") as f:
        f.truncate(10 * 1024 * 1024)  # 10 MB (of NULs)
    opened: list[Path] = []
    read: list[int] = []
    real_open = daemon.sidecar.open_regular_file

    class Counting:
        def __init__(self, f: Any) -> None:
            self.f = f

        def __enter__(self) -> Counting:
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()

        def read(self, size: int = -1) -> bytes:
            data = self.f.read(size)
            read.append(len(data))
            return data

    def spy(path: Path, within: Path | None = None) -> Counting:
        opened.append(Path(path))
        return Counting(real_open(path, within))

    monkeypatch.setattr(daemon.sidecar, "open_regular_file", spy)
    with pytest.raises(tuning.TuningError, match="larger than 64 KiB"):
        tuning.apply_tuning(photo, {"depth_offset": 1.0}, DepthSettings(), tmp_path)
    assert opened == [tmp_path / "p.toml"]
    assert sum(read) <= daemon.sidecar.MAX_SIDECAR_BYTES + 1


@pytest.mark.timeout(20)
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs in this file namespace")
def test_tuning_refuses_a_fifo_named_like_the_sidecar_without_blocking(tmp_path: Path) -> None:
    photo = write_photo(tmp_path / "p.jpg")
    os.mkfifo(tmp_path / "p.toml")
    with pytest.raises(tuning.TuningError, match="not a regular file"):
        tuning.apply_tuning(photo, {"depth_offset": 1.0}, DepthSettings(), tmp_path)
    assert not (tmp_path / "p.toml").is_file(), "the FIFO was not replaced"


def _options(current: DepthSettings, key: str) -> list[str]:
    (control,) = [c for c in tuning.controls(current) if c["key"] == key]
    return control["options"]


def test_npy_is_offered_only_with_a_depth_map(tmp_path: Path) -> None:
    assert "npy" not in _options(DepthSettings(), "depth_source")
    with_map = DepthSettings(depth_source="npy", external_depth=tmp_path / "d.npy")
    assert "npy" in _options(with_map, "depth_source")
    assert "depth-pro" in _options(with_map, "depth_source")


# --- results and notes ---------------------------------------------------------------------

def test_results_newest_first_with_failures_and_estimates(tmp_path: Path) -> None:
    outputs, photo = tmp_path / "out", tmp_path / "in" / "a.jpg"
    old = write_result(outputs, photo, "a_1", seconds=60.0)
    os.utime(old, (time.time() - 100, time.time() - 100))
    new = write_result(outputs, photo, "a_2", DepthSettings(depth_scale=2.0), seconds=180.0)
    (outputs / "stray.json").write_text("{}", encoding="utf-8")  # not ours: skipped
    (outputs / "sub%2Fb.jpg.error.txt").write_text("b.jpg: cannot decode\n", encoding="utf-8")
    found = results.list_results(outputs)
    assert [r.ply for r in found] == [new, old]
    assert found[0].preview == outputs / "a_2_depth.png"
    assert found[0].report.seconds == 180.0
    assert results.summary(found[0])["focal"]["origin"] == "exif"
    assert results.latest_for(outputs, photo, DepthSettings().as_dict()).ply == old
    assert results.find_result(outputs, "../a_2.ply") is None
    index = ResultIndex(outputs)
    index.refresh()
    [failure], _ = index.failures(10)
    assert failure.photo == "sub/b.jpg" and failure.text == "b.jpg: cannot decode"
    assert results.seconds_per_photo(found) == 120.0
    text = notes.estimate_note(found, {"queue_length": 3})
    assert text.startswith(notes.CPU_NOTE) and "about 2 min each" in text
    assert "the 3 queued should take about 6 min" in text
    assert [notes._minutes(s) for s in (0.4, 1.0, 89.0, 91.0)] == [
        "under a second", "about 1 s", "about 89 s", "about 2 min"]


@pytest.mark.parametrize(("status", "words"), [
    (None, "not running"),
    ({"state": "paused", "queue_length": 2}, "paused: nothing reruns until you resume"),
    ({"state": "working", "current_file": "/in/other.jpg", "stage": "sharp", "queue_length": 1},
     "busy with other.jpg (sharp); 1 queued (yours among them)"),
    ({"state": "working", "current_file": "/in/a.jpg", "stage": "sharp"}, "Rerunning a.jpg"),
    ({"state": "working", "current_file": "/in/b.jpg", "stage": "sharp",
      "workers": [{"device": "cuda:0", "current_file": "/in/b.jpg", "stage": "sharp"},
                  {"device": "cuda:1", "current_file": "/in/a.jpg", "stage": "depth"}]},
     "Rerunning a.jpg now (depth)"),
    ({"state": "working", "current_file": "/in/b.jpg", "stage": "sharp", "queue_length": 0,
      "workers": [{"device": "cuda:0", "current_file": "/in/b.jpg", "stage": "sharp"},
                  {"device": "cuda:1", "current_file": "/in/c.jpg", "stage": "depth"}]},
     "busy with b.jpg (sharp) on cuda:0 and c.jpg (depth) on cuda:1; 0 queued"),
    ({"state": "loading"}, "loading its models"),
    ({"state": "idle", "download_progress": 0.5}, "downloading models (50%)"),
])
def test_the_page_says_why_nothing_happens(status: dict[str, Any] | None, words: str) -> None:
    assert words in notes.daemon_note(status, Path("/in/a.jpg"))


# --- access rules --------------------------------------------------------------------------

def test_access_rules_shared_with_the_control_channel() -> None:
    ok = {"Host": "127.0.0.1:8000", "Authorization": "Bearer s3"}
    assert access.refusal(ok, 8000, "s3") is None
    assert access.refusal({**ok, "Origin": "http://127.0.0.1:8000"}, 8000, "s3")[0] == 403
    own = access.loopback_origins(8000)
    assert access.refusal({**ok, "Origin": "http://127.0.0.1:8000"}, 8000, "s3", own) is None
    assert access.refusal({**ok, "Origin": "http://evil.example"}, 8000, "s3", own)[0] == 403
    assert access.refusal({**ok, "Host": "evil.example:8000"}, 8000, "s3")[1] == \
        "wrong Host header"
    assert access.refusal({**ok, "Authorization": "Bearer no"}, 8000, "s3")[0] == 401
    cookie = {"Host": "localhost:8000", "Cookie": "a=1; c=s3"}
    assert access.refusal(cookie, 8000, "s3")[0] == 401  # a cookie never carries a secret
    assert access.bearer(ok) == "s3" and access.bearer(cookie) == ""
    assert access.foreign(cookie, 8000) is None


# --- the HTTP side ------------------------------------------------------------------------

@pytest.fixture
def app(viewer_app: ViewerApp) -> ViewerApp:
    return viewer_app


def test_only_the_owners_browser_gets_in(app: ViewerApp) -> None:
    nobody = {"Authorization": ""}
    assert call(app, "GET", "/api/gallery", headers=nobody)[0] == 401
    assert call(app, "GET", "/api/gallery",
                headers={"Authorization": f"Bearer {app.handoff_secret}"})[0] == 401
    status, page, response = call(app, "GET", "/view?ply=a_1.ply", headers=nobody)
    assert status == 200 and b"<title>sharp-watch viewer</title>" in page  # no user data
    assert "script-src 'self'" in response.getheader("Content-Security-Policy")
    assert response.getheader("Referrer-Policy") == "no-referrer"
    assert call(app, "GET", "/api/gallery", headers={"Host": "evil.example"})[0] == 403
    assert call(app, "GET", "/view", headers={"Host": "evil.example"})[0] == 403
    evil = {"Origin": "http://evil.example"}
    assert call(app, "POST", "/api/apply", {"ply": "a_1.ply", "settings": {}}, evil)[0] == 403
    assert call(app, "GET", "/api/gallery")[0] == 200
    for path in ("/static/../server.py", "/static/%2e%2e/server.py", "/static/gallery.html",
                 "/static/vendor/spark/LICENSE", "/static/nope.js"):
        assert call(app, "GET", path)[0] == 404, path
        assert call(app, "GET", path, headers=nobody)[0] == 401, path
    assert call(app, "GET", "/files/splat?ply=a_1.ply", headers=nobody)[0] == 401
    assert call(app, "POST", "/api/shown", None, {"Content-Length": "lots"})[0] == 400
    assert call(app, "POST", "/api/shown", None, {"Content-Length": str(10**6)})[0] == 413


def test_gallery_detail_and_files(app: ViewerApp) -> None:
    _, gallery, _ = call(app, "GET", "/api/gallery")
    assert [r["name"] for r in gallery["results"]] == ["a_1.ply"]
    assert gallery["results"][0]["tuned"] == {}
    assert "paused" in gallery["note"] and gallery["estimate"].startswith(notes.CPU_NOTE)
    _, detail, _ = call(app, "GET", "/api/result?ply=a_1.ply")
    assert detail["tunable"]
    assert {c["key"]: c["value"] for c in detail["controls"]} == {
        "depth_scale": 1.0, "depth_offset": 0.0, "focal_mm": None, "back_surface_factor": 1.0,
        "depth_source": "depth-pro"}
    status, photo, response = call(app, "GET", "/files/photo?ply=a_1.ply")
    assert status == 200 and response.getheader("Content-Type") == "image/jpeg"
    assert photo[:2] == b"\xff\xd8"
    assert call(app, "GET", "/files/preview?ply=a_1.ply")[1][:4] == b"\x89PNG"
    assert call(app, "GET", "/files/photo?ply=nope.ply")[0] == 404
    assert detail["camera"]["fov_deg"] == pytest.approx(math.degrees(vertical_fov(50.0, 48)))
    assert detail["camera"]["orbit_depth"] == pytest.approx(
        float(np.median(gaussians().mean_vectors[0, :, 2].numpy())), rel=1e-6)
    assert call(app, "POST", "/api/open-folder", {},
                {"Origin": f"http://127.0.0.1:{app.port}"})[0] == 200
    assert app.opened == [app.place.outputs]  # type: ignore[attr-defined]


def test_apply_writes_the_sidecar_and_times_the_page_drawing_the_new_result(
        app: ViewerApp) -> None:
    assert call(app, "POST", "/api/shown", {"ply": "a_1.ply", "count": 6})[0] == 200
    status, answer, _ = call(app, "POST", "/api/apply",
                             {"ply": "a_1.ply", "settings": {"depth_scale": 2.0}})
    assert status == 200 and answer["sidecar"] == "a.toml"
    assert (app.place.inputs / "a.toml").read_text(encoding="utf-8") == "depth_scale = 2.0\n"
    assert app.reruns == [app.place.inputs / "a.jpg"]  # type: ignore[attr-defined]
    state = call(app, "GET", "/api/state")[1]
    assert state["pending"]["result"] is None and "paused" in state["note"]
    assert state["shown"] == "a_1.ply" and state["shown_count"] == 6
    photo = app.place.inputs / "a.jpg"
    write_result(app.place.outputs, photo, "a_2", DepthSettings(depth_scale=3.0))  # not ours
    write_result(app.place.outputs, photo, "a_3", DepthSettings(depth_scale=2.0))
    assert wait_for(lambda: call(app, "GET", "/api/state")[1]["pending"]["result"], 10)
    state = call(app, "GET", "/api/state")[1]
    assert state["pending"]["result"] == "a_3.ply" and state["pending"]["seconds"] is None
    # Drawing another result does not count; the page drawing the new one does.
    call(app, "POST", "/api/shown", {"ply": "a_2.ply", "count": 6})
    assert call(app, "GET", "/api/state")[1]["pending"]["seconds"] is None
    call(app, "POST", "/api/shown", {"ply": "a_3.ply", "count": 6})
    state = call(app, "GET", "/api/state")[1]
    assert state["pending"]["seconds"] > 0 and state["shown"] == "a_3.ply"
    for body in ({"ply": "a_3.ply"}, {"ply": "a_3.ply", "count": -1},
                 {"ply": "a_3.ply", "count": True}, {"ply": 3, "count": 1}):
        assert call(app, "POST", "/api/shown", body)[0] == 400, body
    bad = call(app, "POST", "/api/apply", {"ply": "a_1.ply", "settings": {"depth_scale": 0}})
    assert bad[0] == 400 and "depth_scale must be" in bad[1]["error"]


def test_apply_writes_only_the_settings_the_user_changed(app: ViewerApp) -> None:
    """The old page sent every control's value; only a changed one reaches the sidecar,
    and one set back to the value shown is not written (nor rerun)."""
    sidecar = app.place.inputs / "a.toml"
    shown = {"depth_scale": 1.0, "depth_offset": 0.0, "focal_mm": None,
             "back_surface_factor": 1.0, "depth_source": "depth-pro"}
    status, answer, _ = call(app, "POST", "/api/apply",
                             {"ply": "a_1.ply", "settings": {**shown, "depth_offset": 0.5}})
    assert status == 200 and sidecar.read_text(encoding="utf-8") == "depth_offset = 0.5\n"
    assert answer["written"] == ["depth_offset"]
    assert app.reruns == [app.place.inputs / "a.jpg"]  # type: ignore[attr-defined]
    status, answer, _ = call(app, "POST", "/api/apply",
                             {"ply": "a_1.ply", "settings": {**shown, "depth_offset": 0.5}})
    assert status == 200 and answer["written"] == []
    assert sidecar.read_text(encoding="utf-8") == "depth_offset = 0.5\n"
    assert len(app.reruns) == 1  # type: ignore[attr-defined]


def test_the_page_gets_the_splat_whole_or_thinned(app: ViewerApp) -> None:
    ply = app.place.outputs / "a_1.ply"
    status, data, response = call(app, "GET", "/files/splat?ply=a_1.ply")
    assert status == 200 and data == ply.read_bytes()
    assert response.getheader("X-Gaussians") == response.getheader("X-Gaussians-Total") == "6"
    status, data, response = call(app, "GET", "/files/splat?ply=a_1.ply&budget=4")
    assert status == 200 and len(_vertices(data)["vertex"].data) == 4
    assert (response.getheader("X-Gaussians"), response.getheader("X-Gaussians-Total")) == (
        "4", "6")
    assert call(app, "GET", "/files/splat?ply=a_1.ply&budget=60")[1] == ply.read_bytes()
    for budget in ("0", "-3", "x", "1.5", "%C2%B2"):
        status, answer, _ = call(app, "GET", f"/files/splat?ply=a_1.ply&budget={budget}")
        assert status == 400 and "budget" in answer["error"], budget
    assert call(app, "GET", "/files/splat?ply=nope.ply")[0] == 404
    ply.write_bytes(b"garbage")
    status, answer, _ = call(app, "GET", "/files/splat?ply=a_1.ply")
    assert status == 422 and "a_1.ply" in answer["error"] and "not a PLY" in answer["error"]
    assert "not a PLY" in call(app, "GET", "/api/result?ply=a_1.ply")[1]["camera"]["error"]


@pytest.mark.parametrize(("suffix", "kind"), [(".js", "text/javascript"), (".css", "text/css")])
def test_scripts_are_served_as_scripts_whatever_the_registry_says(
        app: ViewerApp, monkeypatch: pytest.MonkeyPatch, suffix: str, kind: str) -> None:
    """Windows' `mimetypes` reads the registry, where `.js` is often `text/plain`; a module
    script of that type is refused by the browser, so the viewer must not ask it."""
    import mimetypes

    monkeypatch.setitem(mimetypes.types_map, suffix, "text/plain")
    name = {".js": "vendor/spark/spark.module.min.js", ".css": "app.css"}[suffix]
    status, _, response = call(app, "GET", f"/static/{name}")
    assert status == 200 and response.getheader("Content-Type").startswith(kind)


def test_a_held_poll_is_answered_the_moment_the_applied_result_appears(
        app: ViewerApp, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page's poll (`wait=1`) is held while an Apply waits and answered as soon as the
    result is found; the watcher is woken by the folder's change, not by its next look.
    Either one missing and the answer has no result (or none comes within the client's
    10 s)."""
    monkeypatch.setattr(server, "WATCH_SECONDS", 60.0)
    monkeypatch.setattr(server, "STATE_WAIT_SECONDS", 30.0)
    time.sleep(0.3)  # the watcher's look under way (0.1 s) ends; the next would be in 60 s
    # Without an Apply waiting, the poll is answered at once (else the client's 10 s end).
    assert "pending" not in call(app, "GET", "/api/state?wait=1")[1]
    call(app, "POST", "/api/apply", {"ply": "a_1.ply", "settings": {"depth_scale": 2.0}})
    photo = app.place.inputs / "a.jpg"
    threading.Timer(0.5, write_result, (app.place.outputs, photo, "a_2"),
                    {"settings": DepthSettings(depth_scale=2.0)}).start()
    assert call(app, "GET", "/api/state?wait=1")[1]["pending"]["result"] == "a_2.ply"


def test_a_failed_rerun_is_reported(app: ViewerApp) -> None:
    call(app, "POST", "/api/apply", {"ply": "a_1.ply", "settings": {"depth_offset": 1.0}})
    (app.place.outputs / "a.jpg.error.txt").write_text("a.jpg: out of memory\n",
                                                        encoding="utf-8")
    assert wait_for(lambda: (call(app, "GET", "/api/state")[1]["pending"] or {}).get("error"),
                    10)
    assert call(app, "GET", "/api/state")[1]["pending"]["error"] == "a.jpg: out of memory"


# --- process boundaries --------------------------------------------------------------------

def test_daemon_predict_and_cli_never_import_the_viewer(tmp_path: Path) -> None:
    photo = write_photo(tmp_path / "p.jpg")
    code = ("import sys, daemon, service.cli, service.predict, service.tray\n"
            "from daemon import Daemon\n"
            "from daemon import worker\n"
            "from tests.support.tiny_models import save_tiny_depth_pro\n"
            "service.cli.build_parser().parse_args(['view'])\n"
            f"model = save_tiny_depth_pro({str(tmp_path / 'model')!r})\n"
            f"code = service.cli.main(['predict', '-i', {str(photo)!r}, '-o', "
            f"{str(tmp_path / 'out')!r}, '--depth-model', str(model), '--sharp-factory', "
            "'tests.support.sharp_double:build', '--device', 'cpu'])\n"
            "assert code == 0, code\n"
            "assert 'viewer.server' not in sys.modules, 'the viewer was imported'\n"
            "assert 'tomlkit' not in sys.modules\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    assert list((tmp_path / "out").glob("p_*.ply")), "predict ran and wrote its result"


def test_the_tray_starts_the_viewer_console_less_on_windows() -> None:
    argv = launch.viewer_argv("view", Path("C:/u/config.toml"), None,
                              executable=r"C:\Python312\python.exe", platform="win32")
    assert argv == [r"C:\Python312\pythonw.exe", "-m", "service", "view", "--config",
                    str(Path("C:/u/config.toml"))]
    assert launch.viewer_argv("gallery", None, executable="/usr/bin/python3",
                              platform="linux") == ["/usr/bin/python3", "-m", "service",
                                                    "gallery"]


def test_the_tray_starts_no_viewer_when_the_extra_is_missing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[Any] = []
    monkeypatch.setattr("viewer.available", lambda: False)
    monkeypatch.setattr(launch.subprocess, "Popen", lambda *args, **kwargs: started.append(args))
    assert launch.launch("view", None) is False
    assert started == []


def test_the_command_finds_the_page_for_its_target(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from daemon import results
    from viewer.run import start_page

    real_read = results.read_report

    inputs, outputs = tmp_path / "in", tmp_path / "out"
    photo = write_photo(inputs / "a.jpg")
    assert start_page(outputs, None, gallery=False) == ("/", None)  # nothing yet: the gallery
    ply = write_result(outputs, photo, "a_1")
    assert start_page(outputs, None, gallery=True) == ("/", None)
    assert start_page(outputs, None, gallery=False) == ("/view", None)
    write_result(outputs, photo, "a_2")
    reads = []
    monkeypatch.setattr(results, "read_report",
                        lambda path, *rest: reads.append(path) or real_read(path, *rest))
    assert start_page(outputs, None, gallery=False) == ("/view", None)
    assert len(reads) == 1, "one report tells that there is a result"
    monkeypatch.undo()
    assert start_page(outputs, ply, gallery=False) == ("/view?ply=a_1.ply", None)
    assert start_page(outputs, Path("a_1.ply"), gallery=False) == ("/view?ply=a_1.ply", None)
    assert start_page(outputs, photo, gallery=False) == ("/view?ply=a_2.ply", None)  # its newest
    elsewhere = write_ply(tmp_path / "b c.ply", gaussians(), 50.0, (64, 48))
    assert start_page(outputs, elsewhere, gallery=False) == ("/view?ply=b%20c.ply", elsewhere)
    with pytest.raises(ValueError, match="no result for"):
        start_page(outputs, write_photo(inputs / "new.jpg"), gallery=False)
    with pytest.raises(ValueError, match="does not exist"):
        start_page(outputs, tmp_path / "missing.ply", gallery=False)


def _view(tmp_path: Path) -> int:
    """`sharp-watch view --no-browser` with a config naming folders under `tmp_path`."""
    from service import cli

    config = tmp_path / "config.toml"
    config.write_text(f'[folders]\ninputs = "{(tmp_path / "i").as_posix()}"\n'
                      f'outputs = "{(tmp_path / "o").as_posix()}"\n', encoding="utf-8")
    return cli.main(["view", "--config", str(config), "--no-browser"])


def test_view_without_the_extra_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str],
                                                        tmp_path: Path) -> None:
    monkeypatch.setattr("viewer.available", lambda: False)
    assert _view(tmp_path) == 1
    assert 'python -m pip install -e ".[viewer]"' in capsys.readouterr().err


def test_view_hands_the_viewer_the_services_folder_opener(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    """The viewer makes no OS calls of its own: `view` passes it `system.open_path`."""
    from service import system

    served: list[tuple[Any, ...]] = []
    monkeypatch.setattr("viewer.run.serve", lambda *args, **kwargs: served.append(args) or 0)
    assert _view(tmp_path) == 0
    assert [args[4] for args in served] == [system.open_path]


def test_serve_prints_the_address_and_stops_cleanly(tmp_path: Path) -> None:
    import threading
    from types import SimpleNamespace

    from viewer.run import serve

    inputs, outputs = tmp_path / "in", tmp_path / "out"
    write_result(outputs, write_photo(inputs / "a.jpg"), "a_1")
    config = SimpleNamespace(folders=SimpleNamespace(inputs=inputs, outputs=outputs),
                             defaults=DepthSettings(),
                             daemon=SimpleNamespace(state_dir=tmp_path / "state"))
    said: list[str] = []
    opened: list[Path] = []
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(config, None, False, said.append,
                                                  opened.append),
                              kwargs={"browser": False, "stop": stop})
    thread.start()
    try:
        assert wait_for(lambda: said, 30)
        port = int(said[0].split()[1].removeprefix("http://127.0.0.1:").split("/")[0])
        assert said[0].startswith(f"viewer: http://127.0.0.1:{port}/view (opened with ")
        page = Path(said[0].split("opened with ")[1].split(", which")[0])
        assert page.parent == tmp_path / "state" and launch_key(page)
        token = viewer_session(SimpleNamespace(port=port, launch=lambda: page))
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("POST", "/api/open-folder", headers={
            "Host": f"127.0.0.1:{port}", "Authorization": f"Bearer {token}"})
        assert connection.getresponse().status == 200
        assert opened == [outputs], "the caller's opener shows the outputs folder"
        connection.close()
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert not (tmp_path / "state" / "viewer.json").exists(), "its endpoint file is removed"


def test_a_compare_set_shows_its_contact_sheet_and_names_its_source(tmp_path: Path) -> None:
    outputs = tmp_path / "out"
    photo = write_photo(tmp_path / "in" / "a.jpg")
    sheet = outputs / "a_1_compare.png"
    for source in ("depth-pro", "internal"):
        name = f"a_1_compare_{source}"
        ply = write_result(outputs, photo, name)
        report_path = ply.with_suffix(".json")
        report = json.loads(report_path.read_text(encoding="utf-8"))
        report["files"] = [sheet.name, ply.name, report_path.name]
        report["compare"] = {"source": source, "sources": ["depth-pro", "internal"],
                             "contact_sheet": sheet.name}
        report_path.write_text(json.dumps(report), encoding="utf-8")
        (outputs / f"{name}_depth.png").unlink()
    found = {r.name: r for r in results.list_results(outputs)}
    assert set(found) == {"a_1_compare_depth-pro.ply", "a_1_compare_internal.ply"}
    assert all(r.preview is None for r in found.values()), "no sheet on disk yet"
    write_photo(sheet)
    for name, result in found.items():
        summary = results.summary(result)
        assert result.preview == sheet and summary["has_preview"]
        assert summary["compare"]["source"] in name
        assert summary["compare"]["contact_sheet"] == sheet.name
    plain = results.read_result(write_result(outputs, photo, "a_2"))
    assert plain is not None and results.summary(plain)["compare"] is None
    assert plain.preview == outputs / "a_2_depth.png"


def test_the_page_s_scripts_exist_and_ship_in_the_wheel() -> None:
    """Every import the viewer page maps resolves to a vendored file, and every file under
    `viewer/static` is matched by a package-data pattern (a file left out of the wheel
    would be a blank 3D view for a user who installed without `-e`)."""
    import fnmatch
    import re
    import tomllib

    static = ROOT / "viewer" / "static"
    page = (static / "view.html").read_text(encoding="utf-8")
    imports = json.loads(re.search(r'<script type="importmap">(.*?)</script>', page,
                                   re.S).group(1))["imports"]
    assert set(imports) == {"three", "three/addons/", "@sparkjsdev/spark"}
    for target in imports.values():
        assert (static / target.removeprefix("/static/")).exists(), target
    assert (static / "vendor/three/three.core.min.js").is_file()  # three.module's own import
    for addon in ("controls/OrbitControls.js", "postprocessing/Pass.js"):  # ours and Spark's
        assert (static / "vendor/three/addons" / addon).is_file()
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))[
        "tool"]["setuptools"]["package-data"]["viewer"]
    files = [p.relative_to(ROOT / "viewer").as_posix() for p in static.rglob("*") if p.is_file()]
    missed = [f for f in files if not any(fnmatch.fnmatch(f, pattern) and
                                          f.count("/") == pattern.count("/")
                                          for pattern in patterns)]
    assert files and not missed, missed


def test_a_failing_route_is_answered_500_and_logged_once(
        app: ViewerApp, monkeypatch: pytest.MonkeyPatch) -> None:
    from loguru import logger

    lines: list[str] = []
    sink = logger.add(lines.append, level="WARNING", format="{message}")
    monkeypatch.setattr(app, "state", lambda *_: 1 / 0)
    try:
        status, answer, _ = call(app, "GET", "/api/state")
    finally:
        logger.remove(sink)
    assert status == 500 and answer == {"error": "internal error (ZeroDivisionError)"}
    assert len(lines) == 1 and "GET '/api/state' failed" in lines[0]
    assert "ZeroDivisionError" in lines[0]
    assert call(app, "GET", "/api/result?ply=a_1.ply")[0] == 200, "it goes on answering"

"""What the viewer opens and writes, against hostile files in the outputs and inputs folders:
every file route opens with the daemon's confinement rules (only inside its folder, never
a pipe or device, size-capped), Apply writes a sidecar only beside a real photo inside the
inputs folder and keeps its permission bits, special files and malformed reports cost one
entry (never a hung thread or the whole gallery), and thumbnails are decoded at reduced
size within one memory budget."""

from __future__ import annotations

import io
import json
import os
import stat
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

import pipeline.atomic
from pipeline import DepthSettings
from pipeline.atomic import atomic_write
from tests.conftest import wait_for, write_photo
from tests.support.viewer_requests import call, write_result
from viewer import decoding
from viewer.decoding import PixelBudget
from viewer.server import MAX_PREVIEW_BYTES, Pending, ViewerApp
from viewer.thumbnails import ThumbnailCache

POSIX = sys.platform != "win32"
needs_links = pytest.mark.skipif(not hasattr(os, "symlink") or not POSIX,
                                 reason="symbolic links as an ordinary user")
needs_fifos = pytest.mark.skipif(not hasattr(os, "mkfifo"),
                                 reason="no FIFOs in this file namespace")


def _report(outputs: Path, name: str) -> dict[str, Any]:
    return json.loads((outputs / f"{name}.json").read_text(encoding="utf-8"))


def _rewrite(outputs: Path, name: str, **changes: Any) -> None:
    report = {**_report(outputs, name), **changes}
    (outputs / f"{name}.json").write_text(json.dumps(report), encoding="utf-8")


# --- file routes -----------------------------------------------------------------------------

@needs_links
def test_previews_outside_the_outputs_folder_are_refused(viewer_app: ViewerApp,
                                                         tmp_path: Path) -> None:
    """A preview linked out, a report naming `../outside/...` or an absolute path, and a
    contact sheet elsewhere: each a 422 naming the file, none of the outside bytes sent
    (the old route read any of them whole)."""
    outputs, photo = viewer_app.place.outputs, viewer_app.place.inputs / "a.jpg"
    outside = tmp_path / "outside"
    secret = write_photo(outside / "x_depth.png", seed=7)
    write_result(outputs, photo, "b_1")
    (outputs / "b_1_depth.png").unlink()
    os.symlink(secret, outputs / "b_1_depth.png")
    write_result(outputs, photo, "c_1")
    _rewrite(outputs, "c_1", files=["c_1.ply", "../outside/x_depth.png", "c_1.json"])
    write_result(outputs, photo, "d_1")
    _rewrite(outputs, "d_1", files=["d_1.ply", str(secret), "d_1.json"])
    write_result(outputs, photo, "e_1")
    _rewrite(outputs, "e_1", files=["e_1.ply", "e_1.json", "../outside/x_depth.png"],
             compare={"source": "depth-pro", "sources": ["depth-pro"],
                      "contact_sheet": "../outside/x_depth.png"})
    for name in ("b_1", "c_1", "d_1", "e_1"):
        status, answer, _ = call(viewer_app, "GET", f"/files/preview?ply={name}.ply")
        assert status == 422, name
        assert "outside" in answer["error"] and "refused" in answer["error"], name
    assert call(viewer_app, "GET", "/files/preview?ply=a_1.ply")[0] == 200


@pytest.mark.timeout(60)
def test_a_huge_preview_is_refused_unread(viewer_app: ViewerApp) -> None:
    outputs = viewer_app.place.outputs
    with open(outputs / "a_1_depth.png", "r+b") as f:
        f.truncate(MAX_PREVIEW_BYTES + 1)  # sparse: nothing is written
    status, answer, _ = call(viewer_app, "GET", "/files/preview?ply=a_1.ply")
    assert status == 422 and "too large" in answer["error"]


@needs_fifos
@pytest.mark.timeout(60)
def test_special_files_in_outputs_cost_one_entry_never_a_hung_thread(
        viewer_app: ViewerApp, tmp_path: Path) -> None:
    """FIFOs named like a report, an error note and a preview, a report linked to
    /dev/zero, a huge report and a folder named like one: the gallery still answers 200
    with every good result, and the Apply watcher still finishes its look."""
    outputs, photo = viewer_app.place.outputs, viewer_app.place.inputs / "a.jpg"
    for name in ("f_1", "g_1", "h_1", "i_1"):
        write_result(outputs, photo, name)
        (outputs / f"{name}.json").unlink()
    os.mkfifo(outputs / "f_1.json")
    os.symlink("/dev/zero", outputs / "g_1.json")
    with open(outputs / "h_1.json", "wb") as f:
        f.truncate(64 * 2**20)
    (outputs / "i_1.json").mkdir()
    os.mkfifo(outputs / "x.jpg.error.txt")
    (outputs / "a_1_depth.png").unlink()
    os.mkfifo(outputs / "a_1_depth.png")
    (outputs / "y.jpg.error.txt").write_text("y.jpg: cannot decode\n", encoding="utf-8")

    def gallery() -> dict[str, Any]:
        status, answer, _ = call(viewer_app, "GET", "/api/gallery")
        assert status == 200
        return answer

    # The index learns of new files from the folder's change events: wait for y's note.
    assert wait_for(lambda: gallery()["failures"], 10)
    gallery_now = gallery()
    assert [r["name"] for r in gallery_now["results"]] == ["a_1.ply"]
    assert [f["photo"] for f in gallery_now["failures"]] == ["y.jpg"]
    assert call(viewer_app, "GET", "/files/preview?ply=a_1.ply")[0] == 404
    for name in ("f_1", "g_1", "h_1", "i_1"):
        assert call(viewer_app, "GET", f"/api/result?ply={name}.ply")[0] == 404, name

    looked = threading.Thread(target=viewer_app._check,
                              args=(Pending(photo, DepthSettings().as_dict(), time.time()),),
                              daemon=True)
    looked.start()
    looked.join(20)
    assert not looked.is_alive(), "the Apply watcher hung on a special file"


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.sampled_from([10**400, -10**400])
    | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)
_FIELDS = ["schema_version", "photo", "photo_sha256", "job", "created", "settings",
           "image_size", "focal", "depth", "models", "gaussians", "timings_s", "warnings",
           "files", "file_bytes", "compare", "focal.f_px", "focal.origin", "depth.range_m",
           "depth.source", "depth.from_cache", "models.device", "timings_s.sharp",
           "settings.depth_scale", "compare.contact_sheet", "compare.sources"]


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(_FIELDS), value=_JSON)
@example(field="timings_s.sharp", value="slow")
@example(field="timings_s.sharp", value=10**400)
@example(field="depth", value="x")
@example(field="focal.f_px", value=float("nan"))
@example(field="gaussians", value=10**400)
@example(field="compare", value={"source": "x", "sources": ["x"], "contact_sheet": 3})
def test_a_report_with_wrong_types_costs_only_itself(viewer_app: ViewerApp, field: str,
                                                     value: Any) -> None:
    outputs, photo = viewer_app.place.outputs, viewer_app.place.inputs / "a.jpg"
    if not (outputs / "z_1.ply").exists():
        write_result(outputs, photo, "z_1")
        os.utime(outputs / "z_1.ply", (time.time() + 60, time.time() + 60))  # the newest
    report = _report(outputs, "a_1") | {"files": ["z_1.ply", "z_1_depth.png", "z_1.json"]}
    key, _, inner = field.partition(".")
    if inner:
        report[key] = {**(report.get(key) or {"source": "s", "sources": []}), inner: value}
    else:
        report[key] = value
    (outputs / "z_1.json").write_text(json.dumps(report), encoding="utf-8")

    status, gallery, _ = call(viewer_app, "GET", "/api/gallery")
    assert status == 200, gallery
    assert "a_1.ply" in [r["name"] for r in gallery["results"]]
    for path in ("/api/result?ply=z_1.ply", "/files/photo?ply=z_1.ply",
                 "/files/preview?ply=z_1.ply", "/files/splat?ply=z_1.ply&budget=3"):
        assert call(viewer_app, "GET", path)[0] < 500, path
    assert call(viewer_app, "POST", "/api/apply",
                {"ply": "z_1.ply", "settings": {"depth_offset": 0.5}})[0] < 500


# --- Apply -----------------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_apply_tunes_only_a_real_photo_inside_the_inputs_folder(viewer_app: ViewerApp,
                                                               tmp_path: Path) -> None:
    """Reports naming a photo via `..`, a non-photo, a missing photo, a folder linked out
    and a FIFO: Apply refuses each (400) and writes no sidecar anywhere; such a result is
    not offered for tuning and has no photo to show (the old check compared text only)."""
    inputs = viewer_app.place.inputs
    outside = tmp_path / "outside"
    write_photo(outside / "p.jpg")
    (inputs / "notes.txt").write_text("my notes\n", encoding="utf-8")
    cases = {"dotdot_1": inputs / ".." / "outside" / "p.jpg", "text_1": inputs / "notes.txt",
             "gone_1": inputs / "missing.jpg", "dir_1": inputs}
    if POSIX:
        os.symlink(outside, inputs / "linked")
        os.mkfifo(inputs / "pipe.jpg")
        cases |= {"linked_1": inputs / "linked" / "p.jpg", "pipe_1": inputs / "pipe.jpg"}
    for name, photo in cases.items():
        write_result(viewer_app.place.outputs, photo, name)
        status, answer, _ = call(viewer_app, "POST", "/api/apply",
                                 {"ply": f"{name}.ply", "settings": {"depth_scale": 3.25}})
        assert status == 400, (name, answer)
        assert call(viewer_app, "GET", f"/api/result?ply={name}.ply")[1]["tunable"] is False
        assert call(viewer_app, "GET", f"/files/photo?ply={name}.ply")[0] == 404, name
    tomls = sorted(p.name for p in tmp_path.rglob("*.toml"))
    assert tomls == [], tomls
    assert viewer_app.reruns == []  # type: ignore[attr-defined]
    ok = call(viewer_app, "POST", "/api/apply", {"ply": "a_1.ply",
                                                 "settings": {"depth_scale": 3.25}})
    assert ok[0] == 200 and (inputs / "a.toml").is_file()


@pytest.mark.skipif(not POSIX, reason="POSIX permission bits")
@pytest.mark.parametrize("mode", [0o600, 0o664])
def test_apply_keeps_the_sidecars_permission_bits(viewer_app: ViewerApp, mode: int) -> None:
    sidecar = viewer_app.place.inputs / "a.toml"
    sidecar.write_text("# mine\n", encoding="utf-8")
    os.chmod(sidecar, mode)
    old_umask = os.umask(0o022)
    try:
        status, _, _ = call(viewer_app, "POST", "/api/apply",
                            {"ply": "a_1.ply", "settings": {"depth_scale": 2.0}})
    finally:
        os.umask(old_umask)
    assert status == 200
    assert sidecar.read_text(encoding="utf-8") == "# mine\ndepth_scale = 2.0\n"
    assert stat.S_IMODE(sidecar.stat().st_mode) == mode


def test_keeping_a_mode_is_left_to_the_folder_on_windows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`chmod` on Windows only toggles read-only; the replaced file's access comes from
    the folder's access list, so nothing is copied there."""
    target = tmp_path / "a.toml"
    target.write_text("old\n", encoding="utf-8")
    changed: list[Any] = []
    monkeypatch.setattr(pipeline.atomic, "WINDOWS", True)
    monkeypatch.setattr(pipeline.atomic.os, "chmod", lambda *args: changed.append(args))
    atomic_write(target, b"new\n", keep_mode=True)
    assert changed == [] and target.read_bytes() == b"new\n"


# --- thumbnails ------------------------------------------------------------------------------

@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The size of every image Pillow decodes from now on."""
    sizes: list[tuple[int, int]] = []
    real = ImageFile.ImageFile.load

    def load(self: ImageFile.ImageFile) -> Any:
        if self.tile:  # not decoded yet
            sizes.append(self.size)
        return real(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return sizes


def _big_jpeg(path: Path, size: tuple[int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.linear_gradient("L").resize(size).convert("RGB").save(path, quality=80)
    return path


def test_a_24_megapixel_photo_is_decoded_at_an_eighth_of_its_pixels(
        viewer_app: ViewerApp, decoded: list[tuple[int, int]]) -> None:
    """libjpeg scales while decoding: 6000x4000 is decoded at 1500x1000 for a 640 px
    thumbnail (the old code decoded all 24 MP, 72 MB, for each)."""
    photo = _big_jpeg(viewer_app.place.inputs / "big.jpg", (6000, 4000))
    write_result(viewer_app.place.outputs, photo, "big_1")
    status, data, response = call(viewer_app, "GET", "/files/photo?ply=big_1.ply")
    assert status == 200 and response.getheader("Content-Type") == "image/jpeg"
    assert Image.open(io.BytesIO(data)).size == (640, 427)
    assert decoded and max(w * h for w, h in decoded) <= 1500 * 1000, decoded


def _png_declaring(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares `width` x `height` (its data is a few bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))
    return path


def test_a_photo_declaring_too_many_pixels_is_not_decoded(
        viewer_app: ViewerApp, decoded: list[tuple[int, int]]) -> None:
    photo = _png_declaring(viewer_app.place.inputs / "huge.png", 12_000, 12_000)
    write_result(viewer_app.place.outputs, photo, "huge_1")
    assert call(viewer_app, "GET", "/files/photo?ply=huge_1.ply")[0] == 404
    assert decoded == [], "a 144 MP header was decoded"


def test_concurrent_thumbnails_share_one_pixel_budget(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Six PNGs (no reduced decoding for them) asked for at once: never more pixels in
    decoding at once than the budget, and every thumbnail made."""
    one = 1200 * 900
    budget = PixelBudget(2 * one)
    monkeypatch.setattr(decoding, "BUDGET", budget)
    photos = [write_photo(tmp_path / f"p{n}.png", 1200, 900, seed=n) for n in range(6)]
    made: list[bytes] = []
    cache = ThumbnailCache()
    threads = [threading.Thread(target=lambda p=p: made.append(cache.get(p, tmp_path, 64).data))
               for p in photos]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(made) == 6 and all(m[:2] == b"\xff\xd8" for m in made)
    assert one <= budget.peak <= 2 * one and budget.used == 0


def test_the_budget_lets_one_large_decode_through_alone() -> None:
    budget = PixelBudget(100)
    budget.take(60)
    taken = threading.Event()
    waiter = threading.Thread(target=lambda: (budget.take(500), taken.set()))
    waiter.start()
    assert not taken.wait(0.2), "over the budget while another decode runs"
    budget.give(60)
    assert wait_for(taken.is_set, 10)
    assert budget.used == 500 and budget.peak == 500
    budget.give(500)
    waiter.join(10)

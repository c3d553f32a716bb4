"""The outputs index the gallery, `/api/result` and the Apply watcher share: it reads a report
once and then only what changed, refuses hostile files one entry at a time without
hanging, and pages every result exactly once; the gallery API answers "unchanged" to a page
that is up to date; thumbnails are small, cached, and revalidated by ETag."""

from __future__ import annotations

import http.client
import io
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import viewer.index
import viewer.thumbnails
from daemon.results import Compare, Report, read_report
from pipeline import DepthSettings
from tests.conftest import small_report, wait_for, write_photo, write_small_result
from tests.support.viewer_requests import call, viewer_session
from viewer.index import ResultIndex
from viewer.server import Place, ViewerApp

T0 = 1_700_000_000.0
NEEDS_FIFO = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on Windows")


@pytest.fixture
def report(tmp_path: Path) -> Report:
    return small_report([], tmp_path / "in" / "a.jpg")


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every report the index reads, in order."""
    seen: list[Path] = []

    def counting(path: Path, within: Path | None = None) -> Report | None:
        seen.append(path)
        return read_report(path, within)

    monkeypatch.setattr(viewer.index, "read_report", counting)
    return seen


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[ResultIndex]:
    index = ResultIndex(tmp_path / "out")
    index.start()
    yield index
    index.close()


def _names(index: ResultIndex, limit: int = 1000) -> list[str]:
    return [r.name for r in index.page(limit).results]


def _settles(index: ResultIndex, check: Callable[[], bool]) -> bool:
    """Events arrive on watchdog's thread: refresh until `check` holds."""
    return wait_for(lambda: index.refresh() is not None and check(), 10)


def test_the_index_reads_a_report_once_and_then_only_what_changed(
        tmp_path: Path, report: Report, reads: list[Path], watched: ResultIndex) -> None:
    out = tmp_path / "out"
    for i in range(3):
        write_small_result(out, f"a_{i}", report, mtime=T0 + i)
    index = watched
    version = index.refresh()
    assert _names(index) == ["a_2.ply", "a_1.ply", "a_0.ply"]
    assert len(reads) == 3

    # Nothing changed: the same version, and no report is read again.
    time.sleep(0.2)  # any late event of the writes above has arrived
    version = index.refresh()
    reads.clear()
    assert index.refresh() == version
    assert _names(index) == ["a_2.ply", "a_1.ply", "a_0.ply"] and reads == []
    assert index.find("a_1.ply") is not None and reads == []

    write_small_result(out, "a_3", report, mtime=T0 + 3)  # a new result: only it is read
    assert _settles(index, lambda: _names(index)[0] == "a_3.ply")
    assert reads == [out / "a_3.json"] and index.version > version

    reads.clear()
    changed = json.loads((out / "a_1.json").read_text(encoding="utf-8"))
    changed["warnings"] = ["edited by hand"]
    (out / "a_1.json").write_text(json.dumps(changed), encoding="utf-8")  # in place
    assert _settles(index, lambda: index.find("a_1.ply").report.warnings == ("edited by hand",))
    assert reads == [out / "a_1.json"]

    (out / "a_0.ply").unlink()
    assert _settles(index, lambda: "a_0.ply" not in _names(index))
    assert index.find("a_0.ply") is None

    (out / "b.jpg.error.txt").write_text("b.jpg: cannot decode\n", encoding="utf-8")
    assert _settles(index, lambda: index.failures(10)[1] == 1)
    [failure], _ = index.failures(10)
    assert failure.photo == "b.jpg" and failure.text == "b.jpg: cannot decode"
    assert index.failure_for("b.jpg", time.time() - 60) == failure
    assert index.failure_for("b.jpg", time.time() + 60) is None  # older than the Apply


@pytest.mark.skipif(sys.platform != "linux", reason="inotify's event mask: Linux only")
def test_a_file_written_in_many_pieces_is_a_few_events_not_one_per_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon writes a PLY in dozens of `write()`s; the viewer's watch takes events for
    it being made, written whole and renamed, not for each write (each took the GIL from
    the writer), and still wakes the Apply watcher once it is there."""
    events: list[str] = []
    real = viewer.index._Events.dispatch
    monkeypatch.setattr(viewer.index._Events, "dispatch",
                        lambda self, event: events.append(event.event_type) or real(self, event))
    woken: list[bool] = []
    out = tmp_path / "out"
    out.mkdir()
    index = ResultIndex(out, on_change=lambda: woken.append(True))
    index.start()
    try:
        temp = out / ".a_1.ply.1-2.sharp-watch.tmp"
        with open(temp, "wb") as f:
            for _ in range(200):
                f.write(b"x" * 4096)
                f.flush()
        temp.rename(out / "a_1.ply")
        assert wait_for(lambda: "moved" in events and woken, 10)
    finally:
        index.close()
    assert "modified" not in events and len(events) <= 4, events


def test_an_outputs_folder_moved_away_and_made_again_is_watched_again(
        tmp_path: Path, report: Report, watched: ResultIndex) -> None:
    """The watch follows the folder, not the name: when the outputs folder is moved away
    (inotify, asked only for what the index needs, does not say so) and a new one is made
    in its place, the new folder's results are found without waiting for the listing."""
    out = tmp_path / "out"
    write_small_result(out, "a_0", report, mtime=T0)
    assert _settles(watched, lambda: _names(watched) == ["a_0.ply"])
    out.rename(tmp_path / "old")
    out.mkdir()
    write_small_result(out, "b_0", report, mtime=T0 + 1)
    assert _settles(watched, lambda: _names(watched) == ["b_0.ply"])
    write_small_result(out, "b_1", report, mtime=T0 + 2)  # and its watch reports changes
    assert _settles(watched, lambda: _names(watched) == ["b_1.ply", "b_0.ply"])


def test_without_a_watch_the_folders_listing_finds_changes(
        tmp_path: Path, report: Report, reads: list[Path]) -> None:
    out = tmp_path / "out"
    index = ResultIndex(out)  # not started: no watchdog
    assert index.refresh() == 0 and _names(index) == []  # no folder yet: nothing, no error
    write_small_result(out, "a_1", report, mtime=T0)
    assert _settles(index, lambda: _names(index) == ["a_1.ply"])
    version = index.refresh()
    reads.clear()
    assert index.refresh() == version and _names(index) == ["a_1.ply"] and reads == []
    (out / "a_1.json").unlink()
    assert _settles(index, lambda: _names(index) == [])
    assert index.version > version


def test_a_report_edited_in_place_is_found_by_the_periodic_listing(
        tmp_path: Path, report: Report, reads: list[Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    write_small_result(out, "a_1", report)
    write_small_result(out, "a_2", report)
    monkeypatch.setattr(viewer.index, "RESCAN_SHARE", float("inf"))
    index = ResultIndex(out, rescan_seconds=0.0)  # every refresh lists the whole folder
    version = index.refresh()  # the first listing does not look at reports...
    assert index.find("a_1.ply").report.gaussians == 64
    assert index.refresh() == version, "...and looking at them later is no change"
    assert reads == [out / "a_1.json"]
    data = json.loads((out / "a_1.json").read_text(encoding="utf-8"))
    data["gaussians"] = 650  # a size of its own: mtimes may tick coarsely
    (out / "a_1.json").write_text(json.dumps(data), encoding="utf-8")
    assert index.refresh() > version
    assert index.find("a_1.ply").report.gaussians == 650


@NEEDS_FIFO
def test_hostile_files_are_one_refused_entry_each(tmp_path: Path, report: Report) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    write_small_result(out, "good", report, mtime=T0)
    for i, name in enumerate(("fifo", "link", "huge", "garbage", "not-ours", "folder")):
        write_small_result(out, name, report, mtime=T0 + 1 + i)
        (out / f"{name}.json").unlink()
    os.mkfifo(out / "fifo.json")
    write_small_result(elsewhere, "link", report)
    (out / "link.json").symlink_to(elsewhere / "link.json")  # a link out of the folder
    (out / "huge.json").write_bytes(b" " * (2 * 1024 * 1024))
    (out / "garbage.json").write_bytes(b"\xff{{{")
    (out / "not-ours.json").write_text('{"photo": 3}', encoding="utf-8")
    (out / "folder.json").mkdir()
    os.mkfifo(out / "pipe.ply")  # a PLY that is no file
    (out / "pipe.json").write_bytes((out / "good.json").read_bytes())
    os.mkfifo(out / "x.jpg.error.txt")
    index = ResultIndex(out)
    index.start()
    try:
        index.refresh()
        assert _names(index) == ["good.ply"]
        assert index.refused == {"fifo.ply", "link.ply", "huge.ply", "garbage.ply",
                                 "not-ours.ply", "folder.ply"}
        assert index.failures(10) == ([], 0)  # not a file: never opened as a note
    finally:
        index.close()


def test_paging_returns_every_result_once_in_order_and_keeps_a_compare_set_together(
        tmp_path: Path, report: Report) -> None:
    out = tmp_path / "out"
    sources = ("depth-pro", "internal", "depth-anything")
    expected = []
    for i in range(23):
        if i == 10:  # a set at a page boundary (pages of 4: results 8 to 11)
            for j, source in enumerate(sources):
                name = f"c_compare_{source}"
                compare = Compare(source, sources, "c_compare.png")
                write_small_result(out, name, report._replace(compare=compare),
                                   preview=False, mtime=T0 + i + j / 10)
                expected.append(f"{name}.ply")
            continue
        write_small_result(out, f"r_{i:02d}", report, mtime=T0 + i)
        expected.append(f"r_{i:02d}.ply")
    write_photo(out / "c_compare.png")
    write_small_result(out, "same_time_a", report, mtime=T0 + 30)
    write_small_result(out, "same_time_b", report, mtime=T0 + 30)
    expected += ["same_time_a.ply", "same_time_b.ply"]  # equal times: by name
    index = ResultIndex(out)
    index.refresh()
    pages, cursor = [], None
    while True:
        page = index.page(4, cursor)
        pages.append([r.name for r in page.results])
        if not page.more:
            break
        cursor = page.last
    assert [name for p in pages for name in p] == expected[::-1]
    set_pages = [p for p in pages if any("compare" in name for name in p)]
    assert len(set_pages) == 1 and len(set_pages[0]) > 4, "a compare set is never split"
    assert all(len(p) == 4 for p in pages[:-1] if p not in set_pages)
    compare = index.find("c_compare_internal.ply")
    assert index.preview(compare) == out / "c_compare.png"
    # A page showing results down to a cursor gets all of them again in one answer.
    head = index.page(4)
    deep = index.page(4, head.last)
    again = index.page(4, through=deep.last)
    assert again.results == head.results + deep.results and again.more
    for bad in ("nope", "12:", ":a.ply", "-1:a.ply"):
        with pytest.raises(ValueError, match="not a gallery cursor"):
            index.page(4, bad)


def test_the_watcher_finds_the_applied_result_among_many_reading_each_report_once(
        tmp_path: Path, report: Report, reads: list[Path]) -> None:
    out, photo = tmp_path / "out", tmp_path / "in" / "a.jpg"
    for i in range(30):
        write_small_result(out, f"o_{i}", report._replace(photo=tmp_path / f"{i}.jpg"),
                           preview=False, mtime=T0 + i)
    index = ResultIndex(out)
    index.refresh()
    tuned = {**report.settings, "depth_scale": 2.0}
    assert index.latest_for(photo, tuned) is None
    assert len(reads) == 30
    write_small_result(out, "a_2", report._replace(settings=tuned), mtime=T0 + 40)
    index.refresh()
    assert index.latest_for(photo, tuned).name == "a_2.ply"
    assert len(reads) == 31


# --- the HTTP side ------------------------------------------------------------------------

@pytest.fixture
def app(tmp_path: Path, report: Report) -> Iterator[ViewerApp]:
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    write_photo(inputs / "a.jpg", width=1200, height=900)
    for i in range(5):
        write_small_result(outputs, f"a_{i}", report, mtime=T0 + i)
    viewer = ViewerApp(Place(inputs, outputs, DepthSettings()), lambda: None, lambda _: None,
                       launch_dir=tmp_path / "state")
    viewer.start()
    viewer.token = viewer_session(viewer)  # type: ignore[attr-defined]
    yield viewer
    viewer.close()


def get(app: ViewerApp, path: str, headers: dict[str, str] | None = None
        ) -> tuple[int, Any, http.client.HTTPResponse]:
    return call(app, "GET", path, headers=headers)


def test_a_poll_of_an_up_to_date_page_gets_only_the_status(
        app: ViewerApp, report: Report, reads: list[Path]) -> None:
    status, first, _ = get(app, "/api/gallery?limit=2")
    assert status == 200 and [r["name"] for r in first["results"]] == ["a_4.ply", "a_3.ply"]
    assert first["more"] and first["failures_total"] == 0
    status, rest, _ = get(app, f"/api/gallery?limit=10&after={first['last']}")
    assert [r["name"] for r in rest["results"]] == ["a_2.ply", "a_1.ply", "a_0.ply"]
    assert not rest["more"]
    reads.clear()
    status, poll, _ = get(app, f"/api/gallery?limit=5&since={first['version']}")
    assert status == 200 and poll["unchanged"] and "results" not in poll
    assert "not running" in poll["note"] and reads == []
    write_small_result(app.place.outputs, "a_5", report, mtime=T0 + 5)
    assert wait_for(lambda: not get(app, f"/api/gallery?since={first['version']}")[1]
                    .get("unchanged"), 10)
    _, poll, _ = get(app, f"/api/gallery?limit=1&since={first['version']}"
                          f"&through={first['last']}")  # what a page showing 2 asks
    assert [r["name"] for r in poll["results"]] == ["a_5.ply", "a_4.ply", "a_3.ply"]
    assert poll["version"] > first["version"] and poll["more"]
    assert reads == [app.place.outputs / "a_5.json"]
    for bad in ("limit=0", "limit=-3", "limit=x", "after=nonsense", "through=1"):
        assert get(app, f"/api/gallery?{bad}")[0] == 400, bad


def test_thumbnails_are_small_kept_and_revalidated(
        app: ViewerApp, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[int] = []
    decode = viewer.thumbnails.decode_small

    def counting(photo: Any, name: Path, max_side: int) -> Image.Image:
        decoded.append(max_side)
        return decode(photo, name, max_side)

    monkeypatch.setattr(viewer.thumbnails, "decode_small", counting)
    status, data, response = get(app, "/files/photo?ply=a_1.ply&size=256")
    assert status == 200 and response.getheader("Content-Type") == "image/jpeg"
    assert Image.open(io.BytesIO(data)).size == (256, 192)
    assert response.getheader("Cache-Control") == "private, max-age=3600"
    etag = response.getheader("ETag")
    # Another result of the same photo: the same thumbnail, not decoded again.
    assert get(app, "/files/photo?ply=a_2.ply&size=256")[1] == data and decoded == [256]
    status, body, _ = get(app, "/files/photo?ply=a_1.ply&size=256", {"If-None-Match": etag})
    assert status == 304 and body == b"" and decoded == [256]
    assert Image.open(io.BytesIO(get(app, "/files/photo?ply=a_1.ply")[1])).size == (640, 480)
    status, preview, _ = get(app, "/files/preview?ply=a_1.ply&size=256")
    assert status == 200 and Image.open(io.BytesIO(preview)).size == (64, 48)  # never larger
    assert get(app, "/files/preview?ply=a_1.ply")[1][:4] == b"\x89PNG"  # as written
    for bad in ("size=100", "size=big", "size=-256"):
        assert get(app, f"/files/photo?ply=a_1.ply&{bad}")[0] == 400, bad
    assert get(app, "/files/photo?ply=nope.ply&size=256")[0] == 404


def test_a_big_photo_is_decoded_at_reduced_size(tmp_path: Path) -> None:
    photo = tmp_path / "big.jpg"
    Image.new("RGB", (4000, 3000), (200, 100, 50)).save(photo, quality=90)
    with Image.open(photo) as probe:
        probe.draft("RGB", (256, 256))
        assert probe.size == (500, 375), "JPEG's DCT scaling decodes at 1/8 of the size"
    with open(photo, "rb") as f:
        thumbnail = viewer.thumbnails.decode_small(f, photo, 256)
    assert thumbnail.size == (256, 192) and thumbnail.mode == "RGB"


def test_the_thumbnail_cache_keeps_to_its_budget(tmp_path: Path) -> None:
    cache = viewer.thumbnails.ThumbnailCache(max_bytes=1)
    photos = [write_photo(tmp_path / f"{i}.jpg", seed=i) for i in range(3)]
    for photo in photos:
        cache.get(photo, tmp_path, 256)
    assert len(cache._items) == 1 and cache._bytes == len(next(iter(cache._items.values())).data)

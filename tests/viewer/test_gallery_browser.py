"""The gallery page in headless Chromium with more results than a page holds: the first
cards appear, more load as the list scrolls (a compare set stays one group), every result
shows once in order, failures and the queue show, and a new result appears on top."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import viewer.server
from daemon.results import Compare
from pipeline import DepthSettings
from tests.conftest import small_report, wait_for, write_photo, write_small_result
from tests.support.viewer_browser import browser, skip_without_chromium
from viewer.server import Place, ViewerApp

skip_without_chromium()

RESULTS = 120
PAGE = 10
T0 = 1_700_000_000.0
SOURCES = ("depth-pro", "internal", "depth-anything")


@pytest.fixture
def gallery(tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ViewerApp, list[str]]]:
    monkeypatch.setattr(viewer.server, "PAGE_SIZE", PAGE)
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    report = small_report([], write_photo(inputs / "a.jpg"))
    names = []
    count = RESULTS - len(SOURCES) + 1
    for i in range(count):
        if i == count - 1 - (2 * PAGE - 2):  # a compare set across the second page's end
            for j, source in enumerate(SOURCES):
                compare = Compare(source, SOURCES, "c_compare.png")
                write_small_result(outputs, f"c_compare_{source}",
                                   report._replace(compare=compare), preview=False,
                                   mtime=T0 + i + j / 10)
                names.append(f"c_compare_{source}.ply")
            continue
        names.append(write_small_result(outputs, f"r_{i:03d}", report, mtime=T0 + i).name)
    write_photo(outputs / "c_compare.png")
    for photo in ("x.jpg", "y.jpg"):
        (outputs / f"{photo}.error.txt").write_text(f"{photo}: cannot decode\n", encoding="utf-8")
    status = {"state": "working", "current_file": "/in/z.jpg", "stage": "sharp",
              "queue_length": 4}
    app = ViewerApp(Place(inputs, outputs, DepthSettings()), lambda: status, lambda _: None)
    app.start()
    yield app, names[::-1]
    app.close()


def _shown(page: Any) -> list[str]:
    return page.locator(".card").evaluate_all("cards => cards.map(c => c.dataset.name)")


def test_the_gallery_pages_through_many_results_as_it_scrolls(
        gallery: tuple[ViewerApp, list[str]]) -> None:
    app, expected = gallery
    assert len(expected) == RESULTS
    with browser() as chrome:
        page = chrome.new_page(viewport={"width": 1100, "height": 700})
        page.goto(app.launch("/").as_uri())
        page.wait_for_selector(".card")
        first = _shown(page)
        assert first == expected[:len(first)] and len(first) < RESULTS / 2, \
            "the first screen holds a few pages, not every result"
        img = page.locator(".card img").first
        # Fetched with the tab's token once near the screen, shown from a blob: URL.
        assert "size=256" in img.get_attribute("data-src")
        assert wait_for(lambda: (img.get_attribute("src") or "").startswith("blob:"), 20)
        assert page.locator(".card img[src]").count() < RESULTS, "every picture fetched at once"
        assert "busy with z.jpg (sharp); 4 queued" in page.inner_text("#daemon")
        assert page.locator("#failures .failure").count() == 2

        def scrolled_to_the_end() -> bool:
            page.mouse.wheel(0, 5000)
            return len(_shown(page)) == RESULTS and page.locator("#more").is_hidden()

        assert wait_for(scrolled_to_the_end, 60)
        assert _shown(page) == expected, "every result once, newest first"
        group = page.locator(".compare-set")
        assert group.count() == 1 and group.locator(".card").count() == len(SOURCES)

        report = small_report([], app.place.inputs / "a.jpg")
        write_small_result(app.place.outputs, "new", report, mtime=T0 + 1000)
        assert wait_for(lambda: _shown(page)[:1] == ["new.ply"], 20)
        assert _shown(page) == ["new.ply", *expected], "the cards loaded so far stay"
        os.unlink(app.place.outputs / "x.jpg.error.txt")
        assert wait_for(lambda: page.locator("#failures .failure").count() == 1, 20)

"""The share page opened from disk in real browsers: headless Chromium (software WebGL) and,
where installed, Firefox ESR. It draws offline, asks the network for nothing, shows the
viewer's own first frame of the same result (thinned the same way, from the same camera),
orbits and zooms by mouse and touch, and comes back with "Reset view"."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bench.scenes import sharp_like
from daemon.outputs import OutputFolder
from daemon.results import Models, Origin, build_report, result_names
from pipeline import DepthSettings, Prediction
from pipeline.browser import SOFTWARE_BUDGET
from tests.conftest import small_prediction, wait_for
from tests.support.firefox import firefox, firefox_missing
from tests.support.viewer_browser import (
    BACKGROUND,
    browser,
    drawn_fraction,
    region,
    skip_without_chromium,
)

pytest.importorskip("tomlkit", reason="the viewer extra (tomlkit) is not installed")
from viewer.server import Place, ViewerApp

skip_without_chromium()

PHOTO = 'garden <b>& "co".jpg'
SIDE = 128
"""Two layers of 128 x 128: 32,768 Gaussians, more than a software renderer is given."""
SETTLE_S = 2.0
"""A page redraws for 1.5 s after a change (scene.js), while Spark's sort catches up."""
COMPARED = (0.02, 0.3, 0.98, 0.98)
"""The part of the canvas compared: below the share page's title and notes and the
viewer's Reset button."""
SAME_FRAME = 4.0
"""Largest mean difference (of 255, per channel) between two frames of one view: the
share page draws the SOG, the viewer the PLY (positions within a millimetre, colours
and sizes to their codebooks)."""


@dataclass(frozen=True)
class Shared:
    ply: Path
    page: Path
    inputs: Path
    outputs: Path


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Shared:
    """A result the daemon's writer made with `formats = ["ply", "html"]`."""
    root = tmp_path_factory.mktemp("share")
    inputs, outputs = root / "inputs", root / "outputs"
    inputs.mkdir()
    outputs.mkdir()
    gaussians, f_px, size, _ = sharp_like(None, side=SIDE)
    prediction = Prediction(**{**small_prediction().__dict__, "gaussians": gaussians,
                               "f_px": f_px, "image_size": size})
    settings = DepthSettings(formats=("ply", "html"))
    names = result_names(outputs, "garden", preview=False, internal_depth=False,
                         formats=settings.formats)
    report = build_report(Origin(inputs / PHOTO, "0" * 64, "1" * 64, settings), prediction,
                          models=Models(device="cpu"), timings={}, from_cache=False,
                          files=names.all())
    OutputFolder(outputs).write_result(names, prediction, report)
    return Shared(names.ply, names.exports["html"], inputs, outputs)


@pytest.fixture
def chrome() -> Iterator[Any]:
    """Headless Chromium, software WebGL (one Playwright at a time: not shared)."""
    with browser() as opened:
        yield opened


def _pixels(png: bytes) -> np.ndarray:
    return region(png, COMPARED).astype(np.float64)


def _difference(a: bytes, b: bytes) -> float:
    first, second = _pixels(a), _pixels(b)
    assert first.shape == second.shape, "the frames must be the same size"
    return float(np.abs(first - second).mean())


def _settled(locator: Any) -> bytes:
    time.sleep(SETTLE_S)
    png: bytes = locator.screenshot()
    return png


def _drag(page: Any, dx: float, dy: float) -> None:
    box = page.locator("#scene canvas").bounding_box()
    x, y = box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.6
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx, y + dy, steps=6)
    page.mouse.up()


def _touch(page: Any, paths: list[list[tuple[float, float]]]) -> None:
    """Fingers moving along `paths` (one list of points per finger, all as long)."""
    cdp = page.context.new_cdp_session(page)
    steps = len(paths[0])
    for i in range(steps):
        kind = "touchStart" if i == 0 else "touchMove"
        points = [{"x": path[i][0], "y": path[i][1], "id": n} for n, path in enumerate(paths)]
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def _viewer_frames(shared: Shared, chrome: Any) -> tuple[bytes, bytes, dict[str, float]]:
    """The viewer's first frame of the result, one after an orbit, and its canvas's box."""
    app = ViewerApp(Place(shared.inputs, shared.outputs, DepthSettings()), lambda: None,
                    lambda _: None)
    app.start()
    try:
        # Small enough to keep SwiftShader's frames short (this test is CI's longest), wide
        # enough that the share page's title and notes stay above the compared part.
        page = chrome.new_page(viewport={"width": 920, "height": 560})
        page.goto(app.launch(f"/view?ply={shared.ply.name}").as_uri())
        assert wait_for(lambda: app.shown == shared.ply.name, 60)
        assert app.shown_count == SOFTWARE_BUDGET
        canvas = page.locator("#scene canvas")
        first = _settled(canvas)
        _drag(page, 90, -30)
        orbited = _settled(canvas)
        box = canvas.bounding_box()
        page.close()
    finally:
        app.close()
    return first, orbited, box


def test_the_page_opened_from_disk_shows_the_viewers_first_frame_and_reaches_nothing(
        shared: Shared, chrome: Any) -> None:
    viewer_first, viewer_orbited, box = _viewer_frames(shared, chrome)
    context = chrome.new_context(viewport={"width": round(box["width"]),
                                           "height": round(box["height"])}, has_touch=True)
    page = context.new_page()
    requests: list[str] = []
    problems: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda message: problems.append(message.text)
            if message.type == "error" or "Content Security Policy" in message.text else None)
    page.goto(shared.page.as_uri())
    page.wait_for_selector("body[data-shown]", timeout=60_000)
    canvas = page.locator("#scene canvas")
    first = _settled(canvas)

    assert page.get_attribute("body", "data-shown") == str(SOFTWARE_BUDGET), "thinned as there"
    assert page.inner_text("h1") == PHOTO and page.title() == f"{PHOTO} - 3D photo"
    assert canvas.bounding_box()["width"] == box["width"]
    assert drawn_fraction(region(first, COMPARED), BACKGROUND) > 0.3, "the canvas is blank"
    same = _difference(first, viewer_first)
    apart = _difference(viewer_orbited, viewer_first)
    assert same <= SAME_FRAME, f"the share page's first frame differs from the viewer's: {same}"
    assert apart > 3 * SAME_FRAME, f"another view must differ for the check to mean much: {apart}"
    assert [url for url in requests if not url.startswith(("blob:", "data:"))] == [
        shared.page.as_uri()], "only the page itself may be read"
    assert any(url.startswith("blob:") for url in requests)  # the modules and Spark's worker
    assert problems == []

    _drag(page, -80, 40)  # orbit by mouse...
    assert _difference(_settled(canvas), first) > 3 * SAME_FRAME
    page.click("#reset-view")  # ...and back
    assert _difference(_settled(canvas), first) <= SAME_FRAME / 4

    box = canvas.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.6
    _touch(page, [[(x + 12 * i, y) for i in range(8)]])  # one finger orbits
    assert _difference(_settled(canvas), first) > 3 * SAME_FRAME
    page.click("#reset-view")
    _touch(page, [[(x - 20 - 15 * i, y) for i in range(8)],
                  [(x + 20 + 15 * i, y) for i in range(8)]])  # two fingers apart zoom in
    assert _difference(_settled(canvas), first) > 3 * SAME_FRAME
    page.click("#reset-view")
    assert _difference(_settled(canvas), first) <= SAME_FRAME / 4

    page.click("#show-all")  # every Gaussian, on request
    page.wait_for_selector(f"body[data-shown='{2 * SIDE * SIDE}']", timeout=60_000)
    assert page.is_hidden("#thinned")
    assert problems == []
    context.close()


def test_without_webgl_the_page_says_so(shared: Shared) -> None:
    with browser("--disable-3d-apis") as chrome:
        page = chrome.new_page()
        page.goto(shared.page.as_uri())
        page.wait_for_selector("#note:has-text('cannot draw WebGL')", timeout=30_000)
        assert page.inner_text("h1") == PHOTO


def test_a_browser_too_old_for_the_page_is_told(shared: Shared, chrome: Any) -> None:
    page = chrome.new_page()
    page.add_init_script("delete window.DecompressionStream;")  # as before 2023
    page.goto(shared.page.as_uri())
    page.wait_for_selector("#note:has-text('This browser is too old')", timeout=30_000)
    assert "DecompressionStream" in page.inner_text("#note")


def test_firefox_draws_the_page_from_disk(shared: Shared) -> None:
    missing = firefox_missing()
    if missing:
        pytest.skip(missing)
    with firefox() as page:
        page.call("WebDriver:Navigate", {"url": shared.page.as_uri()})
        deadline = time.monotonic() + 60
        state: list[Any] = []
        while time.monotonic() < deadline:
            state = page.script("return [document.body.dataset.shown, "
                                "document.getElementById('note').textContent, "
                                "document.querySelector('h1').textContent]")
            if state[0] or "annot" in state[1]:
                break
            time.sleep(0.5)
        assert state[1:] == ["", PHOTO], state
        assert state[0] == str(SOFTWARE_BUDGET)  # Mesa's llvmpipe is a software renderer
        time.sleep(SETTLE_S)
        shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB"))
        assert drawn_fraction(shot[shot.shape[0] // 3:], BACKGROUND) > 0.3

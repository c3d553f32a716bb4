"""The viewer in a real browser (headless Chromium, software WebGL) against a running daemon
with tiny models: opened from a launch page, the page signs in without any cookie, the
scene is drawn under the pages' Content-Security-Policy, a slider plus Apply writes the
sidecar, the new result replaces the view, and the gallery lists both results."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline import DepthSettings
from tests.conftest import wait_for
from tests.support.viewer_browser import (
    BACKGROUND,
    SCENE_BOX,
    browser,
    drawn_fraction,
    region,
    skip_without_chromium,
)

pytest.importorskip("tomlkit", reason="the viewer extra (tomlkit) is not installed")
from viewer.server import SOFTWARE_BUDGET, Place, ViewerApp

skip_without_chromium()

SIDECAR = "# my garden: tuned by hand\nsave_internal_depth = true  # keep SHARP's own depth\n"


@pytest.fixture
def daemon_and_viewer(make_daemon_config: Callable[..., Any], running_daemon: Any,
                      make_photo: Callable[..., Path]) -> Iterator[tuple[Any, ViewerApp]]:
    config = make_daemon_config(defaults=DepthSettings())
    config.inputs.mkdir(parents=True)
    (config.inputs / "garden.toml").write_text(SIDECAR, encoding="utf-8")
    make_photo(config.inputs / "garden.jpg", width=96, height=64)
    daemon = running_daemon(config)
    assert wait_for(lambda: list(config.outputs.glob("garden_*.ply")), 60)
    opened: list[Path] = []
    app = ViewerApp(Place(config.inputs, config.outputs, config.defaults),
                    lambda: daemon.status().as_dict(), opened.append)
    app.start()
    yield config, app
    app.close()


def _scene_drawn(page: Any, timeout: float = 45.0) -> float:
    """Wait until the 3D view's corner is drawn; returns the drawn share of its pixels."""
    deadline = time.monotonic() + timeout
    fraction = 0.0
    while time.monotonic() < deadline:
        fraction = drawn_fraction(region(page.locator("#scene").screenshot(), SCENE_BOX),
                                  BACKGROUND)
        if fraction > 0.05:
            return fraction
        time.sleep(0.3)
    return fraction


def _camera(page: Any) -> np.ndarray:
    """The page's camera position (three.js's, in the page's scene)."""
    return np.asarray(page.evaluate("window.sharpWatchView.camera.position.toArray()"))


def _orbit(page: Any) -> np.ndarray:
    """Drag in the 3D view; returns the camera position it moved to."""
    box = page.locator("#scene").bounding_box()
    x, y = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.7
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 80, y - 20, steps=5)
    page.mouse.up()
    return _camera(page)


def _until(page: Any, expression: str, timeout: float = 30.0) -> None:
    """Wait until `expression` is true in `page`. Playwright's own `wait_for_function`
    polls with eval, which the pages' Content-Security-Policy refuses (as it should)."""
    assert wait_for(lambda: page.evaluate(expression), timeout), expression


def _refusals(page: Any) -> list[str]:
    """Every console message of `page` (from now on) that reports something the
    Content-Security-Policy refused."""
    seen: list[str] = []
    page.on("console", lambda message: seen.append(message.text)
            if "Content Security Policy" in message.text else None)
    return seen


def test_view_apply_and_gallery_in_chromium(daemon_and_viewer: tuple[Any, ViewerApp]) -> None:
    config, app = daemon_and_viewer
    first = next(config.outputs.glob("garden_*.ply"))
    with browser() as chrome:
        page = chrome.new_page(viewport={"width": 1100, "height": 700})
        refused = _refusals(page)
        launch = app.launch(f"/view?ply={first.name}")
        page.goto(launch.as_uri())
        page.wait_for_selector("#facts tr")
        assert page.url == f"http://127.0.0.1:{app.port}/view?ply={first.name}", \
            "the key left the address (and the history) before the page went on"
        assert not launch.exists(), "the launch page is deleted once its key is spent"
        assert page.context.cookies() == [], "no cookie carries the session"
        assert page.evaluate("sessionStorage.getItem(TOKEN_KEY)"), "the tab's token"
        _until(page, "document.getElementById('photo').naturalWidth > 0")
        assert page.evaluate("document.getElementById('photo').src").startswith("blob:")
        assert wait_for(lambda: app.shown == first.name, 30)
        report = json.loads(first.with_suffix(".json").read_text())
        assert app.shown_count == report["gaussians"], "every Gaussian of a small scene drawn"
        assert page.evaluate("window.sharpWatchView.budget") == SOFTWARE_BUDGET, \
            "the page saw software WebGL and asks for a thinned scene"
        assert _scene_drawn(page) > 0.05, "the 3D view stayed blank"
        np.testing.assert_allclose(_camera(page), [0, 0, 0], atol=1e-9,
                                   err_msg="the view starts at the photo's own viewpoint")
        fov = page.evaluate("window.sharpWatchView.camera.fov")
        assert fov == pytest.approx(np.degrees(2 * np.arctan(
            report["image_size"][1] / (2 * report["focal"]["f_px"]))), rel=1e-6)

        before = _orbit(page)
        assert np.linalg.norm(before) > 1e-3, "the drag moved the camera off the photo's viewpoint"

        for value in ("0.5", "0"):  # moved, then back to the value shown: not a change
            page.locator("#depth_offset").evaluate(
                f"e => {{ e.value = '{value}'; e.dispatchEvent(new Event('input')); }}")
        page.locator("#depth_scale").evaluate(
            "e => { e.value = '1.5'; e.dispatchEvent(new Event('input')); }")
        page.select_option("#depth_source", "depth-pro")  # the source it already uses
        page.click("#apply")
        sidecar = config.inputs / "garden.toml"
        assert wait_for(lambda: "depth_scale = 1.5" in sidecar.read_text(encoding="utf-8"), 10)
        # The user's comments and keys stay as written; of the controls, only the one the
        # user changed is written: the rest keep following the config's [defaults].
        assert sidecar.read_text(encoding="utf-8") == SIDECAR + "depth_scale = 1.5\n"

        _until(page, f"!location.search.includes({json.dumps(first.name)})", 60)
        page.wait_for_selector("#timing:has-text('New view')", timeout=10_000)
        second = page.evaluate("new URLSearchParams(location.search).get('ply')")
        assert second != first.name
        report = json.loads((config.outputs / second).with_suffix(".json").read_text())
        assert report["settings"]["depth_scale"] == 1.5
        assert report["depth"]["from_cache"] is True  # a retune runs SHARP only
        assert app.shown == second
        assert page.evaluate("window.sharpWatchView.shown.ply") == second
        assert _scene_drawn(page) > 0.05
        np.testing.assert_allclose(_camera(page), before, atol=1e-9,
                                   err_msg="swapping the result must keep the user's camera")
        page.click("#reset-view")
        np.testing.assert_allclose(_camera(page), [0, 0, 0], atol=1e-9)

        page.goto(f"http://127.0.0.1:{app.port}/")  # the same tab keeps its token
        page.wait_for_selector(".card")
        names = page.locator(".card").evaluate_all("cards => cards.map(c => c.dataset.name)")
        assert names == [second, first.name]  # newest first
        assert "depth_scale 1.5" in page.inner_text(f".card[data-name='{second}']")
        assert "Recent photos took " in page.inner_text("#estimate")
        assert "CPU" in page.inner_text("#estimate")
        _until(page, "[...document.querySelectorAll('.card img')]"
               ".every(i => i.naturalWidth > 0 && i.src.startsWith('blob:'))")
        assert refused == [], refused

        again = chrome.new_page()  # the spent launch page, or the address alone: no way in
        again.goto(launch.as_uri() if launch.exists() else f"http://127.0.0.1:{app.port}/open")
        again.wait_for_selector("#status:has-text('Cannot sign in')")
        again.goto(f"http://127.0.0.1:{app.port}/")
        again.wait_for_selector("#signed-out")
        assert again.locator(".card").count() == 0


def test_without_webgl_the_page_says_so_and_tuning_still_works(
        daemon_and_viewer: tuple[Any, ViewerApp]) -> None:
    config, app = daemon_and_viewer
    first = next(config.outputs.glob("garden_*.ply"))
    with browser("--disable-3d-apis") as chrome:  # WebGL turned off, as by a policy
        page = chrome.new_page(viewport={"width": 1100, "height": 700})
        page.goto(app.launch(f"/view?ply={first.name}").as_uri())
        page.wait_for_selector("#scene-note:has-text('cannot draw WebGL')", timeout=20_000)
        assert page.evaluate("window.sharpWatchView") is None
        assert "garden.jpg" in page.inner_text("#facts")
        page.locator("#depth_offset").evaluate(
            "e => { e.value = '0.25'; e.dispatchEvent(new Event('input')); }")
        page.click("#apply")
        # the new result's facts replace the old
        _until(page, f"!location.search.includes({json.dumps(first.name)})", 60)
        second = page.evaluate("new URLSearchParams(location.search).get('ply')")
        report = json.loads((config.outputs / second).with_suffix(".json").read_text())
        assert report["settings"]["depth_offset"] == 0.25
        assert app.shown is None  # nothing was drawn, and nothing claims it was

"""The viewer in a real browser (headless Chromium, software WebGL) against a running daemon
with tiny models: the scene is drawn, a slider plus Apply writes the sidecar, the new
result replaces the view, and the gallery lists both results."""

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
from tests.viewer_browser import SCENE_BOX, browser, chromium_path, drawn_fraction, region

pytest.importorskip("viser", reason="the viewer extra (viser) is not installed")
pytest.importorskip("playwright", reason="playwright is not installed (test extra)")
if chromium_path() is None:
    pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)",
                allow_module_level=True)

from viewer.scene import BACKGROUND, SplatScene
from viewer.server import SOFTWARE_BUDGET, Place, ViewerApp

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
                    lambda: daemon.status().as_dict(), SplatScene, opened.append)
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


def _camera(app: ViewerApp) -> np.ndarray:
    """The camera position the (one) browser client reports to viser."""
    assert isinstance(app.scene, SplatScene)
    clients = list(app.scene.server.get_clients().values())
    assert len(clients) == 1
    return np.asarray(clients[0].camera.position, dtype=float)


def _orbit(page: Any, app: ViewerApp) -> np.ndarray:
    """Drag in the 3D view; returns the camera position once viser has heard of it."""
    box = page.locator("#scene").bounding_box()
    x, y = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.7
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 80, y - 20, steps=5)
    page.mouse.up()
    assert wait_for(lambda: np.linalg.norm(_camera(app)) > 1e-3, 20)
    time.sleep(0.5)  # let the last camera update arrive
    return _camera(app)


def test_view_apply_and_gallery_in_chromium(daemon_and_viewer: tuple[Any, ViewerApp]) -> None:
    config, app = daemon_and_viewer
    first = next(config.outputs.glob("garden_*.ply"))
    with browser() as chrome:
        page = chrome.new_page(viewport={"width": 1100, "height": 700})
        page.goto(app.url(f"/view?ply={first.name}"))
        assert "key=" not in page.url  # the key became a cookie and left the address
        page.wait_for_selector("#facts tr")
        assert wait_for(lambda: app.shown == first.name, 30)
        assert app.budget == SOFTWARE_BUDGET, "the page saw software WebGL and asked for less"
        assert _scene_drawn(page) > 0.05, "the 3D view stayed blank"

        before = _orbit(page, app)
        assert np.linalg.norm(before) > 1e-3, "the drag moved the camera off the photo's viewpoint"

        page.locator("#depth_scale").evaluate(
            "e => { e.value = '1.5'; e.dispatchEvent(new Event('input')); }")
        page.select_option("#depth_source", "depth-pro")
        page.click("#apply")
        sidecar = config.inputs / "garden.toml"
        assert wait_for(lambda: "depth_scale = 1.5" in sidecar.read_text(encoding="utf-8"), 10)
        text = sidecar.read_text(encoding="utf-8")
        assert text.startswith(SIDECAR), "the user's comments and keys must stay as written"
        assert 'depth_source = "depth-pro"' in text

        page.wait_for_function(f"!location.search.includes({json.dumps(first.name)})",
                               timeout=60_000)
        page.wait_for_selector("#timing:has-text('New view')", timeout=10_000)
        second = page.evaluate("new URLSearchParams(location.search).get('ply')")
        assert second != first.name
        report = json.loads((config.outputs / second).with_suffix(".json").read_text())
        assert report["settings"]["depth_scale"] == 1.5
        assert report["depth"]["from_cache"] is True  # a retune runs SHARP only
        assert app.shown == second
        assert _scene_drawn(page) > 0.05
        np.testing.assert_allclose(_camera(app), before, atol=1e-3,
                                   err_msg="swapping the result must keep the user's camera")

        page.goto(app.url("/"))
        page.wait_for_selector(".card")
        names = page.locator(".card").evaluate_all("cards => cards.map(c => c.dataset.name)")
        assert names == [second, first.name]  # newest first
        assert "depth_scale 1.5" in page.inner_text(f".card[data-name='{second}']")
        assert "Recent photos took " in page.inner_text("#estimate")
        assert "CPU" in page.inner_text("#estimate")

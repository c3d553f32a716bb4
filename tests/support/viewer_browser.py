"""Headless Chromium for the viewer's tests and bench: start it, and tell a drawn scene
from a blank canvas.

Debian's `chromium` (installed by `.ci/run`), driven by Playwright with
`executable_path` (never `playwright install`). WebGL runs on SwiftShader (software), so
scenes in tests stay small.
"""

from __future__ import annotations

import base64
import io
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
SOFTWARE_WEBGL = ["--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
GPU_WEBGL = ["--ignore-gpu-blocklist", "--enable-gpu-rasterization"]
"""For `bench/viewer_latency.py --gpu`: headless Chromium on the machine's GPU, if it
takes it (the bench prints the WebGL renderer it got)."""


def chromium_path() -> str | None:
    """The Chromium binary, or None where it is not installed."""
    return CHROMIUM if shutil.which(CHROMIUM) else shutil.which("chromium")


def skip_without_chromium() -> None:
    """Skip the calling test (or, at import, its module) where Playwright or Chromium is
    missing; `.ci/run` installs both."""
    import pytest

    pytest.importorskip("playwright", reason="playwright is not installed (test extra)")
    if chromium_path() is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)",
                    allow_module_level=True)


@contextmanager
def browser(*extra_flags: str, gpu: bool = False) -> Iterator[Any]:
    """A Playwright Chromium browser (headless; software WebGL unless `gpu`; plus
    `extra_flags`)."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    assert path is not None, "chromium is not installed"
    with sync_playwright() as playwright:
        webgl = GPU_WEBGL if gpu else SOFTWARE_WEBGL
        chrome = playwright.chromium.launch(executable_path=path,
                                            args=[*FLAGS, *webgl, *extra_flags])
        try:
            yield chrome
        finally:
            chrome.close()


def region(png: bytes, box: tuple[float, float, float, float]) -> np.ndarray:
    """The part of a screenshot inside `box` (fractions: left, top, right, bottom)."""
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    h, w = image.shape[:2]
    left, top, right, bottom = box
    return image[int(top * h):int(bottom * h), int(left * w):int(right * w)]


MIN_COLOURS = 32
"""A drawn splat has many colours; a blank canvas (ours, or the white one a page shows
before the scene's background arrives) has a handful."""


def drawn_fraction(pixels: np.ndarray, background: tuple[int, int, int]) -> float:
    """The share of pixels that differ from the empty scene's colour by more than a
    little: 0 for a blank canvas of any single colour, large where a scene is drawn."""
    flat = pixels.reshape(-1, 3).astype(np.int16)
    if len(np.unique(flat, axis=0)) < MIN_COLOURS:
        return 0.0
    return float((np.abs(flat - np.array(background)).max(axis=1) > 24).mean())


SCENE_BOX = (0.02, 0.45, 0.45, 0.98)
"""Bottom left of the 3D view (a screenshot of `#scene`), clear of its Reset button."""
BACKGROUND = (24, 26, 31)
"""The empty scene's colour (`view.js`), so a blank view is recognisable."""


class Screencast:
    """Every frame the page's compositor produces, with its wall-clock time, recorded
    over the DevTools protocol: when the splat first showed, without the extra frames
    (and waits) that taking screenshots would cost a software-rendered page."""

    def __init__(self, page: Any) -> None:
        self.frames: list[tuple[float, bytes]] = []
        self._checked = 0
        self._cdp = page.context.new_cdp_session(page)
        self._cdp.on("Page.screencastFrame", self._frame)
        self._cdp.send("Page.startScreencast", {"format": "png", "everyNthFrame": 1})

    def _frame(self, params: dict[str, Any]) -> None:
        self.frames.append((params["metadata"]["timestamp"], base64.b64decode(params["data"])))
        self._cdp.send("Page.screencastFrameAck", {"sessionId": params["sessionId"]})

    def stop(self) -> None:
        self._cdp.send("Page.stopScreencast")

    def first_drawn(self, since: float, box: tuple[float, float, float, float]) -> float | None:
        """Wall-clock time of the first frame after `since` whose `box` is drawn (each
        frame is looked at once, so this can be polled)."""
        while self._checked < len(self.frames):
            stamp, png = self.frames[self._checked]
            if stamp >= since and drawn_fraction(region(png, box), BACKGROUND) > 0.05:
                return stamp
            self._checked += 1
        return None

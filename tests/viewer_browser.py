"""Headless Chromium for the viewer's tests and bench: start it, and tell a drawn scene
from a blank canvas.

Debian's `chromium` (installed by `.ci/run`), driven by Playwright with
`executable_path` (never `playwright install`). WebGL runs on SwiftShader (software), so
scenes in tests stay small.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--use-angle=swiftshader",
         "--enable-unsafe-swiftshader", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    """The Chromium binary, or None where it is not installed."""
    return CHROMIUM if shutil.which(CHROMIUM) else shutil.which("chromium")


@contextmanager
def browser() -> Iterator[Any]:
    """A Playwright Chromium browser (headless, software WebGL)."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    assert path is not None, "chromium is not installed"
    with sync_playwright() as playwright:
        chrome = playwright.chromium.launch(executable_path=path, args=FLAGS)
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
"""Bottom left of the 3D view: clear of viser's control panel (top right) and its
"software WebGL" notice (top left)."""

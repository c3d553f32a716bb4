"""The labelled depth pictures: the `_depth.png` preview and a compare's contact sheet.

Pixels are checked through the layout the drawing reports (`Sheet` boxes) or its fixed
geometry: the colour bar's ends are the ramp's ends, a panel's nearest pixels have the
bar's near-end colour, every source has a panel and a histogram, labels are drawn.
"""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pytest
from PIL import Image

from pipeline.preview import (
    BAR_HEIGHT,
    BAR_TOP,
    GAP,
    HISTOGRAM_HEIGHT,
    MARGIN,
    PREVIEW_HEIGHT,
    Box,
    DepthScale,
    SheetPanel,
    contact_sheet,
    metre_ticks,
    metres,
    preview_png,
    ramp_colour,
)

NEAR_COLOUR = tuple(int(c) for c in ramp_colour(1.0))
FAR_COLOUR = tuple(int(c) for c in ramp_colour(0.0))


def _steps(near: float, far: float, size: int = 64) -> np.ndarray:
    """Four horizontal bands from `near` to `far` metres: each holds a quarter of the pixels,
    so the robust (1st/99th percentile) limits are exactly the nearest and farthest band."""
    bands = np.repeat(np.linspace(near, far, 4, dtype=np.float32), size // 4)
    return np.repeat(bands[:, None], size, axis=1)


def _rgb(image: Image.Image, x: int, y: int) -> tuple[int, ...]:
    return tuple(int(c) for c in np.asarray(image.convert("RGB"))[y, x])


def _has_ink(image: Image.Image, box: tuple[int, int, int, int]) -> bool:
    """Whether text (dark pixels) was drawn inside `box` (left, top, right, bottom)."""
    crop = np.asarray(image.convert("L").crop(box))
    return bool((crop < 128).any())


def _tallest_bar(image: Image.Image, box: Box) -> int:
    """The height in px of a histogram's tallest bar (its non-white pixels above the axis)."""
    pixels = np.asarray(image.convert("L"))[box.top:box.top + HISTOGRAM_HEIGHT - 1,
                                            box.left:box.left + box.width]
    return int((pixels < 250).sum(axis=0).max())


def test_scale_puts_near_at_the_bright_end_and_ticks_in_metres() -> None:
    scale = DepthScale.of([_steps(1.0, 10.0)])
    assert scale.near_m == pytest.approx(1.0) and scale.far_m == pytest.approx(10.0)
    assert float(scale.position(1.0)) == 1.0 and float(scale.position(10.0)) == 0.0
    assert float(scale.position(0.5)) == 1.0  # nearer than the limit: clipped to the end
    ticks = metre_ticks(scale)
    assert ticks[0] == pytest.approx(1.0) and ticks[-1] == pytest.approx(10.0)
    assert {1.5, 2.0, 3.0, 5.0, 7.0} <= set(ticks)
    assert [metres(v) for v in (0.0054, 0.35, 2.53, 9.6, 12.3)] == [
        "0.0054 m", "0.35 m", "2.5 m", "10 m", "12 m"]
    assert sum(NEAR_COLOUR) > 600 and sum(FAR_COLOUR) < 10


def test_preview_labels_both_panels_and_draws_a_colour_bar_in_metres() -> None:
    used = _steps(1.0, 4.0)
    internal = np.stack([_steps(2.0, 8.0), _steps(3.0, 9.0)])
    image = Image.open(BytesIO(preview_png(used, internal, (400, 200))))
    panel_width, label_height = 2 * PREVIEW_HEIGHT, 16 + 8
    row_width = 2 * panel_width + GAP
    assert image.width == row_width + 2 * MARGIN
    top = MARGIN + label_height
    assert _has_ink(image, (MARGIN, MARGIN, MARGIN + panel_width, top))  # "injected depth"
    assert _has_ink(image, (MARGIN + panel_width + GAP, MARGIN, MARGIN + row_width, top))
    # The injected map's nearest band is the nearest depth of both: the bar's near end.
    bar_y = top + PREVIEW_HEIGHT + GAP + BAR_TOP + BAR_HEIGHT // 2
    assert _rgb(image, MARGIN + row_width - 1, bar_y) == NEAR_COLOUR
    assert _rgb(image, MARGIN, bar_y) == FAR_COLOUR
    assert _rgb(image, MARGIN + panel_width // 2, top + 2) == NEAR_COLOUR
    # SHARP's farthest band (9 m) is the farthest depth: the far end's colour.
    right = MARGIN + panel_width + GAP + panel_width // 2
    assert _rgb(image, right, top + PREVIEW_HEIGHT - 2) == FAR_COLOUR
    below_bar = (MARGIN, bar_y + BAR_HEIGHT, MARGIN + row_width, image.height)
    assert _has_ink(image, below_bar)  # tick labels


def test_preview_without_sharps_depth_is_one_panel() -> None:
    image = Image.open(BytesIO(preview_png(_steps(1.0, 4.0), None, (300, 300),
                                           ("SHARP's own depth (nothing injected)", ""))))
    assert image.width == PREVIEW_HEIGHT + 2 * MARGIN


def test_contact_sheet_has_the_photo_every_source_one_scale_and_histograms() -> None:
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (48, 96, 3), dtype=np.uint8)
    maps = {"depth-pro": _steps(1.0, 6.0), "depth-anything-outdoor": _steps(2.0, 12.0),
            "internal": np.full((64, 64), 3.0, dtype=np.float32)}
    sheet = contact_sheet(photo, [SheetPanel(name, "model, range", depth)
                                  for name, depth in maps.items()], "p.jpg: compared", (96, 48))
    assert len(sheet.panels) == len(sheet.histograms) == 3
    assert sheet.scale.near_m == pytest.approx(1.0) and sheet.scale.far_m == pytest.approx(12.0)
    image = sheet.image
    bar = sheet.bar
    y = bar.top + bar.height // 2
    assert _rgb(image, bar.left + bar.width - 1, y) == NEAR_COLOUR  # smallest depth: 1 m
    assert _rgb(image, bar.left, y) == FAR_COLOUR
    pro, anything, internal = sheet.panels
    assert _rgb(image, pro.left + pro.width // 2, pro.top + 1) == NEAR_COLOUR
    assert _rgb(image, anything.left + 2, anything.top + anything.height - 2) == FAR_COLOUR
    # The flat 3 m map is one colour: the ramp's at 3 m on the shared scale.
    flat = tuple(int(c) for c in ramp_colour(float(sheet.scale.position(3.0))))
    assert _rgb(image, internal.left + internal.width // 2, internal.top + internal.height // 2) \
        == flat
    assert sheet.photo.width == 2 * sheet.photo.height  # the photo at its own aspect
    for panel in sheet.panels:
        assert panel.width == 2 * panel.height  # SHARP's square grid back at the photo aspect
        assert _has_ink(image, (panel.left, panel.top - 36, panel.left + panel.width,
                                panel.top))  # its label
    # Histograms share one y axis: the flat map's single bin is the tallest bar of all; a
    # map with a quarter of its pixels per bin gets bars a quarter as tall.
    flat_bar, banded_bar = _tallest_bar(image, sheet.histograms[2]), _tallest_bar(
        image, sheet.histograms[0])
    assert flat_bar == HISTOGRAM_HEIGHT - 4
    assert abs(banded_bar - flat_bar / 4) <= 2
    png = sheet.png()
    assert Image.open(BytesIO(png)).size == image.size

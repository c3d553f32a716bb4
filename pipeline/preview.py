"""Depth pictures a person reads without the README: labelled panels, a colour bar in metres.

One colour scale serves every panel of a picture: inverse depth between robust limits
(the 1st and 99th percentile over all panels together) through a dark-to-bright ramp,
near bright and far dark, so equal colours mean equal metres everywhere in it. The
colour bar under the panels carries tick labels in metres at those same positions, and
a compare's histograms use the bar's axis and colours. Pillow only (its default font,
scalable from Pillow 10.1), no plotting library.

- `preview_png`: the `_depth.png` beside a result: injected depth and SHARP's own.
- `contact_sheet`: a compare's sheet: the photo, each source's depth, histograms, bar.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PREVIEW_HEIGHT = 384
SHEET_PANEL_HEIGHT = 256
HISTOGRAM_HEIGHT = 96
HISTOGRAM_BINS = 64
RAMP = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99],
                 [212, 72, 66], [245, 125, 21], [250, 193, 39], [252, 255, 164]], dtype=float)
"""A dark-to-bright ramp (magma-like): position 0 is the farthest depth, 1 the nearest."""
GAP = 8
MARGIN = 12
BAR_HEIGHT = 18
BAR_TOP = 20
"""Where the gradient starts in a colour bar picture (its title above)."""
_WHITE, _INK, _GREY = (255, 255, 255), (20, 20, 20), (110, 110, 110)
_SAMPLES = 1 << 20
_NICE = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)


@dataclass(frozen=True)
class DepthScale:
    """The shared colour scale: inverse depth (1/m) from `low` (far, dark) to `high` (near)."""

    low: float
    high: float

    @classmethod
    def of(cls, maps: Sequence[np.ndarray]) -> DepthScale:
        """Robust limits over all `maps` together (depth in metres)."""
        inverse = np.concatenate([_sample(1.0 / np.clip(m, 1e-3, None)) for m in maps])
        low, high = (float(v) for v in np.percentile(inverse, [1, 99]))
        if not high > low:  # a flat map: a small span around its value
            low, high = low * 0.9, high * 1.1 + 1e-6
        return cls(low, high)

    @property
    def near_m(self) -> float:
        return 1.0 / self.high

    @property
    def far_m(self) -> float:
        return 1.0 / self.low

    def position(self, depth: np.ndarray | float) -> np.ndarray:
        """Where a depth falls on the scale, 0 (far end) to 1 (near end), clipped."""
        inverse = 1.0 / np.clip(np.asarray(depth, dtype=np.float64), 1e-3, None)
        return np.clip((inverse - self.low) / (self.high - self.low), 0.0, 1.0)


def _sample(values: np.ndarray) -> np.ndarray:
    flat = np.asarray(values, dtype=np.float64).ravel()
    return flat[::max(1, flat.size // _SAMPLES)]


def ramp_colour(t: np.ndarray | float) -> np.ndarray:
    """The ramp's RGB (uint8) at positions `t` in [0, 1]."""
    t = np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0)
    stops = np.linspace(0.0, 1.0, len(RAMP))
    rgb = np.stack([np.interp(t, stops, RAMP[:, c]) for c in range(3)], axis=-1)
    return np.rint(rgb).astype(np.uint8)


def colourize(depth: np.ndarray, scale: DepthScale) -> np.ndarray:
    """A depth map (metres) as an `(H, W, 3)` uint8 picture on `scale`."""
    return ramp_colour(scale.position(depth))


@functools.lru_cache(maxsize=8)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's own font at `size` px (its fixed bitmap font where FreeType is missing)."""
    return ImageFont.load_default(size=size)


def _text_width(draw: ImageDraw.ImageDraw, text: str, size: int) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font(size))
    return math.ceil(right - left)


def metres(value: float) -> str:
    """A depth for a tick or a label, two significant digits: `0.035 m`, `2.5 m`, `12 m`."""
    return f"{value:.0f} m" if value >= 9.5 else f"{value:.2g} m"


def metre_ticks(scale: DepthScale) -> list[float]:
    """The scale's two ends plus round depths within it: 1, 1.5, 2, 3, 5, 7 per decade, or
    every tenth of a decade where that leaves fewer than three inside (a shallow scene)."""
    near, far = scale.near_m, scale.far_m
    inside: list[float] = []
    for steps in (_NICE, tuple(1.0 + i / 10 for i in range(90))):
        inside = sorted({round(step * 10.0 ** exponent, 6) for exponent in range(-3, 3)
                         for step in steps if near < step * 10.0 ** exponent < far})
        if len(inside) >= 3:
            break
    return [near, *inside, far]


def _spread(draw: ImageDraw.ImageDraw, scale: DepthScale, width: int,
            size: int) -> list[tuple[int, int, str]]:
    """Ticks that fit: (x of the mark, left of its label, label), px from the far end;
    the scale's two ends first, then round depths whose labels overlap none placed."""
    placed: list[tuple[int, int, str, int]] = []
    ends = {scale.near_m, scale.far_m}
    for value in sorted(metre_ticks(scale), key=lambda v: v not in ends):
        x = round(float(scale.position(value)) * (width - 1))
        label = metres(value)
        w = _text_width(draw, label, size)
        left = min(max(0, x - w // 2), max(0, width - w))
        if all(left + w + 6 <= other or other_right + 6 <= left
               for _, other, _, other_right in placed):
            placed.append((x, left, label, left + w))
    return sorted((x, left, label) for x, left, label, _ in placed)


def colour_bar(scale: DepthScale, width: int, title: str = "depth in metres "
               "(bright = near, dark = far)") -> Image.Image:
    """The scale as a gradient `width` px wide, tick labels in metres below, a title above."""
    size = 13
    image = Image.new("RGB", (width, BAR_TOP + BAR_HEIGHT + 6 + size + 6), _WHITE)
    draw = ImageDraw.Draw(image)
    draw.text((0, 2), title, fill=_INK, font=font(size))
    gradient = ramp_colour(np.linspace(0.0, 1.0, width))
    image.paste(Image.fromarray(np.repeat(gradient[None], BAR_HEIGHT, axis=0)), (0, BAR_TOP))
    _ticks(draw, scale, width, BAR_TOP + BAR_HEIGHT, size)
    return image


def _ticks(draw: ImageDraw.ImageDraw, scale: DepthScale, width: int, top: int,
           size: int) -> None:
    for x, left, label in _spread(draw, scale, width, size):
        draw.line([(x, top), (x, top + 4)], fill=_INK)
        draw.text((left, top + 5), label, fill=_INK, font=font(size))


def _panel(depth: np.ndarray, scale: DepthScale, height: int,
           aspect: float) -> Image.Image:
    """A depth map on SHARP's square grid, stretched back to the photo's aspect ratio.

    The depth is resized before it is coloured: the panel has a tenth of the grid's
    pixels, so colouring it costs a tenth (0.05 instead of 0.65 s for SHARP's 1536 grid
    on 2 cores, paid by every result)."""
    size = (max(1, round(height * aspect)), height)
    resized = Image.fromarray(np.asarray(depth, dtype=np.float32), mode="F").resize(
        size, Image.Resampling.BILINEAR)
    return Image.fromarray(colourize(np.asarray(resized), scale))


def _aspect(image_size: tuple[int, int] | None, depth: np.ndarray) -> float:
    if image_size:
        return image_size[0] / image_size[1]
    return depth.shape[-1] / depth.shape[-2]


def _labelled(panels: Sequence[tuple[str, Image.Image]], size: int) -> tuple[Image.Image,
                                                                             list[int]]:
    """Panels in a row with a label above each; returns the row and each panel's left x."""
    label_height = size + 8
    width = sum(p.width for _, p in panels) + GAP * (len(panels) - 1)
    height = label_height + max(p.height for _, p in panels)
    row = Image.new("RGB", (width, height), _WHITE)
    draw = ImageDraw.Draw(row)
    lefts, x = [], 0
    for label, panel in panels:
        draw.text((x, 2), _fit(draw, label, panel.width, size), fill=_INK, font=font(size))
        row.paste(panel, (x, label_height))
        lefts.append(x)
        x += panel.width + GAP
    return row, lefts


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, size: int) -> str:
    """`text`, cut with an ellipsis to fit `width` px."""
    if _text_width(draw, text, size) <= width:
        return text
    while text and _text_width(draw, text + "...", size) > width:
        text = text[:-1]
    return text + "..."


PNG_LEVEL = 1
"""zlib's fastest level: every result writes a preview before its PLY, so its time is part
of Apply's wait. On SHARP's grid 0.06 s instead of 0.13 s at the default level 6, for a
file a third larger (240 KB instead of 175 KB)."""


def _png(image: Image.Image) -> bytes:
    buf = BytesIO()
    image.save(buf, format="PNG", compress_level=PNG_LEVEL)
    return buf.getvalue()


def preview_png(used: np.ndarray, internal: np.ndarray | None,
                image_size: tuple[int, int] | None = None,
                labels: tuple[str, str] = ("injected depth", "SHARP's own depth")) -> bytes:
    """The `_depth.png`: the depth SHARP was given beside SHARP's own, one colour scale,
    a label over each and a colour bar in metres below.

    Both maps live on SHARP's square grid; each panel is stretched back to the photo's
    aspect ratio (`image_size` is `(width, height)`). `internal` may hold SHARP's two
    layers (the nearer, first, is shown) or be None (one panel).
    """
    maps = [np.asarray(used, dtype=np.float32)]
    if internal is not None:
        front = np.asarray(internal, dtype=np.float32)
        maps.append(front[0] if front.ndim == 3 else front)
    scale = DepthScale.of(maps)
    aspect = _aspect(image_size, maps[0])
    panels = [(label, _panel(m, scale, PREVIEW_HEIGHT, aspect))
              for label, m in zip(labels[:len(maps)], maps, strict=True)]
    row, _ = _labelled(panels, 16)
    bar = colour_bar(scale, row.width)
    sheet = Image.new("RGB", (row.width + 2 * MARGIN, MARGIN + row.height + GAP + bar.height),
                      _WHITE)
    sheet.paste(row, (MARGIN, MARGIN))
    sheet.paste(bar, (MARGIN, MARGIN + row.height + GAP))
    return _png(sheet)


@dataclass(frozen=True)
class SheetPanel:
    """One source on a contact sheet: its name, a second line (model, range), its depth."""

    title: str
    detail: str
    depth: np.ndarray


@dataclass(frozen=True)
class Box:
    left: int
    top: int
    width: int
    height: int


@dataclass
class Sheet:
    """A drawn contact sheet and where its parts are (tests read pixels through these)."""

    image: Image.Image
    scale: DepthScale
    photo: Box
    panels: list[Box]
    histograms: list[Box]
    bar: Box

    def png(self) -> bytes:
        return _png(self.image)


def contact_sheet(photo_rgb: np.ndarray, panels: Sequence[SheetPanel], title: str,
                  image_size: tuple[int, int] | None = None) -> Sheet:
    """The photo, then each source's depth on ONE colour scale with its label, each
    source's depth histogram on shared axes below it, and the colour bar in metres.

    Histogram x is the colour bar's axis (inverse depth, ticks in metres), bars in the
    bar's colours; y is the share of pixels, one maximum for all.
    """
    scale = DepthScale.of([p.depth for p in panels])
    photo = Image.fromarray(np.asarray(photo_rgb, dtype=np.uint8))
    aspect = photo.width / photo.height
    height = SHEET_PANEL_HEIGHT
    photo = photo.resize((max(1, round(height * aspect)), height), Image.Resampling.LANCZOS)
    depth_aspect = image_size[0] / image_size[1] if image_size else aspect
    images = [_panel(p.depth, scale, height, depth_aspect) for p in panels]
    shares = [_shares(p.depth, scale) for p in panels]
    top_share = max(float(s.max()) for s in shares) or 1.0

    title_size, label_size, small = 18, 15, 12
    head = title_size + 14
    labels = 2 * label_size + 12
    columns = [photo, *images]
    width = MARGIN * 2 + sum(c.width for c in columns) + GAP * len(images)
    hist_top = head + labels + height + GAP
    bar_top = hist_top + HISTOGRAM_HEIGHT + small + 18
    bar_left = MARGIN + photo.width + GAP
    bar_width = width - MARGIN - bar_left
    bar = colour_bar(scale, bar_width)
    sheet = Image.new("RGB", (width, bar_top + bar.height + MARGIN), _WHITE)
    draw = ImageDraw.Draw(sheet)
    draw.text((MARGIN, 6), _fit(draw, title, width - 2 * MARGIN, title_size), fill=_INK,
              font=font(title_size))

    x = MARGIN
    photo_box = Box(x, head + labels, photo.width, height)
    draw.text((x, head), "photo", fill=_INK, font=font(label_size))
    if image_size:
        draw.text((x, head + label_size + 4), f"{image_size[0]} x {image_size[1]} px",
                  fill=_GREY, font=font(label_size - 2))
    sheet.paste(photo, (x, head + labels))
    draw.text((x, hist_top), _fit(draw, "depth histograms:", photo.width, small), fill=_GREY,
              font=font(small))
    draw.text((x, hist_top + small + 4),
              _fit(draw, f"share of pixels, top {top_share:.0%}", photo.width, small),
              fill=_GREY, font=font(small))
    x += photo.width + GAP
    panel_boxes, hist_boxes = [], []
    for panel, image, share in zip(panels, images, shares, strict=True):
        draw.text((x, head), _fit(draw, panel.title, image.width, label_size), fill=_INK,
                  font=font(label_size))
        draw.text((x, head + label_size + 4), _fit(draw, panel.detail, image.width,
                                                   label_size - 2),
                  fill=_GREY, font=font(label_size - 2))
        sheet.paste(image, (x, head + labels))
        panel_boxes.append(Box(x, head + labels, image.width, height))
        hist = _histogram(share, top_share, scale, image.width, small)
        sheet.paste(hist, (x, hist_top))
        hist_boxes.append(Box(x, hist_top, image.width, HISTOGRAM_HEIGHT))
        x += image.width + GAP
    sheet.paste(bar, (bar_left, bar_top))
    return Sheet(sheet, scale, photo_box, panel_boxes, hist_boxes,
                 Box(bar_left, bar_top + BAR_TOP, bar_width, BAR_HEIGHT))


def _shares(depth: np.ndarray, scale: DepthScale) -> np.ndarray:
    """Each bin's share of the pixels along the scale (ends clipped into the end bins)."""
    bins = np.minimum((scale.position(depth) * HISTOGRAM_BINS).astype(int), HISTOGRAM_BINS - 1)
    counts = np.bincount(bins.ravel(), minlength=HISTOGRAM_BINS)
    return counts / max(1, int(counts.sum()))


def _histogram(share: np.ndarray, top: float, scale: DepthScale, width: int,
               size: int) -> Image.Image:
    """Bars in the colour bar's colours on its axis, tick marks at its metre ticks."""
    image = Image.new("RGB", (width, HISTOGRAM_HEIGHT + size + 14), _WHITE)
    draw = ImageDraw.Draw(image)
    base = HISTOGRAM_HEIGHT - 1
    colours = ramp_colour((np.arange(HISTOGRAM_BINS) + 0.5) / HISTOGRAM_BINS)
    for i, value in enumerate(share):
        left = round(i * width / HISTOGRAM_BINS)
        right = max(left, round((i + 1) * width / HISTOGRAM_BINS) - 1)
        bar_top = base - round(float(value) / top * (HISTOGRAM_HEIGHT - 4))
        if bar_top < base:
            draw.rectangle([left, bar_top, right, base], fill=tuple(int(c) for c in colours[i]))
    draw.line([(0, base), (width - 1, base)], fill=_GREY)
    _ticks(draw, scale, width, base + 1, size)
    return image

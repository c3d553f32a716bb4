"""PlayCanvas's SOG (version 2): the Gaussians as five lossless WebP images plus a
`meta.json`, zipped into one `.sog`: about a sixth of the PLY on a SHARP-like scene. Read
by splat-transform (so SuperSplat), the PlayCanvas engine and Spark. The layout, and how
this writer differs from splat-transform's own: docs/formats.md.

Gaussian i is texel i of every image, row by row. The values are those the PLY stores
(`pipeline.encodable`), in the PLY's axes, as the readers expect of a SOG; the Gaussians
keep the PLY's order (`texture_size`). Every byte is rounded to nearest. The same
Gaussians give the same bytes.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, features

from .atomic import atomic_write
from .encodable import Encodable, Scene, encodable, to_u8
from .errors import OutputError

SOG_VERSION = 2
CODEBOOK_SIZE = 256
MEANS_FILES = ("means_l.webp", "means_u.webp")
QUATS_FILE = "quats.webp"
SCALES_FILE = "scales.webp"
SH0_FILE = "sh0.webp"
QUAT_TAG = 252
"""`quats.webp`'s alpha: this plus the index (w, x, y, z) of the component not stored."""
MAX_TEXTURE_SIDE = 16383
"""WebP's largest width or height."""
WEBP_OPTIONS: dict[str, Any] = {"lossless": True, "exact": True, "method": 1, "quality": 25}
"""Lossless; `exact` keeps the colour under a zero alpha (a transparent Gaussian's sh0).
Method 1 at effort 25: on a SHARP-sized scene, files 0.5% larger than libwebp's default
(method 4, quality 75) in half its time; method 0 is 20% larger, method 5 2% smaller at
7 times the time (`bench/exports.py` measures the whole export)."""
CODEBOOK_BINS = 1 << 16
"""Histogram bins the codebook is fitted on (the labels use the exact values)."""
CODEBOOK_EVEN_SHARE = 0.7
"""The initial codebook places entries by a blend of the values' quantiles (30%) and
even steps over their range (70%): sparse tails keep entries, which Lloyd's iterations
alone would starve (ten times the worst-case error or more, and no smaller mean)."""
CODEBOOK_ITERATIONS = 20
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
"""Every zip entry's date: a fixed one, so the same scene gives the same bytes."""


def texture_size(count: int) -> tuple[int, int]:
    """`(width, height)` of the images for `count` Gaussians: multiples of 4, as
    splat-transform makes them. One row of SHARP's grid per texture row when `count` is
    one or two layers of a square grid whose side is a multiple of 4; else about square."""
    width = max(4, math.ceil(math.sqrt(count) / 4) * 4)
    for layers in (2, 1):
        side = math.isqrt(count // layers)
        if count > 0 and layers * side * side == count and side % 4 == 0:
            width = side
            break
    height = max(4, math.ceil(count / width / 4) * 4)
    return width, height


def codebook(values: np.ndarray, size: int = CODEBOOK_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """A `size`-entry codebook for `values` (float32, ascending, its ends the smallest and
    largest value) and each value's label: the index of its nearest entry (uint8).

    One-dimensional k-means: Lloyd's iterations on a histogram of the values, started from
    `CODEBOOK_EVEN_SHARE`'s blend, with the two end entries held at the extremes (so pure
    black and white, or the largest Gaussian, come back exactly). Deterministic.
    """
    flat = values.astype(np.float64).ravel()
    if flat.size == 0:
        return np.zeros(size, np.float32), np.zeros(values.shape, np.uint8)
    low, high = float(flat.min()), float(flat.max())
    if high == low:
        return np.full(size, low, np.float32), np.zeros(values.shape, np.uint8)
    bins = np.minimum(((flat - low) * (CODEBOOK_BINS / (high - low))).astype(np.int64),
                      CODEBOOK_BINS - 1)
    counts = np.bincount(bins, minlength=CODEBOOK_BINS).astype(np.float64)
    sums = np.bincount(bins, weights=flat, minlength=CODEBOOK_BINS)
    used = counts > 0
    centres, weights = sums[used] / counts[used], counts[used]
    blend = ((1 - CODEBOOK_EVEN_SHARE) * np.cumsum(weights) / flat.size
             + CODEBOOK_EVEN_SHARE * (centres - low) / (high - low))
    entries = centres[np.minimum(np.searchsorted(blend, np.linspace(0, 1, size)),
                                 centres.size - 1)]
    cumulative = np.concatenate([[0.0], np.cumsum(weights)])
    moments = np.concatenate([[0.0], np.cumsum(weights * centres)])
    for _ in range(CODEBOOK_ITERATIONS):
        entries[0], entries[-1] = low, high
        cells = np.concatenate([[0], np.searchsorted(centres, (entries[1:] + entries[:-1]) / 2),
                                [centres.size]])
        weight = cumulative[cells[1:]] - cumulative[cells[:-1]]
        entries = np.sort(np.where(weight > 0, (moments[cells[1:]] - moments[cells[:-1]])
                                   / np.where(weight > 0, weight, 1.0), entries))
    entries[0], entries[-1] = low, high
    stored = np.sort(entries.astype(np.float32))
    wide = stored.astype(np.float64)
    labels = np.searchsorted((wide[1:] + wide[:-1]) / 2, values.astype(np.float64))
    return stored, labels.astype(np.uint8)


def _log_positions(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """16-bit codes `(N, 3)` of `v = sign(x) ln(1 + |x|)`, mapped linearly from each axis'
    [min, max] of v, and that min and max (fine near the camera, coarse far away)."""
    logs = np.sign(positions) * np.log1p(np.abs(positions.astype(np.float64)))
    if logs.shape[0] == 0:
        return np.zeros((0, 3), np.uint16), np.zeros(3), np.zeros(3)
    low, high = logs.min(axis=0), logs.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    codes = np.clip(np.round((logs - low) / span * 65535.0), 0, 65535).astype(np.uint16)
    return codes, low, high


def _quats(wxyz: np.ndarray) -> np.ndarray:
    """`(N, 4)` bytes, "smallest three": the unit quaternion made positive in its largest
    component; the other three (w, x, y, z order) times sqrt 2 mapped from [-1, 1] to a
    byte; then `QUAT_TAG` + the largest's index."""
    largest = np.abs(wxyz).argmax(axis=1)
    sign = np.where(np.take_along_axis(wxyz, largest[:, None], axis=1) < 0, -1.0, 1.0)
    texels = np.empty((wxyz.shape[0], 4), np.uint8)
    for j in range(3):  # the j-th stored component skips the largest
        other = np.where(j < largest, wxyz[:, j], wxyz[:, j + 1]) * sign[:, 0]
        texels[:, j] = to_u8((other * math.sqrt(2.0) * 0.5 + 0.5) * 255.0)
    texels[:, 3] = QUAT_TAG + largest
    return texels


def _texels(rgb: np.ndarray, alpha: np.ndarray | int = 255) -> np.ndarray:
    """`(N, 4)` RGBA bytes from `(N, 3)` bytes and an alpha."""
    texels = np.empty((rgb.shape[0], 4), np.uint8)
    texels[:, :3] = rgb
    texels[:, 3] = alpha
    return texels


def sog_contents(values: Encodable) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """`meta.json`'s content and each image's `(N, 4)` texels, by file name: positions'
    low and high bytes, rotations, scale labels, colour labels with opacity in alpha."""
    count = values.positions.shape[0]
    codes, low, high = _log_positions(values.positions)
    scale_entries, scale_labels = codebook(values.log_scales)
    colour_entries, colour_labels = codebook(values.colors_dc)
    meta = {
        "version": SOG_VERSION,
        "asset": {"generator": "sharp-watch"},
        "count": count,
        "means": {"mins": low.tolist(), "maxs": high.tolist(), "files": list(MEANS_FILES)},
        "scales": {"codebook": scale_entries.tolist(), "files": [SCALES_FILE]},
        "quats": {"files": [QUATS_FILE]},
        "sh0": {"codebook": colour_entries.tolist(), "files": [SH0_FILE]},
    }
    images = {
        MEANS_FILES[0]: _texels((codes & 0xFF).astype(np.uint8)),
        MEANS_FILES[1]: _texels((codes >> 8).astype(np.uint8)),
        QUATS_FILE: _quats(values.rotations),
        SCALES_FILE: _texels(scale_labels),
        SH0_FILE: _texels(colour_labels, to_u8(values.opacities * 255.0)),
    }
    return meta, images


def _webp(texels: np.ndarray, size: tuple[int, int]) -> bytes:
    width, height = size
    canvas = np.zeros((width * height, 4), np.uint8)
    canvas[:texels.shape[0]] = texels
    out = io.BytesIO()
    Image.fromarray(canvas.reshape(height, width, 4), "RGBA").save(out, "WEBP", **WEBP_OPTIONS)
    return out.getvalue()


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_STORED
    info.create_system = 0
    info.external_attr = 0
    return info


def sog_bytes(scene: Scene, warnings: list[str] | None = None,
              path: Path | str = "scene.sog") -> bytes:
    """`scene` (Gaussians, or a PLY's columns: `pipeline.encodable`) as a bundled SOG (a
    zip, nothing compressed twice), for a file called `path` (named in `warnings` and
    errors).

    Lossy by design: positions to 16 bits of their log over the scene's range, rotations
    to a byte per stored component, log scales and colours to their codebook's nearest
    entry, opacity to a byte. Gaussians no format can encode are noted in `warnings`
    (`pipeline.encodable`). Raises `OutputError` where Pillow cannot write WebP.
    """
    path = Path(path)
    if not features.check("webp"):
        raise OutputError(f"cannot write {path.name} (this Pillow has no WebP support)", path)
    meta, images = sog_contents(encodable(scene, warnings, path))
    size = texture_size(meta["count"])
    if max(size) > MAX_TEXTURE_SIDE:
        raise OutputError(f"cannot write {path.name} ({meta['count']} Gaussians need "
                          f"{size[0]}x{size[1]} images, over WebP's {MAX_TEXTURE_SIDE})", path)
    with ThreadPoolExecutor(max_workers=len(images)) as pool:  # libwebp releases the GIL
        encoded = dict(zip(images, pool.map(lambda t: _webp(t, size), images.values()),
                           strict=True))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as bundle:
        bundle.writestr(_entry("meta.json"), json.dumps(meta, separators=(",", ":")))
        for name, data in encoded.items():
            bundle.writestr(_entry(name), data)
    return out.getvalue()


def write_sog(path: Path | str, scene: Scene, warnings: list[str] | None = None) -> Path:
    """Write `scene` as a bundled SOG (`sog_bytes`) to `path` atomically."""
    return atomic_write(Path(path), sog_bytes(scene, warnings, path))

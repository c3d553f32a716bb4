"""How a browser shows a result: from the photo's own camera, and thinned where it draws
without a GPU.

One set of rules for the two pages that draw a result with Spark: the viewer
(`viewer.server` computes these for the page it serves) and the share page
(`pipeline.share` bakes them into the file). Both start at SHARP's source camera: at the
origin, looking along +z, with the photo's vertical field of view, orbiting the scene's
median depth. A browser that renders WebGL in software draws `SOFTWARE_BUDGET` of the
Gaussians (`thinned`): the same fixed subset on both pages, so they show the same first
frame.
"""

from __future__ import annotations

import math

import numpy as np

from .ply import LOG_SCALES

SOFTWARE_BUDGET = 25_000
"""Gaussians drawn by a browser that renders WebGL without a GPU (SwiftShader, llvmpipe,
Microsoft Basic Render Driver): about half a second a frame on a 2-core CPU, where a
whole SHARP scene takes over a minute a frame."""
DEPTH_SAMPLE = 200_000
"""Depths looked at to find the median: enough for its value to a few millimetres."""


def vertical_fov(f_px: float, image_height: int) -> float:
    """SHARP's source camera: vertical field of view (radians) of the original photo."""
    if not (math.isfinite(f_px) and f_px > 0 and image_height > 0):
        raise ValueError(f"cannot make a field of view from f_px={f_px!r}, "
                         f"height={image_height!r}")
    return 2.0 * math.atan(image_height / (2.0 * f_px))


def orbit_depth(z: np.ndarray) -> float:
    """Where the orbit centre goes: the middle of the scene along the view axis (a fixed,
    evenly spread sample of the depths `z`, in file order); 1 m when none is positive."""
    z = z[::max(1, z.size // DEPTH_SAMPLE)]
    z = z[np.isfinite(z) & (z > 0)]
    return float(np.median(z)) if z.size else 1.0


def thinned(rows: np.ndarray, budget: int, seed: int = 0) -> np.ndarray:
    """At most `budget` of the `(N, 14)` PLY rows, in file order, each grown to cover part
    of the area of those left out.

    For browsers without a GPU (software WebGL draws a million Gaussians in tens of
    seconds per frame): a random, fixed subset keeps the whole picture. Each kept
    Gaussian's area grows by the square root of the thinning factor (each axis by its
    fourth root): growing it by the whole factor would leave no gaps but cost as many
    pixels to draw as the full scene (software rendering pays per pixel), so a little
    grain is the price of speed.
    """
    if budget <= 0:
        raise ValueError(f"budget must be positive, got {budget}")
    count = rows.shape[0]
    if count <= budget:
        return rows.copy()
    keep = np.sort(np.random.default_rng(seed).choice(count, budget, replace=False))
    kept = rows[keep]
    kept[:, LOG_SCALES] += np.float32(math.log(count / budget) / 4)
    return kept

"""Our PLY (SHARP's layout) checked, and thinned for browsers that draw without a GPU.

The vertex block is 14 little-endian float32 columns: xyz (metric, OpenCV camera axes:
x right, y down, z forward), SH DC of the sRGB colour, opacity logit, log scales and a
wxyz quaternion (`pipeline/ply.py`); SHARP's camera elements follow it. The browser
renderer (Spark) reads the PLY itself, so the viewer only checks the header, finds where
to aim the camera, and for software WebGL sends a thinned copy in the same layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

VERTEX_COLUMNS = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                  "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")
ROW_BYTES = 4 * len(VERTEX_COLUMNS)
LOG_SCALES = slice(7, 10)
MAX_HEADER_BYTES = 16 * 1024
DEPTH_SAMPLE = 200_000
"""Rows read to find the median depth: enough for its value to a few millimetres."""


class SplatError(ValueError):
    """The file is not a PLY in our layout; the message names the file and the problem."""


@dataclass(frozen=True)
class SplatFile:
    """A checked PLY: its header, vertex count and where the vertex block starts."""

    path: Path
    header: bytes
    count: int

    @property
    def size(self) -> int:
        """Bytes the file must hold: header and vertex block (the camera elements follow)."""
        return len(self.header) + self.count * ROW_BYTES


def _vertex_count(path: Path, header: bytes) -> int:
    """The header's vertex count, after checking the header is ours."""
    lines = header.decode("ascii", errors="replace").split("\n")
    if not lines or lines[0].strip() != "ply":
        raise SplatError(f"{path}: not a PLY file (it does not start with 'ply')")
    if "format binary_little_endian 1.0" not in (line.strip() for line in lines):
        raise SplatError(f"{path}: only binary little-endian PLYs are supported")
    count: int | None = None
    properties: list[str] = []
    for line in lines[1:]:
        words = line.split()
        if words[:2] == ["element", "vertex"] and len(words) == 3:
            count = int(words[2]) if words[2].isdigit() else None
        elif words[:1] == ["element"] and count is not None:
            break
        elif words[:1] == ["property"] and count is not None:
            if words[1:2] != ["float"]:
                raise SplatError(f"{path}: vertex property {' '.join(words[1:])!r} is not "
                                 "float; this is not a Gaussian splat PLY")
            properties.append(words[-1])
    if count is None:
        raise SplatError(f"{path}: no 'element vertex <count>' line in the header")
    if tuple(properties) != VERTEX_COLUMNS:
        raise SplatError(f"{path}: vertex columns are {', '.join(properties) or 'none'}; "
                         f"expected SHARP's {', '.join(VERTEX_COLUMNS)}")
    return count


def check_splat(path: Path, f: BinaryIO) -> SplatFile:
    """Check the open file `f` (of `path`) is a whole PLY in our layout; raises
    `SplatError` naming the file."""
    f.seek(0)
    head = f.read(MAX_HEADER_BYTES)
    end = head.find(b"end_header\n")
    if end < 0:
        raise SplatError(f"{path}: no end_header in the first {MAX_HEADER_BYTES} bytes; "
                         "not a PLY file")
    header = head[:end + len(b"end_header\n")]
    found = SplatFile(path, header, _vertex_count(path, header))
    f.seek(0, 2)
    held = (f.tell() - len(header)) // ROW_BYTES
    if held < found.count:
        raise SplatError(f"{path}: the header promises {found.count} Gaussians but the file "
                         f"holds {held}; it is truncated")
    return found


def _rows(splat: SplatFile, f: BinaryIO) -> np.ndarray:
    f.seek(len(splat.header))
    rows = np.fromfile(f, dtype="<f4", count=splat.count * len(VERTEX_COLUMNS))
    return rows.reshape(splat.count, len(VERTEX_COLUMNS))


def median_depth(splat: SplatFile, f: BinaryIO) -> float:
    """Where the orbit centre goes: the middle of the scene along the view axis (a fixed,
    evenly spread sample of rows)."""
    step = max(1, splat.count // DEPTH_SAMPLE)
    z = _rows(splat, f)[::step, 2]
    z = z[np.isfinite(z) & (z > 0)]
    return float(np.median(z)) if z.size else 1.0


def thinned_ply(splat: SplatFile, f: BinaryIO, budget: int, seed: int = 0) -> bytes:
    """A PLY of at most `budget` of the file's Gaussians, each grown to cover part of the
    area of those left out; the camera elements after the vertex block are kept.

    For browsers without a GPU (software WebGL draws a million Gaussians in tens of
    seconds per frame): a random, fixed subset keeps the whole picture. Each kept
    Gaussian's area grows by the square root of the thinning factor (each axis by its
    fourth root): growing it by the whole factor would leave no gaps but cost as many
    pixels to draw as the full scene (software rendering pays per pixel), so a little
    grain is the price of speed.
    """
    if budget <= 0:
        raise ValueError(f"budget must be positive, got {budget}")
    rows = _rows(splat, f)
    keep = np.sort(np.random.default_rng(seed).choice(splat.count, min(budget, splat.count),
                                                      replace=False))
    kept = rows[keep]
    kept[:, LOG_SCALES] += np.float32(math.log(splat.count / len(keep)) / 4)
    f.seek(splat.size)
    tail = f.read()
    header = splat.header.replace(f"element vertex {splat.count}\n".encode(),
                                  f"element vertex {len(keep)}\n".encode(), 1)
    return header + kept.astype("<f4").tobytes() + tail


def vertical_fov(f_px: float, image_height: int) -> float:
    """SHARP's source camera: vertical field of view (radians) of the original photo."""
    if not (math.isfinite(f_px) and f_px > 0 and image_height > 0):
        raise ValueError(f"cannot make a field of view from f_px={f_px!r}, "
                         f"height={image_height!r}")
    return 2.0 * math.atan(image_height / (2.0 * f_px))

"""Our PLY (SHARP's layout) read back into the arrays a splat renderer takes.

The vertex block is 14 little-endian float32 columns: xyz (metric, OpenCV camera axes:
x right, y down, z forward), SH DC of the sRGB colour, opacity logit, log scales and a
wxyz quaternion (`pipeline/ply.py`). One `np.fromfile` reads it; the conversions are
whole-array numpy, so a 1,179,648-Gaussian scene takes well under a second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SH_C0 = math.sqrt(1.0 / (4.0 * math.pi))
VERTEX_COLUMNS = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                  "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")
MAX_HEADER_BYTES = 16 * 1024


class SplatError(ValueError):
    """The file is not a PLY in our layout; the message names the file and the problem."""


@dataclass(frozen=True)
class Splat:
    """What a renderer needs, one row per Gaussian."""

    centers: np.ndarray      # (N, 3) float32, metres, OpenCV camera axes
    covariances: np.ndarray  # (N, 3, 3) float32
    rgbs: np.ndarray         # (N, 3) float32 in [0, 1] (sRGB)
    opacities: np.ndarray    # (N, 1) float32 in [0, 1]

    @property
    def count(self) -> int:
        return int(self.centers.shape[0])

    def median_depth(self) -> float:
        """Where the orbit centre goes: the middle of the scene along the view axis."""
        z = self.centers[:, 2]
        z = z[np.isfinite(z) & (z > 0)]
        return float(np.median(z)) if z.size else 1.0


def _vertex_layout(path: Path, header: bytes) -> tuple[int, int]:
    """(vertex count, offset of the vertex block) after checking the header is ours."""
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
    return count, len(header)


def read_splat(path: Path) -> Splat:
    """Load `path`; raises `SplatError` (or `OSError`) with the file's name."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(MAX_HEADER_BYTES)
        end = head.find(b"end_header\n")
        if end < 0:
            raise SplatError(f"{path}: no end_header in the first {MAX_HEADER_BYTES} bytes; "
                             "not a PLY file")
        count, offset = _vertex_layout(path, head[:end + len(b"end_header\n")])
        f.seek(offset)
        rows = np.fromfile(f, dtype="<f4", count=count * len(VERTEX_COLUMNS))
    if rows.size != count * len(VERTEX_COLUMNS):
        raise SplatError(f"{path}: the header promises {count} Gaussians but the file holds "
                         f"{rows.size // len(VERTEX_COLUMNS)}; it is truncated")
    return splat_from_rows(rows.reshape(count, len(VERTEX_COLUMNS)))


def splat_from_rows(rows: np.ndarray) -> Splat:
    """`(N, 14)` stored columns -> centres, covariances, colours, opacities.

    Covariance = R diag(s)^2 R^T, computed term by term over whole columns (a batched
    3 x 3 matmul is several times slower in numpy for a million Gaussians).
    """
    rows = np.asarray(rows, dtype=np.float32)
    quats = rows[:, 10:14]
    norms = np.linalg.norm(quats, axis=1, keepdims=True)
    w, x, y, z = (quats / np.where(norms > 0, norms, np.float32(1.0))).T
    rotation = (
        (1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)),
        (2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)),
        (2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)),
    )
    variances = np.exp(2.0 * rows[:, 7:10]).T  # s^2 per axis
    covariances = np.empty((rows.shape[0], 3, 3), dtype=np.float32)
    for i in range(3):
        for j in range(i, 3):
            term = sum(rotation[i][k] * rotation[j][k] * variances[k] for k in range(3))
            covariances[:, i, j] = term
            covariances[:, j, i] = term
    rgbs = np.clip(0.5 + np.float32(SH_C0) * rows[:, 3:6], 0.0, 1.0)
    opacities = 1.0 / (1.0 + np.exp(-rows[:, 6:7]))
    return Splat(np.ascontiguousarray(rows[:, 0:3]), covariances,
                 rgbs.astype(np.float32, copy=False), opacities.astype(np.float32, copy=False))


def thinned(splat: Splat, budget: int, seed: int = 0) -> Splat:
    """At most `budget` Gaussians of `splat`, each grown to cover part of the area of
    those left out.

    For browsers without a GPU (software WebGL draws a million Gaussians in tens of
    seconds per frame): a random, fixed subset keeps the whole picture. Each kept
    Gaussian's area grows by the square root of the thinning factor: growing it by the
    whole factor would leave no gaps but cost as many pixels to draw as the full scene
    (software rendering pays per pixel), so a little grain is the price of speed.
    """
    if budget <= 0 or splat.count <= budget:
        return splat
    keep = np.sort(np.random.default_rng(seed).choice(splat.count, budget, replace=False))
    factor = np.float32(math.sqrt(splat.count / budget))
    return Splat(splat.centers[keep], splat.covariances[keep] * factor, splat.rgbs[keep],
                 splat.opacities[keep])


def vertical_fov(f_px: float, image_height: int) -> float:
    """SHARP's source camera: vertical field of view (radians) of the original photo."""
    if not (math.isfinite(f_px) and f_px > 0 and image_height > 0):
        raise ValueError(f"cannot make a field of view from f_px={f_px!r}, "
                         f"height={image_height!r}")
    return 2.0 * math.atan(image_height / (2.0 * f_px))

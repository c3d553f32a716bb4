"""Compressed exports beside SHARP's PLY: Niantic's `.spz` (a quarter to a third of the
PLY's size), the 32-byte-per-Gaussian `.splat` of antimatter15's web viewer (57%),
PlayCanvas's `.sog` (`pipeline.sog`, a sixth to a tenth) and the single-file share page
(`pipeline.share`: the SOG and a renderer in one `.html`).

All are encoded from exactly the values the PLY stores (`pipeline.encodable`), in SHARP's
own axes (OpenCV: x right, y down, z forward), as every reader we checked expects of
these formats (none converts their axes on load), so a viewer that reads several of them
shows the same scene from each. The writers take SHARP's Gaussians or a PLY's own columns
(`pipeline.ply.read_ply`), so an old result converts as its photo's run would have. SHARP
has no higher spherical harmonics, so nothing beyond the DC colour is lost to them. Every
file goes through `atomic_write`. SPZ's position range (about +-2 km) is handled by
moving farther Gaussians in along their line of sight, reported in the caller's
`warnings` list. Which viewer reads which format and version: docs/formats.md.

    EXPORTERS["spz"].write(path, gaussians, f_px, image_size, warnings, ExportOptions())
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from .atomic import atomic_write
from .encodable import Encodable, Scene, encodable, round_half_away, to_u8, warn
from .ply import SH_C0, write_ply
from .settings import DEFAULT_SPZ_VERSION, SPZ_VERSIONS
from .share import write_share_page
from .sog import write_sog

SPZ_FRACTIONAL_BITS = 12
"""Positions in 1/4096 m steps (error at most 0.12 mm), as Niantic's writer uses."""
SPZ_LIMIT_M = ((1 << 23) - 1) / (1 << SPZ_FRACTIONAL_BITS)
"""The largest coordinate a signed 24-bit fixed-point value holds: 2047.9998 m."""
SPZ_COLOR_SCALE = 0.15
"""SPZ stores SH DC colour as `dc * 0.15 * 255 + 127.5` (not `SH_C0`): wider than [0, 1]."""
_SPZ_MAGIC = 0x5053474E
_SPZ_GZIP_LEVEL = 1
"""Fastest deflate: half the time of the usual 6, files about 1% larger."""
_SQRT1_2 = float(np.sqrt(0.5))
_ROTATION_MASK = (1 << 9) - 1
_OTHER_AXES = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])
"""For each largest-component index (xyzw order), the three stored, in ascending order."""
SPLAT_RECORD = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4),
                         ("rotation", "u1", 4)])
"""One `.splat` Gaussian: 32 bytes, no header."""


def _spz_within_range(values: Encodable, warnings: list[str] | None,
                      path: Path) -> Encodable:
    """Gaussians beyond SPZ's +-2048 m moved in along their ray from the camera.

    Beyond the range a 24-bit coordinate would wrap to the far side of the scene. A
    Gaussian at `k` times the distance with `k` times the size projects to exactly the same
    pixels from the photo's viewpoint (3DGS's projection is homogeneous in both), so the
    far background (sky, up to the depth models' 10 km clamp) looks the same; only its parallax
    when the viewer moves away from the camera is that of 2 km instead.
    """
    reach = np.abs(values.positions.astype(np.float64)).max(axis=1, initial=0.0)
    far = reach > SPZ_LIMIT_M
    if not far.any():
        return values
    warn(warnings, path, f"{int(far.sum())} of {far.size} Gaussians lie beyond SPZ's "
                          f"{SPZ_LIMIT_M:.0f} m range (farthest at {reach.max():.0f} m); moved "
                          "in to it along their line of sight, scaled to look the same")
    factor = np.where(far, SPZ_LIMIT_M / np.where(far, reach, 1.0), 1.0)
    return values._replace(positions=values.positions * factor[:, None],
                           log_scales=values.log_scales + np.log(factor)[:, None])


def _spz_positions(positions: np.ndarray) -> np.ndarray:
    """`(N, 9)` bytes: each coordinate as a little-endian signed 24-bit fixed-point value."""
    limit = (1 << 23) - 1
    fixed = np.clip(round_half_away(positions.astype(np.float64) * (1 << SPZ_FRACTIONAL_BITS)),
                    -limit, limit)
    as_bytes = fixed.astype("<i4").view(np.uint8).reshape(-1, 3, 4)[:, :, :3]
    return np.ascontiguousarray(as_bytes).reshape(-1, 9)


def _spz_rotations_v2(wxyz: np.ndarray) -> np.ndarray:
    """`(N, 3)` bytes: x, y, z of the quaternion made w-positive, each as `q * 127.5 + 127.5`
    (Niantic's version 2; the reader takes w as `sqrt(1 - x^2 - y^2 - z^2)`)."""
    sign = np.where(wxyz[:, :1] < 0, -1.0, 1.0)
    return to_u8(wxyz[:, 1:] * sign * 127.5 + 127.5)


def _spz_rotations(wxyz: np.ndarray) -> np.ndarray:
    """`(N, 4)` bytes, "smallest three": 2 bits name the largest component of the xyzw
    quaternion (made positive, so not stored), then 10 bits (sign, 9-bit magnitude over
    [0, 1/sqrt 2]) for each other component, the lowest index in the highest bits."""
    xyzw = np.roll(wxyz, -1, axis=1)
    largest = np.abs(xyzw).argmax(axis=1)
    rows = np.arange(xyzw.shape[0])
    xyzw = xyzw * np.where(xyzw[rows, largest] < 0, -1.0, 1.0)[:, None]
    others = xyzw[rows[:, None], _OTHER_AXES[largest]]
    magnitude = np.clip(round_half_away(np.abs(others) * (_ROTATION_MASK / _SQRT1_2)), 0,
                        _ROTATION_MASK)
    fields = (others < 0).astype(np.uint32) << 9 | magnitude.astype(np.uint32)
    packed = (largest.astype(np.uint32) << 30 | fields[:, 0] << 20 | fields[:, 1] << 10
              | fields[:, 2])
    return packed.astype("<u4").view(np.uint8).reshape(-1, 4)


def _spz_sections(values: Encodable, version: int) -> list[np.ndarray]:
    """The SPZ payload after its header, in file order: positions, alphas, colours, scales,
    rotations (SHARP has no higher spherical harmonics, so no SH section)."""
    rotations = _spz_rotations_v2 if version == 2 else _spz_rotations
    return [
        _spz_positions(values.positions),
        to_u8(values.opacities * 255.0),
        to_u8(values.colors_dc * (SPZ_COLOR_SCALE * 255.0) + 127.5),
        to_u8((values.log_scales + 10.0) * 16.0),
        rotations(values.rotations),
    ]


def write_spz(path: Path | str, gaussians: Scene, warnings: list[str] | None = None,
              version: int = DEFAULT_SPZ_VERSION) -> Path:
    """Write `gaussians` as SPZ `version` (one of `pipeline.settings.SPZ_VERSIONS`, the
    `spz_version` setting's; gzip, SH degree 0) to `path` atomically.

    Version 2 stores the quaternion's x, y, z (made w-positive) as a byte each and
    rebuilds w from unit length: read by every SPZ reader we checked, gaussian-splats-3d
    included (which rejects 3). Version 3 stores "smallest three" in 4 bytes, about 3x
    finer, but Spark and splat-transform are its only web readers of the four
    (docs/formats.md). Version 4 (zstd) is read by splat-transform alone.

    Lossy by design: positions to 1/4096 m, log scales to 1/16, colours and opacity to a
    byte, rotations to 9 bits per component (version 3) or a byte per x, y, z (version 2).
    What had to be changed to fit is appended to `warnings` (one line each, naming the file).
    """
    if version not in SPZ_VERSIONS:
        raise ValueError(f"SPZ version {version!r} cannot be written (versions: "
                         f"{', '.join(map(str, SPZ_VERSIONS))})")
    path = Path(path)
    values = _spz_within_range(encodable(gaussians, warnings, path), warnings, path)
    count = values.positions.shape[0]
    header = struct.pack("<IIIBBBB", _SPZ_MAGIC, version, count, 0, SPZ_FRACTIONAL_BITS, 0, 0)
    sections = _spz_sections(values, version)

    def write(out: BinaryIO) -> None:
        with gzip.GzipFile(filename="", mode="wb", compresslevel=_SPZ_GZIP_LEVEL, fileobj=out,
                           mtime=0) as stream:
            stream.write(header)
            for section in sections:
                stream.write(section.data)
    return atomic_write(path, write)


def _splat_records(values: Encodable) -> np.ndarray:
    """`(N, 32)` bytes of `.splat` records, most important (volume times opacity) first,
    as antimatter15's converter orders them: a viewer that draws while the file streams in
    shows the bulk of the scene first. Readers need no order (they sort by depth)."""
    records = np.empty(values.positions.shape[0], dtype=SPLAT_RECORD)
    records["position"] = values.positions
    records["scale"] = np.exp(values.log_scales)
    records["rgba"][:, :3] = to_u8((values.colors_dc * SH_C0 + 0.5) * 255.0)
    records["rgba"][:, 3] = to_u8(values.opacities * 255.0)
    records["rotation"] = to_u8(values.rotations * 128.0 + 128.0)
    importance = np.exp(values.log_scales.astype(np.float64).sum(axis=1)) * values.opacities
    order = np.argsort(-importance, kind="stable")
    return np.take(records.view(np.uint8).reshape(-1, SPLAT_RECORD.itemsize), order, axis=0)


def write_splat(path: Path | str, gaussians: Scene, warnings: list[str] | None = None) -> Path:
    """Write `gaussians` as a `.splat` (32 bytes each, no header) to `path` atomically.

    Positions and scales stay float32; colour and opacity are a byte each; rotations a
    byte per component (`q * 128 + 128`). The Gaussians are reordered (`_splat_records`).
    """
    path = Path(path)
    records = _splat_records(encodable(gaussians, warnings, path))

    def write(out: BinaryIO) -> None:
        out.write(records.data)
    return atomic_write(path, write)


class ExportOptions(NamedTuple):
    """What a writer needs beyond the Gaussians and the camera, from the photo's run."""

    spz_version: int = DEFAULT_SPZ_VERSION
    """The `spz_version` setting."""
    title: str = ""
    """The photo's name, which the share page shows (its file's name when empty)."""


Writer = Callable[[Path, Scene, float, tuple[int, int], list[str], ExportOptions], Path]
"""`(path, gaussians, f_px, (width, height), warnings, options) -> path`: one shape for
every format."""


class Exporter(NamedTuple):
    """One output format: the suffix its files take, and its writer."""

    suffix: str
    write: Writer


def _ply(path: Path, gaussians: Any, f_px: float, image_size: tuple[int, int],
         _: list[str], _options: ExportOptions) -> Path:
    return write_ply(path, gaussians, f_px, image_size)


def _spz(path: Path, gaussians: Scene, _f_px: float, _size: tuple[int, int],
         warnings: list[str], options: ExportOptions) -> Path:
    return write_spz(path, gaussians, warnings, options.spz_version)


def _splat(path: Path, gaussians: Scene, _f_px: float, _size: tuple[int, int],
           warnings: list[str], _options: ExportOptions) -> Path:
    return write_splat(path, gaussians, warnings)


def _sog(path: Path, gaussians: Scene, _f_px: float, _size: tuple[int, int],
         warnings: list[str], _options: ExportOptions) -> Path:
    return write_sog(path, gaussians, warnings)


def _html(path: Path, gaussians: Scene, f_px: float, image_size: tuple[int, int],
          warnings: list[str], options: ExportOptions) -> Path:
    return write_share_page(path, gaussians, f_px, image_size, options.title or path.stem,
                            warnings)


EXPORTERS: dict[str, Exporter] = {
    "ply": Exporter(".ply", _ply),
    "spz": Exporter(".spz", _spz),
    "splat": Exporter(".splat", _splat),
    "sog": Exporter(".sog", _sog),
    "html": Exporter(".html", _html),
}
"""Every format by the name a `formats = [...]` setting uses."""

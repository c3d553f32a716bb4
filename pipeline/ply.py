"""SHARP's PLY layout, written fast: no Python tuple per Gaussian, no full-size copy.

Byte for byte what `sharp.utils.gaussians.save_ply` writes (same elements, same float32
arithmetic in torch), without needing `sharp` installed. The derived columns (sRGB colour
as SH DC, opacity logits, log scales) are computed over whole arrays, op for op as
`save_ply` computes them: torch rounds a vectorised body and a scalar tail differently,
and where the tails fall depends on the array length, the CPU's vector width and the
thread split, so only the same ops on the same shapes give the same bits on every CPU and
for every N. The rows are then assembled and written in cache-sized chunks through one
reused buffer; the disparity quantiles come from a selection rather than a full sort,
with `torch.quantile`'s exact interpolation. Written with `atomic_write`, so a reader
never sees a partial file.

Read back by `check_splat` (is this our layout, and whole?) and `read_ply` (the vertex
columns exactly as stored, and the camera SHARP wrote after them), for the viewer and for
converting a PLY into the other formats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np
import torch

from .atomic import atomic_write

SH_C0 = math.sqrt(1.0 / (4.0 * math.pi))
_SRGB_THRESHOLD = 0.0031308
VERTEX_COLUMNS = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                  "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")
"""The vertex block's float32 columns, in file order."""
ROW_BYTES = 4 * len(VERTEX_COLUMNS)
LOG_SCALES = slice(7, 10)
"""The log-scale columns of a vertex row."""
MAX_HEADER_BYTES = 16 * 1024
_SRGB_COLOR_SPACE = 0
_VERSION = (1, 5, 0)
_CHUNK = 16384
"""Gaussians per chunk of rows assembled for the write: 0.9 MB, 72 writes for SHARP's
1,179,648 Gaussians. The fastest of 4,096 to 262,144 on a 2-core machine (0.13 s for the
66 MB against 0.15 s with 4,096), and each write lets another thread take the GIL."""


def _linear_to_srgb(linear: torch.Tensor) -> torch.Tensor:
    """SHARP's `linearRGB2sRGB`, op for op (in place on a fresh tensor)."""
    srgb = linear.clamp(min=_SRGB_THRESHOLD)
    srgb.pow_(1 / 2.4).mul_(1.055).sub_(0.055)
    return torch.where(linear <= _SRGB_THRESHOLD, linear * 12.92, srgb)


def stored_columns(g: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """SH DC colours, opacity logits and log scales over the whole arrays, as `save_ply`
    computes them (its `linearRGB2sRGB`, `convert_rgb_to_spherical_harmonics` and
    `_inverse_sigmoid`), so every element is rounded exactly as there."""
    opacities = g[4]
    return (_linear_to_srgb(g[3]).sub_(0.5).div_(SH_C0),
            torch.log(opacities / (1.0 - opacities)), torch.log(g[1]))


def _fill_rows(rows: torch.Tensor, g: tuple[torch.Tensor, ...],
               columns: tuple[torch.Tensor, ...], start: int = 0) -> torch.Tensor:
    """Vertex rows of Gaussians `start:start + len(rows)`: copies, no arithmetic."""
    stop = start + rows.shape[0]
    colors, opacity_logits, log_scales = columns
    rows[:, 0:3] = g[0][start:stop]
    rows[:, 3:6] = colors[start:stop]
    rows[:, 6] = opacity_logits[start:stop]
    rows[:, 7:10] = log_scales[start:stop]
    rows[:, 10:14] = g[2][start:stop]
    return rows


def flat_fields(gaussians: Any, device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
    """The five fields as contiguous float32 `(N, k)` tensors (`(N,)` for opacity)."""
    fields = (gaussians.mean_vectors, gaussians.singular_values, gaussians.quaternions,
              gaussians.colors, gaussians.opacities)
    flat = [f.detach().flatten(0, 1) for f in fields]
    return tuple(f.to(device, torch.float32).contiguous() for f in flat)


def _first_z(gaussians: Any, g: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Depths of the first batch item, which `save_ply`'s disparity quantiles use."""
    return g[0][: gaussians.mean_vectors.shape[1], 2]


@torch.inference_mode()
def vertex_rows(gaussians: Any) -> torch.Tensor:
    """`(N, 14)` float32 rows: xyz, SH DC of sRGB colour, opacity logit, log scales, wxyz."""
    g = flat_fields(gaussians)
    return _fill_rows(torch.empty((g[0].shape[0], 14), dtype=torch.float32), g, stored_columns(g))


def _header(count: int) -> bytes:
    lines = ["ply", "format binary_little_endian 1.0", f"element vertex {count}"]
    lines += [f"property float {name}" for name in VERTEX_COLUMNS]
    for element, count_, kind in (("extrinsic", 16, "float"), ("intrinsic", 9, "float"),
                                  ("image_size", 2, "uint"), ("frame", 2, "int"),
                                  ("disparity", 2, "float"), ("color_space", 1, "uchar"),
                                  ("version", 3, "uchar")):
        lines += [f"element {element} {count_}", f"property {kind} {element}"]
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


def disparity_quantiles(z: torch.Tensor) -> np.ndarray:
    """`torch.quantile(1 / z, [0.1, 0.9])` bit for bit, by selection instead of a sort."""
    disparity = 1.0 / z
    q = torch.tensor([0.1, 0.9], dtype=disparity.dtype, device=disparity.device)
    if disparity.device.type != "cpu" or not bool(torch.isfinite(disparity).all()):
        return torch.quantile(disparity, q).cpu().numpy()
    values = disparity.numpy()
    ranks = q.double() * (values.size - 1)
    below = ranks.to(torch.long).numpy()
    above = ranks.ceil().to(torch.long).numpy()
    picked = np.partition(values, np.unique(np.concatenate([below, above])))
    weight = (ranks - ranks.floor()).to(disparity.dtype)
    return torch.from_numpy(picked[below]).lerp_(torch.from_numpy(picked[above]), weight).numpy()


def _trailer(z: torch.Tensor, f_px: float, width: int, height: int, count: int) -> bytes:
    parts = (
        np.eye(4).astype("<f4"),
        np.array([f_px, 0, width * 0.5, 0, f_px, height * 0.5, 0, 0, 1]).astype("<f4"),
        np.array([width, height]).astype("<u4"),
        np.array([1, count]).astype("<i4"),
        disparity_quantiles(z).astype("<f4"),
        np.array([_SRGB_COLOR_SPACE], dtype="u1"),
        np.array(_VERSION, dtype="u1"),
    )
    return b"".join(p.tobytes() for p in parts)


_TRAILER_BYTES = 4 * (16 + 9 + 2 + 2 + 2) + 1 + len(_VERSION)
"""extrinsic, intrinsic, image_size, frame, disparity (4 bytes each), colour space, version."""


def ply_size(count: int) -> int:
    """The size in bytes of the PLY `write_ply` writes for `count` Gaussians."""
    return len(_header(count)) + count * 14 * 4 + _TRAILER_BYTES


def _write_vertices(out: BinaryIO, g: tuple[torch.Tensor, ...]) -> None:
    count = g[0].shape[0]
    columns = stored_columns(g)
    buffer = np.empty((min(count, _CHUNK), 14), dtype="<f4")
    rows = torch.from_numpy(buffer)
    for start in range(0, count, _CHUNK):
        size = min(_CHUNK, count - start)
        _fill_rows(rows[:size], g, columns, start)
        out.write(buffer[:size].data.cast("B"))


@torch.inference_mode()
def ply_bytes(gaussians: Any, f_px: float, image_size: tuple[int, int]) -> tuple[bytes, np.ndarray,
                                                                                bytes]:
    """Header, `(N, 14)` vertex block and trailer, computed on the Gaussians' own device.

    On a GPU this is the fast way: the math takes milliseconds there, and a writer
    thread then only needs `write_ply_bytes` (no GPU call that would wait behind the
    next photo's work). `image_size` is `(width, height)`.
    """
    width, height = image_size
    g = flat_fields(gaussians, gaussians.mean_vectors.device)
    count = g[0].shape[0]
    rows = torch.empty((count, 14), dtype=torch.float32, device=g[0].device)
    vertices = _fill_rows(rows, g, stored_columns(g)).cpu().numpy()
    return _header(count), vertices, _trailer(_first_z(gaussians, g), f_px, width, height,
                                              count)


def write_ply_bytes(path: Path | str, parts: tuple[bytes, np.ndarray, bytes]) -> Path:
    """Write what `ply_bytes` returned to `path` atomically."""
    header, vertices, trailer = parts

    def write(out: BinaryIO) -> None:
        out.write(header)
        out.write(np.ascontiguousarray(vertices, dtype="<f4").data.cast("B"))
        out.write(trailer)
    return atomic_write(path, write)


@torch.inference_mode()
def write_ply(path: Path | str, gaussians: Any, f_px: float, image_size: tuple[int, int]) -> Path:
    """Write `gaussians` (SHARP's `Gaussians3D` or ours) to `path` atomically.

    `image_size` is `(width, height)` of the original photo. Overwrites `path` if it
    exists: a name that never collides is the caller's to choose. GPU tensors are
    converted on the GPU (`ply_bytes`); CPU tensors chunk by chunk with no full-size copy.
    """
    if gaussians.mean_vectors.device.type != "cpu":
        return write_ply_bytes(path, ply_bytes(gaussians, f_px, image_size))
    width, height = image_size
    g = flat_fields(gaussians)
    count = g[0].shape[0]

    def write(out: BinaryIO) -> None:
        out.write(_header(count))
        _write_vertices(out, g)
        out.write(_trailer(_first_z(gaussians, g), f_px, width, height, count))
    return atomic_write(path, write)


# ---------------------------------------------------------------- reading it back

_TYPE_BYTES = {"char": 1, "uchar": 1, "int8": 1, "uint8": 1, "short": 2, "ushort": 2,
               "int16": 2, "uint16": 2, "int": 4, "uint": 4, "int32": 4, "uint32": 4,
               "float": 4, "float32": 4, "double": 8, "float64": 8}
_TYPE_DTYPES = {"float": "<f4", "float32": "<f4", "uint": "<u4", "uint32": "<u4"}
CAMERA_ELEMENTS = {"intrinsic": ("float", 9), "image_size": ("uint", 2)}
"""The elements after the vertex block that `read_ply` needs (type of their one property,
count): the focal length and the photo's size, which place the photo's viewpoint."""


class SplatError(ValueError):
    """The file is not a PLY in our layout; the message names the file and the problem."""


@dataclass(frozen=True)
class Element:
    """An element after the vertex block: its name, count (-1 if unreadable) and the types
    of its properties."""

    name: str
    count: int
    types: tuple[str, ...] = ()


@dataclass(frozen=True)
class SplatFile:
    """A checked PLY: its header, vertex count and the elements after the vertex block."""

    path: Path
    header: bytes
    count: int
    trailer: tuple[Element, ...] = ()

    @property
    def size(self) -> int:
        """Bytes the file must hold: header and vertex block (the camera elements follow)."""
        return len(self.header) + self.count * ROW_BYTES


def _parse_header(path: Path, header: bytes) -> tuple[int, tuple[Element, ...]]:
    """The header's vertex count and later elements, after checking the header is ours."""
    lines = header.decode("ascii", errors="replace").split("\n")
    if not lines or lines[0].strip() != "ply":
        raise SplatError(f"{path}: not a PLY file (it does not start with 'ply')")
    if "format binary_little_endian 1.0" not in (line.strip() for line in lines):
        raise SplatError(f"{path}: only binary little-endian PLYs are supported")
    count: int | None = None
    properties: list[str] = []
    trailer: list[Element] = []
    for line in lines[1:]:
        words = line.split()
        if words[:2] == ["element", "vertex"] and len(words) == 3 and count is None:
            if trailer:
                raise SplatError(f"{path}: element {trailer[0].name!r} comes before the "
                                 "vertices; SHARP's PLYs start with them")
            count = int(words[2]) if words[2].isdigit() else None
        elif words[:1] == ["element"]:
            size = int(words[2]) if len(words) == 3 and words[2].isdigit() else -1
            trailer.append(Element(words[1] if len(words) > 1 else "", size))
        elif words[:1] == ["property"] and trailer:
            last = trailer[-1]
            trailer[-1] = Element(last.name, last.count, (*last.types, *words[1:2]))
        elif words[:1] == ["property"]:
            if words[1:2] != ["float"]:
                raise SplatError(f"{path}: vertex property {' '.join(words[1:])!r} is not "
                                 "float; this is not a Gaussian splat PLY")
            properties.append(words[-1])
    if count is None:
        raise SplatError(f"{path}: no 'element vertex <count>' line in the header")
    if tuple(properties) != VERTEX_COLUMNS:
        raise SplatError(f"{path}: vertex columns are {', '.join(properties) or 'none'}; "
                         f"expected SHARP's {', '.join(VERTEX_COLUMNS)}")
    return count, tuple(trailer)


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
    found = SplatFile(path, header, *_parse_header(path, header))
    f.seek(0, 2)
    held = (f.tell() - len(header)) // ROW_BYTES
    if held < found.count:
        raise SplatError(f"{path}: the header promises {found.count} Gaussians but the file "
                         f"holds {held}; it is truncated")
    return found


def vertex_block(splat: SplatFile, f: BinaryIO) -> np.ndarray:
    """The `(N, 14)` float32 vertex columns of a checked file, as stored."""
    f.seek(len(splat.header))
    rows = np.fromfile(f, dtype="<f4", count=splat.count * len(VERTEX_COLUMNS))
    return rows.reshape(splat.count, len(VERTEX_COLUMNS))


class PlyScene(NamedTuple):
    """A PLY in SHARP's layout, read back: what every export is made from."""

    rows: np.ndarray
    """`(N, 14)` float32 vertex columns exactly as stored (`VERTEX_COLUMNS`)."""
    f_px: float
    image_size: tuple[int, int]
    """`(width, height)` of the photo."""


def _camera(splat: SplatFile, f: BinaryIO) -> tuple[float, tuple[int, int]]:
    """Focal length and photo size from the elements after the vertex block; raises
    `SplatError` naming what is missing."""
    offsets: dict[str, int] = {}
    offset = splat.size
    for element in splat.trailer:
        if element.name in CAMERA_ELEMENTS and element.types == (
                CAMERA_ELEMENTS[element.name][0],):
            offsets[element.name] = offset
        widths = [_TYPE_BYTES.get(kind, -1) for kind in element.types]
        if element.count < 0 or min(widths, default=0) < 0:
            break  # a list or an unknown type: nothing after it can be located
        offset += element.count * sum(widths)
    missing = [f"{name} ({count} {kind})" for name, (kind, count) in CAMERA_ELEMENTS.items()
               if name not in offsets]
    if missing:
        raise SplatError(f"{splat.path}: no {' or '.join(missing)} element after the "
                         "Gaussians; SHARP's PLYs carry the photo's camera there, which "
                         "places the photo's own viewpoint")
    values = {}
    for name, (kind, count) in CAMERA_ELEMENTS.items():
        f.seek(offsets[name])
        values[name] = np.fromfile(f, dtype=_TYPE_DTYPES[kind], count=count)
        if values[name].size < count:
            raise SplatError(f"{splat.path}: the {name} element is cut short; it is truncated")
    f_px, (width, height) = float(values["intrinsic"][0]), values["image_size"].tolist()
    if not (math.isfinite(f_px) and f_px > 0 and width > 0 and height > 0):
        raise SplatError(f"{splat.path}: its camera is not usable (focal length {f_px!r} px, "
                         f"image size {width}x{height})")
    return f_px, (int(width), int(height))


def read_ply(path: Path | str) -> PlyScene:
    """The PLY at `path` (SHARP's layout, as `write_ply` or SHARP's `save_ply` write it):
    its vertex columns exactly as stored, its focal length and photo size. Raises
    `SplatError` naming the file and what is missing, OSError where it cannot be read."""
    path = Path(path)
    with open(path, "rb") as f:
        splat = check_splat(path, f)
        f_px, size = _camera(splat, f)
        return PlyScene(vertex_block(splat, f), f_px, size)

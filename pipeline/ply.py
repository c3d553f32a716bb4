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
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from .atomic import atomic_write

SH_C0 = math.sqrt(1.0 / (4.0 * math.pi))
_SRGB_THRESHOLD = 0.0031308
_VERTEX_PROPERTIES = (
    ["x", "y", "z"] + [f"f_dc_{i}" for i in range(3)] + ["opacity"]
    + [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)]
)
_SRGB_COLOR_SPACE = 0
_VERSION = (1, 5, 0)
_CHUNK = 4096
"""Gaussians per chunk of rows assembled for the write: 229 KB, which stays in cache."""


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
    lines += [f"property float {name}" for name in _VERTEX_PROPERTIES]
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

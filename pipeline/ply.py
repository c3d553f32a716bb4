"""SHARP's PLY layout, written fast: one header string and one array write.

Byte for byte what `sharp.utils.gaussians.save_ply` writes (same elements, same float32
arithmetic, done in torch on the Gaussians' own device), without a Python tuple per
Gaussian and without needing `sharp` installed. Written to a temporary name and
renamed, so a reader never sees a partial file.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import OutputError

_SH_C0 = math.sqrt(1.0 / (4.0 * math.pi))
_VERTEX_PROPERTIES = (
    ["x", "y", "z"] + [f"f_dc_{i}" for i in range(3)] + ["opacity"]
    + [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)]
)
_SRGB_COLOR_SPACE = 0
_VERSION = (1, 5, 0)


def _linear_to_srgb(linear: torch.Tensor) -> torch.Tensor:
    return torch.where(linear <= 0.0031308, linear * 12.92,
                       1.055 * linear.clamp(min=0.0031308) ** (1 / 2.4) - 0.055)


def vertex_rows(gaussians: Any) -> torch.Tensor:
    """`(N, 14)` float32 rows: xyz, SH DC of sRGB colour, opacity logit, log scales, wxyz."""
    xyz = gaussians.mean_vectors.flatten(0, 1)
    scale_logits = torch.log(gaussians.singular_values).flatten(0, 1)
    quaternions = gaussians.quaternions.flatten(0, 1)
    colors = (_linear_to_srgb(gaussians.colors.flatten(0, 1)) - 0.5) / _SH_C0
    opacities = gaussians.opacities
    opacity_logits = torch.log(opacities / (1.0 - opacities)).flatten(0, 1).unsqueeze(-1)
    return torch.cat((xyz, colors, opacity_logits, scale_logits, quaternions), dim=1).float()


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


def _trailer(gaussians: Any, f_px: float, width: int, height: int, count: int) -> bytes:
    disparity = 1.0 / gaussians.mean_vectors[0, ..., -1]
    quantiles = torch.quantile(disparity, q=torch.tensor([0.1, 0.9], device=disparity.device))
    parts = (
        np.eye(4).astype("<f4"),
        np.array([f_px, 0, width * 0.5, 0, f_px, height * 0.5, 0, 0, 1]).astype("<f4"),
        np.array([width, height]).astype("<u4"),
        np.array([1, count]).astype("<i4"),
        quantiles.float().cpu().numpy().astype("<f4"),
        np.array([_SRGB_COLOR_SPACE], dtype="u1"),
        np.array(_VERSION, dtype="u1"),
    )
    return b"".join(p.tobytes() for p in parts)


@torch.inference_mode()
def ply_bytes(gaussians: Any, f_px: float, image_size: tuple[int, int]) -> tuple[bytes, np.ndarray,
                                                                                bytes]:
    """Header, vertex block and trailer; `image_size` is `(width, height)` of the photo."""
    width, height = image_size
    rows = vertex_rows(gaussians)
    count = rows.shape[0]
    vertices = rows.cpu().numpy().astype("<f4", copy=False)
    return _header(count), vertices, _trailer(gaussians, f_px, width, height, count)


def write_ply(path: Path | str, gaussians: Any, f_px: float, image_size: tuple[int, int]) -> Path:
    """Write `gaussians` (SHARP's `Gaussians3D` or ours) to `path` atomically.

    `image_size` is `(width, height)` of the original photo. Overwrites `path` if it
    exists; use `pipeline.naming` for names that never collide.
    """
    path = Path(path)
    header, vertices, trailer = ply_bytes(gaussians, f_px, image_size)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as out:
            out.write(header)
            out.write(memoryview(np.ascontiguousarray(vertices)).cast("B"))
            out.write(trailer)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write PLY ({exc.strerror or exc})", path) from exc
    return path

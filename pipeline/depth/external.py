"""External depth maps from `.npy` files: found per photo, read without unpickling, checked.

The header is read first, so an absurd shape or a pickled object array is refused
before any data is loaded; `np.load` is only ever called with `allow_pickle=False`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError

MAX_SIDE = 16384
MAX_VALUES = 64 * 1024 * 1024


def resolve_depth_path(external: Path, image_path: Path) -> Path | None:
    """A file is used for every photo; a folder is searched for `<photo stem>.npy`."""
    external = Path(external)
    if external.is_dir():
        match = external / f"{Path(image_path).stem}.npy"
        return match if match.is_file() else None
    if not external.exists():
        raise InputError("external depth file not found", external)
    return external


def load_depth_npy(path: Path) -> np.ndarray:
    """A finite, non-negative 2-D float32 map from `path`, or `InputError` saying what is wrong."""
    path = Path(path)
    if path.suffix.lower() != ".npy":
        raise InputError("external depth must be a .npy file", path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                      else np.lib.format.read_array_header_2_0)
            shape, _, dtype = reader(f)
    except FileNotFoundError as exc:
        raise InputError("external depth file not found", path) from exc
    except (ValueError, OSError, SyntaxError, EOFError) as exc:
        raise InputError(f"not a valid .npy file ({exc})", path) from exc
    _check_header(path, tuple(shape), np.dtype(dtype))
    try:
        data = np.load(path, allow_pickle=False, mmap_mode=None)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"depth map could not be read ({exc}); the file may be truncated",
                         path) from exc
    depth = np.asarray(data, dtype=np.float32).reshape(_squeezed(shape))
    if not np.isfinite(depth).all():
        bad = int((~np.isfinite(depth)).sum())
        raise InputError(f"depth map has {bad} NaN or infinite values", path)
    if (depth < 0).any():
        raise InputError(f"depth map has negative values (min {float(depth.min()):.4g}); "
                         "depth must be >= 0", path)
    if float(depth.max()) <= 0:
        raise InputError("depth map is all zeros", path)
    return depth


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(n for n in shape if n != 1) or (1,)


def _check_header(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
    if dtype.hasobject:
        raise InputError("depth map holds Python objects (a pickled array); refused for safety",
                         path)
    if dtype.kind not in "fiu":
        raise InputError(f"depth map has dtype {dtype}; expected float or integer values", path)
    dims = _squeezed(shape)
    if len(dims) != 2:
        raise InputError(f"depth map has shape {shape}; expected one 2-D map (H, W)", path)
    height, width = dims
    if min(height, width) < 2 or max(height, width) > MAX_SIDE or height * width > MAX_VALUES:
        raise InputError(f"depth map size {width}x{height} is out of range "
                         f"(2..{MAX_SIDE} per side, at most {MAX_VALUES // (1 << 20)} M values)",
                         path)

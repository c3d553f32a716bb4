"""External depth maps from `.npy` files: found per photo, read without unpickling, checked.

Only a regular file is opened (a FIFO cannot hang the reader), and with a folder to stay
within, only one inside it, checked on the open file. The header is read first,
so an absurd shape, a pickled object array or a file shorter than its header promises is
refused before any data is allocated; the data is then read from the same open file (no
second open that could see a swapped file) and never with pickling allowed.
"""

from __future__ import annotations

import math
import os
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import InputError
from ..image import open_regular_file

MAX_SIDE = 16384
MAX_VALUES = 64 * 1024 * 1024
ASPECT_TOLERANCE = 0.03  # a map stretched less than this to fit the photo gets no warning
TRANSPOSED_MISMATCH = 0.10  # a map this far off, and matching the photo turned, is refused
# What numpy's header parser (a literal_eval of untrusted text) can raise on hostile bytes.
_HEADER_ERRORS = (ValueError, OSError, SyntaxError, EOFError, TypeError, tokenize.TokenError,
                  RecursionError, MemoryError)


def resolve_depth_path(external: Path, image_path: Path) -> Path | None:
    """A file is used for every photo; a folder is searched for `<photo stem>.npy`."""
    external = Path(external)
    if external.is_dir():
        match = external / f"{Path(image_path).stem}.npy"
        return match if match.is_file() else None
    if not external.exists():
        raise InputError("external depth file not found", external)
    return external


@dataclass(frozen=True)
class NpyMap:
    """A photo's external `.npy`, found and read where the files are (a remote GPU worker
    gets this instead of the daemon's paths); `path` None: the folder has no match."""

    path: Path | None
    values: np.ndarray | None


def read_npy_for(external: Path, image_path: Path, within: Path | None = None) -> NpyMap:
    """The `.npy` for a photo (`resolve_depth_path`), read and checked (`load_depth_npy`)."""
    path = resolve_depth_path(external, image_path)
    return NpyMap(path, None if path is None else load_depth_npy(path, within))


def load_depth_npy(path: Path, within: Path | None = None) -> np.ndarray:
    """A finite, non-negative 2-D float32 map from `path`, or `InputError` saying what is wrong.

    With `within`, a map reached through a link leading outside that folder is refused.
    """
    path = Path(path)
    if path.suffix.lower() != ".npy":
        raise InputError("external depth must be a .npy file", path)
    try:
        with open_regular_file(path, within) as f:
            shape, dtype, offset = _read_header(path, f)
            _check_header(path, shape, dtype)
            _check_length(path, os.fstat(f.fileno()).st_size - offset, shape, dtype)
            f.seek(0)
            data = np.lib.format.read_array(f, allow_pickle=False)
    except InputError:
        raise
    except FileNotFoundError as exc:
        raise InputError("external depth file not found", path) from exc
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"depth map could not be read ({exc}); the file may be truncated",
                         path) from exc
    with np.errstate(over="ignore", invalid="ignore"):
        depth = np.asarray(data, dtype=np.float32).reshape(_squeezed(shape))
    if not np.isfinite(depth).all():
        bad = int((~np.isfinite(depth)).sum())
        raise InputError(f"depth map has {bad} NaN or infinite values (after conversion to "
                         "float32)", path)
    if (depth < 0).any():
        raise InputError(f"depth map has negative values (min {float(depth.min()):.4g}); "
                         "depth must be >= 0", path)
    if float(depth.max()) <= 0:
        raise InputError("depth map is all zeros", path)
    return depth


def check_aspect(shape: tuple[int, ...], photo_size: tuple[int, int], path: Path) -> str | None:
    """A warning when the map must be stretched to the upright photo's aspect ratio.

    A map shaped like the photo turned by 90 degrees (its EXIF rotation forgotten) is
    refused: stretched onto the photo, every depth would land in the wrong place.
    """
    height, width = shape
    photo_width, photo_height = photo_size
    ours, photo = width / height, photo_width / photo_height
    off = _mismatch(ours, photo)
    if off <= ASPECT_TOLERANCE:
        return None
    sizes = f"depth map is {width}x{height} but the photo is {photo_width}x{photo_height}"
    if off > TRANSPOSED_MISMATCH and _mismatch(ours, 1.0 / photo) <= ASPECT_TOLERANCE:
        raise InputError(f"{sizes} once its EXIF orientation is applied: the map is turned by "
                         "90 degrees; rotate it to match the upright photo", path)
    return f"{path.name}: {sizes}; the map was stretched by {off:.0%} to fit the photo"


def _mismatch(a: float, b: float) -> float:
    return max(a, b) / min(a, b) - 1.0


def _read_header(path: Path, f: BinaryIO) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and where the data starts, from the header alone."""
    try:
        version = np.lib.format.read_magic(f)
        reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                  else np.lib.format.read_array_header_2_0)
        shape, _, dtype = reader(f)
    except _HEADER_ERRORS as exc:
        raise InputError(f"not a valid .npy file ({type(exc).__name__}: {exc})", path) from exc
    return tuple(shape), np.dtype(dtype), f.tell()


def _check_length(path: Path, available: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Refuse a file shorter than its header promises before numpy allocates for it."""
    needed = math.prod(shape) * dtype.itemsize
    if available < needed:
        raise InputError(f"depth map is truncated: its header declares {needed} bytes of data "
                         f"but the file holds only {max(available, 0)}", path)


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

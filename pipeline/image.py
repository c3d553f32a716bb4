"""Photo decoding: any common format to an upright 8-bit RGB array plus its EXIF focal.

Follows SHARP's own loader where it matters for geometry (EXIF orientation, the
35 mm-equivalent focal and its <10 mm heuristic) and is stricter where SHARP is not:
every failure becomes an `InputError` naming the file, and the pixel count is capped
before any pixel is decoded.
"""

from __future__ import annotations

import math
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pillow_heif
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from .errors import InputError

pillow_heif.register_heif_opener()

SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".heic", ".heif", ".webp", ".tif", ".tiff"}
)
DEFAULT_MAX_PIXELS = 120_000_000
_DIAGONAL_35MM = math.hypot(36.0, 24.0)
_EXIF_IFD = 0x8769
FD_FOLDER = Path("/proc/self/fd")  # Linux: each open descriptor as a link to its file


@dataclass(frozen=True)
class LoadedImage:
    """An upright RGB photo and what its EXIF says about the lens."""

    path: Path
    rgb: np.ndarray
    exif_focal_35mm: float | None

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


def focal_mm_to_px(focal_35mm: float, width: int, height: int) -> float:
    """35 mm-equivalent focal length to pixels, over the image diagonal (as SHARP does)."""
    return float(focal_35mm * math.hypot(width, height) / _DIAGONAL_35MM)


def exif_focal_35mm(image: Image.Image) -> float | None:
    """Focal length as SHARP reads it: 35 mm tag, else the lens focal (x8.4 under 10 mm)."""
    exif = image.getexif()
    tags = {ExifTags.TAGS.get(k, k): v for k, v in exif.items()}
    tags.update({ExifTags.TAGS.get(k, k): v for k, v in exif.get_ifd(_EXIF_IFD).items()})
    f35 = _positive(tags.get("FocalLengthIn35mmFilm"))
    if f35 is not None and f35 >= 1:
        return f35
    focal = _positive(tags.get("FocalLength"))
    if focal is None:
        return None
    return focal * 8.4 if focal < 10.0 else focal


def _positive(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def load_image(path: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS,
               within: Path | None = None) -> LoadedImage:
    """Decode `path` to upright uint8 RGB; raise `InputError` with the reason otherwise.

    With `within`, a photo that is (or sits in a folder that is) a link leading outside
    that folder is refused when it is opened (see `open_regular_file`).
    """
    path = Path(path)
    if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
        raise InputError(
            f"unsupported file type {path.suffix or '(none)'}; "
            f"use one of {', '.join(sorted(SUPPORTED_EXTENSIONS))}",
            path,
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with open_regular_file(path, within) as raw, Image.open(raw) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise InputError(
                        f"image is {width}x{height} = {width * height / 1e6:.0f} MP, over the "
                        f"limit of {max_pixels / 1e6:.0f} MP (max_pixels)",
                        path,
                    )
                image.load()
                focal = exif_focal_35mm(image)
                rgb = _to_rgb(ImageOps.exif_transpose(image))
    except InputError:
        raise
    except FileNotFoundError as exc:
        raise InputError("file not found (deleted or moved before it could be read)", path) from exc
    except PermissionError as exc:
        raise InputError("file cannot be opened for reading (locked or no permission)",
                         path) from exc
    except Image.DecompressionBombError as exc:
        raise InputError(f"image declares too many pixels: {exc}", path) from exc
    except UnidentifiedImageError as exc:
        raise InputError("not a readable image (corrupt, empty or not an image file)",
                         path) from exc
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError, RuntimeError) as exc:
        # RuntimeError: libheif (via pillow_heif) reports corrupt or over-limit HEIC files so.
        raise InputError(f"image could not be decoded ({exc}); it may be truncated or corrupt",
                         path) from exc
    if rgb.shape[0] < 2 or rgb.shape[1] < 2:
        raise InputError(f"image is only {rgb.shape[1]}x{rgb.shape[0]} pixels", path)
    return LoadedImage(path=path, rgb=rgb, exif_focal_35mm=focal)


def open_regular_file(path: Path, within: Path | None = None) -> BinaryIO:
    """Open `path` for reading, refusing anything but a regular file (and, with `within`,
    anything that is not inside that folder).

    On POSIX the file is opened with `O_NONBLOCK`, so a FIFO named like a photo (or a
    sidecar pointing at one) cannot hang the caller before the check refuses it; the
    flag has no effect on reads of a regular file, so it is left set (`os.set_blocking`
    is missing on Windows before Python 3.12 and fails on disk files after). Windows has
    no FIFOs in its file namespace and no `O_NONBLOCK`: there it is a plain open.

    `within` is checked against the file actually opened, after the open, so a file
    swapped for a link between any earlier check and this call is still caught.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            raise InputError("not a regular file (a pipe, device or folder)", path)
        if within is not None:
            _check_within(Path(path), opened, _real_path(fd, path), within)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _real_path(fd: int, path: Path) -> Path:
    """Where the open file really is, every link and junction resolved.

    Linux names the file behind a descriptor in `/proc/self/fd`; elsewhere (Windows,
    macOS) the path is resolved again, and `_check_within` makes sure that resolution
    still leads to the very file that was opened.
    """
    try:
        return Path(os.readlink(FD_FOLDER / str(fd)))
    except OSError:
        return Path(os.path.realpath(path))


def _check_within(path: Path, opened: os.stat_result, real: Path, within: Path) -> None:
    """Refuse the open file unless `real` is it (same device and inode) and lies in `within`."""
    try:
        same = os.path.samestat(os.stat(real), opened)
    except (OSError, ValueError):
        same = False
    if not same:
        raise InputError("the file was replaced while it was being opened (by a link, "
                         "perhaps); refused", path)
    if not real.is_relative_to(os.path.realpath(within)):
        raise InputError(f"is a link to a file outside {within} (a symbolic link, junction or "
                         "linked folder); refused: only files inside that folder are read", path)


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode to contiguous uint8 RGB; 16/32-bit data is scaled, not clipped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        data = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or data.max(initial=0) > 255 else 255.0
        grey = np.clip(np.round(data * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.array(image, dtype=np.uint8, order="C")

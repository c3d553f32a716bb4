"""Photos shrunk for the pages: decoded at reduced size, within a memory budget.

A 24 MP photo decoded whole is 72 MB of pixels, and a gallery asks for many at once. So a
JPEG is decoded straight at 1/2, 1/4 or 1/8 of its size (libjpeg's DCT scaling, Pillow's
`draft`), the smallest that still covers twice the thumbnail; other formats cannot be
decoded smaller and are reduced after. Before any pixel is decoded, the header's size is
checked (`MAX_PIXELS`), and each decode first takes its pixel count from one budget shared
by all threads (`DECODE_BUDGET_PIXELS`), so what the viewer decodes at once stays bounded
whatever the pages ask for.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps

from pipeline import InputError
from pipeline.image import DEFAULT_MAX_PIXELS

MAX_PIXELS = DEFAULT_MAX_PIXELS
"""A photo the daemon would refuse is not decoded for a thumbnail either."""
DECODE_BUDGET_PIXELS = 48_000_000
"""Pixels being decoded at once, all threads together: two 24 MP photos that cannot be
decoded smaller (150 to 200 MB), or one photo of up to `MAX_PIXELS` alone."""
REDUCING_GAP = 2.0
"""Decode at least this many times the thumbnail's size, then resample (Pillow's advice)."""


class PixelBudget:
    """A counting semaphore in pixels: `take(n)` waits until `n` more fit in the budget (a
    decode larger than the whole budget waits until it is alone)."""

    def __init__(self, pixels: int) -> None:
        self.pixels = pixels
        self.used = 0
        self.peak = 0
        """The most pixels ever in use at once (for tests and the bench)."""
        self._free = threading.Condition()

    def take(self, n: int) -> None:
        with self._free:
            self._free.wait_for(lambda: self.used == 0 or self.used + n <= self.pixels)
            self.used += n
            self.peak = max(self.peak, self.used)

    def give(self, n: int) -> None:
        with self._free:
            self.used -= n
            self._free.notify_all()


BUDGET = PixelBudget(DECODE_BUDGET_PIXELS)


def decode_small(raw: BinaryIO, photo: Path, size: int) -> Image.Image:
    """The picture in the open file `raw` (named `photo` in messages) as upright RGB, at
    most `size` pixels wide and high. Raises InputError, OSError or ValueError (Pillow's
    own errors for a damaged file) naming nothing secret."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with _opened(raw, photo) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise InputError(f"image is {width}x{height}, over the limit of "
                                 f"{MAX_PIXELS / 1e6:.0f} MP", photo)
            scale = min(size / width, size / height, 1.0) * REDUCING_GAP
            wanted = (max(1, round(width * scale)), max(1, round(height * scale)))
            image.draft("RGB", wanted)  # JPEG: decoded at 1/2..1/8 of its size; others: no-op
            pixels = image.size[0] * image.size[1]
            BUDGET.take(pixels)
            try:
                image.thumbnail((size, size), reducing_gap=REDUCING_GAP)
            finally:
                BUDGET.give(pixels)
            return ImageOps.exif_transpose(image).convert("RGB")


def _opened(raw: BinaryIO, photo: Path) -> Image.Image:
    """The image's header, read (its pixels are not decoded yet)."""
    try:
        return Image.open(raw)
    except Image.DecompressionBombError as exc:
        raise InputError(f"image declares too many pixels ({exc})", photo) from None

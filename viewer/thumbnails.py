"""Small pictures of photos and depth previews: made once, kept, and kept by the browser.

The gallery shows two pictures per result; sent whole, 3,000 results were 6,000 full-size
photos and previews on one page. A thumbnail is decoded at reduced size (a JPEG's DCT
scaling decodes a 24-megapixel photo at an eighth of its size, without the full-size
pixels ever existing), encoded as a small JPEG, and kept in memory, least recently used
first out, up to `MAX_CACHE_BYTES` (never on disk, and never in the outputs folder the user
browses). Its ETag is the source file's size and mtime, so the browser revalidates for the
price of a `stat`.
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from pipeline.image import open_regular_file

from .decoding import decode_small

SIZES = (256, 640)
"""Long sides offered: the gallery's cards, the viewer's side panel."""
GALLERY_SIZE, PANEL_SIZE = SIZES
MAX_CACHE_BYTES = 32 * 1024 * 1024
"""About 3,000 gallery thumbnails (10 kB each) or 600 side-panel ones."""
QUALITY = 82


@dataclass(frozen=True)
class Thumbnail:
    data: bytes
    """A JPEG; empty when the browser already has this one (`ThumbnailCache.get`)."""
    etag: str


class ThumbnailCache:
    """Thumbnails by (file, size, signature), least recently used dropped first."""

    def __init__(self, max_bytes: int = MAX_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, int, int, int], Thumbnail] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, path: Path, within: Path, max_side: int,
            browser_etag: str | None = None) -> Thumbnail:
        """The thumbnail of `path`, opened only as a regular file inside `within`; with no
        data (nothing decoded) when `browser_etag` (its If-None-Match) is still current.

        Raises OSError, `pipeline.InputError` (not a regular file, or outside `within`)
        or ValueError (not a picture Pillow reads).
        """
        with open_regular_file(path, within) as f:
            st = os.fstat(f.fileno())
            etag = f'"{max_side}-{st.st_size:x}-{st.st_mtime_ns:x}"'
            if etag == browser_etag:
                return Thumbnail(b"", etag)
            key = (str(path), max_side, st.st_size, st.st_mtime_ns)
            with self._lock:
                found = self._items.get(key)
                if found is not None:
                    self._items.move_to_end(key)
                    return found
            image = decode_small(f, path, max_side)
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=QUALITY)
        thumbnail = Thumbnail(out.getvalue(), etag)
        with self._lock:
            if key not in self._items:
                self._items[key] = thumbnail
                self._bytes += len(thumbnail.data)
            while self._bytes > self.max_bytes and len(self._items) > 1:
                self._bytes -= len(self._items.popitem(last=False)[1].data)
        return thumbnail

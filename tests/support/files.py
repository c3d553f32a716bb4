"""Files a user writes beside the photos: a sidecar saved the way editors save it, a
config.toml, a depth map's bytes. (Photos themselves: `write_photo` in tests/conftest.py.)"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

EXAMPLE_PHOTO = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "example.jpg"
"""A real phone photo (4032 x 3024, EXIF focal), in the steering repository's shared/ folder
beside this checkout (CI clones it there)."""


def save_sidecar(path: Path, text: str) -> Path:
    """`text` written to a hidden temp name and renamed into place, so the daemon never sees
    it half-written (the folder is made if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_config(folder: Path, text: str) -> Path:
    """`text` as `folder/config.toml`."""
    path = folder / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def npy_bytes(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    """The bytes of a `.npy` file holding `array` (`allow_pickle` for object arrays, as a
    hostile depth map would be written)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()

"""Photo decoding: formats, orientation, focal from EXIF, odd modes, and every bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import InputError, load_image
from pipeline.image import focal_mm_to_px
from tests.support.files import EXAMPLE_PHOTO


def _photo(width: int = 40, height: int = 30) -> Image.Image:
    ramp = np.linspace(0, 255, width * height * 3).reshape(height, width, 3)
    return Image.fromarray(ramp.astype(np.uint8))


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif", ".heic"])
def test_every_supported_format_decodes_to_rgb(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"photo{suffix}"
    _photo().save(path)
    image = load_image(path)
    assert image.rgb.shape == (30, 40, 3)
    assert image.rgb.dtype == np.uint8
    assert abs(float(image.rgb.mean()) - 127.5) < 6


def test_example_photo_has_no_exif_focal() -> None:
    image = load_image(EXAMPLE_PHOTO)
    assert (image.width, image.height) == (3024, 2268)
    assert image.exif_focal_35mm is None


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    _photo(40, 30).save(path, exif=exif)
    assert load_image(path).rgb.shape == (40, 30, 3)


def test_focal_35mm_tag_wins_and_small_lens_focal_is_scaled(tmp_path: Path) -> None:
    exif = Image.Exif()
    ifd = exif.get_ifd(0x8769)
    ifd[0xA405] = 50
    ifd[0x920A] = 4.2
    path = tmp_path / "f35.jpg"
    _photo().save(path, exif=exif)
    assert load_image(path).exif_focal_35mm == 50

    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x920A] = 4.0
    path = tmp_path / "phone.jpg"
    _photo().save(path, exif=exif)
    assert load_image(path).exif_focal_35mm == pytest.approx(4.0 * 8.4)


def test_focal_mm_to_px_uses_the_diagonal() -> None:
    assert focal_mm_to_px(30.0, 3000, 2000) == pytest.approx(
        30.0 * math.hypot(3000, 2000) / math.hypot(36, 24))


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "P", "CMYK", "I;16", "1"])
def test_odd_modes_become_rgb(tmp_path: Path, mode: str) -> None:
    image = _photo().convert("L")
    if mode == "I;16":
        data = (np.asarray(image, dtype=np.uint16) * 257).astype(np.uint16)
        image = Image.fromarray(data)
    else:
        image = _photo().convert(mode)
    path = tmp_path / ("photo.tif" if mode == "CMYK" else "photo.png")
    image.save(path)
    rgb = load_image(path).rgb
    assert rgb.shape == (30, 40, 3) and rgb.dtype == np.uint8
    if mode == "I;16":
        assert rgb.max() > 200, "16-bit data must be scaled to 8 bits, not clipped"


def test_pixel_limit_is_checked_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    _photo(400, 300).save(path)
    with pytest.raises(InputError, match=r"over the limit") as info:
        load_image(path, max_pixels=100_000)
    assert info.value.path == path


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.jpg", b"", "not a readable image"),
        ("text.png", b"hello, I am not a picture", "not a readable image"),
        ("notes.txt", b"x", "unsupported file type"),
    ],
)
def test_bad_files_raise_input_error_naming_the_file(tmp_path: Path, name: str, content: bytes,
                                                     reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=reason) as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_truncated_jpeg_is_reported(tmp_path: Path) -> None:
    full = tmp_path / "full.jpg"
    _photo(200, 150).save(full, quality=95)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(InputError, match="truncated"):
        load_image(cut)


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "gone.jpg")

"""Fuzzed photos and depth maps through the pipeline's loaders.

Every mutated file either decodes to a valid result or raises `InputError` naming the
file; nothing else escapes, nothing hangs, and a pickled `.npy` never runs. The corpus is
made at test time from fixed seeds (no binary files in the repo); `bench/soak.py`
reuses these generators at a larger size.
"""

from __future__ import annotations

import io
import os
import pickle
import random
import struct
import time
import tracemalloc
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import InputError, load_image
from pipeline.depth.external import load_depth_npy
from tests.support.files import npy_bytes

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow on corrupt EXIF

IMAGE_SEED = 20261124
NPY_SEED = 5
MAX_PIXELS = 120_000_000
SLOW_SECONDS = 2.0

_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "HEIF": ".heic", "TIFF": ".tif", "WEBP": ".webp"}
_FORMAT_WEIGHTS = {"JPEG": 4, "PNG": 4, "HEIF": 3, "TIFF": 1, "WEBP": 1}
_MODES = {
    "JPEG": ("RGB", "L", "CMYK"),
    "PNG": ("RGB", "RGBA", "L", "LA", "P", "1", "I;16"),
    "HEIF": ("RGB", "RGBA", "L"),
    "TIFF": ("RGB", "L", "I;16", "F", "CMYK"),
    "WEBP": ("RGB", "RGBA"),
}


@dataclass(frozen=True)
class Case:
    """One corpus file and what must happen to it: "ok", "error" or "either"."""

    path: Path
    mutation: str
    expect: str


def _base_image(rng: random.Random, fmt: str, size: tuple[int, int] = (32, 24)) -> bytes:
    """A small photo in `fmt`, random mode, with a plausible or odd EXIF."""
    width, height = size
    pixels = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 256, (height, width, 3))
    image = Image.fromarray(pixels.astype(np.uint8))
    mode = rng.choice(_MODES[fmt])
    if mode == "I;16":
        image = Image.fromarray((pixels[..., 0] * 257).astype(np.uint16))
    elif mode == "F":
        image = Image.fromarray(pixels[..., 0].astype(np.float32) / 7.0)
    else:
        image = image.convert(mode)
    exif = Image.Exif()
    exif[0x0112] = rng.choice([1, 3, 6, 8, 0, 9, 65535])
    exif.get_ifd(0x8769)[0x920A] = rng.choice([24.0, 4.2, 0.0, -1.0, 1e30])
    exif.get_ifd(0x8769)[0xA405] = rng.choice([0, 28, 65535])
    buffer = io.BytesIO()
    image.save(buffer, fmt, exif=exif.tobytes())
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def huge_png(width: int, height: int, idat: bytes = b"") -> bytes:
    """A PNG whose IHDR (with a valid CRC) declares `width` x `height` RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = _png_chunk(b"IHDR", ihdr) + (_png_chunk(b"IDAT", idat) if idat else b"")
    return b"\x89PNG\r\n\x1a\n" + body + _png_chunk(b"IEND", b"")


def huge_jpeg(base: bytes, width: int, height: int) -> bytes:
    """`base` (a JPEG) with its SOF frame header claiming `width` x `height`."""
    data = bytearray(base)
    for marker in (b"\xff\xc0", b"\xff\xc1", b"\xff\xc2"):
        at = data.find(marker)
        if at >= 0:
            data[at + 5:at + 9] = struct.pack(">HH", height, width)
            return bytes(data)
    raise AssertionError("no SOF marker in the base JPEG")


def huge_heic(base: bytes, width: int, height: int) -> bytes:
    """`base` (a HEIC) with its `ispe` (image spatial extents) box claiming the given size."""
    data = bytearray(base)
    at = data.find(b"ispe")
    assert at >= 0, "no ispe box in the base HEIC"
    data[at + 8:at + 16] = struct.pack(">II", width, height)
    return bytes(data)


def _huge(rng: random.Random, fmt: str, base: bytes) -> tuple[bytes, str]:
    width, height = rng.choice([(65535, 65535), (60000, 2001), (11000, 11000), (65535, 1900)])
    if fmt == "PNG":
        width, height = rng.choice([(width, height), (2 ** 31 - 1, 2 ** 31 - 1), (2 ** 31 - 1, 1)])
        return huge_png(width, height, zlib.compress(b"\0" * 4096)), ".png"
    if fmt == "HEIF":
        return huge_heic(base, width, height), ".heic"
    return huge_jpeg(base if fmt == "JPEG" else _jpeg_base(rng), width, height), ".jpg"


def _jpeg_base(rng: random.Random) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), tuple(rng.randrange(256) for _ in range(3))).save(buffer, "JPEG")
    return buffer.getvalue()


def _flip(rng: random.Random, data: bytes, flips: int, window: int | None = None) -> bytes:
    out = bytearray(data)
    span = min(len(out), window or len(out))
    for _ in range(flips):
        at = rng.randrange(span)
        out[at] ^= 1 << rng.randrange(8)
    return bytes(out)


_MUTATIONS: dict[str, int] = {
    "none": 8, "truncated": 20, "bit-flip": 22, "header-garbled": 12, "zero-bytes": 3,
    "wrong-extension": 10, "not-an-image": 5, "huge-dimensions": 15, "unsupported-extension": 3,
    "appended-garbage": 2,
}


def image_corpus(folder: Path, count: int, seed: int = IMAGE_SEED,
                 size: tuple[int, int] = (32, 24)) -> list[Case]:
    """`count` mutated photos of `size` under `folder`, the same files for the same seed."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    formats, weights = zip(*_FORMAT_WEIGHTS.items(), strict=True)
    bases = [(fmt, _base_image(rng, fmt, size)) for fmt in formats for _ in range(8)]
    mutations, mutation_weights = zip(*_MUTATIONS.items(), strict=True)
    cases = []
    for index in range(count):
        fmt = rng.choices(formats, weights)[0]
        base = rng.choice([data for name, data in bases if name == fmt])
        mutation = rng.choices(mutations, mutation_weights)[0]
        data, suffix, expect = base, _FORMATS[fmt], "either"
        if mutation == "none":
            expect = "ok"
        elif mutation == "truncated":
            data = base[:rng.randrange(len(base))]
        elif mutation == "bit-flip":
            data = _flip(rng, base, rng.randint(1, 8))
        elif mutation == "header-garbled":
            data = _flip(rng, base, rng.randint(4, 40), window=96)
        elif mutation == "zero-bytes":
            data, expect = b"", "error"
        elif mutation == "wrong-extension":
            suffix = rng.choice([s for s in _FORMATS.values() if s != suffix] + [".JPEG", ".Png"])
            expect = "ok"
        elif mutation == "not-an-image":
            data = rng.choice([b"hello, not a photo\n" * rng.randint(1, 50),
                               rng.randbytes(rng.randint(1, 4000)), b"\x89PNG\r\n\x1a\n"])
            expect = "error"
        elif mutation == "huge-dimensions":
            data, suffix = _huge(rng, fmt, base)
            expect = "error"
        elif mutation == "unsupported-extension":
            suffix, expect = rng.choice([".gif", ".txt", ".bmp", ""]), "error"
        elif mutation == "appended-garbage":
            data = base + rng.randbytes(rng.randint(1, 2000))
        name = rng.choice(["photo", "IMG 0001", "фото", "写真", "x" * 40])
        path = folder / f"{index:04d}-{name}{suffix}"
        path.write_bytes(data)
        cases.append(Case(path, f"{fmt}/{mutation}", expect))
    return cases


def check_image(case: Case, max_pixels: int = MAX_PIXELS) -> tuple[str, str | None]:
    """("ok" | "error", problem or None): what `load_image` did and whether that is allowed."""
    start = time.perf_counter()
    try:
        loaded = load_image(case.path, max_pixels)
    except InputError as exc:
        outcome, problem = "error", _names_file(exc, case.path)
    except Exception as exc:  # anything else escaping is the failure we look for
        return "escaped", f"{type(exc).__name__} escaped: {exc}"
    else:
        outcome, problem = "ok", _valid_rgb(loaded.rgb)
    seconds = time.perf_counter() - start
    if seconds > SLOW_SECONDS:
        problem = f"took {seconds:.1f} s"
    if problem is None and case.expect not in (outcome, "either"):
        problem = f"expected {case.expect}, got {outcome}"
    return outcome, problem


def _names_file(exc: InputError, path: Path) -> str | None:
    if exc.path != path or str(path) not in str(exc):
        return f"error does not name the file: {exc}"
    if not exc.reason.strip():
        return "error has no reason"
    return None


def _valid_rgb(rgb: np.ndarray) -> str | None:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        return f"bad array {rgb.dtype} {rgb.shape}"
    if min(rgb.shape[:2]) < 2 or not rgb.flags.c_contiguous:
        return f"degenerate or non-contiguous array {rgb.shape}"
    return None


def run_corpus(cases: list[Case], check: Callable[[Case], tuple[str, str | None]]
               ) -> tuple[Counter[str], list[str]]:
    """Outcome counts and one line per case that broke a promise."""
    outcomes: Counter[str] = Counter()
    problems = []
    for case in cases:
        outcome, problem = check(case)
        outcomes[outcome] += 1
        if problem is not None:
            problems.append(f"{case.path.name} ({case.mutation}): {problem}")
    return outcomes, problems


@pytest.mark.timeout(120)
def test_thousand_fuzzed_photos_decode_or_fail_clearly(tmp_path: Path) -> None:
    cases = image_corpus(tmp_path, 1000)
    outcomes, problems = run_corpus(cases, check_image)
    assert problems == []
    assert outcomes["ok"] + outcomes["error"] == 1000
    kinds = Counter(case.mutation.split("/")[1] for case in cases)
    assert kinds["huge-dimensions"] > 100 and kinds["truncated"] > 100
    assert {case.mutation.split("/")[0] for case in cases} >= {"JPEG", "PNG", "HEIF"}
    assert outcomes["ok"] > 150 and outcomes["error"] > 300


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("name", "make"), [
    ("png-2g-squared", lambda: huge_png(2 ** 31 - 1, 2 ** 31 - 1)),
    ("png-bomb-idat", lambda: huge_png(20000, 20000, zlib.compress(b"\0" * 1_000_000, 9))),
    ("jpeg-65535", lambda: huge_jpeg(_jpeg_base(random.Random(0)), 65535, 65535)),
])
def test_huge_declared_dimensions_are_refused_before_decoding(tmp_path: Path, name: str,
                                                              make: Callable[[], bytes]) -> None:
    path = tmp_path / f"{name}.{'png' if name.startswith('png') else 'jpg'}"
    path.write_bytes(make())
    start = time.perf_counter()
    with pytest.raises(InputError) as info:
        load_image(path, MAX_PIXELS)
    assert time.perf_counter() - start < 1.0
    assert info.value.path == path
    assert "MP" in info.value.reason or "too many pixels" in info.value.reason


def test_over_the_limit_heic_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.heic"
    path.write_bytes(huge_heic(_base_image(random.Random(1), "HEIF"), 60000, 60000))
    with pytest.raises(InputError) as info:
        load_image(path, MAX_PIXELS)
    assert info.value.path == path


def test_max_pixels_is_the_limit_not_pillows(tmp_path: Path) -> None:
    path = tmp_path / "small.png"
    Image.new("RGB", (40, 30)).save(path)
    assert load_image(path, 1200).rgb.shape == (30, 40, 3)
    with pytest.raises(InputError, match="limit"):
        load_image(path, 1199)


@pytest.mark.timeout(10)
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("kind", ["fifo", "folder", "device"])
def test_non_regular_files_are_refused_without_blocking(tmp_path: Path, kind: str) -> None:
    """A FIFO named like a photo or depth map would block a plain `open` + `read` forever."""
    for name, load in (("photo.jpg", lambda p: load_image(p, MAX_PIXELS)),
                       ("depth.npy", load_depth_npy)):
        path = tmp_path / name
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "folder":
            path.mkdir()
        else:
            path.symlink_to("/dev/zero")
        with pytest.raises(InputError) as info:
            load(path)
        assert info.value.path == path


# ---------------------------------------------------------------- .npy depth maps


class Payload:
    """Unpickling this creates `marker`: the proof that a pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _npy_header(descr: str, shape: tuple[int, ...], version: int = 1) -> bytes:
    """A hand-written `.npy` header (no data): any descr, any declared shape."""
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * (63 - (len(header) + 10) % 64) + "\n"
    size = struct.pack("<H" if version == 1 else "<I", len(header))
    return b"\x93NUMPY" + bytes([version, 0]) + size + header.encode("latin1")


def _raw_header(text: str) -> bytes:
    text += " " * (63 - (len(text) + 10) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


def _good_depth(rng: random.Random) -> np.ndarray:
    noise = np.random.default_rng(rng.randrange(1 << 30)).random((24, 32))
    return (0.5 + 4 * noise).astype(rng.choice([np.float32, np.float64, np.float16]))


def npy_corpus(folder: Path, count: int, marker: Path, seed: int = NPY_SEED) -> list[Case]:
    """`count` hostile or broken `.npy` files; every pickle in them would create `marker`."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    kinds: list[tuple[str, str, Callable[[], bytes]]] = [
        ("valid", "ok", lambda: npy_bytes(_good_depth(rng))),
        ("valid-int", "ok", lambda: npy_bytes(np.arange(1, 769, dtype=np.uint16).reshape(24, 32))),
        ("valid-hw1", "ok", lambda: npy_bytes(_good_depth(rng)[..., None])),
        ("fortran", "ok", lambda: npy_bytes(np.asfortranarray(_good_depth(rng)))),
        ("big-endian", "ok", lambda: npy_bytes(_good_depth(rng).astype(">f4"))),
        ("pickled-object-array", "error",
         lambda: npy_bytes(np.array([Payload(marker), 1.0], dtype=object), allow_pickle=True)),
        ("raw-pickle", "error", lambda: pickle.dumps(Payload(marker))),
        ("pickle-after-header", "error",
         lambda: _npy_header("|O", (2,)) + pickle.dumps([Payload(marker)])),
        ("object-2d", "error",
         lambda: npy_bytes(np.full((4, 4), Payload(marker), dtype=object), allow_pickle=True)),
        ("nan", "error", lambda: npy_bytes(_with(_good_depth(rng), np.nan, rng))),
        ("inf", "error", lambda: npy_bytes(_with(_good_depth(rng), np.inf, rng))),
        ("negative", "error", lambda: npy_bytes(_with(_good_depth(rng), -1.0, rng))),
        ("zeros", "error", lambda: npy_bytes(np.zeros((24, 32), np.float32))),
        ("overflow-to-inf", "error", lambda: npy_bytes(np.full((4, 4), 1e300))),
        ("rank-1", "error", lambda: npy_bytes(np.ones(50, np.float32))),
        ("rank-0", "error", lambda: npy_bytes(np.float32(3.0))),
        ("rank-3", "error", lambda: npy_bytes(np.ones((24, 32, 3), np.float32))),
        ("rank-4", "error", lambda: npy_bytes(np.ones((2, 2, 3, 3), np.float32))),
        ("empty", "error", lambda: npy_bytes(np.ones((0, 5), np.float32))),
        ("complex", "error", lambda: npy_bytes(np.ones((4, 4), np.complex64))),
        ("bool", "error", lambda: npy_bytes(np.ones((4, 4), bool))),
        ("string", "error", lambda: npy_bytes(np.full((4, 4), "1.0"))),
        ("structured", "error",
         lambda: npy_bytes(np.zeros((4, 4), dtype=[("d", "<f4"), ("c", "<f4")]))),
        ("datetime", "error", lambda: npy_bytes(np.zeros((4, 4), "datetime64[s]"))),
        ("huge-shape", "error", lambda: _npy_header("<f4", (100000, 100000))),
        ("huge-shape-v2", "error", lambda: _npy_header("<f8", (2 ** 40, 2 ** 40), version=2)),
        ("negative-shape", "error", lambda: _npy_header("<f4", (-5, 40))),
        ("declared-large-truncated", "error",
         lambda: _npy_header("<f8", (8192, 8192)) + b"\0" * 4096),
        ("truncated-data", "error", lambda: _cut(rng, npy_bytes(_good_depth(rng)), 128)),
        ("truncated-header", "error", lambda: _cut(rng, npy_bytes(_good_depth(rng)), 0, 128)),
        ("bit-flip", "either", lambda: _flip(rng, npy_bytes(_good_depth(rng)), 3)),
        ("header-flip", "either", lambda: _flip(rng, npy_bytes(_good_depth(rng)), 3, 128)),
        ("deep-nesting-header", "error",
         lambda: _raw_header("{'descr': '<f4', 'fortran_order': False, 'shape': "
                             + "(" * 3000 + ")" * 3000 + "}")),
        ("unbalanced-header", "error", lambda: _raw_header("{'descr': '<f4', 'shape': ((((")),
        ("non-dict-header", "error", lambda: _raw_header("[1, 2, 3]")),
        ("huge-header-length", "error", lambda: b"\x93NUMPY\x02\x00\xff\xff\xff\x7f{}"),
        ("bad-version", "error", lambda: b"\x93NUMPY\x09\x00" + npy_bytes(_good_depth(rng))[8:]),
        ("header-code", "error",
         lambda: _npy_header("<f4', 'x': __import__('os').system('true'), 'y': '", (4, 4))),
        ("npz-renamed", "error", lambda: _npz_bytes(_good_depth(rng))),
        ("zero-bytes", "error", lambda: b""),
        ("text", "error", lambda: b"1.0 2.0\n3.0 4.0\n"),
    ]
    hostile = [kind for kind in kinds if "pickle" in kind[0] or "object" in kind[0]]
    pool = kinds + 2 * hostile
    cases = []
    for index in range(count):
        name, expect, make = kinds[index] if index < len(kinds) else rng.choice(pool)
        path = folder / f"{index:03d}-{name}.npy"
        path.write_bytes(make())
        cases.append(Case(path, name, expect))
    return cases


def _with(depth: np.ndarray, value: float, rng: random.Random) -> np.ndarray:
    out = depth.astype(np.float32)
    out[rng.randrange(out.shape[0]), rng.randrange(out.shape[1])] = value
    return out


def _cut(rng: random.Random, data: bytes, low: int, high: int | None = None) -> bytes:
    return data[:rng.randrange(low, high if high is not None else len(data))]


def _npz_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, depth=array)
    return buffer.getvalue()


def check_npy(case: Case) -> tuple[str, str | None]:
    """Like `check_image`, for `load_depth_npy`."""
    start = time.perf_counter()
    try:
        depth = load_depth_npy(case.path)
    except InputError as exc:
        outcome, problem = "error", _names_file(exc, case.path)
    except Exception as exc:  # anything else escaping is the failure we look for
        return "escaped", f"{type(exc).__name__} escaped: {exc}"
    else:
        outcome = "ok"
        problem = None
        if depth.dtype != np.float32 or depth.ndim != 2 or not np.isfinite(depth).all():
            problem = f"bad depth {depth.dtype} {depth.shape}"
    if time.perf_counter() - start > SLOW_SECONDS:
        problem = "too slow"
    if problem is None and case.expect not in (outcome, "either"):
        problem = f"expected {case.expect}, got {outcome}"
    return outcome, problem


def test_payload_is_live(tmp_path: Path) -> None:
    """The control: the same bytes do run code when numpy is allowed to unpickle them."""
    marker = tmp_path / "ran"
    path = tmp_path / "evil.npy"
    path.write_bytes(npy_bytes(np.array([Payload(marker)], dtype=object), allow_pickle=True))
    np.load(path, allow_pickle=True)
    assert marker.exists()


@pytest.mark.timeout(60)
def test_two_hundred_fuzzed_depth_maps_fail_clearly_and_never_unpickle(tmp_path: Path) -> None:
    marker = tmp_path / "pickle-ran"
    cases = npy_corpus(tmp_path / "npy", 200, marker)
    outcomes, problems = run_corpus(cases, check_npy)
    assert problems == []
    assert not marker.exists(), "a pickled payload was executed"
    assert outcomes["ok"] + outcomes["error"] == 200
    assert sum("pickle" in case.mutation or "object" in case.mutation for case in cases) >= 15


def test_truncated_depth_map_is_refused_without_allocating_its_declared_size(
        tmp_path: Path) -> None:
    path = tmp_path / "liar.npy"
    path.write_bytes(_npy_header("<f8", (8192, 8192)) + b"\0" * 4096)
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="truncated"):
            load_depth_npy(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000, f"{peak / 1e6:.0f} MB allocated for a 4 kB file declaring 512 MB"

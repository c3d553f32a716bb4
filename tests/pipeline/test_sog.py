"""SOG exports (PlayCanvas's format, version 2), read back as the Gaussians our PLY stores.

Read by a real reader, splat-transform (`tests.support.splat_reader`; skipped without node), and
by `decode`, which follows that reader's code in numpy and Pillow, so the layout is
checked where node is missing too. Bounds, from the format:

- position: 16 bits of `v = sign(x) ln(1 + |x|)` over the axis' range: v within
  d = (max - min) / 65535 / 2, so x within (|x| + 1) expm1(d) (both where v keeps its sign
  and where it crosses 0); plus the reader's float32 output, 2^-24 of that.
- colour and log scale: the codebook's nearest entry, so within the distance from the
  stored value to the nearest entry of the file's codebook (`nearest_error`).
- rotation: each stored component within h = sqrt 2 / 510 (half a byte step of
  `q sqrt 2` over [-1, 1]); the rebuilt largest (at least 1/2) within 3h, as for SPZ.
- opacity: half a byte step.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pipeline.sog import CODEBOOK_SIZE, QUAT_TAG, codebook, texture_size, write_sog
from tests.support.splat_reader import SH_C0, assert_decoded, scene, sigmoid, stored
from tests.support.web_readers import SPARK_CENTRE, assert_read_by_spark

SOG_ROTATION = 3 * math.sqrt(2) / 510
FILES = ["meta.json", "means_l.webp", "means_u.webp", "quats.webp", "scales.webp", "sh0.webp"]


def bundle(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """`meta.json` and every image as `(N, 4)` texels, in texel order."""
    with zipfile.ZipFile(path) as archive:
        meta = json.loads(archive.read("meta.json"))
        names = [*meta["means"]["files"], *(meta[k]["files"][0] for k in ("quats", "scales",
                                                                          "sh0"))]
        images = {name: np.asarray(Image.open(io.BytesIO(archive.read(name))).convert("RGBA"))
                  for name in names}
    return meta, {name: image.reshape(-1, 4) for name, image in images.items()}


def decode(path: Path) -> np.ndarray:
    """splat-transform's SOG reader (`readSogSourceV2`) in numpy: `(N, 14)` PLY columns."""
    meta, images = bundle(path)
    n = meta["count"]
    low, high = np.array(meta["means"]["mins"]), np.array(meta["means"]["maxs"])
    lo, hi = (images[name][:n, :3].astype(np.float64) for name in meta["means"]["files"])
    v = low + np.where(high > low, high - low, 1.0) * (lo + 256 * hi) / 65535
    quats = images["quats.webp"][:n].astype(np.float64)
    others = (quats[:, :3] / 255 * 2 - 1) / math.sqrt(2)
    largest = quats[:, 3].astype(int) - QUAT_TAG
    wxyz = np.zeros((n, 4))
    for k in range(4):
        rows = largest == k
        wxyz[np.ix_(rows, [i for i in range(4) if i != k])] = others[rows]
        wxyz[rows, k] = np.sqrt(np.maximum(0, 1 - (others[rows] ** 2).sum(axis=1)))
    sh0 = images["sh0.webp"][:n]
    opacity = np.clip(sh0[:, 3] / 255, 1e-6, 1 - 1e-6)
    return np.hstack([np.sign(v) * np.expm1(np.abs(v)),
                      np.asarray(meta["sh0"]["codebook"])[sh0[:, :3]],
                      np.log(opacity / (1 - opacity))[:, None],
                      np.asarray(meta["scales"]["codebook"])[images["scales.webp"][:n, :3]],
                      wxyz])


def nearest_error(entries: list[float], values: np.ndarray) -> np.ndarray:
    """Distance from each value to the nearest codebook entry."""
    return np.abs(values[..., None] - np.asarray(entries)).min(axis=-1)


def sog_bounds(want: np.ndarray, meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray,
                                                                 np.ndarray, float]:
    """The SOG's quantisation (module docstring) around `want`: position, colour, log
    scale and rotation bounds, for `assert_decoded`."""
    half_step = (np.array(meta["means"]["maxs"]) - np.array(meta["means"]["mins"])) / 131070
    position = (np.abs(want[:, :3]) + 1) * (np.expm1(half_step) + 2.0 ** -23)
    return (position, nearest_error(meta["sh0"]["codebook"], want[:, 3:6]),
            nearest_error(meta["scales"]["codebook"], want[:, 7:10]), SOG_ROTATION)


def assert_sog_decoded(got: np.ndarray, want: np.ndarray, meta: dict[str, Any]) -> None:
    assert_decoded(got, want, *sog_bounds(want, meta))


def test_sog_reads_back_in_splat_transform_as_the_ply_within_its_quantisation(
        tmp_path: Path, to_ply: Callable[[Path], np.ndarray]) -> None:
    g = scene()
    warnings: list[str] = []
    path = write_sog(tmp_path / "scene.sog", g, warnings)
    meta, _ = bundle(path)
    assert_sog_decoded(to_ply(path), stored(g), meta)
    assert warnings == []


def test_spark_reads_our_sog_as_the_ply_within_its_quantisation(
        tmp_path: Path, spark_read: Callable[[Path], np.ndarray]) -> None:
    """The viewer's own renderer: Spark decodes the SOG itself (its position math in
    float32, hence `SPARK_CENTRE`)."""
    g = scene()
    path = write_sog(tmp_path / "scene.sog", g)
    meta, _ = bundle(path)
    assert_read_by_spark(spark_read(path), stored(g), *sog_bounds(stored(g), meta),
                         centre=SPARK_CENTRE)


def test_sog_layout_decodes_as_the_ply_within_its_quantisation(tmp_path: Path) -> None:
    g = scene()
    path = write_sog(tmp_path / "scene.sog", g)
    want = stored(g)
    meta, images = bundle(path)
    assert_sog_decoded(decode(path), want, meta)
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == FILES
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}
        for name in FILES[1:]:
            data = archive.read(name)
            assert data[:4] == b"RIFF" and data[8:16] == b"WEBPVP8L", f"{name}: not lossless"
            assert Image.open(io.BytesIO(data)).size == texture_size(3000) == (56, 56)
    assert meta["version"] == 2 and meta["count"] == 3000
    assert len(meta["scales"]["codebook"]) == len(meta["sh0"]["codebook"]) == CODEBOOK_SIZE
    assert set(images["quats.webp"][:3000, 3]) <= set(range(QUAT_TAG, QUAT_TAG + 4))
    assert (images["means_l.webp"][:3000, 3] == 255).all()


def test_codebooks_hold_the_extremes_and_stay_close_to_the_photo_values(tmp_path: Path) -> None:
    """Colours and sizes lose little to the 256 entries: within 1/255 of colour (the
    test scene's colours cover [0, 1], cubed towards dark) and 2.5% of size (over four
    decades: even steps of the log would be 3.6% apart); the darkest and brightest
    colour and the smallest and largest size come back exactly (the codebook's ends)."""
    want = stored(scene())
    meta, _ = bundle(write_sog(tmp_path / "scene.sog", scene()))
    colour = nearest_error(meta["sh0"]["codebook"], want[:, 3:6]) * SH_C0
    log_scale = nearest_error(meta["scales"]["codebook"], want[:, 7:10])
    assert colour.max() <= 1 / 255 and math.expm1(log_scale.max()) <= 0.025
    for error, columns in ((colour, want[:, 3:6]), (log_scale, want[:, 7:10])):
        assert error.ravel()[[columns.argmin(), columns.argmax()]].tolist() == [0, 0]


@pytest.mark.parametrize("kind", ["uniform", "normal", "cubed", "lognormal", "outliers"])
def test_codebook_beats_even_steps_on_average_and_keeps_their_worst_case(kind: str) -> None:
    """k-means puts entries where values crowd (a smaller RMS error than 256 even steps
    over the range, by 4x for a long tail) but keeps entries in sparse tails: the worst
    error stays within 1.25 even steps (Lloyd's iterations from quantiles alone leave tails
    10 times further off)."""
    rng = np.random.default_rng(0)
    values = {"uniform": rng.random(30000), "normal": rng.normal(size=30000),
              "cubed": rng.random(30000) ** 3, "lognormal": rng.lognormal(size=30000),
              "outliers": np.concatenate([rng.normal(size=29997), [40.0, -30.0, 25.0]])}[kind]
    entries, labels = codebook(values.reshape(-1, 3))
    assert entries.dtype == np.float32 and entries.shape == (CODEBOOK_SIZE,)
    assert (np.diff(entries) >= 0).all()
    error = np.abs(entries.astype(np.float64)[labels].ravel() - values)
    assert (error <= nearest_error(entries.tolist(), values) + 1e-12).all(), "not the nearest"
    step = (values.max() - values.min()) / (CODEBOOK_SIZE - 1)
    assert error.max() <= 1.25 * step
    assert np.sqrt((error ** 2).mean()) < step / math.sqrt(12)
    assert (entries[0], entries[-1]) == (np.float32(values.min()), np.float32(values.max()))


@pytest.mark.parametrize("values", [np.full((10, 3), 0.25), np.zeros((0, 3))],
                         ids=["constant", "empty"])
def test_codebook_of_one_value_or_none_is_that_value(values: np.ndarray) -> None:
    entries, labels = codebook(values)
    assert labels.shape == values.shape and not labels.any()
    assert set(entries.tolist()) == ({0.25} if values.size else {0.0})


@pytest.mark.parametrize(("count", "size"), [
    (2 * 768 * 768, (768, 1536)),  # SHARP: a texture row per row of its two grid layers
    (768 * 768, (768, 768)), (2 * 12 * 12, (12, 24)),
    (2 * 6 * 6, (12, 8)),  # a side not a multiple of 4: about square, as splat-transform
    (3000, (56, 56)), (1, (4, 4)), (0, (4, 4)),
])
def test_texture_size_follows_sharps_grid_and_holds_every_gaussian(
        count: int, size: tuple[int, int]) -> None:
    width, height = texture_size(count)
    assert (width, height) == size
    assert width * height >= count and width % 4 == 0 and height % 4 == 0


def test_sog_is_the_same_bytes_for_the_same_gaussians(tmp_path: Path) -> None:
    first = write_sog(tmp_path / "a.sog", scene(500)).read_bytes()
    assert write_sog(tmp_path / "b.sog", scene(500)).read_bytes() == first
    assert write_sog(tmp_path / "c.sog", scene(500, seed=1)).read_bytes() != first


def test_no_gaussians_give_an_empty_but_valid_sog(tmp_path: Path) -> None:
    path = write_sog(tmp_path / "none.sog", scene(0))
    meta, images = bundle(path)
    assert meta["count"] == 0 and decode(path).shape == (0, 14)
    assert {image.shape for image in images.values()} == {(16, 4)}


def test_transparent_gaussians_keep_their_colour_under_zero_alpha(tmp_path: Path) -> None:
    """WebP may drop what lies under a zero alpha unless told `exact`: sh0's colour labels
    must survive an opacity that rounds to 0."""
    g = scene(200)
    g.opacities[0, :100] = 1e-4
    want = stored(g)
    path = write_sog(tmp_path / "faint.sog", g)
    meta, images = bundle(path)
    assert (images["sh0.webp"][:100, 3] == 0).all()
    assert_sog_decoded(decode(path), want, meta)
    assert (sigmoid(decode(path)[:100, 6]) < 1e-5).all()

"""SPZ and .splat exports, read back by a real reader: PlayCanvas' splat-transform.

Each export is converted back to PLY by splat-transform (`tests.support.splat_reader`) and
compared with what our PLY stores, within the format's own quantisation: SPZ's 24-bit
fixed point with 12 fractional bits, its byte colours scaled by 0.15, byte opacity, log
scales in 1/16 steps and 9-bit "smallest three" rotations (version 3) or byte x, y, z with
w rebuilt (version 2); .splat's float32 positions and scales, byte colour and opacity,
byte quaternion components. Without node or npm (or without network for the install)
those tests are skipped with the reason; the checks on the files' layout run everywhere.
SOG has its own file, `test_sog.py`.
"""

from __future__ import annotations

import gzip
import json
import math
import struct
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import OutputError, write_ply
from pipeline.atomic import temp_files
from pipeline.exports import EXPORTERS, SPZ_LIMIT_M, ExportOptions, write_splat, write_spz
from pipeline.ply import vertex_rows
from pipeline.sog import write_sog
from tests.support.splat_reader import (
    EPS,
    F_PX,
    SH_C0,
    SIZE,
    assert_decoded,
    scene,
    sigmoid,
    stored,
)
from tests.support.web_readers import assert_read_by_spark

SPZ_POSITION = 0.5 / 4096
"""Half a step of 12 fractional bits; float32 times 4096 is exact, so nothing more."""
SPZ_DC = 0.5 / (0.15 * 255)
"""Half a byte step of SPZ's colour, `dc * 0.15 * 255 + 127.5`, in SH DC units."""
SPZ_LOG_SCALE = 0.5 / 16
SPZ_ROTATION = 3 * 0.5 * math.sqrt(0.5) / 511
"""Each stored component is within h = (1/sqrt 2) / 511 / 2; the rebuilt largest (at
least 1/2) within sum(|q_i|) h / q_largest <= 3h."""
SPZ2_XYZ = 0.5 / 127.5
"""Version 2: x, y, z each within half a byte step of `q * 127.5 + 127.5`."""
SPZ2_W = math.sqrt((2 + math.sqrt(3) * SPZ2_XYZ) * math.sqrt(3) * SPZ2_XYZ)
"""...and w = sqrt(1 - |xyz'|^2) within sqrt(| |xyz|^2 - |xyz'|^2 |) <= sqrt((|xyz| +
|xyz'|) |xyz - xyz'|) <= sqrt((2 + sqrt 3 h) sqrt 3 h) = 0.117, reached where w is near 0:
the price of version 2's 3 bytes."""
SPLAT_DC = 0.5 / 255 / SH_C0
SPLAT_ROTATION = 4 / 127.5
"""splat-transform decodes a byte b as b / 127.5 - 1 (antimatter15's viewer: (b - 128) /
128), so its raw quaternion is 1.0039 q + d with |d_i| <= 1 / 127.5; normalising it moves
it from q by at most 2 |d| <= 4 / 127.5."""


def spz_payload(path: Path) -> tuple[tuple[int, ...], bytes]:
    """The SPZ header fields (magic, version, count, SH degree, fractional bits, flags,
    reserved) and the bytes after it."""
    raw = gzip.decompress(path.read_bytes())
    return struct.unpack("<IIIBBBB", raw[:16]), raw[16:]


def test_spz_reads_back_in_splat_transform_as_the_ply_within_its_quantisation(
        tmp_path: Path, to_ply: Callable[[Path], np.ndarray]) -> None:
    g = scene()
    warnings: list[str] = []
    got = to_ply(write_spz(tmp_path / "scene.spz", g, warnings, version=3))
    assert_decoded(got, stored(g), SPZ_POSITION, SPZ_DC, SPZ_LOG_SCALE, SPZ_ROTATION)
    assert warnings == []


def test_spz_version_2_reads_back_in_splat_transform_as_the_ply_within_its_quantisation(
        tmp_path: Path, to_ply: Callable[[Path], np.ndarray]) -> None:
    """The version gaussian-splats-3d reads too: x, y, z of the w-positive quaternion as
    bytes, w rebuilt by the reader; everything else as version 3."""
    g = scene()
    got = to_ply(write_spz(tmp_path / "v2.spz", g, version=2))
    want = stored(g)
    assert_decoded(got, want, SPZ_POSITION, SPZ_DC, SPZ_LOG_SCALE, SPZ2_W)
    w_positive = want[:, 10:] * np.where(want[:, 10:11] < 0, -1.0, 1.0)
    assert np.abs(got[:, 11:] - w_positive[:, 1:]).max() <= SPZ2_XYZ + EPS
    assert (got[:, 10] >= 0).all()


def test_spark_reads_our_ply_to_its_own_precision(
        tmp_path: Path, spark_read: Callable[[Path], np.ndarray]) -> None:
    """The viewer's Spark, on the PLY: only Spark's own precision in the way, which
    `assert_read_by_spark` adds to every format's bounds."""
    g = scene()
    assert_read_by_spark(spark_read(write_ply(tmp_path / "scene.ply", g, F_PX, SIZE)),
                         stored(g), 0.0, 0.0, 0.0, 0.0)


@pytest.mark.parametrize("version", [2, 3])
def test_spark_reads_both_spz_versions_as_the_ply_within_their_quantisation(
        tmp_path: Path, spark_read: Callable[[Path], np.ndarray], version: int) -> None:
    g = scene()
    got = spark_read(write_spz(tmp_path / "scene.spz", g, version=version))
    rotation = SPZ2_W if version == 2 else SPZ_ROTATION
    assert_read_by_spark(got, stored(g), SPZ_POSITION, SPZ_DC, SPZ_LOG_SCALE, rotation)


def test_splat_reads_back_in_splat_transform_as_the_ply_most_important_first(
        tmp_path: Path, to_ply: Callable[[Path], np.ndarray]) -> None:
    g = scene()
    got = to_ply(write_splat(tmp_path / "scene.splat", g))
    want = stored(g)
    order = np.lexsort(want[:, 2::-1].T)[np.argsort(np.lexsort(got[:, 2::-1].T))]
    want = want[order]
    assert_decoded(got, want, 0.0, SPLAT_DC, EPS, SPLAT_ROTATION)
    importance = np.exp(want[:, 7:10].sum(axis=1)) * sigmoid(want[:, 6])
    assert (np.diff(importance) <= 1e-5 * importance[:-1]).all()
    assert not (np.diff(order) > 0).all()


def test_ply_with_sharps_extra_elements_reads_back_exactly(
        tmp_path: Path, to_ply: Callable[[Path], np.ndarray]) -> None:
    g = scene()
    got = to_ply(write_ply(tmp_path / "scene.ply", g, F_PX, SIZE))
    assert np.array_equal(got, vertex_rows(g).numpy().astype(np.float64))


def test_spz_bytes_match_splat_transforms_own_spz_encoder(
        tmp_path: Path, splat_transform: list[str]) -> None:
    """Its writer (ply -> spz version 3) and ours lay out the same bytes; they differ only
    where a value lies exactly on a rounding tie (it rounds halves up, ours and Niantic's
    library away from zero)."""
    g = scene()
    ply = write_ply(tmp_path / "scene.ply", g, F_PX, SIZE)
    theirs = tmp_path / "theirs.spz"
    subprocess.run([*splat_transform, "-q", "-w", "--spz-version", "3", str(ply), str(theirs)],
                   check=True, capture_output=True, timeout=240)
    ours_header, ours = spz_payload(write_spz(tmp_path / "ours.spz", g, version=3))
    their_header, their = spz_payload(theirs)
    assert ours_header == their_header
    assert len(ours) == len(their) == 20 * 3000
    starts = np.cumsum([0, 9, 1, 3, 3, 4]) * 3000
    for name, start, stop in zip(["positions", "alphas", "colours", "scales", "rotations"],
                                 starts[:-1], starts[1:], strict=True):
        same = np.frombuffer(ours[start:stop], np.uint8) == np.frombuffer(their[start:stop],
                                                                          np.uint8)
        assert same.mean() >= 0.99, f"{name}: {same.mean():.4f} of the bytes agree"


def test_spz_moves_gaussians_beyond_its_range_in_along_their_ray(
        tmp_path: Path, to_ply: Callable[[Path], np.ndarray]) -> None:
    """Without this a coordinate past 2048 m wraps around to the other side of the scene."""
    g = scene(200)
    far = torch.tensor([[100.0, -50.0, 9000.0], [-5000.0, 20.0, 3000.0], [0.0, 2500.0, 1.0]])
    g.mean_vectors[0, :3] = far
    g.singular_values[0, :3] = torch.tensor([[9.0, 4.0, 2.0], [1.0, 1.0, 3.0], [0.5, 2.0, 6.0]])
    warnings: list[str] = []
    got = to_ply(write_spz(tmp_path / "far.spz", g, warnings, version=3))
    want = stored(g)
    assert warnings == ["far.spz: 3 of 200 Gaussians lie beyond SPZ's 2048 m range (farthest "
                        "at 9000 m); moved in to it along their line of sight, scaled to "
                        "look the same"]
    factor = SPZ_LIMIT_M / np.abs(want[:3, :3]).max(axis=1, keepdims=True)
    assert np.abs(got[:3, :3] - want[:3, :3] * factor).max() <= SPZ_POSITION
    assert np.abs(got[:3, 7:10] - (want[:3, 7:10] + np.log(factor))).max() <= SPZ_LOG_SCALE + EPS
    assert_decoded(got[3:], want[3:], SPZ_POSITION, SPZ_DC, SPZ_LOG_SCALE, SPZ_ROTATION)


@pytest.mark.parametrize(("writer", "suffix", "origin"), [
    (write_spz, ".spz", 0.0), (write_splat, ".splat", 0.0),
    (write_sog, ".sog", 1e-3),  # 16 bits of the log over this scene's range: 0.5e-4 at 0
])
def test_gaussians_a_format_cannot_encode_are_transparent_at_the_origin(
        tmp_path: Path, to_ply: Callable[[Path], np.ndarray], writer: Callable[..., Path],
        suffix: str, origin: float) -> None:
    g = scene(100)
    g.mean_vectors[0, 0, 1] = math.inf
    g.colors[0, 1, 2] = math.nan
    g.quaternions[0, 2] = 0.0
    warnings: list[str] = []
    path = writer(tmp_path / f"bad{suffix}", g, warnings)
    got = to_ply(path)
    assert warnings == [f"{path.name}: 3 of 100 Gaussians have a non-finite value or a zero "
                        "rotation; written fully transparent at the origin"]
    hidden = sigmoid(got[:, 6]) < 1e-5
    assert hidden.sum() == 3
    assert np.abs(got[hidden, :3]).max() <= origin
    assert np.isfinite(got).all()
    if writer is write_spz:  # version 2, the default
        want = stored(scene(100))[3:]
        assert_decoded(got[3:], want, SPZ_POSITION, SPZ_DC, SPZ_LOG_SCALE, SPZ2_W)


@pytest.mark.parametrize(("version", "rotation_bytes"), [(3, 4), (2, 3)])
def test_spz_header_and_payload_follow_the_format(tmp_path: Path, version: int,
                                                  rotation_bytes: int) -> None:
    path = write_spz(tmp_path / "scene.spz", scene(500), version=version)
    data = path.read_bytes()
    assert data[:3] == b"\x1f\x8b\x08"
    assert data[3] & 0x08 == 0, "no file name (ours is a temp name) in the gzip header"
    header, payload = spz_payload(path)
    assert header == (0x5053474E, version, 500, 0, 12, 0, 0)
    assert len(payload) == 500 * (9 + 1 + 3 + 3 + rotation_bytes)
    assert write_spz(tmp_path / "again.spz", scene(500), version=version).read_bytes() == data


def test_spz_version_2_rotations_are_the_w_positive_xyz_as_bytes(tmp_path: Path) -> None:
    """Checked on bytes, where node is missing too: Niantic's `q * 127.5 + 127.5` of the
    quaternion made w-positive, rounded half away from zero, saturated."""
    g = scene(6)
    g.quaternions[0] = torch.tensor([[1.0, 0, 0, 0], [-1.0, 0, 0, 0], [0, 1.0, 0, 0],
                                     [-0.5, 0.5, -0.5, 0.5], [0.28, -0.96, 0, 0], [0, 0, 0, -2.0]])
    _, payload = spz_payload(write_spz(tmp_path / "v2.spz", g, version=2))
    rotations = np.frombuffer(payload[-6 * 3:], np.uint8).reshape(6, 3)
    assert rotations.tolist() == [[128, 128, 128], [128, 128, 128], [255, 128, 128],
                                  [64, 191, 64], [5, 128, 128], [128, 128, 0]]


@pytest.mark.parametrize("version", [1, 4, "3"])
def test_an_spz_version_we_do_not_write_is_refused_by_name(tmp_path: Path,
                                                           version: object) -> None:
    with pytest.raises(ValueError, match=r"SPZ version .* cannot be written \(versions: 2, 3\)"):
        write_spz(tmp_path / "x.spz", scene(5), version=version)  # type: ignore[arg-type]
    assert not (tmp_path / "x.spz").exists()


def test_splat_records_hold_the_srgb_colour_and_the_exact_positions(tmp_path: Path) -> None:
    """Colour space checked on its own: sRGB of the linear colour, by the sRGB formula."""
    g = scene(500)
    records = np.fromfile(write_splat(tmp_path / "scene.splat", g), dtype=[
        ("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rotation", "u1", 4)])
    assert records.size == 500
    original = g.mean_vectors[0].numpy()
    order = np.lexsort(original[:, ::-1].T)[np.argsort(np.lexsort(records["position"][:, ::-1].T))]
    assert np.array_equal(records["position"], original[order])
    linear = g.colors[0].numpy().astype(np.float64)[order]
    srgb = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    assert np.abs(records["rgba"][:, :3] - srgb * 255).max() <= 0.5 + 1e-3
    opacity = g.opacities[0].numpy()[order]
    assert np.abs(records["rgba"][:, 3] - opacity * 255).max() <= 0.5 + 1e-3
    scales = g.singular_values[0].numpy()[order]
    assert np.allclose(records["scale"], scales, rtol=1e-6, atol=0)


def test_no_gaussians_give_an_empty_but_valid_spz_and_an_empty_splat(tmp_path: Path) -> None:
    """And SPZ is written as version 2 unless told otherwise: the one every reader opens."""
    g = scene(0)
    assert spz_payload(write_spz(tmp_path / "none.spz", g)) == (
        (0x5053474E, 2, 0, 0, 12, 0, 0), b"")
    assert write_splat(tmp_path / "none.splat", g).read_bytes() == b""


@pytest.mark.parametrize("writer", [write_spz, write_splat, write_sog],
                         ids=["spz", "splat", "sog"])
def test_an_unwritable_export_raises_output_error_naming_it_and_leaves_nothing(
        tmp_path: Path, writer: Callable[..., Path]) -> None:
    target = tmp_path / "gone" / "scene.out"
    with pytest.raises(OutputError, match=r"cannot write scene\.out") as raised:
        writer(target, scene(10))
    assert raised.value.path == target
    (tmp_path / "gone").mkdir()
    blocker = tmp_path / "gone" / "scene.out"
    blocker.mkdir()
    with pytest.raises(OutputError, match=r"cannot write scene\.out"):
        writer(blocker, scene(10))
    assert temp_files(blocker.parent) == []


def test_exporters_write_each_format_under_its_suffix_and_pass_warnings_on(
        tmp_path: Path) -> None:
    g = scene(50)
    g.mean_vectors[0, 0, 2] = 4000.0
    warnings: list[str] = []
    options = ExportOptions(spz_version=3, title="cat.jpg")
    written = {name: exporter.write(tmp_path / f"scene{exporter.suffix}", g, F_PX, SIZE,
                                    warnings, options)
               for name, exporter in EXPORTERS.items()}
    assert {name: path.name for name, path in written.items()} == {
        "ply": "scene.ply", "spz": "scene.spz", "splat": "scene.splat", "sog": "scene.sog",
        "html": "scene.html"}
    assert written["ply"].read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\n")
    assert spz_payload(written["spz"])[0][1:3] == (3, 50)  # the options' version
    assert written["splat"].stat().st_size == 50 * 32
    with zipfile.ZipFile(written["sog"]) as bundle:
        assert json.loads(bundle.read("meta.json"))["count"] == 50
    assert "<title>cat.jpg - 3D photo</title>" in written["html"].read_text(encoding="utf-8")
    assert len(warnings) == 1  # the SOG and the share page had nothing to say
    assert warnings[0].startswith("scene.spz: 1 of 50 Gaussians lie beyond SPZ's 2048 m range")

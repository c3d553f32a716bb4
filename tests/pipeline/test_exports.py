"""SPZ and .splat exports, read back by a real reader: PlayCanvas' splat-transform.

Each export is converted back to PLY by splat-transform (npm, installed once per test
session into the user cache) and compared with what our PLY stores, within the format's
own quantisation: SPZ's 24-bit fixed point with 12 fractional bits, its byte colours
scaled by 0.15, byte opacity, log scales in 1/16 steps and 9-bit "smallest three"
rotations; .splat's float32 positions and scales, byte colour and opacity, byte
quaternion components. Without node or npm (or without network for the install) those
tests are skipped with the reason; the checks on the files' layout run everywhere.
"""

from __future__ import annotations

import gzip
import math
import os
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import platformdirs
import pytest
import torch
from filelock import FileLock
from plyfile import PlyData

from pipeline import Gaussians, OutputError, write_ply
from pipeline.atomic import temp_files
from pipeline.exports import EXPORTERS, SPZ_LIMIT_M, write_splat, write_spz
from pipeline.ply import vertex_rows

SPLAT_TRANSFORM = "@playcanvas/splat-transform"
SPLAT_TRANSFORM_VERSION = "3.7.0"
SPLAT_TRANSFORM_ENV = "SHARP_WATCH_SPLAT_TRANSFORM"
"""A splat-transform to use instead: its executable, or its `bin/cli.mjs`."""
F_PX, SIZE = 1200.0, (1600, 1200)
COLUMNS = (["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
           + [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)])
SH_C0 = math.sqrt(1 / (4 * math.pi))
EPS = 1e-5
"""float32 arithmetic on either side (values here stay below about 20 in magnitude)."""

SPZ_POSITION = 0.5 / 4096
"""Half a step of 12 fractional bits; float32 times 4096 is exact, so nothing more."""
SPZ_DC = 0.5 / (0.15 * 255)
"""Half a byte step of SPZ's colour, `dc * 0.15 * 255 + 127.5`, in SH DC units."""
SPZ_LOG_SCALE = 0.5 / 16
SPZ_ROTATION = 3 * 0.5 * math.sqrt(0.5) / 511
"""Each stored component is within h = (1/sqrt 2) / 511 / 2; the rebuilt largest (at
least 1/2) within sum(|q_i|) h / q_largest <= 3h."""
OPACITY = 0.5 / 255
SPLAT_DC = 0.5 / 255 / SH_C0
SPLAT_ROTATION = 4 / 127.5
"""splat-transform decodes a byte b as b / 127.5 - 1 (antimatter15's viewer: (b - 128) /
128), so its raw quaternion is 1.0039 q + d with |d_i| <= 1 / 127.5; normalising it moves
it from q by at most 2 |d| <= 4 / 127.5."""


def scene(n: int = 3000, seed: int = 0) -> Gaussians:
    """Metric Gaussians around the camera: colours over all of [0, 1] (the linear sRGB
    segment included), sizes over four decades, quaternions neither unit nor w-positive."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(1, n, 3, generator=g) * 2 - 1) * torch.tensor([8.0, 6.0, 15.0])
    means[..., 2] += 15.5
    return Gaussians(
        mean_vectors=means,
        singular_values=torch.exp(torch.rand(1, n, 3, generator=g) * 9 - 9),
        quaternions=torch.randn(1, n, 4, generator=g) * 3,
        colors=torch.rand(1, n, 3, generator=g) ** 3,
        opacities=torch.rand(1, n, generator=g) * 0.98 + 0.01,
    )


def _node_command(cli: Path) -> list[str]:
    if cli.suffix in {".mjs", ".js"}:
        node = shutil.which("node")
        if node is None:
            pytest.skip("node is not installed: cannot run splat-transform")
        return [node, str(cli)]
    return [str(cli)]


def _problem(command: list[str]) -> str | None:
    """None when `command --version` names our version, else what it said instead."""
    try:
        done = subprocess.run([*command, "--version"], capture_output=True, text=True,
                              timeout=120)
    except OSError as exc:
        return f"cannot run {command}: {exc}"
    said = (done.stdout + done.stderr).strip()
    return None if done.returncode == 0 and f"v{SPLAT_TRANSFORM_VERSION}" in said else said


@pytest.fixture(scope="session")
def splat_transform() -> list[str]:
    """The command line that runs splat-transform.

    From $SHARP_WATCH_SPLAT_TRANSFORM when set; otherwise installed with npm, once, into
    the user cache (a file lock keeps parallel sessions from installing at once).
    """
    if os.environ.get(SPLAT_TRANSFORM_ENV):
        return _node_command(Path(os.environ[SPLAT_TRANSFORM_ENV]))
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("node/npm not installed: splat-transform (npm) cannot be installed")
    folder = Path(platformdirs.user_cache_dir("sharp-watch")) / "test-tools" / (
        f"splat-transform-{SPLAT_TRANSFORM_VERSION}")
    command = _node_command(folder / "node_modules" / SPLAT_TRANSFORM / "bin" / "cli.mjs")
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if _problem(command) is not None:
            done = subprocess.run(
                [npm, "install", "--prefix", str(folder), "--no-audit", "--no-fund",
                 "--ignore-scripts", "--fetch-retries=1", "--fetch-retry-mintimeout=2000",
                 f"{SPLAT_TRANSFORM}@{SPLAT_TRANSFORM_VERSION}"],
                capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                pytest.skip(f"npm could not install {SPLAT_TRANSFORM} (no network?): "
                            f"{done.stderr.strip()[:300]}")
    problem = _problem(command)
    if problem is not None:
        pytest.skip(f"splat-transform does not run here: {problem[-500:]}")
    return command


@pytest.fixture
def to_ply(splat_transform: list[str], tmp_path: Path) -> Callable[[Path], np.ndarray]:
    """Convert a file to PLY with splat-transform; its vertex columns as `(N, 14)` floats."""
    def convert(source: Path) -> np.ndarray:
        target = tmp_path / f"{source.name}.read.ply"
        done = subprocess.run([*splat_transform, "-q", "-w", str(source), str(target)],
                              capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        vertex = PlyData.read(str(target))["vertex"]
        return np.stack([np.asarray(vertex[name], dtype=np.float64) for name in COLUMNS], 1)
    return convert


def stored(g: Gaussians) -> np.ndarray:
    """What our PLY stores: positions, SH DC of the sRGB colour, opacity logit, log
    scales, the quaternion normalised to unit length (as both formats store it)."""
    rows = vertex_rows(g).numpy().astype(np.float64)
    rows[:, 10:] /= np.linalg.norm(rows[:, 10:], axis=1, keepdims=True)
    return rows


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def assert_decoded(got: np.ndarray, want: np.ndarray, position: float, dc: float,
                   log_scale: float, rotation: float) -> None:
    """Every column of `got` within the format's quantisation of `want`; -q is q."""
    assert got.shape == want.shape
    assert np.abs(got[:, 0:3] - want[:, 0:3]).max() <= position
    assert np.abs(got[:, 3:6] - want[:, 3:6]).max() <= dc + EPS
    assert np.abs(sigmoid(got[:, 6]) - sigmoid(want[:, 6])).max() <= OPACITY + EPS
    assert np.abs(got[:, 7:10] - want[:, 7:10]).max() <= log_scale + EPS
    sign = np.sign((got[:, 10:] * want[:, 10:]).sum(axis=1, keepdims=True))
    assert np.abs(got[:, 10:] * sign - want[:, 10:]).max() <= rotation + EPS


def spz_payload(path: Path) -> tuple[tuple[int, ...], bytes]:
    """The SPZ header fields (magic, version, count, SH degree, fractional bits, flags,
    reserved) and the bytes after it."""
    raw = gzip.decompress(path.read_bytes())
    return struct.unpack("<IIIBBBB", raw[:16]), raw[16:]


def test_spz_reads_back_in_splat_transform_as_the_ply_within_its_quantisation(
        tmp_path: Path, to_ply: Callable[[Path], np.ndarray]) -> None:
    g = scene()
    warnings: list[str] = []
    got = to_ply(write_spz(tmp_path / "scene.spz", g, warnings))
    assert_decoded(got, stored(g), SPZ_POSITION, SPZ_DC, SPZ_LOG_SCALE, SPZ_ROTATION)
    assert warnings == []


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
    ours_header, ours = spz_payload(write_spz(tmp_path / "ours.spz", g))
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
    got = to_ply(write_spz(tmp_path / "far.spz", g, warnings))
    want = stored(g)
    assert warnings == ["far.spz: 3 of 200 Gaussians lie beyond SPZ's 2048 m range (farthest "
                        "at 9000 m); moved in to it along their line of sight, scaled to "
                        "look the same"]
    factor = SPZ_LIMIT_M / np.abs(want[:3, :3]).max(axis=1, keepdims=True)
    assert np.abs(got[:3, :3] - want[:3, :3] * factor).max() <= SPZ_POSITION
    assert np.abs(got[:3, 7:10] - (want[:3, 7:10] + np.log(factor))).max() <= SPZ_LOG_SCALE + EPS
    assert_decoded(got[3:], want[3:], SPZ_POSITION, SPZ_DC, SPZ_LOG_SCALE, SPZ_ROTATION)


@pytest.mark.parametrize(("writer", "suffix"), [(write_spz, ".spz"), (write_splat, ".splat")])
def test_gaussians_a_format_cannot_encode_are_transparent_at_the_origin(
        tmp_path: Path, to_ply: Callable[[Path], np.ndarray], writer: Callable[..., Path],
        suffix: str) -> None:
    g = scene(100)
    g.mean_vectors[0, 0, 1] = math.inf
    g.colors[0, 1, 2] = math.nan
    g.quaternions[0, 2] = 0.0
    warnings: list[str] = []
    path = writer(tmp_path / f"bad{suffix}", g, warnings)
    got = to_ply(path)
    assert warnings == [f"{path.name}: 3 of 100 Gaussians have a non-finite value or a zero "
                        "rotation; written fully transparent at the origin"]
    hidden = np.linalg.norm(got[:, :3], axis=1) == 0
    assert hidden.sum() == 3
    assert (sigmoid(got[hidden, 6]) < 1e-5).all()
    assert np.isfinite(got).all()
    if writer is write_spz:
        want = stored(scene(100))[3:]
        assert_decoded(got[3:], want, SPZ_POSITION, SPZ_DC, SPZ_LOG_SCALE, SPZ_ROTATION)


def test_spz_header_and_payload_follow_the_format(tmp_path: Path) -> None:
    path = write_spz(tmp_path / "scene.spz", scene(500))
    data = path.read_bytes()
    assert data[:3] == b"\x1f\x8b\x08"
    assert data[3] & 0x08 == 0, "no file name (ours is a temp name) in the gzip header"
    header, payload = spz_payload(path)
    assert header == (0x5053474E, 3, 500, 0, 12, 0, 0)
    assert len(payload) == 500 * (9 + 1 + 3 + 3 + 4)
    assert write_spz(tmp_path / "again.spz", scene(500)).read_bytes() == data


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
    g = scene(0)
    assert spz_payload(write_spz(tmp_path / "none.spz", g)) == (
        (0x5053474E, 3, 0, 0, 12, 0, 0), b"")
    assert write_splat(tmp_path / "none.splat", g).read_bytes() == b""


@pytest.mark.parametrize("writer", [write_spz, write_splat], ids=["spz", "splat"])
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
    written = {name: exporter.write(tmp_path / f"scene{exporter.suffix}", g, F_PX, SIZE,
                                    warnings)
               for name, exporter in EXPORTERS.items()}
    assert {name: path.name for name, path in written.items()} == {
        "ply": "scene.ply", "spz": "scene.spz", "splat": "scene.splat"}
    assert written["ply"].read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\n")
    assert spz_payload(written["spz"])[0][2] == 50
    assert written["splat"].stat().st_size == 50 * 32
    assert len(warnings) == 1
    assert warnings[0].startswith("scene.spz: 1 of 50 Gaussians lie beyond SPZ's 2048 m range")

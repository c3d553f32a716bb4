"""A real reader for the export tests: PlayCanvas's splat-transform, and what it is checked against.

splat-transform (npm) is installed once per user cache (the `splat_transform` and
`to_ply` fixtures in `conftest.py` use it); it converts an export back to PLY, and its
columns are compared with what our PLY stores, within each format's quantisation
(`assert_decoded`). Without node or npm (or without network for the install) the tests
that need it are skipped with the reason.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import platformdirs
import pytest
import torch
from filelock import FileLock
from plyfile import PlyData

from pipeline import Gaussians
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
OPACITY = 0.5 / 255
"""Half a byte step: every format stores opacity as a byte, rounded to nearest."""


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


def stored(g: Gaussians) -> np.ndarray:
    """What our PLY stores: positions, SH DC of the sRGB colour, opacity logit, log
    scales, the quaternion normalised to unit length (as every format stores it)."""
    rows = vertex_rows(g).numpy().astype(np.float64)
    rows[:, 10:] /= np.linalg.norm(rows[:, 10:], axis=1, keepdims=True)
    return rows


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def assert_decoded(got: np.ndarray, want: np.ndarray, position: float | np.ndarray,
                   dc: float | np.ndarray, log_scale: float | np.ndarray,
                   rotation: float, opacity: float = OPACITY) -> None:
    """Every column of `got` within the format's quantisation of `want` (a bound, or
    bounds of `want`'s shape per column group); -q is q."""
    assert got.shape == want.shape
    assert (np.abs(got[:, 0:3] - want[:, 0:3]) <= position).all()
    assert (np.abs(got[:, 3:6] - want[:, 3:6]) <= np.add(dc, EPS)).all()
    assert np.abs(sigmoid(got[:, 6]) - sigmoid(want[:, 6])).max() <= opacity + EPS
    assert (np.abs(got[:, 7:10] - want[:, 7:10]) <= np.add(log_scale, EPS)).all()
    sign = np.sign((got[:, 10:] * want[:, 10:]).sum(axis=1, keepdims=True))
    assert np.abs(got[:, 10:] * sign - want[:, 10:]).max() <= rotation + EPS


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


def splat_transform_command() -> list[str]:
    """The command line that runs splat-transform, or a skip saying why there is none.

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


def read_back(command: list[str], source: Path, folder: Path) -> np.ndarray:
    """`source` converted to PLY by splat-transform (`command`); its vertex columns as
    `(N, 14)` floats."""
    target = folder / f"{source.name}.read.ply"
    done = subprocess.run([*command, "-q", "-w", str(source), str(target)],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    vertex = PlyData.read(str(target))["vertex"]
    return np.stack([np.asarray(vertex[name], dtype=np.float64) for name in COLUMNS], 1)

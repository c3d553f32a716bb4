"""Our PLY writer: SHARP's exact layout (checked against a plyfile writer), atomic, fast path."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from daemon.results import timestamped_path
from pipeline import Gaussians, OutputError, write_ply


def _gaussians(n: int = 500, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(1, n, 3, generator=g)
    means[..., 2] = means[..., 2].abs() + 1.0
    return Gaussians(
        mean_vectors=means,
        singular_values=torch.rand(1, n, 3, generator=g) * 0.1 + 1e-3,
        quaternions=torch.nn.functional.normalize(torch.randn(1, n, 4, generator=g), dim=-1),
        colors=torch.rand(1, n, 3, generator=g),
        opacities=torch.rand(1, n, generator=g) * 0.98 + 0.01,
    )


def _reference_ply(path: Path, g: Gaussians, f_px: float, size: tuple[int, int]) -> None:
    """The upstream table written with plyfile, element by element."""
    width, height = size
    linear = g.colors.flatten(0, 1)
    srgb = torch.where(linear <= 0.0031308, linear * 12.92,
                       1.055 * linear.clamp(min=0.0031308) ** (1 / 2.4) - 0.055)
    rows = torch.cat([
        g.mean_vectors.flatten(0, 1),
        (srgb - 0.5) / math.sqrt(1 / (4 * math.pi)),
        torch.log(g.opacities / (1 - g.opacities)).flatten(0, 1)[:, None],
        torch.log(g.singular_values).flatten(0, 1),
        g.quaternions.flatten(0, 1),
    ], dim=1).numpy()
    names = (["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
             + [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)])
    vertex = np.empty(len(rows), dtype=[(n, "f4") for n in names])
    for i, name in enumerate(names):
        vertex[name] = rows[:, i]
    disparity = torch.quantile(1.0 / g.mean_vectors[0, :, 2], torch.tensor([0.1, 0.9])).numpy()

    def element(name: str, kind: str, values: object) -> PlyElement:
        data = np.empty(len(values), dtype=[(name, kind)])  # type: ignore[arg-type]
        data[name] = values
        return PlyElement.describe(data, name)

    PlyData([
        PlyElement.describe(vertex, "vertex"),
        element("extrinsic", "f4", np.eye(4).flatten()),
        element("intrinsic", "f4", [f_px, 0, width / 2, 0, f_px, height / 2, 0, 0, 1]),
        element("image_size", "u4", [width, height]),
        element("frame", "i4", [1, len(rows)]),
        element("disparity", "f4", disparity),
        element("color_space", "u1", [0]),
        element("version", "u1", [1, 5, 0]),
    ]).write(str(path))


@pytest.mark.parametrize("n", [1, 500, 4_095, 4_097, 20_000, 100_003])
def test_bytes_match_the_upstream_layout_written_by_plyfile(tmp_path: Path, n: int) -> None:
    """Identical bytes for any N: the chunked write must not change any float's rounding
    (a chunk boundary moves torch's vectorised/scalar split, which rounds differently)."""
    g = _gaussians(n)
    ours = write_ply(tmp_path / "ours.ply", g, 1234.5, (640, 480))
    _reference_ply(tmp_path / "ref.ply", g, 1234.5, (640, 480))
    assert ours.read_bytes() == (tmp_path / "ref.ply").read_bytes()


def test_values_read_back_as_sharp_stores_them(tmp_path: Path) -> None:
    g = _gaussians(50)
    ply = PlyData.read(str(write_ply(tmp_path / "g.ply", g, 1000.0, (300, 200))))
    vertex = ply["vertex"]
    assert vertex.count == 50
    assert np.allclose(vertex["z"], g.mean_vectors[0, :, 2].numpy())
    opacity = 1 / (1 + np.exp(-vertex["opacity"]))
    assert np.allclose(opacity, g.opacities[0].numpy(), atol=1e-6)
    assert np.allclose(np.exp(vertex["scale_0"]), g.singular_values[0, :, 0].numpy(), rtol=1e-5)
    assert list(ply["image_size"]["image_size"]) == [300, 200]
    assert list(ply["intrinsic"]["intrinsic"]) == [1000.0, 0, 150.0, 0, 1000.0, 100.0, 0, 0, 1]
    assert list(ply["frame"]["frame"]) == [1, 50]


def test_write_is_atomic_and_failures_leave_nothing(tmp_path: Path) -> None:
    target = write_ply(tmp_path / "a.ply", _gaussians(10), 100.0, (10, 10))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ply"]
    assert target.stat().st_size > 0
    with pytest.raises(OutputError, match=r"cannot write b\.ply") as info:
        write_ply(tmp_path / "missing" / "b.ply", _gaussians(10), 100.0, (10, 10))
    assert "missing" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ply"]


def test_timestamped_names_never_collide(tmp_path: Path) -> None:
    from datetime import datetime

    when = datetime(2026, 11, 24, 3, 15, 0)
    first = timestamped_path(tmp_path, "photo", ".ply", when)
    assert first.name == "photo_20261124-031500.ply"
    first.write_bytes(b"x")
    second = timestamped_path(tmp_path, "photo", ".ply", when)
    assert second.name == "photo_20261124-031500-2.ply"

"""Export sizes and write times for one SHARP-sized scene: PLY, SPZ, .splat, SOG and the
share page.

    python bench/exports.py [--n 1179648] [--repeat 3] [--scene random|grid|sharp]

Every format of `pipeline.exports.EXPORTERS` (SPZ in the default version 2), plus SPZ
version 3 (`spz3`), measured in one run: the file's size (MB, and as a fraction of the
PLY's), and the best wall and CPU seconds of `--repeat` writes (the formats take turns, as
in `bench/ply_write.py`), then where the SOG's bytes go. `random` scatters the Gaussians
uniformly in space and in file order (the worst case for SPZ's gzip and SOG's WebP);
`grid` lays them on SHARP's two layers of pixels, in SHARP's order, with smooth depth and
colour. Both draw every rotation, and much of each size, colour and opacity, at random
per Gaussian: noise that no lossless coder removes, and which sets a floor under their
SOG's size (docs/formats.md). `sharp` is `bench/scenes.py`'s SHARP-like scene (the grid
with a photo's colours, depth edges, and rotations and sizes that vary smoothly with a
small scatter), the closest stand-in for a real result; `bench/share.py` sweeps its
scatter.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ply_write import F_PX, SHARP_N, SIZE, random_gaussians, time_writers
from bench.scenes import sharp_like
from pipeline import Gaussians
from pipeline.exports import EXPORTERS, Exporter, ExportOptions, write_spz


def grid_gaussians(n: int, seed: int = 0) -> Gaussians:
    """SHARP's layout: two layers of a square pixel grid, row by row, unprojected with a
    smooth depth; smooth colours; sizes of about a pixel's footprint."""
    g = torch.Generator().manual_seed(seed)
    side = math.ceil(math.sqrt(n / 2))
    index = torch.arange(n)
    layer, pixel = index // (side * side), index % (side * side)
    u = (pixel % side).float() / side - 0.5
    v = (pixel // side).float() / side - 0.5
    z = 3.0 + 4.0 * (v + 0.5) + 0.3 * torch.sin(9 * u) + 0.2 * layer
    half_width = SIZE[0] / (2 * F_PX)
    means = torch.stack([u * 2 * half_width * z, v * 2 * half_width * z, z], dim=-1)
    colors = torch.stack([0.5 + 0.4 * torch.sin(5 * u + c) * torch.cos(3 * v) for c in range(3)],
                         dim=-1)
    footprint = (z / F_PX * SIZE[0] / side)[:, None]
    return Gaussians(
        mean_vectors=means[None],
        singular_values=footprint * torch.exp(0.3 * torch.randn(n, 3, generator=g))[None],
        quaternions=torch.nn.functional.normalize(torch.randn(1, n, 4, generator=g), dim=-1),
        colors=(colors + 0.02 * torch.randn(n, 3, generator=g)).clamp(0, 1)[None],
        opacities=(torch.rand(1, n, generator=g) * 0.5 + 0.5).clamp(max=0.99),
    )


def timed(exporter: Exporter, warnings: list[str]) -> Callable[..., object]:
    """`exporter` in `time_writers`' shape: (path, gaussians, f_px, image_size)."""
    return lambda path, g, f_px, size: exporter.write(path, g, f_px, size, warnings,
                                                      ExportOptions(title="bench.jpg"))


SCENES: dict[str, Callable[[int], Gaussians]] = {
    "random": random_gaussians,
    "grid": grid_gaussians,
    "sharp": lambda n: sharp_like(side=math.isqrt(n // 2))[0],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=SHARP_N, help="number of Gaussians")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    parser.add_argument("--scene", choices=tuple(SCENES), default="random")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: temp)")
    args = parser.parse_args(argv)

    g = SCENES[args.scene](args.n)
    warnings: list[str] = []
    writers = {name: timed(exporter, warnings) for name, exporter in EXPORTERS.items()}
    writers["spz3"] = lambda path, g, f_px, size: write_spz(path, g, warnings, version=3)
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        results = time_writers(writers, Path(folder), g, args.repeat)
    ply_size = len(results["ply"][2])
    print(f"N = {args.n} Gaussians ({args.scene} scene), best of {args.repeat}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'format':<8} {'size MB':>9} {'of PLY':>7} {'wall s':>8} {'cpu s':>8}")
    for name, (wall, cpu, data) in results.items():
        print(f"{name:<8} {len(data) / 1e6:9.2f} {len(data) / ply_size:7.3f} {wall:8.3f} "
              f"{cpu:8.3f}")
    print(sog_parts(results["sog"][2], args.n))
    for line in dict.fromkeys(warnings):
        print(f"warning: {line}")
    return 0


def sog_parts(data: bytes, n: int) -> str:
    """Bytes per Gaussian of each file in the SOG: where its size goes."""
    with zipfile.ZipFile(io.BytesIO(data)) as bundle:
        parts = [f"{info.filename.removesuffix('.webp')} {info.file_size / max(n, 1):.2f}"
                 for info in bundle.infolist()]
    return "sog bytes per Gaussian: " + ", ".join(parts)


if __name__ == "__main__":
    sys.exit(main())

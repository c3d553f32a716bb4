"""Bench scenes shaped like what SHARP gives, for the export and share benches.

`sharp_like` stands in for a real SHARP result, which this machine cannot make (no weights
can be downloaded). It follows what SHARP's output is made of (docs/upstream-contract.md):

- two layers of 768 x 768 Gaussians on the image grid, in SHARP's order (layer by layer,
  each row by row);
- positions: each pixel unprojected at its depth, from a smooth depth map with edges (a
  ground plane rising to a horizon, a far background, three nearer objects with sharp
  outlines, gentle relief); the back layer a little behind the front;
- colours: the photo's, per pixel (linear RGB): `--photo` or `../shared/data/example.jpg`
  beside the repository when present, else a procedural photo-like image (sky gradient,
  textured ground, coloured objects), so the repository stands alone;
- scales: the pixel's footprint (depth / f_px, times the pixels per grid cell), varying
  smoothly over the image by about 15% and per Gaussian by `noise`, flattened along the
  view axis;
- rotations: near one common orientation, tilting smoothly with the surface, plus a small
  per-Gaussian wobble (`noise` radians);
- opacities: mostly near 1 on the front layer, lower and smoothly varying on the back.

`noise` (default 0.03) is the per-Gaussian part no coder can predict: a network's output
varies smoothly between neighbouring pixels, with some scatter; how large that scatter is
on real results is the open question, so `bench/share.py --noise` sweeps it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline import Gaussians

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_PHOTO = ROOT.parent / "shared" / "data" / "example.jpg"
SIDE = 768
"""SHARP's grid: 768 x 768 pixels per layer."""
PROCEDURAL_SIZE = (4032, 3024)
NOISE = 0.03


def _smooth(generator: torch.Generator, side: int, cells: int, channels: int = 1) -> torch.Tensor:
    """A smooth random field over the grid, `(channels, side, side)`, about unit spread,
    varying over about `side / cells` pixels of a 768 grid (`cells` scaled down with it)."""
    cells = max(2, round(cells * side / SIDE))
    coarse = torch.randn(1, channels, cells, cells, generator=generator)
    return F.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=True)[0]


def _grid(side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel centres `(v, u)` over [0, 1], each `(side, side)`."""
    centres = (torch.arange(side) + 0.5) / side
    v, u = torch.meshgrid(centres, centres, indexing="ij")
    return v, u


def procedural_photo(side: int = SIDE, seed: int = 0) -> np.ndarray:
    """A photo-like `(side, side, 3)` sRGB image in [0, 1]: sky, horizon, textured ground
    and three coloured objects, with fine texture."""
    g = torch.Generator().manual_seed(seed)
    v, u = _grid(side)
    sky = torch.stack([0.45 + 0.3 * v, 0.6 + 0.25 * v, 0.9 + 0.05 * v])
    ground = torch.stack([0.35 + 0.1 * u, 0.45 - 0.1 * v, 0.2 + 0.0 * u])
    image = torch.where(v < 0.4, sky, ground)
    texture = _smooth(g, side, 96, 3) * 0.05 + _smooth(g, side, 384, 3) * 0.04
    image = image + texture * (v >= 0.4)
    for (cu, cv, ru, rv), colour in zip(_OBJECTS, ((0.8, 0.2, 0.15), (0.2, 0.3, 0.7),
                                                   (0.9, 0.8, 0.3)), strict=True):
        inside = ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 < 1
        shade = torch.tensor(colour)[:, None, None] * (1.1 - 0.4 * (v - cv) / rv)
        image = torch.where(inside, shade + _smooth(g, side, 192, 3) * 0.03, image)
    return image.clamp(0, 1).permute(1, 2, 0).numpy()


_OBJECTS = ((0.25, 0.62, 0.12, 0.2), (0.6, 0.7, 0.08, 0.22), (0.8, 0.5, 0.06, 0.08))
"""Near objects: centre and radii (u, v) on the grid."""
_OBJECT_DEPTHS = (3.0, 5.0, 9.0)


def _photo(path: Path | None, side: int) -> tuple[np.ndarray, tuple[int, int], str]:
    """The grid's sRGB colours, the photo's `(width, height)` and what it was."""
    if path is not None and path.is_file():
        from PIL import Image

        with Image.open(path) as image:
            size = image.size
            grid = image.convert("RGB").resize((side, side), Image.Resampling.BILINEAR)
        return np.asarray(grid, dtype=np.float32) / 255, size, str(path)
    return procedural_photo(side), PROCEDURAL_SIZE, "procedural photo"


def _depth(g: torch.Generator, side: int) -> torch.Tensor:
    """`(side, side)` metres: ground rising to a horizon at 40% of the height, background at
    60 m, three near objects with sharp outlines, gentle relief."""
    v, u = _grid(side)
    depth = torch.where(v > 0.4, (1.6 / (v - 0.38)).clamp(max=60.0), torch.tensor(60.0))
    depth = depth * (1 + 0.03 * _smooth(g, side, 24)[0])
    for (cu, cv, ru, rv), near in zip(_OBJECTS, _OBJECT_DEPTHS, strict=True):
        inside = ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 < 1
        bulge = near * (1 - 0.1 * (1 - ((u - cu) / ru) ** 2 - ((v - cv) / rv) ** 2).clamp(min=0))
        depth = torch.where(inside, bulge, depth)
    return depth


def sharp_like(photo: Path | None = EXAMPLE_PHOTO, noise: float = NOISE, side: int = SIDE,
               seed: int = 0) -> tuple[Gaussians, float, tuple[int, int], str]:
    """A SHARP-shaped scene (module docstring) of two `side` x `side` layers: the
    Gaussians, f_px, the photo's `(width, height)` and which photo gave the colours."""
    g = torch.Generator().manual_seed(seed)
    srgb, (width, height), source = _photo(photo, side)
    f_px = 30.0 * math.hypot(width, height) / math.hypot(36.0, 24.0)
    v, u = _grid(side)
    front = _depth(g, side)
    layers = torch.stack([front, front * 1.03 + 0.05])  # SHARP's back surface: just behind
    x = (u * width - width / 2) / f_px * layers
    y = (v * height - height / 2) / f_px * layers
    means = torch.stack([x, y, layers], dim=-1).reshape(-1, 3)
    n = means.shape[0]

    footprint = layers / f_px * torch.tensor([width / side, height / side]).mean()
    variation = torch.exp(0.15 * _smooth(g, side, 48, 3))
    scales = footprint[:, None] * variation[None] * torch.tensor([1.0, 1.0, 0.3])[None, :, None,
                                                                                   None]
    scales = scales.permute(0, 2, 3, 1).reshape(-1, 3)
    scales = scales * torch.exp(noise * torch.randn(n, 3, generator=g))

    tilt = torch.stack(torch.gradient(torch.log(front), dim=(0, 1))) * 20
    axis = torch.cat([tilt, 0.1 * _smooth(g, side, 32)]).expand(2, 3, side, side)
    axis = axis.permute(0, 2, 3, 1).reshape(-1, 3).clamp(-0.5, 0.5)
    axis = axis + noise * torch.randn(n, 3, generator=g)
    quaternions = F.normalize(torch.cat([torch.ones(n, 1), axis / 2], dim=1), dim=1)

    linear = torch.from_numpy(np.where(srgb <= 0.04045, srgb / 12.92,
                                       ((srgb + 0.055) / 1.055) ** 2.4).astype(np.float32))
    colours = torch.stack([linear, linear * 0.9]).reshape(-1, 3)
    colours = (colours * torch.exp(0.5 * noise * torch.randn(n, 3, generator=g))).clamp(0, 1)

    opacity_front = 1 - (noise * torch.randn(side * side, generator=g)).abs()
    opacity_back = 0.75 + 0.15 * _smooth(g, side, 32)[0].reshape(-1).clamp(-1, 1)
    opacities = torch.cat([opacity_front, opacity_back]).clamp(0.01, 0.999)
    return (Gaussians(mean_vectors=means[None], singular_values=scales[None],
                      quaternions=quaternions[None], colors=colours[None],
                      opacities=opacities[None]), f_px, (width, height), source)

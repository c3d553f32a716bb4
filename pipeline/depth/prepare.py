"""From any depth map to the 2-layer metric depth SHARP receives (the seed's semantics).

Order: put the map on SHARP's grid (one resize, antialiased when shrinking), convert
its format to metres (relative formats by a robust fit to SHARP's own depth), then
`* depth_scale + depth_offset`, clamp to [0.001, 100] m, and derive the back layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..settings import DEPTH_MAX_M, DEPTH_MIN_M

_FIT_SAMPLES = 65536


def to_grid(depth: torch.Tensor, size: int) -> torch.Tensor:
    """A `(h, w)` map as `(1, 1, size, size)`; untouched when it is already on the grid."""
    x = depth.reshape(1, 1, *depth.shape[-2:]).float()
    if tuple(x.shape[-2:]) == (size, size):
        return x
    shrinking = x.shape[-1] > size or x.shape[-2] > size
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=shrinking)


def canonical_to_metric(canonical: torch.Tensor, f_px: float, width: int) -> torch.Tensor:
    """Depth Pro's canonical inverse depth to metres for a photo `width` px wide at `f_px`."""
    return (f_px / width) / canonical.clamp(1e-4, 1e4)


def robust_line_fit(x: torch.Tensor, y: torch.Tensor, iterations: int = 8) -> tuple[float, float]:
    """`y ~ s * x + t` by least squares, refitted on points within 3 robust sigmas."""
    x = x.reshape(-1).double()
    y = y.reshape(-1).double()
    if x.numel() > _FIT_SAMPLES:
        step = x.numel() // _FIT_SAMPLES
        x, y = x[::step], y[::step]
    keep = torch.ones_like(x, dtype=torch.bool)
    scale, shift = 1.0, 0.0
    for _ in range(iterations):
        xs, ys = x[keep], y[keep]
        design = torch.stack([xs, torch.ones_like(xs)], dim=1)
        solution = torch.linalg.lstsq(design, ys.unsqueeze(1)).solution.squeeze(1)
        scale, shift = float(solution[0]), float(solution[1])
        residual = y - (scale * x + shift)
        centre = residual[keep].median()
        mad = float((residual[keep] - centre).abs().median()) * 1.4826
        new_keep = (residual - centre).abs() <= 3.0 * max(mad, 1e-12)
        if int(new_keep.sum()) < 16 or bool((new_keep == keep).all()):
            break
        keep = new_keep
    return scale, shift


def _fit_relative(values: torch.Tensor, internal_front: torch.Tensor) -> torch.Tensor:
    scale, shift = robust_line_fit(values, internal_front)
    if not scale > 0:
        raise InputError("relative depth map runs opposite to the photo's depth (fitted scale "
                         f"{scale:.3g} <= 0); is it inverse-relative (disparity)?")
    return scale * values + shift


def _fit_inverse(values: torch.Tensor, internal_front: torch.Tensor) -> torch.Tensor:
    scale, shift = robust_line_fit(values, 1.0 / internal_front)
    if not scale > 0:
        raise InputError("inverse-relative map runs opposite to the photo's depth (fitted "
                         f"scale {scale:.3g} <= 0); is it relative depth, not disparity?")
    return 1.0 / (scale * values + shift).clamp(min=1.0 / DEPTH_MAX_M)


def _fit_error(depth: torch.Tensor, internal_front: torch.Tensor) -> float:
    return float(((depth - internal_front).abs() / internal_front).median())


def external_to_metric(values: torch.Tensor, depth_format: str,
                       internal_front: torch.Tensor) -> tuple[torch.Tensor, str]:
    """Metres from an external map on SHARP's grid; returns the format actually used.

    `auto` takes values beyond 1.0 as metres; a map within [0, 1] is fitted both as
    relative depth and as inverse-relative depth, and the better fit to SHARP's own
    depth wins, so the choice is measured rather than guessed.
    """
    if depth_format == "auto":
        if float(values.max()) > 1.0:
            return values, "metric"
        candidates = []
        for name, fit in (("relative", _fit_relative), ("inverse-relative", _fit_inverse)):
            try:
                depth = fit(values, internal_front)
            except InputError:
                continue
            candidates.append((_fit_error(depth, internal_front), name, depth))
        if not candidates:
            raise InputError("depth map in [0, 1] fits SHARP's depth neither as relative depth "
                             "nor as disparity; set depth_format explicitly")
        _, name, depth = min(candidates, key=lambda c: c[0])
        return depth, name
    if depth_format == "metric":
        return values, "metric"
    if depth_format == "relative":
        return _fit_relative(values, internal_front), "relative"
    return _fit_inverse(values, internal_front), "inverse-relative"


def tune(front: torch.Tensor, scale: float, offset: float) -> torch.Tensor:
    """The seed's tuning: scale, then offset in metres, then clamp to [0.001, 100]."""
    return (front * scale + offset).clamp(DEPTH_MIN_M, DEPTH_MAX_M)


def two_layers(front: torch.Tensor, internal: torch.Tensor,
               back_surface_factor: float) -> torch.Tensor:
    """SHARP's `(B, 2, H, W)` depth with `front` as the nearer surface.

    Ratio mode (factor 1.0): each layer is `front * (SHARP layer / SHARP front)` per
    pixel, SHARP's front being the nearer of its two layers; with sorted layers this is
    exactly the seed's `back = front * back / front`, and it stays right if they are not.
    Fixed mode: back = front * factor.
    """
    if back_surface_factor == 1.0:
        nearest = internal.min(dim=1, keepdim=True).values.clamp(min=1e-4)
        return front * (internal / nearest)
    return torch.cat([front, front * back_surface_factor], dim=1)


def depth_range(depth: torch.Tensor) -> tuple[float, float]:
    return float(depth.min()), float(depth.max())


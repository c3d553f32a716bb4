"""From any depth map to the 2-layer metric depth SHARP receives.

The semantics are those of SHARP Custom, the script sharp-watch grew from.

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
METRIC_FACTOR = 3.0  # how far SHARP's metric depth may be off and a map still count as metres
MIN_CORRELATION = 0.1  # below this, whether a map is depth or disparity is a guess
METRIC_SLACK = 0.05  # how much better an offset may fit a map that is still taken as metres


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
    x, y = _subsample(x), _subsample(y)
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


def _subsample(x: torch.Tensor) -> torch.Tensor:
    """At most about `_FIT_SAMPLES` evenly strided values, flat, in double precision."""
    x = x.reshape(-1).double()
    return x[::x.numel() // _FIT_SAMPLES].contiguous() if x.numel() > _FIT_SAMPLES else x


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Each value's rank, ties sharing their average rank (8-bit maps tie a lot)."""
    ordered = x.sort().values
    return (torch.searchsorted(ordered, x) + torch.searchsorted(ordered, x, right=True)) / 2.0


def rank_correlation(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman's correlation of two maps; 0.0 where either is constant."""
    rx, ry = _ranks(_subsample(x)), _ranks(_subsample(y))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    norm = float(rx.norm() * ry.norm())
    return float((rx * ry).sum()) / norm if norm > 0 else 0.0


def detect_format(values: torch.Tensor, internal_front: torch.Tensor) -> str:
    """What an `auto` map is, measured against SHARP's own depth of the same photo.

    Depth rises where SHARP's depth rises and disparity falls, whatever the value range,
    so the sign of their rank correlation tells the two apart (a constant map has no
    direction and counts as depth). A depth map is taken as metres when it is within a
    factor of `METRIC_FACTOR` of SHARP's depth and fits it without an offset; else it is
    relative depth (a 0-1 or 0-255 export, millimetres) and is fitted.
    """
    values, internal_front = _subsample(values), _subsample(internal_front)
    correlation = rank_correlation(values, internal_front)
    constant = float(values.max()) == float(values.min())
    if not constant and abs(correlation) < MIN_CORRELATION:
        raise InputError(f"depth map hardly follows the photo's depth (rank correlation "
                         f"{correlation:.2f} with SHARP's own), so it cannot tell depth from "
                         "disparity; set depth_format explicitly")
    if correlation < 0:
        return "inverse-relative"
    return "metric" if _looks_metric(values, internal_front) else "relative"


def _looks_metric(values: torch.Tensor, internal_front: torch.Tensor) -> bool:
    """Metres agree with SHARP's depth up to a scale near 1 and need no offset: a relative
    map (0 at the nearest point, say) fits SHARP's depth clearly better with one."""
    scale = float((values / internal_front).median())
    if not 1.0 / METRIC_FACTOR <= scale <= METRIC_FACTOR:
        return False
    slope, shift = robust_line_fit(values, internal_front)
    proportional = _fit_error(values / scale, internal_front)
    return proportional <= _fit_error(slope * values + shift, internal_front) + METRIC_SLACK


def _fit_error(depth: torch.Tensor, internal_front: torch.Tensor) -> float:
    """Median relative difference from SHARP's depth."""
    return float(((depth - internal_front).abs() / internal_front).median())


def external_to_metric(values: torch.Tensor, depth_format: str,
                       internal_front: torch.Tensor) -> tuple[torch.Tensor, str]:
    """Metres from an external map on SHARP's grid; returns the format actually used
    (`auto` is resolved by `detect_format`)."""
    if depth_format == "auto":
        depth_format = detect_format(values, internal_front)
    if depth_format == "metric":
        return values, "metric"
    if depth_format == "relative":
        return _fit_relative(values, internal_front), "relative"
    return _fit_inverse(values, internal_front), "inverse-relative"


def tune(front: torch.Tensor, scale: float, offset: float) -> torch.Tensor:
    """SHARP Custom's tuning: scale, then offset in metres, then clamp to [0.001, 100]."""
    return (front * scale + offset).clamp(DEPTH_MIN_M, DEPTH_MAX_M)


def two_layers(front: torch.Tensor, internal: torch.Tensor,
               back_surface_factor: float) -> torch.Tensor:
    """SHARP's `(B, 2, H, W)` depth with `front` as the nearer surface.

    Ratio mode (factor 1.0): each layer is `front * (SHARP layer / SHARP front)` per
    pixel, SHARP's front being the nearer of its two layers; with sorted layers this is
    exactly SHARP Custom's `back = front * back / front`, and it stays right if they are not.
    Fixed mode: back = front * factor.
    """
    if back_surface_factor == 1.0:
        nearest = internal.min(dim=1, keepdim=True).values.clamp(min=1e-4)
        return front * (internal / nearest)
    return torch.cat([front, front * back_surface_factor], dim=1)


def depth_range(depth: torch.Tensor) -> tuple[float, float]:
    return float(depth.min()), float(depth.max())


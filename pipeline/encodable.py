"""What every compressed export encodes: the values the PLY stores, made safe to encode.

The writers of `pipeline.exports` (SPZ, `.splat`), `pipeline.sog` and `pipeline.share`
start from the same values (`ply.stored_columns`: sRGB colour as SH DC, opacity logit, log
scales), so a viewer shows the same scene from each file. They take SHARP's Gaussians or
the PLY's own `(N, 14)` vertex columns (`ply.read_ply`): the same numbers either way, so a
PLY written long ago converts to the same files as its photo's run would have written. A
Gaussian no format can encode (a non-finite value, a zero quaternion) is made fully
transparent at the origin, and said so in the caller's `warnings`, rather than written as
garbage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .ply import flat_fields, stored_columns

Scene = Any
"""What the writers take: SHARP's `Gaussians3D` (or ours), or the `(N, 14)` float32 vertex
columns a PLY stores (xyz, SH DC, opacity logit, log scales, wxyz)."""


class Encodable(NamedTuple):
    """What the formats encode, as numpy arrays over N Gaussians."""

    positions: np.ndarray
    log_scales: np.ndarray
    rotations: np.ndarray
    """Unit quaternions, wxyz."""
    colors_dc: np.ndarray
    """sRGB colour as SH DC, as the PLY stores it."""
    opacities: np.ndarray


def stored(scene: Scene) -> Encodable:
    """The values the PLY stores (opacity as the sigmoid of its stored logit, in float64),
    from Gaussians or from the PLY's columns; quaternions not yet normalised."""
    if isinstance(scene, np.ndarray):
        positions, colors_dc, logits = scene[:, 0:3], scene[:, 3:6], scene[:, 6]
        log_scales, rotations = scene[:, 7:10], scene[:, 10:14]
    else:
        g = flat_fields(scene)
        colors, logit_tensor, scale_tensor = stored_columns(g)
        positions, colors_dc, logits = g[0].numpy(), colors.numpy(), logit_tensor.numpy()
        log_scales, rotations = scale_tensor.numpy(), g[2].numpy()
    with np.errstate(over="ignore"):  # a logit of -inf or far below: opacity 0
        opacities = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    return Encodable(positions, log_scales, rotations.astype(np.float64), colors_dc, opacities)


def encodable(scene: Scene, warnings: list[str] | None, path: Path) -> Encodable:
    """The PLY's values, with Gaussians no format can encode made transparent."""
    values = stored(scene)
    norm = np.linalg.norm(values.rotations, axis=1, keepdims=True)
    columns = [values.positions, values.log_scales, values.colors_dc, values.opacities[:, None],
               norm]
    bad = ~np.isfinite(np.hstack(columns)).all(axis=1) | (norm[:, 0] == 0)
    if not bad.any():
        return values._replace(rotations=values.rotations / norm)
    warn(warnings, path, f"{int(bad.sum())} of {bad.size} Gaussians have a non-finite value "
                         "or a zero rotation; written fully transparent at the origin")
    keep = ~bad[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        rotations = values.rotations / norm
    return Encodable(np.where(keep, values.positions, 0), np.where(keep, values.log_scales, 0),
                     np.where(keep, rotations, [1.0, 0, 0, 0]),
                     np.where(keep, values.colors_dc, 0), np.where(bad, 0, values.opacities))


def warn(warnings: list[str] | None, path: Path, message: str) -> None:
    """One line in the caller's `warnings`, naming the file."""
    if warnings is not None:
        warnings.append(f"{path.name}: {message}")


def round_half_away(values: np.ndarray) -> np.ndarray:
    """To the nearest integer, halves away from zero (C's `round`, as Niantic's writer)."""
    return np.trunc(values + np.copysign(0.5, values))


def to_u8(values: np.ndarray) -> np.ndarray:
    """Round to the nearest byte value, saturating at 0 and 255."""
    return np.clip(round_half_away(values), 0, 255).astype(np.uint8)

"""What every depth model hands back, and the shared input preparation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F

RawKind = Literal["canonical-inverse", "metric"]


@dataclass(frozen=True)
class RawDepth:
    """A depth model's output before any focal length is applied.

    `canonical-inverse` is Depth Pro's parametrisation: metric depth is
    `(f_px / W) / value`, so one cached map serves every focal length. `metric` maps
    (Depth Anything V2 metric, say) are metres already. `values` is float32 on the
    model's own square grid, which for Depth Pro is SHARP's 1536 x 1536.
    """

    values: np.ndarray
    kind: RawKind
    model_id: str
    fov_deg: float | None = None

    def focal_px(self, width: int) -> float | None:
        """Depth Pro's focal estimate for an image `width` wide; None if it has no usable one."""
        if self.fov_deg is None or not 1.0 < self.fov_deg < 179.0:
            return None
        return 0.5 * width / math.tan(0.5 * math.radians(self.fov_deg))


class DepthEstimator(Protocol):
    """A loaded depth model: `estimate` takes uint8 RGB `(3, H, W)` on the model's device."""

    model_id: str

    def estimate(self, rgb: torch.Tensor) -> RawDepth: ...


def normalized_square(rgb: torch.Tensor, size: int, dtype: torch.dtype) -> torch.Tensor:
    """Depth Pro's input: [0,1] -> mean 0.5 / std 0.5, then bilinear to size x size."""
    x = rgb.unsqueeze(0).float().div_(255.0).sub_(0.5).div_(0.5)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.to(dtype)

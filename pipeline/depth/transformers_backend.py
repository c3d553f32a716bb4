"""Depth from a Hugging Face `transformers` depth model (Depth Pro by default).

Depth Pro (`apple/DepthPro-hf`) returns Apple's canonical inverse depth and a field of
view; any other metric depth model loadable by `AutoModelForDepthEstimation` (Depth
Anything V2 metric indoor/outdoor) returns metres. Preprocessing is done here on the
GPU with the same arithmetic as the hub's image processor, so no torchvision is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from ..device import device_errors
from ..errors import ModelError
from ..weights import HUB_PATTERNS, Progress, local_hub_snapshot
from .base import RawDepth, normalized_square

if TYPE_CHECKING:
    from transformers import PreTrainedModel

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class TransformersDepth:
    """A resident transformers depth model."""

    def __init__(self, model: PreTrainedModel, model_id: str) -> None:
        self.model = model.eval()
        self.model_id = model_id
        config = model.config
        self.is_depth_pro = config.model_type == "depth_pro"
        if self.is_depth_pro:
            self.input_size = round(config.patch_size / min(config.scaled_images_ratios))
        else:
            self.input_size = 518

    @classmethod
    def load(cls, name: str, device: torch.device, dtype: torch.dtype,
             cache_dir: Path | None = None, progress: Progress | None = None) -> TransformersDepth:
        """Load `name`, a local folder or a hub id (downloaded once, with progress)."""
        from transformers import AutoModelForDepthEstimation

        source = Path(name) if Path(name).is_dir() else _hub_snapshot(name, cache_dir, progress)
        try:
            model = AutoModelForDepthEstimation.from_pretrained(source, dtype=dtype)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"depth model {name!r} could not be loaded: {exc}") from exc
        return cls(model.to(device), model_id=name)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @torch.inference_mode()
    def estimate(self, rgb: torch.Tensor) -> RawDepth:
        with device_errors("depth estimation"):
            if self.is_depth_pro:
                x = normalized_square(rgb, self.input_size, self.dtype)
                out = self.model(pixel_values=x)
                fov = out.field_of_view
                return RawDepth(
                    values=_to_numpy(out.predicted_depth),
                    kind="canonical-inverse",
                    model_id=self.model_id,
                    fov_deg=float(fov.reshape(-1)[0]) if fov is not None else None,
                )
            out = self.model(pixel_values=self._imagenet_input(rgb))
            return RawDepth(values=_to_numpy(out.predicted_depth), kind="metric",
                            model_id=self.model_id)

    def _imagenet_input(self, rgb: torch.Tensor) -> torch.Tensor:
        """DPT-style input: aspect kept, sides multiples of 14 around 518, ImageNet stats."""
        _, h, w = rgb.shape
        scale = self.input_size / min(h, w)
        size = (max(14, round(h * scale / 14) * 14), max(14, round(w * scale / 14) * 14))
        x = rgb.unsqueeze(0).float().div_(255.0)
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
        mean = torch.tensor(_IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(_IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        return ((x - mean) / std).to(self.dtype)


def _to_numpy(depth: torch.Tensor) -> np.ndarray:
    return depth.reshape(depth.shape[-2:]).float().cpu().numpy()


def _hub_snapshot(repo_id: str, cache_dir: Path | None, progress: Progress | None) -> Path:
    """Cached snapshot of `repo_id`; downloads (resumable, with a progress bar) when missing."""
    from huggingface_hub import snapshot_download
    from tqdm.auto import tqdm

    cached = local_hub_snapshot(repo_id, cache_dir)
    if cached is not None:
        return cached

    class _Reporting(tqdm):
        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            if progress and self.total:
                progress(repo_id, min(1.0, self.n / self.total))
            return shown

    try:
        return Path(snapshot_download(repo_id, cache_dir=cache_dir, allow_patterns=HUB_PATTERNS,
                                      tqdm_class=_Reporting))
    except Exception as exc:
        raise ModelError(f"cannot download depth model {repo_id!r} ({exc}); check the internet "
                         "connection, or set depth_model to a local folder") from exc

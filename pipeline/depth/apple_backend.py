"""Depth from Apple's own `depth_pro` package (installed from git, optional extra)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..device import device_errors
from ..errors import ModelError, install_hint
from ..weights import DEPTH_PRO_URL, Progress, fetch_checkpoint
from .base import RawDepth, normalized_square

MODEL_ID = "apple/ml-depth-pro"


class AppleDepthPro:
    """A resident `depth_pro.DepthPro`; output is the same canonical inverse depth as HF's."""

    model_id = MODEL_ID
    input_size = 1536

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model.eval()

    @classmethod
    def load(cls, checkpoint: Path | None, device: torch.device, dtype: torch.dtype,
             cache_dir: Path | None = None, progress: Progress | None = None) -> AppleDepthPro:
        try:
            import depth_pro
            from depth_pro.depth_pro import DEFAULT_MONODEPTH_CONFIG_DICT
        except ImportError as exc:
            raise ModelError("depth_source 'depth-pro-apple' needs Apple's depth_pro package: "
                             + install_hint("depth-pro-apple")) from exc
        path = (Path(checkpoint).expanduser().resolve() if checkpoint
                else fetch_checkpoint(DEPTH_PRO_URL, cache_dir, progress))
        if not path.is_file():
            raise ModelError(f"Depth Pro checkpoint not found: {path}")
        config = dataclasses.replace(DEFAULT_MONODEPTH_CONFIG_DICT, checkpoint_uri=str(path))
        model, _ = depth_pro.create_model_and_transforms(config, device=device, precision=dtype)
        return cls(model)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @torch.inference_mode()
    def estimate(self, rgb: torch.Tensor) -> RawDepth:
        with device_errors("depth estimation"):
            x = normalized_square(rgb, self.input_size, self.dtype)
            canonical, fov_deg = self.model(x)
        return RawDepth(
            values=canonical.reshape(canonical.shape[-2:]).float().cpu().numpy(),
            kind="canonical-inverse",
            model_id=self.model_id,
            fov_deg=float(fov_deg.reshape(-1)[0]),
        )

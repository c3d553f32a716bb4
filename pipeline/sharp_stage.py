"""SHARP with its depth swapped for ours, without touching SHARP's code.

SHARP's forward runs `monodepth_model(image)` and turns the returned 2-layer
disparity into depth as `disparity_factor / disparity`. A forward hook on
`monodepth_model` (a public PyTorch mechanism) hands back the same `MonodepthOutput`
with only `disparity` replaced by `disparity_factor / injected_depth`, so SHARP's next
line computes exactly our depth, and every encoder and decoder feature is SHARP's own
(docs/upstream-contract.md#the-forward-pass).
The hook sees SHARP's own depth first, which ratio mode and relative-depth alignment
need, and which `save_internal_depth` keeps.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from .device import autocast, device_errors
from .errors import ModelError, install_hint
from .gaussians import Gaussians
from .weights import SHARP_URL, Progress, fetch_checkpoint, load_state_dict

DepthInjector = Callable[[torch.Tensor], torch.Tensor]
"""Given SHARP's own `(1, 2, R, R)` metric depth, return the `(1, 2, R, R)` depth to use."""


class SharpPredictor(Protocol):
    """What we use of SHARP's `RGBGaussianPredictor`, and all a factory's model must offer
    (docs/upstream-contract.md#building-and-loading)."""

    monodepth_model: torch.nn.Module

    def __call__(self, image: torch.Tensor, disparity_factor: torch.Tensor) -> Any: ...

    def internal_resolution(self) -> int: ...

    def parameters(self) -> Iterator[torch.nn.Parameter]: ...

    def eval(self) -> Any: ...


@dataclass
class SharpOutput:
    gaussians_ndc: Gaussians
    internal_depth: torch.Tensor
    used_depth: torch.Tensor


class SharpStage:
    """A resident SHARP predictor and the one way we call it."""

    def __init__(self, predictor: SharpPredictor, precision: str = "float32") -> None:
        predictor.eval()
        self.predictor = predictor
        self.precision = precision
        self.model_id = getattr(predictor, "model_id", "apple/ml-sharp")

    @classmethod
    def load(cls, device: torch.device, precision: str = "float32",
             checkpoint: Path | None = None, factory: str | None = None,
             cache_dir: Path | None = None, progress: Progress | None = None) -> SharpStage:
        """Official SHARP (downloaded once) or a local checkpoint; `factory` is `module:callable`
        returning a ready predictor (for custom or test models)."""
        if factory:
            predictor = _call_factory(factory)
        else:
            try:
                from sharp.models import PredictorParams, create_predictor
            except ImportError as exc:
                raise ModelError("SHARP is not installed: " + install_hint("sharp")) from exc
            path = Path(checkpoint) if checkpoint else fetch_checkpoint(SHARP_URL, cache_dir,
                                                                         progress)
            predictor = create_predictor(PredictorParams())
            try:
                predictor.load_state_dict(load_state_dict(path))
            except RuntimeError as exc:
                raise ModelError(f"{path} is not a SHARP checkpoint ({exc})") from exc
        return cls(predictor.to(device), precision)

    @property
    def device(self) -> torch.device:
        return next(self.predictor.parameters()).device

    @property
    def resolution(self) -> int:
        """SHARP's square working size (1536 for the official model)."""
        return int(self.predictor.internal_resolution())

    def resize_input(self, rgb: torch.Tensor) -> torch.Tensor:
        """uint8 `(3, H, W)` to SHARP's `(1, 3, R, R)` input in [0, 1], as SHARP's CLI does."""
        image = rgb.unsqueeze(0).float().div_(255.0)
        size = self.resolution
        return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=True)

    @torch.inference_mode()
    def predict(self, rgb: torch.Tensor, f_px: float,
                injector: DepthInjector | None = None) -> SharpOutput:
        """Run SHARP on uint8 `(3, H, W)` at focal `f_px`; `injector` swaps its depth."""
        width = rgb.shape[-1]
        factor = torch.tensor([f_px / width], device=rgb.device, dtype=torch.float32)
        seen: dict[str, torch.Tensor] = {}

        def swap_depth(_module: Any, _inputs: Any, output: Any) -> Any:
            disparity = output.disparity.float()
            internal = factor[:, None, None, None] / disparity.clamp(1e-4, 1e4)
            seen["internal"] = seen["used"] = internal
            if injector is None:
                return None
            seen["used"] = injector(internal).float()
            return output._replace(disparity=factor[:, None, None, None] / seen["used"])

        handle = self.predictor.monodepth_model.register_forward_hook(swap_depth)
        try:
            with device_errors("SHARP"), autocast(rgb.device, self.precision):
                raw = self.predictor(self.resize_input(rgb), factor)
        finally:
            handle.remove()
        gaussians = Gaussians(*(t.float() for t in (raw.mean_vectors, raw.singular_values,
                                                    raw.quaternions, raw.colors, raw.opacities)))
        return SharpOutput(gaussians, seen["internal"], seen["used"])


def _call_factory(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ModelError(f"sharp_factory must look like 'package.module:function', got {spec!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"sharp_factory {spec!r} could not be imported: {exc}") from exc
    return factory()

"""Photo -> Apple Depth Pro depth -> SHARP with that depth injected -> 3DGS PLY.

Knows nothing of folders, queues or trays: give it a photo and settings, get Gaussians.
Names are imported on first use (`pipeline.lazy`), so reading settings or config does
not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_exports

_EXPORTS = {
    "RawDepth": ".depth.base",
    "InputError": ".errors",
    "ModelError": ".errors",
    "OutOfMemoryError": ".errors",
    "OutputError": ".errors",
    "PipelineError": ".errors",
    "Gaussians": ".gaussians",
    "SUPPORTED_EXTENSIONS": ".image",
    "LoadedImage": ".image",
    "load_image": ".image",
    "write_ply": ".ply",
    "Pipeline": ".runner",
    "Prediction": ".runner",
    "resolve_focal": ".runner",
    "DepthSettings": ".settings",
    "ModelSettings": ".settings",
    "SharpStage": ".sharp_stage",
}
__all__ = [
    "SUPPORTED_EXTENSIONS",
    "DepthSettings",
    "Gaussians",
    "InputError",
    "LoadedImage",
    "ModelError",
    "ModelSettings",
    "OutOfMemoryError",
    "OutputError",
    "Pipeline",
    "PipelineError",
    "Prediction",
    "RawDepth",
    "SharpStage",
    "load_image",
    "resolve_focal",
    "write_ply",
]

if TYPE_CHECKING:
    from .depth.base import RawDepth
    from .errors import InputError, ModelError, OutOfMemoryError, OutputError, PipelineError
    from .gaussians import Gaussians
    from .image import SUPPORTED_EXTENSIONS, LoadedImage, load_image
    from .ply import write_ply
    from .runner import Pipeline, Prediction, resolve_focal
    from .settings import DepthSettings, ModelSettings
    from .sharp_stage import SharpStage


__getattr__ = lazy_exports(__name__, _EXPORTS)

"""Photo -> Apple Depth Pro depth -> SHARP with that depth injected -> 3DGS PLY.

Knows nothing of folders, queues or trays: give it a photo and settings, get Gaussians.
"""

from .depth.base import RawDepth
from .errors import InputError, ModelError, OutOfMemoryError, OutputError, PipelineError
from .gaussians import Gaussians
from .image import SUPPORTED_EXTENSIONS, LoadedImage, load_image
from .naming import timestamped_path
from .ply import write_ply
from .runner import Pipeline, Prediction, resolve_focal
from .settings import DepthSettings, ModelSettings
from .sharp_stage import SharpStage

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
    "timestamped_path",
    "write_ply",
]

"""The named depth sources: one table, so no list of names is repeated anywhere else.

A user writes `depth_source = "depth-anything-outdoor"` (or lists names in `compare`)
and never a hub id. Each name says which backend loads its model and from where; the
sources without a model (`npy`, `internal`) have no backend. `depth-pro` is the one
whose hub id the config's `depth_model` replaces (any other transformers depth model).
This module imports nothing heavy: settings and config read it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Backend = Literal["transformers", "apple"]
DEFAULT_DEPTH_MODEL = "apple/DepthPro-hf"


@dataclass(frozen=True)
class DepthSource:
    """One name a `depth_source` or `compare` entry may take."""

    name: str
    backend: Backend | None
    """Which loader runs its model; None: the depth comes from no model."""
    hub_id: str | None
    """The model it downloads once (the config's `depth_model` replaces it for
    `depth-pro`); None for Apple's package and for sources without a model."""
    summary: str


SOURCES: dict[str, DepthSource] = {s.name: s for s in (
    DepthSource("depth-pro", "transformers", DEFAULT_DEPTH_MODEL,
                "Apple Depth Pro through transformers"),
    DepthSource("depth-pro-apple", "apple", None,
                "Apple Depth Pro through Apple's depth_pro package"),
    DepthSource("depth-anything-indoor", "transformers",
                "depth-anything/Depth-Anything-V2-Metric-Indoor-Large-hf",
                "Depth Anything V2 Metric Large, indoor (Hypersim)"),
    DepthSource("depth-anything-outdoor", "transformers",
                "depth-anything/Depth-Anything-V2-Metric-Outdoor-Large-hf",
                "Depth Anything V2 Metric Large, outdoor (Virtual KITTI 2)"),
    DepthSource("npy", None, None, "your own .npy map (external_depth)"),
    DepthSource("internal", None, None, "SHARP's own depth, nothing injected"),
)}

DEPTH_SOURCES: tuple[str, ...] = tuple(SOURCES)
MODEL_SOURCES: tuple[str, ...] = tuple(name for name, s in SOURCES.items() if s.backend)
"""The sources whose depth a model makes (and the depth cache keeps)."""

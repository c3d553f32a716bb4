"""Settings as frozen dataclasses: one per photo (tunable), one per process (models).

`DepthSettings` is what a sidecar or a CLI flag can change for one photo; two equal
settings give the same result, which is what makes them usable as part of a job key.
Each key is declared once, with its range or choices and its help (`pipeline.schema`);
the config and sidecar checks, the command-line flags, the viewer's controls and the
docs are made from these declarations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .depth.sources import DEFAULT_DEPTH_MODEL, DEPTH_SOURCES
from .schema import Checked, Choice, Slider, problems, setting

DEPTH_FORMATS: tuple[str, ...] = ("metric", "relative", "inverse-relative", "auto")
EXPORT_FORMATS: tuple[str, ...] = ("ply", "spz", "splat", "sog", "html")
"""The result formats a `formats = [...]` setting may list (`pipeline.exports.EXPORTERS`)."""
SPZ_VERSIONS: tuple[int, ...] = (2, 3)
"""The SPZ versions `pipeline.exports.write_spz` writes (docs/formats.md: which reader
opens which)."""
DEFAULT_SPZ_VERSION = 2
"""Version 2: the one every SPZ reader we checked opens (gaussian-splats-3d refuses 3)."""
PRECISIONS: tuple[str, ...] = ("float32", "bfloat16", "float16")

DEPTH_MIN_M = 0.001
DEPTH_MAX_M = 100.0
DEFAULT_FOCAL_35MM = 30.0


@dataclass(frozen=True)
class DepthSettings:
    """How one photo's depth is made and tuned (SHARP Custom's command-line options)."""

    depth_scale: float = setting(
        1.0, low=0.0, low_open=True,
        help="multiply every depth: < 1 closer, > 1 farther (the whole scene grows or "
             "shrinks; it looks the same from the photo's own viewpoint)",
        control=Slider("Depth scale", 0.25, 4.0, 0.05))
    depth_offset: float = setting(
        0.0, low=-DEPTH_MAX_M, high=DEPTH_MAX_M, note="metres",
        help="metres added after scaling: > 0 farther, < 0 closer; changes the ratios "
             "between near and far, so the shape changes",
        control=Slider("Depth offset (m)", -5.0, 5.0, 0.05))
    focal_mm: float | None = setting(
        None, low=1.0, high=5000.0, note="mm, 35 mm equivalent",
        help="35 mm-equivalent focal length; unset: the photo's EXIF, else the depth "
             "model's estimate, else 30 mm; smaller (wider) spreads the scene out",
        control=Slider("Focal length (35 mm equiv.)", 10.0, 200.0, 1.0,
                       unset="from the photo (EXIF / depth model)"))
    back_surface_factor: float = setting(
        1.0, low=1.0, high=100.0, note="1 = ratio mode",
        help="where SHARP's second (back) layer sits: 1.0 = SHARP's own back/front ratio "
             "(recommended); > 1.0 = back = front x factor",
        control=Slider("Back surface factor", 1.0, 3.0, 0.05))
    depth_source: str = setting(
        "depth-pro", choices=DEPTH_SOURCES,
        help="the depth injected into SHARP: Depth Pro (transformers, or Apple's package), "
             "Depth Anything V2 indoor or outdoor, npy (external_depth) or internal "
             "(SHARP's own)",
        control=Choice("Depth source"))
    external_depth: Path | None = setting(
        None,
        help=".npy depth map for every photo, or a folder of <photo stem>.npy files; in a "
             "sidecar or an option it means depth_source npy unless that is given too")
    depth_format: str = setting(
        "auto", choices=DEPTH_FORMATS,
        help="what an external .npy holds: metric (metres), relative (depth up to scale "
             "and shift), inverse-relative (disparity up to scale and shift), or auto")
    save_internal_depth: bool = setting(
        False, help="also save SHARP's own 2-layer depth as <result>_internal_depth.npy")
    compare: tuple[str, ...] = setting(
        (), choices=DEPTH_SOURCES, item="depth source", flag="sources", later=True,
        help="depth sources to run the photo with, one result each plus a contact sheet; "
             "empty: one result from depth_source")
    formats: tuple[str, ...] = setting(
        ("ply",), choices=EXPORT_FORMATS, item="format", later=True,
        help="result files: ply (always) plus any of spz (about a quarter of the PLY's "
             "size), splat (read by most web viewers), sog (about a tenth) and html (one "
             "page that shows the scene in any browser, offline)")
    spz_version: int = setting(
        DEFAULT_SPZ_VERSION, low=min(SPZ_VERSIONS), high=max(SPZ_VERSIONS), later=True,
        help="the SPZ version an spz export is written in: 2 opens in every SPZ reader, "
             "3 keeps rotations about 3x finer but some web viewers refuse it")

    def __post_init__(self) -> None:
        for name in ("compare", "formats"):  # lists from TOML or JSON; tuples stay hashable
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        found = validate_depth_settings(self)
        if found:
            raise ValueError("; ".join(found))

    def replace(self, **changes: Any) -> DepthSettings:
        return dataclasses.replace(self, **changes)

    def overlay(self, changes: Mapping[str, Any]) -> DepthSettings:
        """These settings with one layer of changes over them (a sidecar, or command-line
        flags): naming `external_depth` without `depth_source` means the `npy` source.
        Raises ValueError, naming the key, for a result that is not valid."""
        if "external_depth" in changes and "depth_source" not in changes:
            changes = {**changes, "depth_source": "npy"}
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """Plain, JSON-friendly values (paths as strings) for keys and reports."""
        out = dataclasses.asdict(self)
        out["external_depth"] = str(self.external_depth) if self.external_depth else None
        out["compare"] = list(self.compare)
        out["formats"] = list(self.formats)
        return out

    @property
    def sources(self) -> tuple[str, ...]:
        """The depth sources this photo runs with: the compare's, else `depth_source`."""
        return self.compare or (self.depth_source,)

    def for_source(self, source: str) -> DepthSettings:
        """These settings for one source of a compare (the tuning is shared by all)."""
        return dataclasses.replace(self, depth_source=source, compare=())


def validate_depth_settings(s: DepthSettings) -> list[str]:
    """Every problem with `s`, each naming the key; empty when valid: each key against its
    declaration, then the rules that tie keys together."""
    found = problems(s)
    if found:
        return found
    if s.depth_source == "npy" and s.external_depth is None:
        found.append("depth_source 'npy' needs external_depth (a .npy file or folder)")
    if len(s.compare) == 1:
        found.append(f"compare needs at least two sources to compare, got {list(s.compare)}; "
                     "for one source set depth_source instead")
    if "npy" in s.compare and s.external_depth is None:
        found.append("compare lists 'npy', which needs external_depth (a .npy file or folder)")
    if "ply" not in s.formats:
        found.append(f"formats must include 'ply' (the result the viewer and SHARP's own "
                     f"tools read), got {list(s.formats)}; list the others beside it")
    return found


@dataclass(frozen=True)
class ModelSettings(Checked):
    """Which models to load and where they run; one per process."""

    device: str = setting(
        "auto", help="auto (a CUDA GPU if present, else Apple MPS, else CPU), cuda, cuda:1, "
                     "mps or cpu")
    depth_model: str = setting(
        DEFAULT_DEPTH_MODEL,
        help="hub id or local folder of the transformers metric depth model behind "
             "depth-pro (any metric depth model; the named sources need none)")
    depth_pro_checkpoint: Path | None = setting(
        None, help="Apple's depth_pro.pt for depth-pro-apple; unset: downloaded once")
    sharp_checkpoint: Path | None = setting(
        None, help="SHARP checkpoint (.pt); unset: Apple's, downloaded once")
    sharp_factory: str | None = setting(
        None, help="package.module:function returning a ready SHARP predictor (custom or "
                   "test models); unset: Apple's")
    sharp_precision: str = setting("float32", choices=PRECISIONS, help="SHARP's precision")
    depth_precision: str = setting(
        "auto", choices=("auto", *PRECISIONS),
        help="the depth model's precision; auto: float16 on CUDA, float32 elsewhere")
    cache_dir: Path | None = setting(
        None, help="where downloaded checkpoints are kept; unset: torch hub's checkpoint "
                   "folder and the Hugging Face cache")

"""Settings as frozen dataclasses: one per photo (tunable), one per process (models).

`DepthSettings` is what a sidecar or a CLI flag can change for one photo; two equal
settings give the same result, which is what makes them usable as part of a job key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .depth.sources import DEFAULT_DEPTH_MODEL, DEPTH_SOURCES

DEPTH_FORMATS: tuple[str, ...] = ("metric", "relative", "inverse-relative", "auto")
EXPORT_FORMATS: tuple[str, ...] = ("ply", "spz", "splat")
"""The result formats a `formats = [...]` setting may list (`pipeline.exports.EXPORTERS`)."""
PRECISIONS: tuple[str, ...] = ("float32", "bfloat16", "float16")

DEPTH_MIN_M = 0.001
DEPTH_MAX_M = 100.0
DEFAULT_FOCAL_35MM = 30.0


@dataclass(frozen=True)
class DepthSettings:
    """How one photo's depth is made and tuned (the seed's CLI options)."""

    depth_scale: float = 1.0
    depth_offset: float = 0.0
    back_surface_factor: float = 1.0
    depth_source: str = "depth-pro"
    external_depth: Path | None = None
    depth_format: str = "auto"
    focal_mm: float | None = None
    save_internal_depth: bool = False
    compare: tuple[str, ...] = ()
    """Depth sources to run this photo with, one result each plus a contact sheet; empty:
    one result from `depth_source`."""
    formats: tuple[str, ...] = ("ply",)
    """Result files per Gaussian scene: SHARP's PLY always, plus any of `spz`, `splat`."""

    def __post_init__(self) -> None:
        for name in ("compare", "formats"):  # lists from TOML or JSON; tuples stay hashable
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        problems = validate_depth_settings(self)
        if problems:
            raise ValueError("; ".join(problems))

    def replace(self, **changes: Any) -> DepthSettings:
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


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_depth_settings(s: DepthSettings) -> list[str]:
    """Every problem with `s`, each naming the key; empty when valid."""
    problems: list[str] = []
    if not _finite(s.depth_scale) or s.depth_scale <= 0:
        problems.append(f"depth_scale must be a finite number > 0, got {s.depth_scale!r}")
    if not _finite(s.depth_offset) or abs(s.depth_offset) > DEPTH_MAX_M:
        problems.append(
            f"depth_offset must be a finite number of metres within ±{DEPTH_MAX_M:g}, "
            f"got {s.depth_offset!r}"
        )
    if not _finite(s.back_surface_factor) or not 1.0 <= s.back_surface_factor <= 100.0:
        problems.append(
            f"back_surface_factor must be between 1.0 (ratio mode) and 100, "
            f"got {s.back_surface_factor!r}"
        )
    if s.depth_source not in DEPTH_SOURCES:
        problems.append(f"depth_source must be one of {', '.join(DEPTH_SOURCES)}, "
                        f"got {s.depth_source!r}{_did_you_mean(s.depth_source)}")
    if s.depth_format not in DEPTH_FORMATS:
        problems.append(f"depth_format must be one of {', '.join(DEPTH_FORMATS)}, "
                        f"got {s.depth_format!r}")
    if s.depth_source == "npy" and s.external_depth is None:
        problems.append("depth_source 'npy' needs external_depth (a .npy file or folder)")
    if s.focal_mm is not None and (not _finite(s.focal_mm) or not 1.0 <= s.focal_mm <= 5000.0):
        problems.append(f"focal_mm must be a 35 mm-equivalent focal length in 1..5000, "
                        f"got {s.focal_mm!r}")
    if not isinstance(s.save_internal_depth, bool):
        problems.append(f"save_internal_depth must be true or false, got {s.save_internal_depth!r}")
    problems.extend(_compare_problems(s))
    problems.extend(_format_problems(s.formats))
    return problems


def _did_you_mean(name: object, valid: tuple[str, ...] = DEPTH_SOURCES) -> str:
    """`; did you mean 'x'?` for the name in `valid` a mistyped `name` probably meant, else ''."""
    hint = (difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
            if isinstance(name, str) else [])
    return f"; did you mean {hint[0]!r}?" if hint else ""


def _shown(name: object) -> str:
    text = repr(name)
    return text if len(text) <= 60 else text[:57] + "..."


def _compare_problems(s: DepthSettings) -> list[str]:
    if not isinstance(s.compare, tuple):
        return [f"compare must be a list of depth source names, got {s.compare!r}"]
    problems = [f"compare: unknown depth source {_shown(name)}{_did_you_mean(name)} "
                f"(sources: {', '.join(DEPTH_SOURCES)})"
                for name in s.compare if name not in DEPTH_SOURCES]
    if problems:
        return problems
    repeated = sorted({name for name in s.compare if s.compare.count(name) > 1})
    if repeated:
        problems.append(f"compare lists {', '.join(repeated)} more than once")
    if len(s.compare) == 1:
        problems.append(f"compare needs at least two sources to compare, got {list(s.compare)}; "
                        "for one source set depth_source instead")
    if "npy" in s.compare and s.external_depth is None:
        problems.append("compare lists 'npy', which needs external_depth (a .npy file or folder)")
    return problems


def _format_problems(formats: object) -> list[str]:
    if not isinstance(formats, tuple) or not all(isinstance(f, str) for f in formats):
        return [f"formats must be a list of format names, got {formats!r}"]
    problems = []
    for name in formats:
        if name not in EXPORT_FORMATS:
            problems.append(f"formats: unknown format {_shown(name)}"
                            f"{_did_you_mean(name, EXPORT_FORMATS)} "
                            f"(formats: {', '.join(EXPORT_FORMATS)})")
    if problems:
        return problems
    repeated = sorted({name for name in formats if formats.count(name) > 1})
    if repeated:
        problems.append(f"formats lists {', '.join(repeated)} more than once")
    if "ply" not in formats:
        problems.append(f"formats must include 'ply' (the result the viewer and SHARP's own "
                        f"tools read), got {list(formats)}; add 'spz' or 'splat' beside it")
    return problems


@dataclass(frozen=True)
class ModelSettings:
    """Which models to load and where they run; one per process."""

    device: str = "auto"
    depth_model: str = DEFAULT_DEPTH_MODEL
    """The model behind `depth-pro`: a hub id or local folder of any transformers depth
    model (the named sources need no hub id)."""
    depth_pro_checkpoint: Path | None = None
    sharp_checkpoint: Path | None = None
    sharp_factory: str | None = None
    sharp_precision: str = "float32"
    depth_precision: str = "auto"
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.sharp_precision not in PRECISIONS:
            raise ValueError(f"sharp_precision must be one of {', '.join(PRECISIONS)}, "
                             f"got {self.sharp_precision!r}")
        if self.depth_precision not in (*PRECISIONS, "auto"):
            raise ValueError(f"depth_precision must be auto or one of {', '.join(PRECISIONS)}, "
                             f"got {self.depth_precision!r}")

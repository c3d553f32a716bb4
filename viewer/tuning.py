"""Live tuning: the viewer's sliders written into the photo's sidecar, comments kept.

The sidecar is the user's file: tomlkit round-trips it, so every other key, comment and
blank line stays as written; only the tuned keys change. The new values are checked by
the daemon's own sidecar rules (`daemon.sidecar.apply_sidecar`, which builds a
`DepthSettings`) before a byte is written, and the file is replaced atomically, so the
watcher never reads half a sidecar.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError

from daemon.sidecar import (
    MAX_SIDECAR_BYTES,
    SIDECAR_KEYS,
    SidecarError,
    apply_sidecar,
    find_sidecar,
    read_sidecar,
    sidecar_path,
)
from pipeline import DepthSettings
from pipeline.atomic import atomic_write
from pipeline.settings import DEPTH_SOURCES

TUNABLE: tuple[str, ...] = tuple(k for k in ("depth_scale", "depth_offset", "focal_mm",
                                             "back_surface_factor", "depth_source")
                                 if k in SIDECAR_KEYS)
"""What the viewer's controls change; `focal_mm` None means "from EXIF / the depth model"."""


@dataclass(frozen=True)
class Slider:
    """One slider's range; the values a photographer plausibly wants, not all valid ones."""

    key: str
    label: str
    low: float
    high: float
    step: float
    help: str


SLIDERS: tuple[Slider, ...] = (
    Slider("depth_scale", "Depth scale", 0.25, 4.0, 0.05,
           "Multiplies every depth: the whole scene grows or shrinks (it looks the same from "
           "the photo's own viewpoint; it matters when you orbit)."),
    Slider("depth_offset", "Depth offset (m)", -5.0, 5.0, 0.05,
           "Adds metres to every depth: changes the ratios between near and far, so the "
           "shape changes."),
    Slider("focal_mm", "Focal length (35 mm equiv.)", 10.0, 200.0, 1.0,
           "Overrides the focal length from EXIF or the depth model; wider (smaller) "
           "spreads the scene out."),
    Slider("back_surface_factor", "Back surface factor", 1.0, 3.0, 0.05,
           "How far behind the front surface SHARP's second layer sits (1 = SHARP's own "
           "ratio)."),
)


class TuningError(ValueError):
    """The requested values cannot be written; the message names the sidecar and the key."""


def sources(current: DepthSettings) -> list[str]:
    """The depth sources to offer: all known ones, `npy` only where a depth map is named."""
    return [s for s in DEPTH_SOURCES if s != "npy" or current.external_depth is not None]


def current_settings(photo: Path, defaults: DepthSettings, inputs: Path) -> DepthSettings:
    """What the daemon would use for `photo` now (config defaults + its sidecar)."""
    try:
        return read_sidecar(photo, defaults, inputs)[0]
    except SidecarError:
        return defaults


def _clean(key: str, value: Any) -> Any:
    """A browser's value as the sidecar's type: numbers as floats, the source as text."""
    if key == "depth_source":
        if not isinstance(value, str):
            raise TuningError(f"depth_source must be text, got {value!r}")
        return value
    if key == "focal_mm" and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TuningError(f"{key} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise TuningError(f"{key} must be a finite number, got {value!r}")
    return round(float(value), 6)


def _load(path: Path | None) -> tomlkit.TOMLDocument:
    if path is None or not path.is_file():
        return tomlkit.document()
    raw = path.read_bytes()
    if len(raw) > MAX_SIDECAR_BYTES:
        raise TuningError(f"{path}: sidecar is larger than {MAX_SIDECAR_BYTES // 1024} KiB")
    try:
        return tomlkit.parse(raw.decode("utf-8"))
    except (UnicodeDecodeError, TOMLKitError) as exc:
        raise TuningError(f"{path}: the sidecar is not valid TOML ({exc}); fix or delete it "
                          "before tuning") from None


def apply_tuning(photo: Path, changes: dict[str, Any], defaults: DepthSettings,
                 inputs: Path) -> tuple[Path, DepthSettings]:
    """Write `changes` into `photo`'s sidecar; returns it and the settings it now gives.

    Raises `TuningError` (nothing written) for an unknown key or a value the daemon would
    refuse. `focal_mm: None` removes that key (back to EXIF / the depth model).
    """
    unknown = sorted(set(changes) - set(TUNABLE))
    if unknown:
        raise TuningError(f"cannot tune {', '.join(unknown)}; tunable: {', '.join(TUNABLE)}")
    existing = find_sidecar(photo)
    path = existing or sidecar_path(photo)
    doc = _load(existing)
    for key, value in changes.items():
        cleaned = _clean(key, value)
        if cleaned is None:
            doc.pop(key, None)
        else:
            doc[key] = cleaned
    try:
        settings = apply_sidecar(doc.unwrap(), path, photo, defaults, inputs)
    except SidecarError as exc:
        raise TuningError(str(exc)) from None
    atomic_write(path, tomlkit.dumps(doc).encode("utf-8"))
    return path, settings

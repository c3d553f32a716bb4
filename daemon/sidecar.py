"""Per-photo tuning: `photo.toml` beside `photo.jpg` overrides the config's `[defaults]`.

A sidecar is user input written by hand, so every key is checked and a mistake fails
only that photo, with a message naming the sidecar, the key and the key it probably
meant. `external_depth` may only point inside the inputs folder (symlinks resolved),
so a sidecar cannot make the daemon read arbitrary files.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from pipeline import DepthSettings, InputError

from .config import check_value, nearest, short_repr

SIDECAR_SUFFIX = ".toml"
MAX_SIDECAR_BYTES = 64 * 1024
_KINDS: dict[str, type] = {
    "depth_scale": float, "depth_offset": float, "back_surface_factor": float,
    "depth_source": str, "external_depth": str, "depth_format": str, "focal_mm": float,
    "save_internal_depth": bool,
}
SIDECAR_KEYS: tuple[str, ...] = tuple(_KINDS)


class SidecarError(InputError):
    """The sidecar cannot be used; the photo fails until the sidecar is fixed."""


def sidecar_path(photo: Path) -> Path:
    return photo.with_suffix(SIDECAR_SUFFIX)


def read_sidecar(photo: Path, base: DepthSettings, inputs: Path) -> tuple[DepthSettings, bool]:
    """The photo's effective settings and whether a sidecar supplied them."""
    path = sidecar_path(photo)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SIDECAR_BYTES + 1)
    except FileNotFoundError:
        return base, False
    except OSError as exc:
        raise SidecarError(f"cannot read sidecar ({exc.strerror or exc})", path) from None
    if len(raw) > MAX_SIDECAR_BYTES:
        raise SidecarError(f"sidecar is larger than {MAX_SIDECAR_BYTES // 1024} KiB; "
                           "it should hold a few keys", path)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise SidecarError("sidecar is not UTF-8 text", path) from None
    except (tomllib.TOMLDecodeError, RecursionError, ValueError) as exc:
        raise SidecarError(f"not valid TOML ({exc})", path) from None
    return apply_sidecar(data, path, photo, base, inputs), True


def apply_sidecar(data: dict[str, Any], path: Path, photo: Path, base: DepthSettings,
                  inputs: Path) -> DepthSettings:
    """`base` with the sidecar's keys applied, each checked; raises `SidecarError`."""
    changes: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _KINDS:
            hint = nearest(key, SIDECAR_KEYS)
            shown = key if len(key) <= 40 else key[:37] + "..."
            raise SidecarError(f"unknown key {shown!r}"
                               + (f"; did you mean {hint!r}?" if hint else
                                  f"; valid keys: {', '.join(SIDECAR_KEYS)}"), path)
        try:
            changes[key] = check_value(key, value, _KINDS[key])
        except TypeError as exc:
            raise SidecarError(f"{key} {exc}", path) from None
    if "external_depth" in changes:
        changes["external_depth"] = _inside_inputs(changes["external_depth"], path, photo, inputs)
        changes.setdefault("depth_source", "npy")
    try:
        return dataclasses.replace(base, **changes)
    except ValueError as exc:
        reason = str(exc)
        raise SidecarError(reason if len(reason) <= 400 else reason[:397] + "...", path) from None


def _inside_inputs(value: str, path: Path, photo: Path, inputs: Path) -> Path:
    """`value` relative to the photo, refused unless it resolves inside the inputs folder."""
    if not value.strip() or "\x00" in value:
        raise SidecarError("external_depth must name a .npy file or folder", path)
    shown = f"external_depth {short_repr(value)}"
    try:
        resolved = (photo.parent / Path(value).expanduser()).resolve()
        root = inputs.resolve()
        exists = resolved.exists()
    except (OSError, RuntimeError, ValueError) as exc:
        raise SidecarError(f"{shown} cannot be resolved ({exc})", path) from None
    if not resolved.is_relative_to(root):
        raise SidecarError(f"{shown} points outside the inputs folder {inputs}; "
                           "put the depth map next to the photo", path)
    if not exists:
        raise SidecarError(f"{shown} does not exist", path)
    return resolved

"""Per-photo tuning: `photo.toml` beside `photo.jpg` overrides the config's `[defaults]`.

A sidecar is user input written by hand, so every key is checked (against its declaration
in `pipeline.DepthSettings`) and a mistake fails only that photo, with a message naming
the sidecar, the key and the key it probably meant. `external_depth` may only point
inside the inputs folder (symlinks resolved), so a sidecar cannot make the daemon read
arbitrary files; the sidecar itself is read only if it really is a file inside that
folder. `photo_settings` is the one way the layers combine, for the daemon, `predict` and
`compare` alike: command-line flags over the sidecar over the config's `[defaults]`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loguru import logger

from pipeline import DepthSettings, InputError
from pipeline.image import open_regular_file
from pipeline.schema import key_hint, keys, shown

SIDECAR_SUFFIX = ".toml"
MAX_SIDECAR_BYTES = 64 * 1024
_KEYS = keys(DepthSettings)
SIDECAR_KEYS: tuple[str, ...] = tuple(_KEYS)
"""Every per-photo key: a sidecar may set any of them."""


class SidecarError(InputError):
    """The sidecar cannot be used; the photo fails until the sidecar is fixed."""


def sidecar_path(photo: Path) -> Path:
    """The sidecar `photo` uses if there is one (any letter case), else the name it would have."""
    return find_sidecar(photo) or photo.with_suffix(SIDECAR_SUFFIX)


def find_sidecar(photo: Path) -> Path | None:
    """The photo's `<stem>.toml`, its name matched in any letter case as Windows does.

    The folder is listed rather than the name opened, so `PHOTO.TOML` is found on a
    case-sensitive file system too, and a name too long to exist simply is not there.
    Where several names differ only in case, the one spelled exactly like the photo's stem
    wins, else the first in code-point order; a warning names the others.
    """
    wanted = photo.stem + SIDECAR_SUFFIX
    key = wanted.casefold()
    try:
        with os.scandir(photo.parent) as entries:
            # Windows compares names one UTF-16 unit at a time, so a match has the same length.
            names = [e.name for e in entries
                     if len(e.name) == len(wanted) and e.name.casefold() == key]
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SidecarError(f"cannot look for a sidecar in {photo.parent} "
                           f"({exc.strerror or exc})", photo.with_suffix(SIDECAR_SUFFIX)) from None
    if not names:
        return None
    chosen = min(names, key=lambda name: (name != wanted, name))
    if len(names) > 1:
        logger.warning("{}: sidecars {} differ only in letter case; using {} (delete the "
                       "others)", photo, ", ".join(sorted(names)), chosen)
    return photo.parent / chosen


def read_sidecar(photo: Path, base: DepthSettings, inputs: Path) -> tuple[DepthSettings, bool]:
    """The photo's effective settings and whether a sidecar supplied them."""
    path = find_sidecar(photo)
    if path is None:
        return base, False
    try:
        text = read_sidecar_text(path, inputs)
    except FileNotFoundError:
        return base, False
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError, ValueError) as exc:
        raise SidecarError(f"not valid TOML ({exc})", path) from None
    return apply_sidecar(data, path, photo, base, inputs), True


def read_sidecar_text(path: Path, inputs: Path) -> str:
    """The sidecar's text. It is opened like a photo: a pipe or device is refused (it
    cannot hang the reader), and so is a link leading outside `inputs`, before a byte of
    it is read; and no more than `MAX_SIDECAR_BYTES` (and one) is ever read. Raises
    `SidecarError`, or FileNotFoundError for a sidecar that has just gone."""
    try:
        with open_regular_file(path, inputs) as f:
            raw = f.read(MAX_SIDECAR_BYTES + 1)
    except FileNotFoundError:
        raise
    except InputError as exc:
        raise SidecarError(exc.reason, path) from None
    except OSError as exc:
        raise SidecarError(f"cannot read sidecar ({exc.strerror or exc})", path) from None
    if len(raw) > MAX_SIDECAR_BYTES:
        raise SidecarError(f"sidecar is larger than {MAX_SIDECAR_BYTES // 1024} KiB; "
                           "it should hold a few keys", path)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SidecarError("sidecar is not UTF-8 text", path) from None


def photo_settings(photo: Path, defaults: DepthSettings, inputs: Path,
                   flags: Mapping[str, Any] | None = None) -> DepthSettings:
    """The settings `photo` runs with: `flags` (the command line's, already checked over
    `defaults`) over its sidecar over `defaults` (the config's). Raises `SidecarError`,
    naming the sidecar, for a sidecar that cannot be used or flags that do not fit it."""
    settings, used = read_sidecar(photo, defaults, inputs)
    try:
        return settings.overlay(flags or {})
    except ValueError as exc:
        if not used:
            raise
        raise SidecarError(f"with the command line's options: {exc}", sidecar_path(photo)) from None


def depth_root(external: Path | None, inputs: Path) -> Path | None:
    """The folder a depth map must be opened within: `inputs` for a map named inside it
    (every sidecar's is), None for one the config's `[defaults]` names elsewhere."""
    if external is None:
        return None
    named = Path(external)
    inside = named.is_relative_to(inputs) or named.is_relative_to(inputs.resolve())
    return inputs if inside else None


def apply_sidecar(data: dict[str, Any], path: Path, photo: Path, base: DepthSettings,
                  inputs: Path) -> DepthSettings:
    """`base` with the sidecar's keys applied, each checked; raises `SidecarError`."""
    changes: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _KEYS:
            raise SidecarError(f"unknown key {shown(key)}{key_hint(key, SIDECAR_KEYS)}", path)
        try:
            changes[key] = _KEYS[key].coerce(value)
        except TypeError as exc:
            raise SidecarError(f"{key} {exc}", path) from None
    if "external_depth" in changes:
        changes["external_depth"] = _inside_inputs(changes["external_depth"], path, photo, inputs)
    try:
        return base.overlay(changes)
    except ValueError as exc:
        reason = str(exc)
        raise SidecarError(reason if len(reason) <= 400 else reason[:397] + "...", path) from None


def _inside_inputs(value: str, path: Path, photo: Path, inputs: Path) -> Path:
    """`value` relative to the photo, refused unless it resolves inside the inputs folder."""
    if not value.strip() or "\x00" in value:
        raise SidecarError("external_depth must name a .npy file or folder", path)
    shown_as = f"external_depth {shown(value)}"
    try:
        resolved = (photo.parent / Path(value).expanduser()).resolve()
        root = inputs.resolve()
        exists = resolved.exists()
    except (OSError, RuntimeError, ValueError) as exc:
        raise SidecarError(f"{shown_as} cannot be resolved ({exc})", path) from None
    if not resolved.is_relative_to(root):
        raise SidecarError(f"{shown_as} points outside the inputs folder {inputs}; "
                           "put the depth map next to the photo", path)
    if not exists:
        raise SidecarError(f"{shown_as} does not exist", path)
    return resolved

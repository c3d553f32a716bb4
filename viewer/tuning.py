"""Live tuning: the viewer's controls, and the changed values written into the sidecar.

The controls are the per-photo keys that declare one (`pipeline.DepthSettings`: a
`Slider` or a `Choice`, with its label, range and step, and the key's help), so the page
learns them from the server and knows no key itself. Apply writes only the keys whose
value differs from what the photo runs with now: the others stay out of the sidecar and
keep following the config's `[defaults]`.

The sidecar is the user's file: tomlkit round-trips it, so every other key, comment and
blank line stays as written. It is read as the daemon reads it
(`daemon.sidecar.read_sidecar_text`: only inside the inputs folder, never a pipe, at most
64 KiB), the new values are checked by the daemon's own sidecar rules
(`daemon.sidecar.apply_sidecar`) before a byte is written, and the file is replaced
atomically, so the watcher never reads half a sidecar, keeping its permission bits (a
sidecar the user made private stays private).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError

from daemon.sidecar import (
    SidecarError,
    apply_sidecar,
    find_sidecar,
    read_sidecar,
    read_sidecar_text,
    sidecar_path,
)
from pipeline import DepthSettings
from pipeline.atomic import atomic_write
from pipeline.schema import Choice, Setting, Slider, schema

CONTROLS: dict[str, Setting] = {s.name: s for s in schema(DepthSettings) if s.spec.control}
"""The keys the viewer offers, in the order it shows them."""
TUNABLE: tuple[str, ...] = tuple(CONTROLS)


class TuningError(ValueError):
    """The requested values cannot be written; the message names the sidecar and the key."""


@dataclass(frozen=True)
class Applied:
    """What an Apply did: the sidecar, the settings it now gives, the keys written."""

    path: Path
    settings: DepthSettings
    written: dict[str, Any]


def current_settings(photo: Path, defaults: DepthSettings, inputs: Path) -> DepthSettings:
    """What the daemon would use for `photo` now (config defaults + its sidecar)."""
    try:
        return read_sidecar(photo, defaults, inputs)[0]
    except SidecarError:
        return defaults


def _offered(key: Setting, current: DepthSettings) -> list[str]:
    """The choices that are valid for this photo (`npy` only where a depth map is named)."""
    out = []
    for choice in key.spec.choices:
        try:
            current.replace(**{key.name: choice})
        except ValueError:
            continue
        out.append(choice)
    return out


def controls(current: DepthSettings) -> list[dict[str, Any]]:
    """The page's controls for a photo whose settings are `current`: each key's kind
    (`slider` or `choice`), label, help, range or options, and its value now."""
    out = []
    for key in CONTROLS.values():
        control = key.spec.control
        item: dict[str, Any] = {"key": key.name, "help": key.spec.help,
                                "value": getattr(current, key.name)}
        if isinstance(control, Slider):
            item.update(kind="slider", label=control.label, low=control.low, high=control.high,
                        step=control.step, unset=control.unset if key.optional else None)
        elif isinstance(control, Choice):
            item.update(kind="choice", label=control.label, options=_offered(key, current))
        out.append(item)
    return out


def _clean(key: Setting, value: Any) -> Any:
    """A browser's value as the sidecar's type (numbers rounded to 6 decimals); None
    unsets a key that may be unset."""
    if value is None and key.optional:
        return None
    try:
        cleaned = key.coerce(value)
    except TypeError as exc:
        raise TuningError(f"{key.name} {exc}") from None
    return round(cleaned, 6) if key.kind == "float" else cleaned


def _load(path: Path | None, inputs: Path) -> tomlkit.TOMLDocument:
    if path is None:
        return tomlkit.document()
    try:
        text = read_sidecar_text(path, inputs)
    except FileNotFoundError:
        return tomlkit.document()
    except SidecarError as exc:
        raise TuningError(str(exc)) from None
    try:
        return tomlkit.parse(text)
    except TOMLKitError as exc:
        raise TuningError(f"{path}: the sidecar is not valid TOML ({exc}); fix or delete it "
                          "before tuning") from None


def apply_tuning(photo: Path, changes: dict[str, Any], defaults: DepthSettings,
                 inputs: Path) -> Applied:
    """Write the `changes` that differ from what `photo` runs with now into its sidecar.

    Raises `TuningError` (nothing written) for an unknown key or a value the daemon would
    refuse. A value of None removes that key (`focal_mm`: back to EXIF / the depth model).
    """
    unknown = sorted(set(changes) - set(TUNABLE))
    if unknown:
        raise TuningError(f"cannot tune {', '.join(unknown)}; tunable: {', '.join(TUNABLE)}")
    existing = find_sidecar(photo)
    path = existing or sidecar_path(photo)
    doc = _load(existing, inputs)
    try:
        now: DepthSettings | None = apply_sidecar(doc.unwrap(), path, photo, defaults, inputs)
    except SidecarError:
        now = None  # the sidecar fails as it is: every value sent is a change
    written = {}
    for key, value in changes.items():
        cleaned = _clean(CONTROLS[key], value)
        if now is not None and cleaned == getattr(now, key):
            continue
        written[key] = cleaned
        if cleaned is None:
            doc.pop(key, None)
        else:
            doc[key] = cleaned
    try:
        settings = apply_sidecar(doc.unwrap(), path, photo, defaults, inputs)
    except SidecarError as exc:
        raise TuningError(str(exc)) from None
    if written:
        atomic_write(path, tomlkit.dumps(doc).encode("utf-8"), keep_mode=True)
    return Applied(path, settings, written)

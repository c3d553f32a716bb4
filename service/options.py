"""The options `predict` and `compare` share: the config, and a flag for every setting.

Both read the config as the daemon does (`--config FILE`, else the per-user one) and use
its `[models]` and `[defaults]`. Every per-photo key (`pipeline.DepthSettings`) and every
`[models]` key is also a flag, made from the key's declaration (`--depth-scale` for
`depth_scale`, with its help); a flag not given stays None, so only the flags given
override. A photo's settings are the flags over its sidecar over the config's
`[defaults]`, combined by `daemon.sidecar.photo_settings` exactly as the daemon does;
the models are the flags over `[models]`.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.schema import Setting, schema
from pipeline.settings import DepthSettings, ModelSettings

if TYPE_CHECKING:
    from daemon.config import Config

CONFIG_HELP = "config.toml to use (default: the per-user one if it exists)"
_TYPES: dict[str, Any] = {"int": int, "float": float, "path": Path, "str": str}


def names_list(text: str) -> tuple[str, ...]:
    """`a,b, c` as `("a", "b", "c")`: a command-line list of names."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def add_config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None, help=CONFIG_HELP)


def flag_parsing(key: Setting) -> dict[str, Any]:
    """How argparse reads the flag of `key`: its type, choices or action."""
    if key.kind == "bool":
        return {"action": argparse.BooleanOptionalAction}
    if key.kind == "names":
        return {"type": names_list, "metavar": "NAME,NAME"}
    if key.kind == "str" and key.spec.choices:
        return {"choices": key.spec.choices}
    return {"type": _TYPES[key.kind]}


def _help(key: Setting, section: str, default: str) -> str:
    allowed = "" if key.kind == "str" else key.allowed()
    text = (f"{key.spec.help}{'; ' + allowed if allowed else ''} (default: the config's "
            f"[{section}] {key.name}, else {default})")
    return text.replace("%", "%%")  # argparse formats help with %


def add_setting_options(p: argparse.ArgumentParser, skip: Iterable[str] = (),
                        defaults: Mapping[str, str] | None = None) -> None:
    """A flag for every per-photo key and every `[models]` key but those in `skip`;
    `defaults` names what the command uses for a key neither flag nor config sets, where
    that is not the key's own default."""
    skipped, defaults = set(skip), defaults or {}
    for cls, section, title in ((DepthSettings, "defaults", "per-photo settings"),
                                (ModelSettings, "models", "models")):
        group = p.add_argument_group(f"{title} (over the photo's sidecar and the config)"
                                     if cls is DepthSettings else
                                     f"{title} (over the config)")
        for key in schema(cls):
            if key.name not in skipped:
                group.add_argument(key.flag, dest=key.name, default=None,
                                   help=_help(key, section, defaults.get(key.name) or (
                                       "unset" if key.default() is None
                                       else key.shown_default())), **flag_parsing(key))


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The keys of `cls` whose flag was given, with the flag's value."""
    return {key.name: getattr(args, key.name) for key in schema(cls)
            if getattr(args, key.name, None) is not None}


@dataclass(frozen=True)
class Options:
    """What a command runs with: the config, the models, the per-photo flags given."""

    config: Config
    models: ModelSettings
    flags: dict[str, Any]

    def settings(self, photo: Path, inputs: Path) -> DepthSettings:
        """`photo`'s settings: the flags over its sidecar over the config's `[defaults]`;
        the sidecar may name depth maps only inside `inputs`. Raises `SidecarError`."""
        from daemon.sidecar import photo_settings

        return photo_settings(photo, self.config.defaults, inputs, self.flags)


def load_options(args: argparse.Namespace, **fixed: Any) -> Options:
    """The config `--config` names (else the per-user one), the models and the flags
    (plus `fixed` per-photo values the command sets), all checked before any work:
    raises `ConfigError` or ValueError naming the key."""
    from daemon.config import load_config

    config = load_config(args.config)
    models = dataclasses.replace(config.model_settings(), **given(args, ModelSettings))
    flags = {**given(args, DepthSettings), **fixed}
    config.defaults.overlay(flags)  # a bad flag (or flags that do not fit) fails here
    return Options(config, models, flags)

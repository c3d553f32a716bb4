"""The daemon's settings: one TOML file, every key checked, per-user defaults for the rest.

A typo in a key or a wrong type stops the daemon at start with one message naming the
file, the key and the nearest valid key, rather than being silently ignored.
"""

from __future__ import annotations

import difflib
import math
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import platformdirs

from pipeline import DepthSettings, ModelSettings

APP = "sharp-watch"
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")


class ConfigError(ValueError):
    """The config file cannot be used; the message says where and what to change."""


def nearest(key: str, valid: list[str] | tuple[str, ...]) -> str | None:
    """The valid key a typo most likely meant, if any is close."""
    match = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return match[0] if match else None


def default_inputs() -> Path:
    return Path(platformdirs.user_pictures_dir()) / APP / "inputs"


def default_outputs() -> Path:
    return Path(platformdirs.user_pictures_dir()) / APP / "outputs"


def default_state_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP, appauthor=False))


def default_log_dir() -> Path:
    return Path(platformdirs.user_log_dir(APP, appauthor=False))


def default_config_path() -> Path:
    return Path(platformdirs.user_config_dir(APP, appauthor=False)) / "config.toml"


@dataclass(frozen=True)
class FolderConfig:
    """Where photos come from and results go."""

    inputs: Path = field(default_factory=default_inputs)
    outputs: Path = field(default_factory=default_outputs)
    recursive: bool = False


@dataclass(frozen=True)
class ModelConfig(ModelSettings):
    """The `[models]` section: `pipeline.ModelSettings` plus when to load them."""

    load_at_start: bool = True


@dataclass(frozen=True)
class DaemonConfig:
    """How the watch loop behaves."""

    stable_seconds: float = 1.0
    settle_report_seconds: float = 120.0
    unload_after_minutes: float = 0.0
    depth_cache_mb: float = 2048.0
    preview: bool = True
    max_pixels: int = 120_000_000
    rescan_seconds: float = 30.0
    state_dir: Path = field(default_factory=default_state_dir)


@dataclass(frozen=True)
class ServiceConfig:
    """Read by `service/` (tray, notifications, logs); kept here so one file holds it all."""

    notifications: bool = True
    log_level: str = "INFO"
    log_dir: Path = field(default_factory=default_log_dir)


@dataclass(frozen=True)
class Config:
    """Everything the daemon and service read, already checked and with paths resolved."""

    folders: FolderConfig = field(default_factory=FolderConfig)
    models: ModelConfig = field(default_factory=ModelConfig)
    defaults: DepthSettings = field(default_factory=DepthSettings)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    source: Path | None = None

    @property
    def inputs(self) -> Path:
        return self.folders.inputs

    @property
    def outputs(self) -> Path:
        return self.folders.outputs

    def model_settings(self) -> ModelSettings:
        return ModelSettings(**{f.name: getattr(self.models, f.name)
                                for f in fields(ModelSettings)})

_SECTIONS: dict[str, type] = {"folders": FolderConfig, "models": ModelConfig,
                              "defaults": DepthSettings, "daemon": DaemonConfig,
                              "service": ServiceConfig}
# Keys whose "" means "the per-user default" or "none".
_OPTIONAL_PATHS = {"depth_pro_checkpoint", "sharp_checkpoint", "cache_dir", "external_depth"}
_DEFAULTED_PATHS = {"inputs": default_inputs, "outputs": default_outputs,
                    "state_dir": default_state_dir, "log_dir": default_log_dir}
_KINDS: dict[str, type] = {
    "recursive": bool, "load_at_start": bool, "preview": bool, "save_internal_depth": bool,
    "notifications": bool, "max_pixels": int,
    "stable_seconds": float, "settle_report_seconds": float, "unload_after_minutes": float,
    "rescan_seconds": float, "depth_cache_mb": float, "depth_scale": float, "depth_offset": float,
    "back_surface_factor": float, "focal_mm": float, "compare": list, "formats": list,
}
_LIST_OF = {"compare": "depth source names", "formats": "format names"}


def check_value(key: str, value: Any, kind: type) -> Any:
    """`value` as `kind` or a message; ints pass as floats, bools never pass as numbers,
    a list must hold strings."""
    if kind is bool:
        if not isinstance(value, bool):
            raise TypeError(f"must be true or false, got {short_repr(value)}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"must be a whole number, got {short_repr(value)}")
        return value
    if kind is list:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise TypeError(f"must be a list of {_LIST_OF.get(key, 'names')}, got "
                            f"{short_repr(value)}")
        return list(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"must be a number, got {short_repr(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise TypeError(f"must be a finite number, got {short_repr(value)}")
        return number
    if not isinstance(value, str):
        raise TypeError(f"must be a string, got {short_repr(value)}")
    return value


def short_repr(value: Any) -> str:
    """A value for an error message, cut short (sidecars can hold anything)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _section(name: str, table: Any, where: str, base: Path) -> dict[str, Any]:
    cls = _SECTIONS[name]
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [{name}] must be a table of keys")
    valid = [f.name for f in fields(cls)]
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key not in valid:
            hint = nearest(key, valid)
            raise ConfigError(f"{where}: unknown key {key!r} in [{name}]"
                              + (f"; did you mean {hint!r}?" if hint else
                                 f"; valid keys: {', '.join(valid)}"))
        try:
            value = check_value(key, value, _KINDS.get(key, str))
        except TypeError as exc:
            raise ConfigError(f"{where}: [{name}] {key} {exc}") from None
        if key in _DEFAULTED_PATHS:
            value = Path(value).expanduser() if value else _DEFAULTED_PATHS[key]()
            value = value if value.is_absolute() else base / value
        elif key in _OPTIONAL_PATHS:
            value = Path(value).expanduser() if value else None
            value = value if value is None or value.is_absolute() else base / value
        elif key == "sharp_factory":
            value = value or None
        out[key] = value
    return out


def _check_ranges(cfg: Config, where: str) -> None:
    d = cfg.daemon
    for key in ("stable_seconds", "settle_report_seconds", "unload_after_minutes",
                "depth_cache_mb"):
        if getattr(d, key) < 0:
            raise ConfigError(f"{where}: [daemon] {key} must be >= 0, got {getattr(d, key)!r}")
    if d.max_pixels < 1:
        raise ConfigError(f"{where}: [daemon] max_pixels must be >= 1, got {d.max_pixels!r}")
    if d.rescan_seconds <= 0:
        raise ConfigError(f"{where}: [daemon] rescan_seconds must be > 0, got "
                          f"{d.rescan_seconds!r}")
    if cfg.service.log_level.upper() not in LOG_LEVELS:
        hint = nearest(cfg.service.log_level.upper(), LOG_LEVELS)
        raise ConfigError(f"{where}: [service] log_level {cfg.service.log_level!r} is not a level"
                          + (f"; did you mean {hint!r}?" if hint else ""))


def inside(child: Path, parent: Path) -> bool:
    """Whether `child` is `parent` or under it (links resolved; letter case ignored on
    Windows, whose file names are case-insensitive)."""
    c = os.path.normcase(os.path.realpath(child))
    p = os.path.normcase(os.path.realpath(parent))
    return c == p or c.startswith(p.rstrip(os.sep) + os.sep)


def check_folders(cfg: Config, where: str = "<config>") -> None:
    """Refuse outputs that the daemon would read back as new photos (its own previews).

    Outputs equal to inputs, or inside them with `recursive = true`, is refused. Inputs
    inside outputs is fine: results go into the outputs folder itself, never below it.
    """
    inputs, outputs = cfg.inputs, cfg.outputs
    if inside(outputs, inputs) and inside(inputs, outputs):
        raise ConfigError(f"{where}: [folders] outputs and inputs are the same folder "
                          f"({inputs}); results would be read back as new photos, so choose "
                          "a separate outputs folder")
    if cfg.folders.recursive and inside(outputs, inputs):
        raise ConfigError(f"{where}: [folders] outputs {outputs} is inside inputs {inputs} "
                          "and recursive = true, so results would be read back as new "
                          "photos; move outputs out of inputs or set recursive = false")


def parse_config(data: dict[str, Any], where: str = "<config>", base: Path | None = None) -> Config:
    """A checked `Config` from already-parsed TOML; relative folders are relative to `base`."""
    base = base or Path.cwd()
    parts: dict[str, Any] = {}
    for name, table in data.items():
        if name not in _SECTIONS:
            hint = nearest(name, list(_SECTIONS))
            raise ConfigError(f"{where}: unknown section [{name}]"
                              + (f"; did you mean [{hint}]?" if hint else
                                 f"; valid sections: {', '.join(_SECTIONS)}"))
        parts[name] = _section(name, table, where, base)
    try:
        defaults = DepthSettings(**parts.pop("defaults", {}))
    except ValueError as exc:
        raise ConfigError(f"{where}: [defaults] {exc}") from None
    try:
        models = ModelConfig(**parts.pop("models", {}))
    except ValueError as exc:
        raise ConfigError(f"{where}: [models] {exc}") from None
    cfg = Config(folders=FolderConfig(**parts.pop("folders", {})),
                 models=models, defaults=defaults,
                 daemon=DaemonConfig(**parts.pop("daemon", {})),
                 service=ServiceConfig(**parts.pop("service", {})),
                 source=Path(where) if where != "<config>" else None)
    _check_ranges(cfg, where)
    check_folders(cfg, where)
    return cfg


def load_config(path: Path | str | None = None) -> Config:
    """The config at `path`, else the per-user one if it exists, else all defaults."""
    if path is None:
        path = default_config_path()
        if not path.is_file():
            return Config()
    path = Path(path).expanduser()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return parse_config(data, str(path), path.parent)

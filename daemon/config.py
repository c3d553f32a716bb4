"""The daemon's settings: one TOML file, every key checked, per-user defaults for the rest.

A typo in a key or a wrong type stops the daemon at start with one message naming the
file, the key and the nearest valid key, rather than being silently ignored. Every key is
declared once, in its section's dataclass (`pipeline.schema.setting`): type, default,
range or choices and help; the checks here and docs/configuration.md come from those.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import platformdirs

from pipeline import DepthSettings, ModelSettings
from pipeline.schema import Checked, Setting, key_hint, keys, nearest, setting, shown

APP = "sharp-watch"
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")


class ConfigError(ValueError):
    """The config file cannot be used; the message says where and what to change."""


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
class FolderConfig(Checked):
    """Where photos come from and results go."""

    inputs: Path = setting(
        default_factory=default_inputs, default_text='"" = <Pictures>/sharp-watch/inputs',
        help="the folder to watch: photos dropped here become results (created on first run)")
    outputs: Path = setting(
        default_factory=default_outputs, default_text='"" = <Pictures>/sharp-watch/outputs',
        help="where results go (created on first run)")
    recursive: bool = setting(False, help="also watch the sub-folders of inputs")


DEVICE_NAME = re.compile(r"auto|all|cpu|mps|cuda(:[0-9]+)?")
"""What one entry of `[models] device` may be (checked without importing torch)."""


@dataclass(frozen=True)
class ModelConfig(ModelSettings):
    """The `[models]` section: `pipeline.ModelSettings` plus when to load them, with
    `device` a list: one worker per entry, each with its own resident models."""

    # The pipeline runs on one device, the daemon on several: the key's one declaration.
    device: tuple[str, ...] = setting(  # type: ignore[assignment]
        ("auto",), single=True, repeats=True, item="device", default_text='"auto"',
        help="where the models run: auto (a CUDA GPU if present, else Apple MPS, else CPU), "
             "cuda, cuda:1, mps or cpu; a list (\"cuda:0\", \"cuda:1\") runs one worker per "
             "device, \"all\" one per CUDA GPU (else the CPU)")
    load_at_start: bool = setting(
        True, help="load the models when the daemon starts (true) or on the first photo "
                   "(false)")

    def __post_init__(self) -> None:
        if isinstance(self.device, str):  # ModelConfig(device="cpu") from Python, as in TOML
            object.__setattr__(self, "device", (self.device,))
        super().__post_init__()
        bad = [shown(name) for name in self.device if not DEVICE_NAME.fullmatch(name)]
        if bad or not self.device:
            what = f"unknown device {bad[0]}" if bad else "the list is empty"
            raise ValueError(f"device: {what}; use auto, all, cpu, mps, cuda or cuda:N (or a "
                             "list of them)")
        if len(self.device) > 1 and {"auto", "all"} & set(self.device):
            raise ValueError(f"device: {list(self.device)} mixes auto or all with others; "
                             "use one of them alone, or list the devices")

    def devices(self) -> tuple[str, ...]:
        """One device per worker: `all` is every CUDA GPU (the CPU if none)."""
        if self.device != ("all",):
            return self.device
        import torch  # only here: reading the config imports no torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return tuple(f"cuda:{n}" for n in range(count)) or ("cpu",)


@dataclass(frozen=True)
class DaemonConfig(Checked):
    """How the watch loop behaves."""

    stable_seconds: float = setting(
        1.0, low=0.0, note="seconds",
        help="a file is read once its size and modification time held still this long")
    settle_report_seconds: float = setting(
        120.0, low=0.0, note="seconds",
        help="a file still changing or locked after this long is reported in "
             "<name>.error.txt (and still waited for)")
    unload_after_minutes: float = setting(
        0.0, low=0.0, note="minutes",
        help="free GPU memory after this many idle minutes (the models reload on the next "
             "photo); 0 = never")
    depth_cache_mb: float = setting(
        2048.0, low=0.0, note="MB",
        help="disk cache of depth-model outputs, so retuning a photo runs SHARP only; 0 = off")
    preview: bool = setting(
        True, help="write <result>_depth.png: the injected depth beside SHARP's own")
    max_pixels: int = setting(
        120_000_000, low=1,
        help="refuse photos with more pixels (protects memory from huge or hostile files)")
    rescan_seconds: float = setting(
        30.0, low=0.0, low_open=True, note="seconds",
        help="also list the inputs folder this often, picking up photos whose file event was "
             "lost, and retry failures that may pass later (disk full, a locked file)")
    state_dir: Path = setting(
        default_factory=default_state_dir, default_text='"" = the per-user data folder',
        help="journal, depth cache and lock file")


@dataclass(frozen=True)
class ServiceConfig(Checked):
    """Read by `service/` (tray, notifications, logs); kept here so one file holds it all."""

    notifications: bool = setting(
        True, help="a desktop notification per finished or failed photo (tray)")
    log_level: str = setting("INFO", choices=LOG_LEVELS, ignore_case=True,
                             note="any letter case", help="the least important log lines written")
    log_dir: Path = setting(
        default_factory=default_log_dir, default_text='"" = the per-user log folder',
        help="where the log files go")


CLUSTER_DOCS = "docs/cluster.md#why-dask-and-not-ray"
CLUSTER_SCHEMES = ("tcp", "tls")
TLS_KEYS = ("tls_ca_file", "tls_cert", "tls_key")


@dataclass(frozen=True)
class ClusterConfig(Checked):
    """The `[cluster]` section: photos run on remote GPU workers (docs/cluster.md). Without
    the section everything runs in this process and the engine is never imported."""

    engine: str = setting(
        "dask", choices=("dask",),
        help="the distributed engine: dask (the `cluster` extra); ray is not supported "
             "(docs/cluster.md)")
    address: str = setting(
        "", default_text='required, e.g. "tcp://192.168.1.20:8786"',
        help="the scheduler: tcp://host:8786, or tls://host:8786 with the tls_* keys")
    in_flight_per_worker: int = setting(
        2, low=1, high=16,
        help="photos sent to one GPU worker at a time (one runs, the rest wait there), so a "
             "big drop never floods memory")
    max_workers: int = setting(
        8, low=1, high=256,
        help="the most GPU workers used at once (the daemon keeps in_flight_per_worker x "
             "this many slots; only those of connected workers send photos)")
    connect_timeout_seconds: float = setting(
        10.0, low=0.0, low_open=True, note="seconds",
        help="how long one attempt to reach the scheduler may take (then retried)")
    tls_ca_file: Path | None = setting(
        None, help="the certificate authority that signed the scheduler's and workers' "
                   "certificates (tls:// addresses)")
    tls_cert: Path | None = setting(None, help="this daemon's client certificate (tls://)")
    tls_key: Path | None = setting(None, help="this daemon's client certificate key (tls://)")

    def __post_init__(self) -> None:
        if self.engine == "ray":
            raise ValueError(f"engine 'ray' is not supported: sharp-watch runs on Dask, which "
                             f"also runs on Windows and survives a lost worker without "
                             f"hanging the daemon (see {CLUSTER_DOCS}); set engine = \"dask\"")
        super().__post_init__()
        scheme, sep, rest = self.address.partition("://")
        host, colon, port = rest.rpartition(":")
        if not (sep and scheme in CLUSTER_SCHEMES and host and colon and port.isdigit()):
            raise ValueError(f"address {shown(self.address)} is not a scheduler address; "
                             "write it as tcp://host:8786 (or tls://host:8786)")
        tls = [getattr(self, key) is not None for key in TLS_KEYS]
        if scheme == "tls" and not all(tls):
            raise ValueError(f"address {self.address} is tls:// and needs tls_ca_file, "
                             "tls_cert and tls_key (docs/cluster.md#security)")
        if scheme == "tcp" and any(tls):
            raise ValueError(f"tls_* keys are set but address {self.address} is tcp://; "
                             "use tls://host:port to encrypt, or drop the tls_* keys")


@dataclass(frozen=True)
class Config:
    """Everything the daemon and service read, already checked and with paths resolved."""

    folders: FolderConfig = field(default_factory=FolderConfig)
    models: ModelConfig = field(default_factory=ModelConfig)
    defaults: DepthSettings = field(default_factory=DepthSettings)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    cluster: ClusterConfig | None = None
    """None (no `[cluster]` section): the GPU stage runs in this process."""
    source: Path | None = None

    @property
    def inputs(self) -> Path:
        return self.folders.inputs

    @property
    def outputs(self) -> Path:
        return self.folders.outputs

    def model_settings(self, device: str | None = None) -> ModelSettings:
        """The pipeline's settings on `device` (default: the first worker's)."""
        values = {f.name: getattr(self.models, f.name) for f in fields(ModelSettings)}
        return ModelSettings(**{**values, "device": device or self.models.devices()[0]})


SECTIONS: dict[str, type] = {"folders": FolderConfig, "models": ModelConfig,
                             "defaults": DepthSettings, "daemon": DaemonConfig,
                             "service": ServiceConfig, "cluster": ClusterConfig}
"""The config file's sections and the dataclass declaring each one's keys."""


def _resolved(key: Setting, value: Any, base: Path) -> Any:
    """`""` is the default of a path or of a key that may be unset; a relative path is
    relative to the config file's folder."""
    if value == "" and (key.kind == "path" or key.optional):
        return key.default()
    if key.kind == "path":
        path = Path(value).expanduser()
        return path if path.is_absolute() else base / path
    return value


def _section(name: str, table: Any, where: str, base: Path) -> Any:
    """Section `name` made from its TOML table, every key and value checked."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [{name}] must be a table of keys")
    declared = keys(SECTIONS[name])
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in declared:
            raise ConfigError(f"{where}: unknown key {shown(key)} in [{name}]"
                              f"{key_hint(key, declared)}")
        try:
            values[key] = _resolved(declared[key], declared[key].coerce(value), base)
        except TypeError as exc:
            raise ConfigError(f"{where}: [{name}] {key} {exc}") from None
    try:
        return SECTIONS[name](**values)
    except ValueError as exc:
        raise ConfigError(f"{where}: [{name}] {exc}") from None


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
        if name not in SECTIONS:
            hint = nearest(name, SECTIONS)
            raise ConfigError(f"{where}: unknown section [{name}]"
                              + (f"; did you mean [{hint}]?" if hint else
                                 f"; valid sections: {', '.join(SECTIONS)}"))
        parts[name] = _section(name, table, where, base)
    cfg = Config(**parts, source=Path(where) if where != "<config>" else None)
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

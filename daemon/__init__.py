"""The watch-folder daemon: photos dropped in a folder become PLYs, with models resident.

Built on `pipeline/`; `service/` (CLI, tray) wraps the `Daemon` class. Names are
imported on first use (`pipeline.lazy`), so reading the config does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.lazy import lazy_exports

_EXPORTS = {
    "Daemon": ".api",
    "DaemonError": ".api",
    "Config": ".config",
    "ConfigError": ".config",
    "default_config_path": ".config",
    "load_config": ".config",
    "JobEvent": ".status",
    "Status": ".status",
}
__all__ = [
    "Config",
    "ConfigError",
    "Daemon",
    "DaemonError",
    "JobEvent",
    "Status",
    "default_config_path",
    "load_config",
]

if TYPE_CHECKING:
    from .api import Daemon, DaemonError
    from .config import Config, ConfigError, default_config_path, load_config
    from .status import JobEvent, Status


__getattr__ = lazy_exports(__name__, _EXPORTS)

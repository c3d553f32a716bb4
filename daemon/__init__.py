"""The watch-folder daemon: photos dropped in a folder become PLYs, with models resident.

Built on `pipeline/`; `service/` (CLI, tray) wraps the `Daemon` class.
"""

from .api import Daemon, DaemonError
from .config import Config, ConfigError, default_config_path, load_config
from .status import JobEvent, Status

__all__ = ["Config", "ConfigError", "Daemon", "DaemonError", "JobEvent", "Status",
           "default_config_path", "load_config"]

"""Starting the viewer from the tray: a separate process, so it never loads in the daemon.

The tray's daemon process stays lean (no web server, no pages in its memory); each click
starts `python -m service view|gallery` with the same config, console-less on Windows
(pythonw beside python, `system.gui_python`). That process opens the browser itself (or,
when a viewer already runs for this user, hands the page to that one) and exits once no
page has asked it anything for a while. Starting processes is the service's job, so this
lives here and the viewer never imports the service.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from loguru import logger

import viewer

from .system import gui_python


def viewer_argv(command: str, config: Path | None, target: Path | None = None,
                executable: str | None = None, platform: str | None = None) -> list[str]:
    """`python -m service view [TARGET]` (or `gallery`) for this config, console-less."""
    argv = [gui_python(executable or sys.executable, platform), "-m", "service", command]
    if config is not None:
        argv += ["--config", str(config)]
    if target is not None:
        argv.append(str(target))
    return argv


def launch(command: str, config: Path | None, target: Path | None = None) -> bool:
    """Start a viewer process; False (and a log line saying why) when it cannot start."""
    if not viewer.available():
        logger.warning(viewer.MISSING)
        return False
    try:
        subprocess.Popen(viewer_argv(command, config, target), stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    except OSError as exc:
        logger.warning(f"cannot start the viewer ({exc})")
        return False
    return True

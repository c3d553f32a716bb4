"""`python -m daemon --config FILE`: run the daemon until SIGTERM or Ctrl+C.

Kept tiny on purpose: `sharp-watch run` (in `service/`) is the user-facing command;
this exists so tests can start, and SIGKILL, a real daemon process.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from loguru import logger

from pipeline import PipelineError

from .api import Daemon, DaemonError
from .config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m daemon", description=__doc__)
    parser.add_argument("--config", type=Path, default=None, help="config.toml to use")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    logger.remove()
    logger.add(sys.stderr, level=config.service.log_level.upper())
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        daemon = Daemon(config, record_crashes=True)
        daemon.subscribe(lambda event: logger.log(
            "INFO" if event.outcome == "done" else "WARNING", "{}", event.line()))
        daemon.start()
    except (DaemonError, PipelineError, OSError) as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1
    print(f"inputs:  {config.inputs}\noutputs: {config.outputs}", flush=True)
    while not stop.wait(0.5):
        pass
    daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

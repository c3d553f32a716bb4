"""`sharp-watch run`: one daemon per user, its control channel, and the tray or a console.

Order matters: take the per-user lock before anything slow, publish the control endpoint
as soon as the daemon has started (start returns at once and models load in the
background, so `status` works while they load), and on the way out stop the daemon
gracefully before the endpoint disappears.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

from loguru import logger

from daemon.control import ControlServer
from daemon.instance import Instance

from . import logs


def control_actions(daemon: Any, stop_event: threading.Event) -> dict[str, Any]:
    """What each control endpoint does to the in-process daemon."""

    def status() -> dict[str, Any]:
        return daemon.status().as_dict()

    def pause() -> dict[str, Any]:
        daemon.pause()
        return status()

    def resume() -> dict[str, Any]:
        daemon.resume()
        return status()

    def stop() -> dict[str, Any]:
        stop_event.set()
        return {"stopping": True}

    def rerun(photo: str) -> dict[str, Any]:
        return {"queued": str(daemon.rerun(photo))}

    return {"status": status, "pause": pause, "resume": resume, "stop": stop, "rerun": rerun}


def run(config: Any, config_path: Path | None, tray: bool, say: Any,
        console: bool = True) -> int:
    """Run until stopped (tray Quit, `sharp-watch stop`, Ctrl+C); returns the exit code.

    `console=False` (pythonw) logs to the file only. Raises `AlreadyRunning` before
    touching anything when this user already runs one.
    """
    from daemon import Daemon
    from pipeline import PipelineError

    instance = Instance(config.daemon.state_dir)
    instance.acquire()
    try:
        log_file = logs.setup(config.service.log_dir, config.service.log_level, console)
        logs.route_library_logging()
        say(f"inputs:  {config.folders.inputs}\noutputs: {config.folders.outputs}\n"
            f"logs:    {log_file}\nconfig:  {config_path or 'built-in defaults'}\n"
            f"state:   {config.daemon.state_dir}")
        try:
            daemon = Daemon(config, record_crashes=True)
        except PipelineError as exc:
            logger.error(f"cannot start: {exc}")
            return 1
        return _serve(daemon, config, instance, log_file, tray, say)
    except Exception as exc:
        logger.opt(exception=True).error(f"sharp-watch stopped on an unexpected error: {exc} "
                                         f"(details in {config.service.log_dir})")
        return 1
    finally:
        instance.release()


def _serve(daemon: Any, config: Any, instance: Instance, log_file: Path, tray: bool,
           say: Any) -> int:
    """Start `daemon`, serve the control channel, and block until asked to stop."""
    from daemon import DaemonError

    stop_event = threading.Event()
    lock = threading.Lock()
    stopped: list[bool] = []

    def shutdown() -> None:
        with lock:
            if not stopped:
                daemon.stop()
                stopped.append(True)

    daemon.subscribe(logs.log_job)
    try:
        daemon.start()
    except (DaemonError, OSError) as exc:
        logger.error(f"cannot start: {exc}")
        return 1
    server = ControlServer(instance.secret, control_actions(daemon, stop_event))
    server.start()
    instance.publish(server.port)
    _on_signals(stop_event)
    logger.info(f"sharp-watch running (pid {os.getpid()}, control port {server.port}); "
                f"drop photos into {config.folders.inputs}")
    try:
        if not (tray and _run_tray(daemon, config, log_file, stop_event, shutdown)):
            say("running without a tray icon; stop with Ctrl+C or `sharp-watch stop`")
            while not stop_event.wait(0.5):
                pass
    finally:
        shutdown()
        server.close()
        logger.info("sharp-watch stopped")
    return 0


def _run_tray(daemon: Any, config: Any, log_file: Path, stop_event: threading.Event,
              shutdown: Any) -> bool:
    """Show the tray until Quit; False when no tray can be shown here (then run headless)."""
    from .tray import Tray

    try:
        icon = Tray(daemon, stop_event=stop_event, shutdown=shutdown,
                    inputs=config.folders.inputs, outputs=config.folders.outputs,
                    log_file=log_file, notifications=config.service.notifications,
                    config=config.source)
    except Exception as exc:
        logger.warning(f"no tray icon ({exc}); running without one")
        return False
    icon.run()
    return True


def _on_signals(stop_event: threading.Event) -> None:
    """Ctrl+C and SIGTERM ask for a graceful stop instead of killing the worker mid-write."""
    if threading.current_thread() is not threading.main_thread():
        return
    for name in ("SIGINT", "SIGTERM", "SIGBREAK"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), lambda *_: stop_event.set())

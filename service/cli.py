"""The `sharp-watch` command: run the daemon, control it, check the machine, install autostart.

Each subcommand is a small function; heavy imports (torch through the daemon) happen
inside them. Under `pythonw` / `sharp-watch-tray` there is no console: stdout and stderr
are then pointed at the null device before anything can write to them, and the log goes
to its file only. What is printed passes through `text.printable`, so a file name (or a
daemon answer) cannot send escape sequences to the terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path, PureWindowsPath
from typing import Any

from . import cluster, compare, export, options, predict, system
from .text import printable, say, warn

NOT_RUNNING = 3
"""Exit code of status/pause/resume/stop when no daemon runs (like `systemctl status`)."""


def console_less_streams() -> bool:
    """pythonw has no stdout/stderr; print, tqdm's download bars, faulthandler and library
    log handlers would crash writing to None, so give them a sink (the log file still gets
    every log line). Returns whether there is a console at all."""
    console = sys.stderr is not None
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115
    return console


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    options.add_config_option(common)
    parser = argparse.ArgumentParser(
        prog="sharp-watch",
        description="Watch a folder; every photo dropped in becomes a 3D Gaussian splat "
                    "(Apple Depth Pro depth injected into Apple SHARP).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="start watching (with a tray icon)",
                         description="Start the daemon for this user, with a tray icon unless "
                                     "--no-tray. Prints where inputs, outputs, logs and config "
                                     "are. Only one can run per user.")
    run.add_argument("--no-tray", action="store_true",
                     help="no tray icon: for a console or a headless machine")
    run.set_defaults(func=cmd_run)

    status = sub.add_parser("status", parents=[common], help="show what the daemon is doing",
                            description="State, current photo, queue and counts of the running "
                                        "daemon, and whether autostart is installed.")
    status.add_argument("--json", action="store_true", help="print the raw status as JSON")
    status.set_defaults(func=cmd_status)
    for name, text in (("pause", "stop starting photos (keeps watching and queueing)"),
                       ("resume", "work through the queue again"),
                       ("stop", "stop the daemon gracefully (finishes or safely abandons the "
                                "current photo)")):
        sub.add_parser(name, parents=[common], help=text, description=text.capitalize() + ".",
                       ).set_defaults(func=cmd_control, action=name)

    logs = sub.add_parser("logs", parents=[common], help="where the log is; tail or open it",
                          description="Print the log file's path.")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")
    logs.add_argument("--open", action="store_true", help="open it in the default viewer")
    logs.set_defaults(func=cmd_logs)

    install = sub.add_parser("install", parents=[common],
                             help="start at logon for this user (no admin, no console window)",
                             description="Register `sharp-watch run` (console-less) to start "
                                         "when you log on. Running it again changes nothing.")
    install.set_defaults(func=cmd_install)
    sub.add_parser("uninstall", parents=[common], help="no longer start at logon",
                   description="Remove the logon entry; fine if there is none.",
                   ).set_defaults(func=cmd_uninstall)
    sub.add_parser("doctor", parents=[common], help="check Python, GPU, models, folders",
                   description="One line per check: OK, WARN or FAIL, with what to do.",
                   ).set_defaults(func=cmd_doctor)
    predict.add_parser(sub)
    compare.add_parser(sub)
    export.add_parser(sub)
    cluster.add_parser(sub, common)
    sub.choices["cluster-worker"].set_defaults(func=cmd_cluster_worker)
    view = sub.add_parser("view", parents=[common], help="look at a result in the browser; tune it",
                          description="Open a result in a local web page (127.0.0.1, this "
                                      "user only): orbit the 3D scene, see the photo and depth "
                                      "beside it, move sliders and Apply to rerun the photo. "
                                      "Needs the `viewer` extra.")
    view.add_argument("target", nargs="?", type=Path, default=None,
                      help="a result .ply, or a photo in the inputs folder (default: the "
                           "newest result)")
    view.add_argument("--no-browser", action="store_true", help="only print the page to open")
    view.set_defaults(func=cmd_view, gallery=False)
    gallery = sub.add_parser("gallery", parents=[common], help="every result in the browser",
                             description="Open the gallery: every result newest first, failed "
                                         "photos, the queue; links to view and tune.")
    gallery.add_argument("--no-browser", action="store_true", help="only print the page to open")
    gallery.set_defaults(func=cmd_view, gallery=True, target=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    console = console_less_streams()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        launcher = PureWindowsPath(sys.argv[0]).stem.lower()  # either slash
        if argv is None and launcher == "sharp-watch-tray":
            args = parser.parse_args(["run"])
        else:
            parser.print_help()
            return 2
    args.console = console
    return int(args.func(args))


def _config(args: argparse.Namespace) -> Any:
    """The checked config; a bad one ends the command with the loader's message."""
    from daemon.config import ConfigError, load_config

    try:
        return load_config(args.config)
    except ConfigError as exc:
        warn(f"error: {exc}")
        raise SystemExit(2) from None


def _config_path(args: argparse.Namespace, config: Any) -> Path | None:
    return args.config or config.source


def cmd_run(args: argparse.Namespace) -> int:
    from daemon.instance import AlreadyRunning

    from . import runner

    config = _config(args)
    try:
        return runner.run(config, _config_path(args, config), tray=not args.no_tray, say=say,
                          console=args.console)
    except AlreadyRunning as exc:
        warn(f"error: {exc}")
        return 1


def cmd_cluster_worker(args: argparse.Namespace) -> int:
    return cluster.serve(_config(args), args)


def cmd_status(args: argparse.Namespace) -> int:
    from daemon.control import ControlError, NotRunning, request

    config = _config(args)
    autostart = system.autostart_command()
    try:
        status = request(config.daemon.state_dir, "GET", "/status")
    except NotRunning as exc:
        warn(str(exc))
        say(f"autostart: {'installed' if autostart else 'not installed'}")
        return NOT_RUNNING
    except ControlError as exc:
        warn(f"error: {exc}")
        return 1
    if args.json:
        say(json.dumps({**status, "autostart": autostart}, indent=2))
        return 0
    say(status_text(status, autostart))
    return 0


IDLE_NAMED = 4
"""Up to this many idle workers are named in `status`; more are counted."""


def status_text(status: dict[str, Any], autostart: str | None) -> str:
    """What `sharp-watch status` prints: one escaped value per line (names are untrusted)."""
    lines = [f"state:     {status['state']}"]
    if status.get("download_progress") is not None:
        lines.append(f"download:  {status['download_progress'] * 100:.0f}%")
    workers = status.get("workers") or ()
    if len(workers) > 1:  # a line per busy worker (device and photo), the idle ones in one
        lines += [f"worker {n}:  {w['device']}: {w['current_file']} ({w.get('stage') or '...'})"
                  for n, w in enumerate(workers, 1) if w.get("current_file")]
        idle = [w["device"] for w in workers if not w.get("current_file")]
        if idle:  # a cluster has a slot per photo in flight: 16 by default
            lines.append(f"idle:      {', '.join(idle)}" if len(idle) <= IDLE_NAMED
                         else f"idle:      {len(idle)} of {len(workers)} workers")
    elif status.get("current_file"):
        lines.append(f"working:   {status['current_file']} ({status.get('stage') or '...'})")
    lines += [f"queue:     {status['queue_length']}",
              f"done:      {status['done']}, failed: {status['failed']}"]
    if status.get("last_error"):
        lines.append(f"last error: {status['last_error']}")
    lines += [f"problem:   {problem}" for problem in status.get("problems") or ()]
    lines += [f"suspect:   {suspect}" for suspect in status.get("suspects") or ()]
    if status.get("vram_used_mb") is not None:
        lines.append(f"VRAM:      {status['vram_used_mb']:.0f} MB")
    lines += [f"inputs:    {status['inputs']}", f"outputs:   {status['outputs']}",
              f"autostart: {'installed (' + autostart + ')' if autostart else 'not installed'}"]
    return "\n".join(printable(line) for line in lines)


def cmd_control(args: argparse.Namespace) -> int:
    from daemon.control import ControlError, NotRunning, request

    config = _config(args)
    try:
        answer = request(config.daemon.state_dir, "POST", f"/{args.action}")
    except NotRunning as exc:
        warn(str(exc))
        return NOT_RUNNING
    except ControlError as exc:
        warn(f"error: {exc}")
        return 1
    if args.action == "stop":
        say("sharp-watch is stopping (it finishes or safely abandons the current photo)")
    else:
        say(f"sharp-watch is {answer.get('state', args.action + 'd')}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from .logs import LOG_NAME

    config = _config(args)
    path = Path(config.service.log_dir) / LOG_NAME
    say(str(path))
    if args.open:
        if not path.exists():
            warn(f"no log yet at {path}; it appears when sharp-watch first runs")
            return 1
        system.open_path(path)
    if args.follow:
        with contextlib.suppress(KeyboardInterrupt):
            follow(path, say, threading.Event())
    return 0


def follow(path: Path, out: Any, stop: threading.Event, interval: float = 0.5,
           last: int = 20) -> None:
    """Print the last lines of `path`, then new ones as they come, until `stop` is set.

    The file is reopened on every poll rather than held open, so log rotation (a rename)
    is never blocked on Windows; a file shorter than what was read means it rotated.
    """
    position: int | None = None
    while not stop.is_set():
        try:
            with open(path, "rb") as log:
                size = os.fstat(log.fileno()).st_size
                start = 0 if position is None or size < position else position
                log.seek(start)
                data = log.read()
        except FileNotFoundError:
            data, start = b"", 0
        complete = data[:data.rfind(b"\n") + 1]
        lines = complete.decode("utf-8", errors="replace").splitlines()
        for line in lines[-last:] if position is None else lines:
            out(line)
        position = start + len(complete)
        stop.wait(interval)


def cmd_install(args: argparse.Namespace) -> int:
    config = _config(args)
    config_path = _config_path(args, config)
    argv = system.launch_argv(sys.executable, config_path.resolve() if config_path else None)
    where = system.install_autostart(argv)
    say(f"autostart installed: {system.run_key_value(argv)}\n  ({where})\n"
        "It starts at your next logon; start it now with `sharp-watch run`.")
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    removed = system.uninstall_autostart()
    say("autostart removed" if removed else "autostart was not installed; nothing to do")
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    """`view` / `gallery`: the viewer is imported only here, and only if installed."""
    import viewer

    config = _config(args)
    if not viewer.available():
        warn(f"error: {viewer.MISSING}")
        return 1
    from viewer.run import serve

    return serve(config, args.target, args.gallery, say, system.open_path,
                 browser=not args.no_browser, console=args.console)


def cmd_doctor(args: argparse.Namespace) -> int:
    from . import doctor

    config = _config(args)
    started = time.perf_counter()
    code = doctor.run(config, _config_path(args, config), say)
    say(f"({time.perf_counter() - started:.1f} s)")
    return code

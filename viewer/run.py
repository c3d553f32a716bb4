"""`sharp-watch view [PLY | photo]` and `sharp-watch gallery`: serve until idle or Ctrl+C.

The daemon may or may not be running: its status comes over the control channel on
every poll (None when it is not running, which the pages say in words). This module is
imported on demand, never by the daemon or the rest of the CLI.

The browser is opened on a launch page in the owner-only state folder, never on an
address with a secret in it (`viewer.sessions`). A second `view` while a viewer runs
asks that one for a launch page over loopback, with the hand-off secret from
`viewer.json` (owner-only, like the control channel's secret): that secret can ask for
launch pages and nothing else, so whoever could use it (the owner, an administrator) could
as well read the photos and results directly.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import sys
import threading
import time
import webbrowser
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Any
from urllib.parse import quote, urlencode

from loguru import logger

from daemon.control import ControlError, NotRunning, request
from daemon.results import has_results
from pipeline.atomic import atomic_write, private_folder

from . import results
from .server import HANDOFF, Place, Rerun, StatusSource, ViewerApp
from .sessions import remove_stale_launch_pages

IDLE_EXIT_SECONDS = 15 * 60
"""The viewer stops once no page has asked it anything for this long (tab closed)."""
ENDPOINT_NAME = "viewer.json"
"""In the state folder (owner-only): the running viewer's pid, port and hand-off secret, so
a second `view` (another tray click) opens a page of that one instead of starting another."""


def control_status(state_dir: Path) -> StatusSource:
    """The running daemon's status over its control channel, or None when none answers."""
    def status() -> dict[str, Any] | None:
        try:
            return request(state_dir, "GET", "/status", timeout=2.0)
        except (NotRunning, ControlError):
            return None
    return status


def control_rerun(state_dir: Path) -> Rerun:
    """Have the running daemon queue a photo now; nothing when none answers (its watcher
    still sees the new sidecar after the settle wait)."""
    def rerun(photo: Path) -> None:
        try:
            request(state_dir, "POST", "/rerun?" + urlencode({"photo": str(photo)}),
                    timeout=2.0)
        except (NotRunning, ControlError) as exc:
            logger.debug(f"viewer: the daemon did not take the rerun of {photo}: {exc}")
    return rerun


def start_page(outputs: Path, target: Path | None, gallery: bool) -> tuple[str, Path | None]:
    """(page path, PLY to allow from outside the outputs folder) for the command's target.

    Raises ValueError with a sentence for a target that has no result.
    """
    if gallery:
        return "/", None
    if target is None:
        return ("/view" if has_results(outputs) else "/"), None
    if not target.exists() and len(target.parts) == 1 and (outputs / target).is_file():
        target = outputs / target  # a bare result name, as the gallery shows it
    target = target.expanduser().resolve()
    if not target.is_file():
        raise ValueError(f"{target} does not exist")
    if target.suffix.lower() == ".ply":
        ours = target.parent == outputs.resolve() and results.read_result(target) is not None
        return f"/view?ply={quote(target.name)}", None if ours else target
    for result in results.list_results(outputs):
        if result.photo.resolve() == target:
            return f"/view?ply={quote(result.name)}", None
    raise ValueError(f"no result for {target} in {outputs} yet; drop it into the inputs "
                     "folder and wait for it, or open the gallery (`sharp-watch gallery`)")


def console_log(console: bool) -> None:
    """The viewer's log lines (Apply written, result shown, problems) on the console only:
    the daemon owns the log file, and a second writer would fight its rotation on Windows."""
    logger.remove()
    if console and sys.stderr is not None:
        logger.add(sys.stderr, level="INFO", format="{time:HH:mm:ss} {message}")


def publish(state_dir: Path, app: ViewerApp) -> Path:
    """Write where this viewer answers (mode 0600: the hand-off secret is in it)."""
    path = Path(state_dir) / ENDPOINT_NAME
    private_folder(path.parent)
    info = {"pid": os.getpid(), "port": app.port, "handoff": app.handoff_secret}
    return atomic_write(path, json.dumps(info).encode(), mode=0o600)


def unpublish(state_dir: Path) -> None:
    """Remove the endpoint file if it is this process's."""
    path = Path(state_dir) / ENDPOINT_NAME
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()


def running_viewer(state_dir: Path, page: str) -> Path | None:
    """A launch page of `page` from this user's running viewer, or None when none answers."""
    try:
        info = json.loads((Path(state_dir) / ENDPOINT_NAME).read_text(encoding="utf-8"))
        port, secret = int(info["port"]), str(info["handoff"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5.0)
    try:
        connection.request("POST", HANDOFF, body=json.dumps({"page": page}),
                           headers={"Authorization": f"Bearer {secret}",
                                    "Content-Type": "application/json"})
        answer = connection.getresponse()
        launch = json.loads(answer.read()).get("launch") if answer.status == 200 else None
    except (OSError, ValueError, AttributeError):
        launch = None
    finally:
        connection.close()
    return Path(launch) if isinstance(launch, str) else None


def open_in_browser(page: PurePath, platform: str = sys.platform) -> None:
    """Open the launch page `page` in the default browser: on Windows by its path (the
    shell's `os.startfile`, which `webbrowser` uses there, opens it with the program
    registered for .html files, the default browser unless the user changed it), elsewhere
    as a `file://` address."""
    webbrowser.open(str(page) if platform == "win32" else page.as_uri())


def serve(config: Any, target: Path | None, gallery: bool, say: Callable[[str], None],
          open_folder: Callable[[Path], object], browser: bool = True,
          stop: threading.Event | None = None, console: bool | None = None) -> int:
    """Run the viewer for `config` until Ctrl+C, `stop`, or `IDLE_EXIT_SECONDS` unused.

    `open_folder` shows a folder in the file manager: the caller's (the service holds the
    OS calls), so the viewer needs nothing above it. `console` (from the CLI: whether there
    is one) sets up the log; None leaves it alone.
    """
    if console is not None:
        console_log(console)

    outputs = Path(config.folders.outputs)
    try:
        page, extra = start_page(outputs, target, gallery)
    except ValueError as exc:
        say(f"error: {exc}")
        return 1
    state_dir = Path(config.daemon.state_dir)
    running = running_viewer(state_dir, page) if extra is None else None
    if running is not None:
        say(f"viewer: already running; opening {running}")
        if browser:
            open_in_browser(running)
        return 0
    place = Place(Path(config.folders.inputs), outputs, config.defaults)
    remove_stale_launch_pages(state_dir)
    app = ViewerApp(place, control_status(state_dir), open_folder, extra,
                    rerun=control_rerun(state_dir), launch_dir=state_dir)
    app.start()
    if extra is None:
        publish(state_dir, app)
    launch = app.launch(page)
    say(f"viewer: http://127.0.0.1:{app.port}{page} (opened with {launch}, which works once, "
        "within a minute; only this user's browser on this machine can use it; Ctrl+C "
        "stops it)")
    if browser:
        open_in_browser(launch)
    stop = stop or threading.Event()
    try:
        while not stop.wait(1.0):
            if time.monotonic() - app.last_request > IDLE_EXIT_SECONDS:
                say("viewer: no page open for a while; stopping")
                break
    except KeyboardInterrupt:
        pass
    finally:
        unpublish(state_dir)
        app.close()
    return 0

"""The tray icon: state at a glance, a short menu, optional per-photo notifications.

The tray only reads `Daemon.status()` on its own polling thread and sends pause/resume;
job events arrive on the worker thread and are only queued here, so neither side ever
waits for the other. Only the polling thread changes the icon; menu clicks just wake it.
"Open last result" and "View / tune a photo..." start the viewer as its own process
(`service.launch`), so its web server never loads into the daemon's process; the gallery it
opens is the photo picker (pystray has no file dialog).
pystray is imported when a tray is built, because its Linux backend connects to the X
display at import time. Every text handed to pystray is escaped (file names are untrusted)
and fitted to its Windows field (`text.fit`): pystray's win32 backend raises ValueError
for a longer one, so the limits apply on every platform.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from loguru import logger

from . import system
from .icons import draw_icon, icon_state
from .launch import launch
from .text import BALLOON_TEXT_UNITS, BALLOON_TITLE_UNITS, TOOLTIP_UNITS, fit, printable


class Controlled(Protocol):
    """The part of `daemon.Daemon` the tray uses."""

    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def status(self) -> Any: ...
    def subscribe(self, callback: Callable[[Any], None]) -> None: ...


def describe(status: Any) -> str:
    """The tooltip and the greyed menu entry: state, queue and counts, then the first
    daemon problem (a failing or stalled thread) on a line of its own."""
    if status.download_progress is not None:
        head = f"Downloading models {int(status.download_progress * 100)}%"
    elif status.state == "working":
        name = Path(status.current_file).name if status.current_file else "a photo"
        head = f"Working on {name}" + (f" ({status.stage})" if status.stage else "")
        busy = [w for w in status.workers if w.current_file is not None]
        if len(busy) > 1:  # several devices: the first one's photo, and how many more
            head += f" +{len(busy) - 1} more on {len(status.workers)} devices"
    elif status.state == "error":
        head = f"Error: {status.last_error or 'see the log'}"
    elif status.state in ("starting", "loading"):
        head = "Loading models"
    else:
        head = status.state.capitalize()
    parts = [head, f"{status.queue_length} queued"]
    if status.done or status.failed:
        parts.append(f"{status.done} done, {status.failed} failed")
    lines = ["sharp-watch: " + ", ".join(parts)]
    if status.problems:
        more = f" (+{len(status.problems) - 1} more)" if len(status.problems) > 1 else ""
        lines.append(f"Problem{more}: {status.problems[0]}")
    return fit("\n".join(printable(line) for line in lines), TOOLTIP_UNITS)


def notification(event: Any) -> tuple[str, str]:
    """(title, message) for a finished or failed photo, fitted to the balloon's fields."""
    name = Path(event.photo).name
    if event.outcome == "done":
        title, message = "Splat ready", (f"{name} -> {Path(event.output).name} "
                                         f"in {event.seconds:.0f} s")
    else:
        title, message = "Photo failed", f"{name}: {event.error}"
    return fit(title, BALLOON_TITLE_UNITS), fit(printable(message), BALLOON_TEXT_UNITS)


def _show(icon: Any, seconds: float = 10.0) -> None:
    """Make the icon visible, retrying while pystray's loop is not fully up yet.

    pystray's Xorg backend releases the setup thread before it records its loop thread, so
    on a busy machine the first call can raise AttributeError; a short retry covers it.
    """
    deadline = time.monotonic() + seconds
    while True:
        try:
            icon.visible = True
            return
        except AttributeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class Tray:
    """Owns the pystray icon; `run()` blocks the calling (main) thread until Quit or stop."""

    def __init__(self, daemon: Controlled, *, stop_event: threading.Event,
                 shutdown: Callable[[], None], inputs: Path, outputs: Path, log_file: Path,
                 opener: Callable[[Path], object] = system.open_path,
                 viewer: Callable[[str], object] | None = None, config: Path | None = None,
                 notifications: bool = True, poll_seconds: float = 1.0) -> None:
        import pystray

        self.daemon = daemon
        self.viewer = viewer or (lambda command: launch(command, config))
        self.stop_event = stop_event
        self.shutdown = shutdown
        self.opener = opener
        self.poll_seconds = poll_seconds
        self.status_line = "sharp-watch: starting"
        self._shown: str | None = None
        self._wake = threading.Event()
        self._events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        item, separator = pystray.MenuItem, pystray.Menu.SEPARATOR
        menu = pystray.Menu(
            item(lambda _: self.status_line.replace("\n", " - "), None, enabled=False),
            separator,
            item(lambda _: "Resume" if self._paused() else "Pause", self.toggle_pause),
            item("Open inputs folder", lambda: self.opener(inputs)),
            item("Open outputs folder", lambda: self.opener(outputs)),
            item("View logs", lambda: self.opener(log_file)),
            separator,
            item("Open last result", lambda: self.viewer("view")),
            item("View / tune a photo...", lambda: self.viewer("gallery")),
            separator,
            item("Quit", self.quit),
        )
        self.icon = pystray.Icon(system.APP_NAME, draw_icon("loading"), self.status_line, menu)
        if notifications:
            daemon.subscribe(self._events.put)

    def run(self, setup: Callable[[Any], None] | None = None) -> None:
        def start(icon: Any) -> None:
            _show(icon)
            threading.Thread(target=self._poll, name="tray-poll", daemon=True).start()
            if setup is not None:
                setup(icon)

        self.icon.run(setup=start)

    def refresh_soon(self) -> None:
        """Ask the poll thread to refresh now rather than at its next tick."""
        self._wake.set()

    def toggle_pause(self) -> None:
        if self._paused():
            self.daemon.resume()
        else:
            self.daemon.pause()
        self.refresh_soon()

    def quit(self) -> None:
        self.stop_event.set()
        self.refresh_soon()

    def _refresh(self) -> None:
        """Bring icon, tooltip, menu and notifications up to date with the daemon."""
        status = self.daemon.status()
        shown = icon_state(status.state, status.download_progress is not None,
                           bool(status.problems))
        if shown != self._shown:
            self.icon.icon = draw_icon(shown)
            self._shown = shown
        self.status_line = describe(status)
        if self.icon.title != self.status_line:
            self.icon.title = self.status_line
        self.icon.update_menu()
        while not self._events.empty():
            title, message = notification(self._events.get())
            if self.icon.HAS_NOTIFICATION:
                self.icon.notify(message, title)

    def _paused(self) -> bool:
        return self.daemon.status().state == "paused"

    def _poll(self) -> None:
        """The only thread that changes the icon once it runs: pystray's backends are not
        safe against two threads updating one icon at the same time. The first update
        waits one interval, so it does not race the tray host docking the icon."""
        while True:
            self._wake.wait(self.poll_seconds)
            self._wake.clear()
            if self.stop_event.is_set():
                break
            try:
                self._refresh()
            except Exception as exc:
                logger.opt(exception=True).warning(f"tray refresh failed: {exc}")
        self.icon.title = "sharp-watch: stopping"
        try:
            self.shutdown()
        finally:
            self.icon.stop()

"""The tray, for real: pystray's Xorg backend under Xvfb, with trayer as the tray host.

Menu items are clicked from code inside `icon.run(setup=...)`; a small fake daemon records
what the tray asked of it, and a recording opener records which path would be opened.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from daemon import JobEvent, Status
from daemon.status import WorkerStatus
from service import icons
from service.text import utf16_units
from service.tray import describe, notification
from tests.conftest import wait_for


def status(**changes) -> Status:
    base = Status(state="idle", current_file=None, stage=None, queue_length=0, done=0,
                  failed=0, last_error=None, vram_used_mb=None, download_progress=None,
                  inputs="/in", outputs="/out")
    return dataclasses.replace(base, **changes)


class FakeDaemon:
    """The daemon methods the tray calls, recording every call."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.current = status()
        self.subscribers: list = []

    def pause(self) -> None:
        self.calls.append("pause")
        self.current = dataclasses.replace(self.current, state="paused")

    def resume(self) -> None:
        self.calls.append("resume")
        self.current = dataclasses.replace(self.current, state="idle")

    def stop(self) -> None:
        self.calls.append("stop")
        self.current = dataclasses.replace(self.current, state="stopped")

    def status(self) -> Status:
        return self.current

    def subscribe(self, callback) -> None:
        self.subscribers.append(callback)


# --- pure parts: icon and texts ----------------------------------------------------------

def test_each_state_has_its_own_colour_and_glyph():
    drawn = {state: icons.draw_icon(state) for state in icons.COLOURS}
    for state, image in drawn.items():
        assert image.size == (64, 64) and image.mode == "RGBA"
        assert image.getpixel((0, 0))[3] == 0, "transparent outside the disc"
        opaque = Counter(px[:3] for px in image.getdata() if px[3] == 255)
        assert opaque.most_common(1)[0][0] == icons.COLOURS[state]
        assert opaque[(255, 255, 255)] > 40, f"{state} has a white glyph"
    glyphs = {state: frozenset(i for i, px in enumerate(image.getdata()) if px[:3] == (255,) * 3)
              for state, image in drawn.items()}
    assert len(set(glyphs.values())) == len(glyphs), "no two states share a glyph"


def test_daemon_states_map_to_icons():
    assert icons.icon_state("idle") == "idle"
    assert icons.icon_state("working") == "working"
    assert icons.icon_state("paused") == "paused"
    assert icons.icon_state("error") == "error"
    assert icons.icon_state("loading") == "loading"
    assert icons.icon_state("starting") == "loading"
    assert icons.icon_state("working", downloading=True) == "loading"
    assert icons.icon_state("something new") == "error"


def test_tooltip_texts():
    assert describe(status()) == "sharp-watch: Idle, 0 queued"
    assert describe(status(state="loading", stage="downloading", download_progress=0.427)) == \
        "sharp-watch: Downloading models 42%, 0 queued"
    assert describe(status(state="working", current_file="C:/in/cat.jpg", stage="sharp",
                           queue_length=3, done=5, failed=1)) == \
        "sharp-watch: Working on cat.jpg (sharp), 3 queued, 5 done, 1 failed"
    assert describe(status(state="paused", queue_length=2)) == "sharp-watch: Paused, 2 queued"
    two = (WorkerStatus("cuda:0", "C:/in/cat.jpg", "sharp"), WorkerStatus("cuda:1", "C:/in/b.jpg"))
    assert describe(status(state="working", current_file="C:/in/cat.jpg", stage="sharp",
                           workers=two)) == \
        "sharp-watch: Working on cat.jpg (sharp) +1 more on 2 devices, 0 queued"
    long = describe(status(state="error", last_error="CUDA " * 100))
    assert long.startswith("sharp-watch: Error: CUDA CUDA") and utf16_units(long) == 127
    assert long.endswith("…")


def test_tooltip_shows_daemon_problems():
    one = describe(status(problems=("journal: database is locked (retrying)",)))
    assert one == "sharp-watch: Idle, 0 queued\nProblem: journal: database is locked (retrying)"
    three = describe(status(state="working", current_file="/in/a.jpg", problems=(
        "watcher: inputs folder is gone", "writer: disk full", "intake: stalled")))
    assert three.splitlines() == ["sharp-watch: Working on a.jpg, 0 queued",
                                  "Problem (+2 more): watcher: inputs folder is gone"]
    assert icons.icon_state("idle", problems=True) == "error"
    assert icons.icon_state("working", downloading=True, problems=True) == "error"
    assert icons.icon_state("idle", problems=False) == "idle"


LONG_NAMES = ["😀" * 300 + ".jpg", "東京の夜景と富士山" * 40 + ".png", "a" * 400 + ".jpg",
              "x" * 110 + "😀😀😀😀" + ".jpg", "é" * 500 + ".heic"]


@pytest.mark.parametrize("name", LONG_NAMES)
def test_texts_fit_the_windows_fields_for_long_unicode_names(name):
    tip = describe(status(state="working", current_file=f"/in/{name}", stage="depth",
                          queue_length=3, problems=(f"cannot read {name}",)))
    assert utf16_units(tip) <= 127 and tip.endswith("…")
    assert tip.startswith("sharp-watch: Working on " + name[:20])
    for event in (JobEvent(f"/in/{name}", "done", f"/out/{name}.ply", None, 3.0),
                  JobEvent(f"/in/{name}", "failed", None, f"cannot decode {name}", 0.1)):
        title, message = notification(event)
        assert utf16_units(title) <= 63 and utf16_units(message) <= 255
        assert message.startswith(name[:30]) and message.endswith("…")
        message.encode("utf-16-le")  # no lone surrogate: would raise UnicodeEncodeError


def test_hostile_names_are_escaped_in_tray_texts():
    name = "evil\x1b[2J\n\u202egpj.exe.jpg"
    tip = describe(status(state="working", current_file=f"/in/{name}"))
    assert tip == "sharp-watch: Working on evil\\x1b[2J\\n\\u202egpj.exe.jpg, 0 queued"
    title, message = notification(JobEvent(f"/in/{name}", "failed", None, "bad\r\n", 0.0))
    assert message == "evil\\x1b[2J\\n\\u202egpj.exe.jpg: bad\\r\\n" and title == "Photo failed"


def test_notification_texts():
    done = JobEvent("/in/cat.jpg", "done", "/out/cat_20260101-000000.ply", None, 41.6)
    failed = JobEvent("/in/dog.png", "failed", None, "cannot decode dog.png", 0.1)
    assert notification(done) == ("Splat ready", "cat.jpg -> cat_20260101-000000.ply in 42 s")
    assert notification(failed) == ("Photo failed", "dog.png: cannot decode dog.png")


class WindowsLikeIcon:
    """`pystray.Icon` checking texts as its win32 backend does: NOTIFYICONDATAW's szTip,
    szInfo and szInfoTitle hold 128, 256 and 64 WCHARs with the NUL; longer raises."""

    HAS_NOTIFICATION = True

    def __init__(self, name, icon, title, menu) -> None:
        self.icon, self.menu, self.notes, self._title = icon, menu, [], ""
        self.title = title

    @property
    def title(self) -> str:
        return self._title

    @title.setter
    def title(self, value: str) -> None:
        if utf16_units(value) >= 128:
            raise ValueError("string too long")
        self._title = value

    def notify(self, message: str, title: str | None = None) -> None:
        if utf16_units(message) >= 256 or utf16_units(title or "") >= 64:
            raise ValueError("string too long")
        self.notes.append((title, message))

    def update_menu(self) -> None:
        pass


@pytest.fixture
def windows_like_pystray(monkeypatch):
    import types

    module = types.ModuleType("pystray")
    module.Icon = WindowsLikeIcon
    module.Menu = type("Menu", (), {"SEPARATOR": object(),
                                    "__init__": lambda self, *items: setattr(self, "items",
                                                                             items)})
    module.MenuItem = lambda text, action, **kwargs: (text, action)
    monkeypatch.setitem(__import__("sys").modules, "pystray", module)
    return module


@pytest.mark.parametrize("name", LONG_NAMES)
def test_refresh_hands_pystray_only_texts_that_fit(windows_like_pystray, tmp_path, name):
    daemon = FakeDaemon()
    tray, _ = make_tray(tmp_path, daemon, [])
    daemon.current = status(state="working", current_file=f"/in/{name}", stage="sharp",
                            problems=(f"writer: cannot write {name}",))
    daemon.subscribers[0](JobEvent(f"/in/{name}", "done", f"/out/{name}.ply", None, 2.0))
    daemon.subscribers[0](JobEvent(f"/in/{name}", "failed", None, f"bad {name}", 0.5))
    tray._refresh()
    assert tray.icon.title.startswith("sharp-watch: Working on ")
    assert tray.icon.title.endswith("…")
    assert [title for title, _ in tray.icon.notes] == ["Splat ready", "Photo failed"]
    assert tray._shown == "error", "a daemon problem shows the error icon"


# --- the live tray ---------------------------------------------------------------------

def _tray_owner(display: str) -> bool:
    import Xlib.display
    import Xlib.X

    connection = Xlib.display.Display(display)
    try:
        atom = connection.intern_atom("_NET_SYSTEM_TRAY_S0")
        return connection.get_selection_owner(atom) != Xlib.X.NONE
    finally:
        connection.close()


@pytest.fixture(scope="module")
def x_tray():
    """An Xvfb display with trayer docked on it; DISPLAY points at it for this module."""
    missing = [tool for tool in ("Xvfb", "trayer") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (apt-get install xvfb trayer)")
    read, write = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "640x480x24",
                             "-nolisten", "tcp"], pass_fds=(write,),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as numbers:
        if not select.select([numbers], [], [], 30)[0]:
            xvfb.kill()
            pytest.fail("Xvfb did not start within 30 s")
        display = ":" + numbers.readline().strip()
    env = {**os.environ, "DISPLAY": display}
    trayer = subprocess.Popen(["trayer", "--edge", "top", "--align", "right", "--height", "24"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = {key: os.environ.get(key) for key in ("DISPLAY", "PYSTRAY_BACKEND")}
    try:
        deadline = time.monotonic() + 15
        while not _tray_owner(display):
            assert trayer.poll() is None, "trayer exited"
            assert time.monotonic() < deadline, "trayer never took the tray selection"
            time.sleep(0.1)
        os.environ.update(DISPLAY=display, PYSTRAY_BACKEND="xorg")
        yield display
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for process in (trayer, xvfb):
            process.terminate()
            process.wait(timeout=10)


def make_tray(tmp_path: Path, daemon: FakeDaemon, opened: list[Path],
              viewed: list[str] | None = None):
    from service.tray import Tray

    stop_event = threading.Event()
    daemon_stopped = threading.Event()

    def shutdown() -> None:
        daemon.stop()
        daemon_stopped.set()

    tray = Tray(daemon, stop_event=stop_event, shutdown=shutdown,
                inputs=tmp_path / "inputs", outputs=tmp_path / "outputs",
                log_file=tmp_path / "logs" / "sharp-watch.log", opener=opened.append,
                viewer=(viewed if viewed is not None else []).append,
                notifications=True, poll_seconds=0.2)
    tray.daemon_stopped = daemon_stopped
    return tray, stop_event


CUT_OFF: list = []
"""Icons whose X connection the watchdog closed: kept referenced so that their __del__,
which closes that dead connection and raises, never runs in the middle of the session."""


def run_with(tray, clicks) -> list[BaseException]:
    """Run the icon with `clicks(icon)` as its setup; return what the setup raised.

    pystray's Xorg backend talks to one X connection from several threads, and
    python-xlib then sometimes leaves a thread waiting for a reply or event that another
    thread already read (seen here: 9 runs in 100 hung). A nudger makes a round trip on
    that connection every 0.5 s, which hands such data on (0 hangs in 80 runs). Should
    the loop still not end 3 s after the tray stopped the daemon, a watchdog closes the
    connection, which ends the loop the way a vanished display would.
    """
    errors: list[BaseException] = []

    def setup(icon):
        try:
            clicks(icon)
        except BaseException as exc:
            errors.append(exc)
            tray.stop_event.set()

    done = threading.Event()

    def nudge() -> None:
        while not done.wait(0.5):
            with contextlib.suppress(Exception):
                tray.icon._display.sync()

    def watchdog() -> None:
        if not tray.stop_event.wait(60):
            errors.append(TimeoutError("the test never stopped the tray"))
            tray.stop_event.set()
        if tray.daemon_stopped.wait(30) and not done.wait(3):
            CUT_OFF.append(tray.icon)
            tray.icon._display.display.socket.shutdown(socket.SHUT_RDWR)

    threading.Thread(target=nudge, daemon=True).start()
    threading.Thread(target=watchdog, daemon=True).start()
    try:
        tray.run(setup)
    finally:
        done.set()
    return errors


def wait_until(done, icon) -> None:
    assert wait_for(done, 20), f"tray still shows {icon.title!r}"


def item_named(icon, text: str):
    return next(item for item in icon.menu.items if item.text == text)


def test_menu_pauses_resumes_opens_and_quits(x_tray, tmp_path):
    daemon = FakeDaemon()
    opened: list[Path] = []
    viewed: list[str] = []
    tray, stop_event = make_tray(tmp_path, daemon, opened, viewed)
    seen: dict[str, object] = {}

    def clicks(icon):
        assert icon.visible
        wait_until(lambda: icon.title == "sharp-watch: Idle, 0 queued", icon)
        texts = [item.text for item in icon.menu]
        assert texts[0] == "sharp-watch: Idle, 0 queued"
        assert texts[1:] == ["- - - -", "Pause", "Open inputs folder", "Open outputs folder",
                             "View logs", "- - - -", "Open last result",
                             "View / tune a photo...", "- - - -", "Quit"]
        status_item = icon.menu.items[0]
        assert not status_item.enabled
        item_named(icon, "Pause")(icon)
        assert daemon.calls == ["pause"]
        wait_until(lambda: icon.title == "sharp-watch: Paused, 0 queued", icon)
        seen["paused_title"] = icon.title
        seen["paused_icon"] = icon.icon.getpixel((32, 4))
        seen["paused_status_line"] = status_item.text
        item_named(icon, "Resume")(icon)
        assert daemon.calls == ["pause", "resume"]
        assert item_named(icon, "Pause") is not None
        for text in ("Open inputs folder", "Open outputs folder", "View logs",
                     "Open last result", "View / tune a photo..."):
            item_named(icon, text)(icon)
        item_named(icon, "Quit")(icon)

    errors = run_with(tray, clicks)
    assert not errors, errors
    assert stop_event.is_set()
    assert daemon.calls == ["pause", "resume", "stop"], "Quit stops the daemon once"
    assert opened == [tmp_path / "inputs", tmp_path / "outputs",
                      tmp_path / "logs" / "sharp-watch.log"]
    assert viewed == ["view", "gallery"], "the viewer items start the viewer and the gallery"
    assert seen["paused_title"] == "sharp-watch: Paused, 0 queued"
    assert seen["paused_status_line"] == "sharp-watch: Paused, 0 queued"
    assert seen["paused_icon"][:3] == icons.COLOURS["paused"]


def test_tooltip_follows_the_daemon_and_download_progress(x_tray, tmp_path):
    daemon = FakeDaemon()
    tray, stop_event = make_tray(tmp_path, daemon, [])
    titles: list[str] = []

    def wait_for_title(text: str, icon) -> None:
        wait_until(lambda: icon.title == text, icon)
        titles.append(icon.title)

    def clicks(icon):
        daemon.current = status(state="loading", stage="downloading", download_progress=0.13)
        wait_for_title("sharp-watch: Downloading models 13%, 0 queued", icon)
        assert icon.icon.getpixel((32, 4))[:3] == icons.COLOURS["loading"]
        daemon.current = status(state="working", current_file="/in/cat.jpg", stage="depth",
                                queue_length=4)
        wait_for_title("sharp-watch: Working on cat.jpg (depth), 4 queued", icon)
        assert icon.icon.getpixel((32, 4))[:3] == icons.COLOURS["working"]
        daemon.current = status(state="error", last_error="GPU out of memory during sharp")
        wait_for_title("sharp-watch: Error: GPU out of memory during sharp, 0 queued", icon)
        assert icon.icon.getpixel((32, 4))[:3] == icons.COLOURS["error"]
        stop_event.set()

    assert not run_with(tray, clicks)
    assert len(titles) == 3
    assert daemon.calls == ["stop"]


def test_job_events_never_wait_for_the_tray(x_tray, tmp_path):
    daemon = FakeDaemon()
    tray, stop_event = make_tray(tmp_path, daemon, [])
    assert len(daemon.subscribers) == 1
    blocked = threading.Event()
    release = threading.Event()

    def slow_status():
        blocked.set()
        release.wait(10)
        return status()

    def clicks(icon):
        daemon.status = slow_status
        assert blocked.wait(20), "tray poll thread should be inside status()"
        start = time.perf_counter()
        for n in range(100):
            daemon.subscribers[0](JobEvent(f"/in/{n}.jpg", "done", f"/out/{n}.ply", None, 1.0))
        assert time.perf_counter() - start < 0.5, "the worker thread waited on the tray"
        release.set()
        stop_event.set()

    assert not run_with(tray, clicks)
    assert tray._events.empty(), "queued events are drained on the next refresh"


def test_show_waits_for_a_tray_loop_that_is_still_starting():
    from service.tray import _show

    class StartingIcon:
        def __init__(self, failures: int) -> None:
            self.failures = failures
            self.shown = False

        @property
        def visible(self) -> bool:
            return self.shown

        @visible.setter
        def visible(self, value: bool) -> None:
            if self.failures:
                self.failures -= 1
                raise AttributeError("'Icon' object has no attribute '_thread'")
            self.shown = value

    icon = StartingIcon(failures=3)
    _show(icon)
    assert icon.shown and icon.failures == 0
    with pytest.raises(AttributeError):
        _show(StartingIcon(failures=10**6), seconds=0.05)

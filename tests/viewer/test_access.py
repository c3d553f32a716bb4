"""How the owner's browser gets into the viewer, and why no other local user's program can.

An adversarial run read the secret from the browser's command line (`/proc/PID/cmdline`)
and from a cookie the owner's browser sent to another server on 127.0.0.1, then read the
gallery and pressed Apply. These tests hold the protection model in `viewer.sessions`:
the browser is opened on an owner-only launch page; its one-time key is spent on first
use and expires within a minute; the session token lives in the tab, never in a cookie;
the hand-off secret in `viewer.json` only asks for launch pages; and only requests with a
live session keep the viewer from stopping.
"""

from __future__ import annotations

import http.client
import json
import re
import stat
import sys
import threading
from pathlib import Path, PurePosixPath, PureWindowsPath
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from pipeline import DepthSettings
from tests.conftest import wait_for, write_photo
from tests.support.viewer_requests import call, launch_key, write_result
from viewer import sessions
from viewer.run import ENDPOINT_NAME, open_in_browser, serve
from viewer.server import HANDOFF, ViewerApp
from viewer.sessions import KEY_SECONDS, MAX_SESSIONS, SESSION_IDLE_SECONDS, Sessions

POSIX = sys.platform != "win32"


def _post(port: int, path: str, body: Any, headers: dict[str, str] | None = None
          ) -> tuple[int, dict[str, Any], Any]:
    """A POST with no credentials but `headers`; the JSON answer."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", path, body=json.dumps(body),
                           headers={"Host": f"127.0.0.1:{port}",
                                    "Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, json.loads(response.read()), response
    finally:
        connection.close()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _opened_page(argument: str) -> Path:
    """The file a browser was asked to open (a path on Windows, a file:// URI elsewhere)."""
    return Path(unquote(urlsplit(argument).path)) if argument.startswith("file:") else Path(
        argument)


def test_the_browser_is_opened_on_an_owner_only_page_never_on_a_secret(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the browser's command line shows (any local user can read it) gets nobody in;
    the launch page it names is the owner's alone and works once; a second `view` hands
    a new launch page over the same way."""
    inputs, outputs, state = tmp_path / "in", tmp_path / "out", tmp_path / "state"
    write_result(outputs, write_photo(inputs / "a.jpg"), "a_1")
    config = SimpleNamespace(folders=SimpleNamespace(inputs=inputs, outputs=outputs),
                             defaults=DepthSettings(),
                             daemon=SimpleNamespace(state_dir=state))
    browser: list[str] = []
    monkeypatch.setattr("webbrowser.open", browser.append)
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(config, None, True, print, print),
                              kwargs={"stop": stop})
    thread.start()
    try:
        assert wait_for(lambda: browser, 30)
        [argument] = browser
        port = json.loads((state / ENDPOINT_NAME).read_text(encoding="utf-8"))["port"]
        for given in {argument, *re.split(r"[/\\?&=#:.]+", argument)} - {""}:
            status, _, _ = _post(port, "/api/state", {}, {"Authorization": f"Bearer {given}"})
            assert status == 401, f"the browser's command line holds a credential: {given}"
            assert _post(port, "/api/session", {"key": given})[0] == 401, given
        page = next(state.glob(f"{sessions.LAUNCH_PREFIX}*"))
        assert _opened_page(argument) == page, "the browser gets the launch page, no address"
        if POSIX:
            assert (_mode(page), _mode(state)) == (0o600, 0o700)

        key = launch_key(page)
        status, answer, _ = _post(port, "/api/session", {"key": key})
        assert status == 200 and len(answer["token"]) >= 40
        assert not page.exists(), "a spent key's launch page is deleted"
        assert _post(port, "/api/session", {"key": key})[0] == 401, "a key works once"

        endpoint = state / ENDPOINT_NAME
        if POSIX:
            assert _mode(endpoint) == 0o600
        handoff = json.loads(endpoint.read_text(encoding="utf-8"))["handoff"]
        assert _post(port, "/api/state", {}, {"Authorization": f"Bearer {handoff}"})[0] == 401

        assert serve(config, None, False, print, print) == 0  # another tray click
        assert len(browser) == 2 and browser[1] != argument
        second = _opened_page(browser[1])
        assert second.parent == state and launch_key(second) != key
        if POSIX:
            assert _mode(second) == 0o600
        assert _post(port, "/api/session", {"key": launch_key(second)})[0] == 200
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert not list(state.glob(f"{sessions.LAUNCH_PREFIX}*")), "no launch page is left"


def test_a_one_time_key_is_spent_on_first_use_and_expires_within_a_minute(
        tmp_path: Path) -> None:
    now = [1000.0]
    keys = Sessions(tmp_path / "state", clock=lambda: now[0])
    assert KEY_SECONDS <= 60
    first, second, third = (keys.launch(8000, page) for page in ("/", "/view", "/"))
    key, late = launch_key(first), launch_key(second)
    now[0] += KEY_SECONDS - 0.1
    assert keys.spend(key) is not None
    assert not first.exists(), "a spent key's launch page is deleted"
    assert keys.spend(key) is None, "spent"
    assert keys.spend("") is None and keys.spend("nonsense") is None
    now[0] += 0.2  # just over a minute after they were made
    assert second.exists()
    keys.sweep()
    assert not second.exists() and not third.exists(), "expired keys' pages are deleted"
    assert keys.spend(late) is None, "expired"
    with pytest.raises(ValueError):
        keys.launch(8000, "//evil.example/")
    for page in ("http://evil.example/", "/\\evil.example", "view"):
        with pytest.raises(ValueError):
            keys.launch(8000, page)


def test_a_key_sent_over_http_works_once(viewer_app: ViewerApp) -> None:
    key = launch_key(viewer_app.launch("/view?ply=a_1.ply"))
    status, answer, response = _post(viewer_app.port, "/api/session", {"key": key})
    assert status == 200 and response.getheader("Set-Cookie") is None
    assert _post(viewer_app.port, "/api/session", {"key": key})[0] == 401
    for body in ({}, {"key": 3}, [key], "x"):
        assert _post(viewer_app.port, "/api/session", body)[0] == 400, body
    assert call(viewer_app, "GET", "/api/state",
                headers={"Authorization": f"Bearer {answer['token']}"})[0] == 200


def test_sessions_lapse_unused_and_only_sixteen_live(tmp_path: Path) -> None:
    now = [0.0]
    keys = Sessions(tmp_path, clock=lambda: now[0])
    tokens = [keys.spend(launch_key(keys.launch(8000, "/"))) for _ in range(MAX_SESSIONS)]
    assert all(t is not None and keys.valid(t) for t in tokens)
    assert keys.valid(tokens[0])  # now the most recently used
    newest = keys.spend(launch_key(keys.launch(8000, "/")))
    assert newest is not None and keys.valid(newest)
    assert not keys.valid(str(tokens[1])), "the least recently used went first"
    assert keys.valid(str(tokens[0]))
    now[0] += SESSION_IDLE_SECONDS - 1
    assert keys.valid(newest), "used within the idle time: still live"
    now[0] += SESSION_IDLE_SECONDS + 1
    assert not keys.valid(newest) and not keys.valid(str(tokens[0]))
    assert not keys.valid("")


def test_no_cookie_carries_the_session_and_answers_keep_referrers_home(
        viewer_app: ViewerApp) -> None:
    token = viewer_app.token  # type: ignore[attr-defined]
    for cookie in (f"sharp_watch_viewer={token}", f"session={token}", token):
        assert call(viewer_app, "GET", "/api/state",
                    headers={"Authorization": "", "Cookie": cookie})[0] == 401, cookie
    for path, token_sent in (("/", False), ("/view?ply=a_1.ply", False), ("/open", False),
                             ("/static/view.js", False), ("/api/gallery", False),
                             ("/api/gallery", True), ("/files/photo?ply=a_1.ply", True),
                             ("/files/preview?ply=a_1.ply", True), ("/nowhere", True)):
        status, _, response = call(viewer_app, "GET", path,
                                   headers=None if token_sent else {"Authorization": ""})
        assert response.getheader("Set-Cookie") is None, path
        assert response.getheader("Referrer-Policy") == "no-referrer", path
        assert "default-src 'none'" in response.getheader("Content-Security-Policy"), path
        assert status == (401 if path.startswith("/api") and not token_sent
                          else 404 if path == "/nowhere" else 200), path


def test_the_hand_off_secret_only_asks_for_launch_pages(viewer_app: ViewerApp) -> None:
    port, handoff = viewer_app.port, {"Authorization": f"Bearer {viewer_app.handoff_secret}"}
    status, answer, _ = _post(port, HANDOFF, {"page": "/view?ply=a_1.ply"}, handoff)
    page = Path(answer["launch"])
    assert status == 200 and page.parent == viewer_app.sessions.folder
    if POSIX:
        assert _mode(page) == 0o600
    assert "next=%2Fview%3Fply%3Da_1.ply" in page.read_text(encoding="utf-8")
    for bad in ("//evil.example/", "http://evil.example/", "", 3):
        assert _post(port, HANDOFF, {"page": bad}, handoff)[0] == 400, bad
    own = {"Origin": f"http://127.0.0.1:{port}"}
    assert _post(port, HANDOFF, {"page": "/"}, {**handoff, **own})[0] == 401, "no web page"
    assert _post(port, HANDOFF, {"page": "/"},
                 {"Authorization": f"Bearer {viewer_app.token}"})[0] == 401  # type: ignore[attr-defined]
    for path in ("/api/state", "/api/apply", "/api/open-folder"):
        assert _post(port, path, {}, handoff)[0] == 401, path
    assert viewer_app.opened == []  # type: ignore[attr-defined]


def test_only_requests_with_a_live_session_keep_the_viewer_alive(
        viewer_app: ViewerApp) -> None:
    viewer_app.last_request = 0.0
    nobody = {"Authorization": ""}
    call(viewer_app, "GET", "/api/state", headers=nobody)
    call(viewer_app, "GET", "/api/state", headers={"Authorization": "Bearer guess"})
    call(viewer_app, "GET", "/api/state", headers={"Host": "evil.example"})
    call(viewer_app, "GET", "/view", headers=nobody)
    call(viewer_app, "GET", "/static/common.js", headers=nobody)
    _post(viewer_app.port, "/api/session", {"key": "guess"})
    _post(viewer_app.port, HANDOFF, {"page": "/"}, {"Authorization": "Bearer guess"})
    assert viewer_app.last_request == 0.0, "a request without a session counted as use"
    assert call(viewer_app, "GET", "/api/state")[0] == 200
    assert viewer_app.last_request > 0.0


@pytest.mark.parametrize(("platform", "expected"), [
    ("win32", r"C:\Users\u\AppData\Local\sharp-watch\viewer-open-1.html"),
    ("linux", "file:///home/u/.local/state/sharp-watch/viewer-open-1.html"),
])
def test_the_launch_page_is_opened_by_path_on_windows_and_by_file_address_elsewhere(
        monkeypatch: pytest.MonkeyPatch, platform: str, expected: str) -> None:
    """Windows' `webbrowser` hands its argument to `os.startfile`, which opens a path with
    the program registered for .html files; elsewhere browsers are given a file:// URI."""
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", opened.append)
    page = (PureWindowsPath(expected) if platform == "win32"
            else PurePosixPath(expected.removeprefix("file://")))
    open_in_browser(page, platform)
    assert opened == [expected]

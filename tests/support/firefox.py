"""Firefox for the share page's test: Debian's `firefox-esr`, driven over Marionette.

Playwright drives only its own patched Firefox, and `firefox-esr --headless --screenshot`
shoots at the load event, before a page's modules have drawn anything; headless Firefox
also has no WebGL here. So Firefox runs windowed under `xvfb-run` (Mesa's software GL),
with a fresh profile, and this speaks Marionette, its built-in remote protocol (JSON
messages over TCP, each `<length>:<json>`): open a page, run a script, take a screenshot.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

FIREFOX = "firefox-esr"
START_SECONDS = 60.0


def firefox_missing() -> str | None:
    """Why Firefox cannot run here (for a skip), or None."""
    for program in (FIREFOX, "xvfb-run"):
        if shutil.which(program) is None:
            return f"{program} is not installed (apt-get install firefox-esr xvfb)"
    return None


class Marionette:
    """One Marionette connection: `call(command, params)` returns the command's value."""

    def __init__(self, port: int) -> None:
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                self._socket = socket.create_connection(("127.0.0.1", port), timeout=120)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self._buffer = b""
        self._id = 0
        self._receive()  # the greeting: application type and protocol level
        self.call("WebDriver:NewSession", {"capabilities": {}})

    def _receive(self) -> Any:
        while b":" not in self._buffer:
            self._buffer += self._read()
        length, _, rest = self._buffer.partition(b":")
        while len(rest) < int(length):
            rest += self._read()
        self._buffer = rest[int(length):]
        return json.loads(rest[:int(length)])

    def _read(self) -> bytes:
        data = self._socket.recv(1 << 20)
        if not data:
            raise ConnectionError("Firefox closed the Marionette connection")
        return data

    def call(self, command: str, params: dict[str, Any] | None = None) -> Any:
        self._id += 1
        message = json.dumps([0, self._id, command, params or {}]).encode()
        self._socket.sendall(str(len(message)).encode() + b":" + message)
        _, _, error, result = self._receive()
        if error:
            raise RuntimeError(f"{command}: {error}")
        return result

    def script(self, body: str) -> Any:
        """Run `body` (a function body that returns a value) in the page."""
        return self.call("WebDriver:ExecuteScript", {"script": body, "args": []})["value"]

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("WebDriver:TakeScreenshot", {"full": False})["value"])

    def close(self) -> None:
        self._socket.close()


def _free_port() -> int:
    with closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def firefox() -> Iterator[Marionette]:
    """Firefox ESR in a virtual display, with WebGL in software, and a Marionette to it."""
    port = _free_port()
    with tempfile.TemporaryDirectory() as profile:
        Path(profile, "user.js").write_text(f'user_pref("marionette.port", {port});\n',
                                            encoding="utf-8")
        process = subprocess.Popen(
            ["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24", FIREFOX, "--marionette",
             "-no-remote", "-profile", profile],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "LIBGL_ALWAYS_SOFTWARE": "1"})
        try:
            client = Marionette(port)
            try:
                yield client
            finally:
                client.close()
        finally:
            os.killpg(process.pid, 15)  # xvfb-run, its X server and Firefox: one group
            process.wait(timeout=30)

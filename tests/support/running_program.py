"""A sharp-watch program running in another process (`sharp-watch run` started by a test):
its status over the control channel, requests with hand-made headers, and waiting on it
without waiting forever for a program that has already exited."""

from __future__ import annotations

import http.client
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from daemon import control

T = TypeVar("T")


def status_of(state_dir: Path, timeout: float = 5.0) -> dict[str, Any]:
    """The program's `/status`, or `{}` while it does not answer (starting, stopped)."""
    try:
        return control.request(state_dir, "GET", "/status", timeout=timeout)
    except (control.NotRunning, control.ControlError):
        return {}


def raw(port: int, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict]:
    """A request with exactly the given headers (http.client adds Host unless told not to)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.putrequest(method, path, skip_host=True)
    for key, value in headers.items():
        connection.putheader(key, value)
    connection.endheaders()
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()
    return response.status, body


def wait_or_fail(predicate: Callable[[], T], seconds: float, what: str,
                 process: subprocess.Popen | None = None) -> T:
    """Poll `predicate` until it is truthy and return its value; fail the test, naming
    `what`, when `seconds` pass or `process` exits first (with its output, if captured)."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            output = process.stdout.read() if process.stdout is not None else ""
            pytest.fail(f"sharp-watch exited ({process.returncode}) while waiting for {what}:"
                        f"\n{output!s}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)

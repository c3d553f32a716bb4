"""The control channel: loopback HTTP that only the same user can drive.

Server: `ThreadingHTTPServer` on 127.0.0.1 with an OS-chosen port. Every request must carry
`Authorization: Bearer <secret>` (the secret sits in an owner-only file), a Host header
naming this very port on 127.0.0.1/localhost (defeats DNS rebinding) and no Origin header
(browsers always send one on cross-site requests, so a web page cannot drive it).
Client: the `status` / `pause` / `resume` / `stop` commands.
"""

from __future__ import annotations

import hmac
import http.client
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from loguru import logger

from .instance import Endpoint, read_endpoint

Actions = dict[str, Callable[[], dict[str, Any]]]
"""`GET status` and `POST pause|resume|stop`: each returns the JSON body to answer with."""


class ControlServer:
    """Serves `actions` on 127.0.0.1 until `close()`; runs on its own daemon thread."""

    def __init__(self, secret: str, actions: Actions) -> None:
        self.secret = secret
        self.actions = actions
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.control = self  # type: ignore[attr-defined]
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.1,),
                                        name="control", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def refusal(self, headers: Any) -> tuple[int, str] | None:
        """Why a request must be refused, or None when it may go ahead."""
        if headers.get("Origin") is not None:
            return 403, "requests from web pages are refused"
        if headers.get("Host") not in (f"127.0.0.1:{self.port}", f"localhost:{self.port}"):
            return 403, "wrong Host header"
        given = headers.get("Authorization") or ""
        expected = f"Bearer {self.secret}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return 401, "missing or wrong secret"
        return None


class _Handler(BaseHTTPRequestHandler):
    server_version = "sharp-watch"

    def do_GET(self) -> None:
        self._dispatch({"/status": "status"})

    def do_POST(self) -> None:
        self._dispatch({"/pause": "pause", "/resume": "resume", "/stop": "stop"})

    def _dispatch(self, routes: dict[str, str]) -> None:
        control: ControlServer = self.server.control  # type: ignore[attr-defined]
        refused = control.refusal(self.headers)
        if refused is not None:
            self._reply(refused[0], {"error": refused[1]})
            return
        action = routes.get(self.path)
        if action is None:
            self._reply(404, {"error": f"no such endpoint: {self.command} {self.path}"})
            return
        try:
            body = control.actions[action]()
        except Exception as exc:
            logger.opt(exception=True).error(f"control {action} failed: {exc}")
            self._reply(500, {"error": str(exc)})
            return
        self._reply(200, body)

    def _reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("control: " + format % args)


class NotRunning(RuntimeError):
    """No daemon answers for this user."""


class ControlError(RuntimeError):
    """The daemon answered, but refused or failed the request."""


def request(state_dir: Path, method: str, path: str, timeout: float = 10.0) -> dict[str, Any]:
    """Send one authenticated request to this user's running daemon."""
    endpoint = read_endpoint(state_dir)
    if endpoint is None:
        raise NotRunning(f"sharp-watch is not running (no control files in {state_dir}); "
                         "start it with `sharp-watch run`")
    return send(endpoint, method, path, timeout)


def send(endpoint: Endpoint, method: str, path: str, timeout: float = 10.0) -> dict[str, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", endpoint.port, timeout=timeout)
    try:
        connection.request(method, path, headers={"Authorization": f"Bearer {endpoint.secret}"})
        response = connection.getresponse()
        raw = response.read()
    except ConnectionRefusedError:
        raise NotRunning(f"sharp-watch is not running (pid {endpoint.pid} left control files "
                         "behind but does not answer); start it with `sharp-watch run`") from None
    except OSError as exc:
        raise ControlError(f"cannot reach sharp-watch on port {endpoint.port}: {exc}") from exc
    finally:
        connection.close()
    try:
        body = json.loads(raw)
    except ValueError:
        body = {"error": raw.decode(errors="replace")}
    if response.status != 200:
        raise ControlError(f"sharp-watch refused {method} {path}: HTTP {response.status} "
                           f"{body.get('error', '')}")
    return body

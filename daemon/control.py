"""The control channel: loopback HTTP that only the same user can drive.

Server: 127.0.0.1 with an OS-chosen port. Every request must carry
`Authorization: Bearer <secret>` (the secret sits in an owner-only file), a Host header
naming this very port on 127.0.0.1/localhost (defeats DNS rebinding) and no Origin header
(browsers always send one on cross-site requests, so a web page cannot drive it).

Any local user can connect, so the server is the shared front door
(`daemon.loopback`): one selector thread reads request heads with a deadline, a cap on
waiting connections and a size cap, and answers every refusal itself; only requests with
the secret reach the few worker threads. Idle or slow clients therefore cannot use up
threads or lock out `sharp-watch status`.
Client: the `status` / `pause` / `resume` / `stop` commands, and the viewer (status,
rerun). It lives in the daemon, whose status it serves, so the viewer can be a client
without importing the service.
"""

from __future__ import annotations

import http.client
import inspect
import io
import json
import socket
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from loguru import logger

from . import access
from .instance import Endpoint, read_endpoint
from .loopback import Limits, LoopbackServer, Request, error_response

Actions = dict[str, Callable[..., dict[str, Any]]]
"""`GET status` and `POST pause|resume|stop|rerun`: each takes the query's parameters as
keywords (`rerun?photo=...`) and returns the JSON body to answer with; a ValueError is
the client's mistake (400)."""

LIMITS = Limits(request_seconds=5.0, max_pending=256, max_head_bytes=64 * 1024, workers=4)
"""A client has 5 s to send its request; 256 may wait at once; no bodies, no keep-alive."""


class ControlServer:
    """Serves `actions` on 127.0.0.1 until `close()`; reads requests on its own thread."""

    def __init__(self, secret: str, actions: Actions) -> None:
        self.secret = secret
        self.actions = actions
        self._server = LoopbackServer("control", LIMITS, self._early, self._answer)
        self.server_address: tuple[str, int] = self._server.socket.getsockname()
        self.port: int = self._server.port

    def start(self) -> None:
        self._server.start()

    def close(self) -> None:
        self._server.close()

    def _early(self, request: Request) -> bytes | None:
        """Every refusal is answered by the selector thread (`access.refusal`: no Origin at
        all, Host naming this port, the Bearer secret)."""
        refused = access.refusal(request.headers, self.port, self.secret)
        return None if refused is None else error_response(*refused)

    def _answer(self, connection: socket.socket, request: Request) -> bool:
        _Handler(connection, request.raw, self)
        return False


class _Handler(BaseHTTPRequestHandler):
    """One request whose head the selector thread has already read; answers in one write."""

    server_version = "sharp-watch"

    def __init__(self, connection: socket.socket, head: bytes, server: Any) -> None:
        self._head = head
        self.control: ControlServer = server
        super().__init__(connection, ("127.0.0.1", 0), server)

    def setup(self) -> None:
        self.connection = self.request
        self.rfile = io.BytesIO(self._head)
        self._reply_bytes = io.BytesIO()
        self.wfile = self._reply_bytes

    def finish(self) -> None:
        self.connection.sendall(self._reply_bytes.getvalue())

    def do_GET(self) -> None:
        self._dispatch({"/status": "status"})

    def do_POST(self) -> None:
        self._dispatch({"/pause": "pause", "/resume": "resume", "/stop": "stop",
                        "/rerun": "rerun"})

    def _dispatch(self, routes: dict[str, str]) -> None:
        path, _, query = self.path.partition("?")
        action = routes.get(path)
        if action is None or action not in self.control.actions:
            self._reply(404, {"error": f"no such endpoint: {self.command} {path}"})
            return
        handler = self.control.actions[action]
        params = dict(urllib.parse.parse_qsl(query))
        try:
            inspect.signature(handler).bind(**params)
        except TypeError:
            wanted = ", ".join(inspect.signature(handler).parameters) or "no parameters"
            self._reply(400, {"error": f"{path} takes {wanted}; got "
                                       f"{', '.join(sorted(params)) or 'none'}"})
            return
        try:
            body = handler(**params)
        except ValueError as exc:
            self._reply(400, {"error": str(exc)})
            return
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
        self.send_header("Connection", "close")
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

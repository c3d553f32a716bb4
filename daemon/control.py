"""The control channel: loopback HTTP that only the same user can drive.

Server: 127.0.0.1 with an OS-chosen port. Every request must carry
`Authorization: Bearer <secret>` (the secret sits in an owner-only file), a Host header
naming this very port on 127.0.0.1/localhost (defeats DNS rebinding) and no Origin header
(browsers always send one on cross-site requests, so a web page cannot drive it).

Any local user can connect, so a connection costs no thread until its whole request head
has arrived: one selector thread reads heads, a client gets `REQUEST_SECONDS` to send one
and at most `MAX_PENDING` wait at once (a new one pushes out the oldest), and a few worker
threads answer. Idle or slow clients therefore cannot use up threads or lock out
`sharp-watch status`.
Client: the `status` / `pause` / `resume` / `stop` commands, and the viewer (status,
rerun). It lives in the daemon, whose status it serves, so the viewer can be a client
without importing the service.
"""

from __future__ import annotations

import contextlib
import http.client
import inspect
import io
import json
import selectors
import socket
import socketserver
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from loguru import logger

from . import access
from .instance import Endpoint, read_endpoint

Actions = dict[str, Callable[..., dict[str, Any]]]
"""`GET status` and `POST pause|resume|stop|rerun`: each takes the query's parameters as
keywords (`rerun?photo=...`) and returns the JSON body to answer with; a ValueError is
the client's mistake (400)."""

REQUEST_SECONDS = 5.0
"""How long a client may take from connecting to the end of its request head."""
MAX_PENDING = 256
"""Connections waiting for their request at once (Windows' select() handles 512 sockets)."""
MAX_HEAD_BYTES = 64 * 1024
WORKERS = 4


class _Pending:
    """A connection whose request head is still arriving."""

    def __init__(self) -> None:
        self.deadline = time.monotonic() + REQUEST_SECONDS
        self.data = bytearray()


class ControlServer(socketserver.TCPServer):
    """Serves `actions` on 127.0.0.1 until `close()`; reads requests on its own thread."""

    request_queue_size = 128

    def __init__(self, secret: str, actions: Actions) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.secret = secret
        self.actions = actions
        self.port: int = self.server_address[1]
        self.socket.setblocking(False)
        self._pending: dict[socket.socket, _Pending] = {}
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.socket, selectors.EVENT_READ)
        self._workers = ThreadPoolExecutor(WORKERS, thread_name_prefix="control")
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="control", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join()
        for connection in list(self._pending):
            self._drop(connection)
        self._selector.close()
        self._workers.shutdown(wait=True)
        self.server_close()

    def refusal(self, headers: Any) -> tuple[int, str] | None:
        """Why a request must be refused, or None when it may go ahead (`access.refusal`:
        no Origin at all, Host naming this port, the Bearer secret)."""
        return access.refusal(headers, self.port, self.secret)

    def _loop(self) -> None:
        while not self._closing.is_set():
            for key, _ in self._selector.select(timeout=0.1):
                if key.fileobj is self.socket:
                    self._accept()
                elif isinstance(key.fileobj, socket.socket):
                    self._read(key.fileobj)
            now = time.monotonic()
            for connection, pending in list(self._pending.items()):
                if pending.deadline < now:
                    self._drop(connection)

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.debug(f"control: accept failed: {exc}")
                return
            if len(self._pending) >= MAX_PENDING:
                self._drop(next(iter(self._pending)))  # the oldest waiting connection
            connection.setblocking(False)
            self._pending[connection] = _Pending()
            self._selector.register(connection, selectors.EVENT_READ)

    def _read(self, connection: socket.socket) -> None:
        try:
            chunk = connection.recv(8192)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        pending = self._pending[connection]
        pending.data += chunk
        if not chunk or len(pending.data) > MAX_HEAD_BYTES:
            self._drop(connection)
        elif b"\r\n\r\n" in pending.data or b"\n\n" in pending.data:
            self._selector.unregister(connection)
            del self._pending[connection]
            self._workers.submit(self._answer, connection, bytes(pending.data))

    def _drop(self, connection: socket.socket) -> None:
        self._pending.pop(connection, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(connection)
        connection.close()

    def _answer(self, connection: socket.socket, head: bytes) -> None:
        try:
            connection.setblocking(True)
            connection.settimeout(REQUEST_SECONDS)
            _Handler(connection, head, self)
        except OSError as exc:
            logger.debug(f"control: client went away: {exc}")
        finally:
            connection.close()


class _Handler(BaseHTTPRequestHandler):
    """One request whose head the selector thread has already read; answers in one write."""

    server_version = "sharp-watch"

    def __init__(self, connection: socket.socket, head: bytes, server: ControlServer) -> None:
        self._head = head
        self.control = server
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
        refused = self.control.refusal(self.headers)
        if refused is not None:
            self._reply(refused[0], {"error": refused[1]})
            return
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

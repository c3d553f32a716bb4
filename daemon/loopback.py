"""A loopback HTTP server's front door: what the control channel and the viewer share.

Any local user can connect to 127.0.0.1, so a connection costs no thread, and little
memory, until its whole request has arrived and passed the server's own checks:

- One selector thread accepts connections and reads every request, head and body, without
  blocking. A client has `Limits.request_seconds` from connecting to the end of its
  request; at most `max_pending` connections wait at once (a new one pushes out the
  oldest); a head over `max_head_bytes` is answered 431, a body over `max_body_bytes` 413
  (or over what the server's `body_limit` hook allows that request, judged from its head
  alone, so an upload is read only for a client the server trusts),
  anything that is not HTTP/1.x 400, a chunked body 411.
- The server's `early` hook sees each whole request first, on that thread, and answers
  what needs no work there: refusals (no secret, a foreign Host or Origin) and fixed
  pages. Those answers are sent without blocking (a client that does not read them is
  dropped at its deadline) and the connection is closed after them.
- Only what `early` passes on reaches the few worker threads; at most `max_queued`
  requests wait for one (503 beyond). A connection a worker keeps alive comes back to the
  selector, at most `max_kept` of them, each closed after `idle_seconds` unused.
- Running out of file descriptors (EMFILE) closes the oldest waiting connection and
  accepts again; with none left to close, accepting pauses with a growing back-off, never
  a busy loop on a listening socket that stays readable.

It lives in the daemon, below the viewer and the service, so both can use it.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import io
import json
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import Message
from http import HTTPStatus

from loguru import logger

TICK_SECONDS = 0.1
"""How often deadlines are checked."""
LINGER_SECONDS = 2.0
"""After an early answer: how long the client's further bytes are read and dropped (closing
a socket with unread bytes resets it, which can discard the answer before it is read)."""
ACCEPTS_PER_ROUND = 64
"""So a flood of connections cannot keep the thread from reading the ones it has."""
MAX_BACKOFF_SECONDS = 1.0
WARN_EVERY_SECONDS = 60.0
_HARMLESS_ACCEPT = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EAGAIN}
"""accept() errors about one client only (it went away, a firewall refused it)."""
_READ, _WRITE, _LINGER = range(3)


@dataclass(frozen=True)
class Limits:
    """What one client may cost before and while it is answered."""

    request_seconds: float = 5.0
    """From connecting (or from a kept-alive connection's first new byte) to the end of the
    request."""
    max_pending: int = 256
    """Connections read or answered by the selector at once (Windows' select() takes 512)."""
    max_head_bytes: int = 64 * 1024
    max_body_bytes: int = 0
    workers: int = 4
    max_queued: int = 64
    """Requests waiting for (or in) a worker at once; more are answered 503."""
    max_kept: int = 0
    """Kept-alive connections (only those a worker chose to keep) at once."""
    idle_seconds: float = 30.0
    send_seconds: float = 30.0
    """How long a worker's send, or a whole early answer, may stall on a client not reading."""


@dataclass(frozen=True)
class Request:
    """A whole request as the selector read it."""

    method: str
    target: str
    headers: Message
    head: bytes
    body: bytes

    @property
    def raw(self) -> bytes:
        """Head and body, as received."""
        return self.head + self.body


Early = Callable[[Request], bytes | None]
"""A whole response to send from the selector thread (the connection closes after it), or
None to have a worker answer."""
BodyLimit = Callable[[str, str, Message], int]
"""The most body bytes a request may carry, from its method, target and headers."""
Answer = Callable[[socket.socket, Request], bool]
"""Answer on a worker thread (a blocking socket with a send timeout); True keeps the
connection open for the client's next request."""


def response(code: int, body: bytes, kind: str,
             headers: Mapping[str, str] | None = None, close: bool = True) -> bytes:
    """A whole HTTP/1.1 response, ready to send."""
    lines = [f"HTTP/1.1 {code} {HTTPStatus(code).phrase}", f"Content-Type: {kind}",
             f"Content-Length: {len(body)}", "Cache-Control: no-store",
             "X-Content-Type-Options: nosniff",
             *(f"{key}: {value}" for key, value in (headers or {}).items())]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def error_response(code: int, reason: str, headers: Mapping[str, str] | None = None) -> bytes:
    """A JSON `{"error": reason}` response that closes the connection."""
    return response(code, json.dumps({"error": reason}).encode(), "application/json", headers)


class _Connection:
    """A client the selector thread looks after: reading its request, sending an early
    answer, or lingering before the close."""

    __slots__ = ("data", "deadline", "kept", "out", "sock", "state")

    def __init__(self, sock: socket.socket, deadline: float, data: bytes = b"",
                 kept: bool = False) -> None:
        self.sock = sock
        self.deadline = deadline
        self.data = bytearray(data)
        self.out = memoryview(b"")
        self.state = _READ
        self.kept = kept


class LoopbackServer:
    """Listens on 127.0.0.1 (an OS-chosen port) until `close()`; see the module docstring."""

    def __init__(self, name: str, limits: Limits, early: Early, answer: Answer,
                 headers: Mapping[str, str] | None = None,
                 body_limit: BodyLimit | None = None) -> None:
        self.name = name
        self.limits = limits
        self._body_limit = body_limit or (lambda *_: limits.max_body_bytes)
        self._early = early
        self._answer = answer
        self._headers = dict(headers or {})
        """Sent with every answer the front door writes itself (400, 413, 431, 503)."""
        self.socket = _listen()
        self.port: int = self.socket.getsockname()[1]
        self._connections: dict[socket.socket, _Connection] = {}
        """Oldest first (dicts keep insertion order)."""
        self._kept = 0
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.socket, selectors.EVENT_READ)
        self._wake_in, self._wake_out = socket.socketpair()
        for end in (self._wake_in, self._wake_out):
            end.setblocking(False)
        self._selector.register(self._wake_in, selectors.EVENT_READ)
        self._lock = threading.Lock()
        self._queued = 0
        self._busy: set[socket.socket] = set()
        self._returned: list[tuple[socket.socket, bytes]] = []
        self._paused_until: float | None = None
        self._backoff = 0.0
        self._warned_at = -WARN_EVERY_SECONDS
        self._workers = ThreadPoolExecutor(limits.workers, thread_name_prefix=name)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    # life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop accepting, drop every connection, and wait for the workers (a worker stuck
        sending to a client that does not read is cut off)."""
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join()
        for connection in list(self._connections.values()):
            self._drop(connection)
        with self._lock:
            busy = list(self._busy)
        for sock in busy:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._workers.shutdown(wait=True)
        with self._lock:
            returned, self._returned = self._returned, []
        for sock, _ in returned:
            sock.close()
        self._selector.close()
        for sock in (self.socket, self._wake_in, self._wake_out):
            sock.close()

    def waiting(self) -> int:
        """Connections the selector thread holds now (for tests and the log)."""
        return len(self._connections)

    # the selector thread ----------------------------------------------------------------

    def _loop(self) -> None:
        while not self._closing.is_set():
            for key, _ in self._selector.select(timeout=TICK_SECONDS):
                if key.fileobj is self.socket:
                    self._accept()
                elif key.fileobj is self._wake_in:
                    self._take_back()
                elif isinstance(key.fileobj, socket.socket):
                    connection = self._connections.get(key.fileobj)
                    if connection is not None:  # else dropped earlier in this round
                        self._step(connection)
            now = time.monotonic()
            for connection in [c for c in self._connections.values() if c.deadline < now]:
                self._drop(connection)
            if self._paused_until is not None and now >= self._paused_until:
                self._paused_until = None
                self._selector.register(self.socket, selectors.EVENT_READ)

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_ROUND):
            try:
                sock, _ = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _HARMLESS_ACCEPT:
                    continue
                # Out of descriptors or buffers: the oldest waiting connection makes room;
                # with none to close, stop accepting for a while (the listening socket
                # stays readable, so trying again at once would be a busy loop).
                self._warn(exc)
                if self._push_out():
                    continue
                self._pause()
                return
            self._backoff = 0.0
            if len(self._connections) - self._kept >= self.limits.max_pending:
                self._push_out()
            sock.setblocking(False)
            connection = _Connection(sock, time.monotonic() + self.limits.request_seconds)
            self._connections[sock] = connection
            self._selector.register(sock, selectors.EVENT_READ)

    def _warn(self, exc: OSError) -> None:
        """One log line a minute at most: a flood must not flood the log too."""
        now = time.monotonic()
        if now - self._warned_at > WARN_EVERY_SECONDS:
            self._warned_at = now
            logger.warning(f"{self.name}: cannot accept connections ({exc.strerror or exc}; "
                           f"{len(self._connections)} open); closing the oldest waiting ones")

    def _pause(self) -> None:
        self._backoff = min(max(2 * self._backoff, TICK_SECONDS / 2), MAX_BACKOFF_SECONDS)
        self._paused_until = time.monotonic() + self._backoff
        self._selector.unregister(self.socket)

    def _push_out(self) -> bool:
        """Close the oldest connection no worker has kept alive; False when there is none."""
        for connection in self._connections.values():
            if not connection.kept:
                self._drop(connection)
                return True
        return False

    def _step(self, connection: _Connection) -> None:
        if connection.state == _WRITE:
            self._send(connection)
            return
        try:
            chunk = connection.sock.recv(64 * 1024)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._drop(connection)
        elif connection.state == _READ:
            if connection.kept and not connection.data:  # a new request on a kept connection
                connection.deadline = time.monotonic() + self.limits.request_seconds
            connection.data += chunk
            self._parse(connection)

    def _parse(self, connection: _Connection) -> None:
        """Pass a whole request on (or answer a bad one); wait while it is incomplete."""
        data, limits = connection.data, self.limits
        end = _head_end(data)
        if end < 0 or end > limits.max_head_bytes:
            if len(data) > limits.max_head_bytes:
                self._reply(connection, 431, f"the request head is over "
                                             f"{limits.max_head_bytes} bytes")
            return
        try:
            method, target, headers = _parse_head(bytes(data[:end]))
            length = _body_length(headers)
        except _BadRequest as exc:
            self._reply(connection, exc.code, str(exc))
            return
        most = self._body_limit(method, target, headers)
        if length > most:
            self._reply(connection, 413, f"the request body is over {most} bytes")
            return
        if len(data) < end + length:
            return
        request = Request(method, target, headers, bytes(data[:end]),
                          bytes(data[end:end + length]))
        try:
            early = self._early(request)
        except Exception as exc:  # a bug: answered, logged, and the thread goes on
            logger.opt(exception=True).warning(f"{self.name}: checking a request failed")
            early = error_response(500, f"internal error ({type(exc).__name__})", self._headers)
        if early is not None:
            self._write(connection, early)
            return
        with self._lock:
            full = self._queued >= limits.max_queued
            if not full:
                self._queued += 1
        if full:
            self._reply(connection, 503, "too many requests at once; try again")
            return
        self._forget(connection)
        self._workers.submit(self._serve, connection.sock, request, bytes(data[end + length:]))

    def _reply(self, connection: _Connection, code: int, reason: str) -> None:
        self._write(connection, error_response(code, reason, self._headers))

    def _write(self, connection: _Connection, data: bytes) -> None:
        connection.state = _WRITE
        connection.out = memoryview(data)
        connection.deadline = time.monotonic() + self.limits.send_seconds
        self._selector.modify(connection.sock, selectors.EVENT_WRITE)
        self._send(connection)

    def _send(self, connection: _Connection) -> None:
        try:
            sent = connection.sock.send(connection.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(connection)
            return
        connection.out = connection.out[sent:]
        if not connection.out:  # all sent: close our side, read and drop what still comes
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_WR)
            connection.state = _LINGER
            connection.data = bytearray()
            connection.deadline = time.monotonic() + LINGER_SECONDS
            self._selector.modify(connection.sock, selectors.EVENT_READ)

    def _forget(self, connection: _Connection) -> None:
        """Stop looking after `connection`, leaving it open."""
        del self._connections[connection.sock]
        self._kept -= connection.kept
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(connection.sock)

    def _drop(self, connection: _Connection) -> None:
        if self._connections.get(connection.sock) is connection:
            self._forget(connection)
        connection.sock.close()

    def _take_back(self) -> None:
        """Kept-alive connections the workers have finished with, back to waiting."""
        with contextlib.suppress(OSError):
            while self._wake_in.recv(4096):
                pass
        with self._lock:
            returned, self._returned = self._returned, []
        for sock, rest in returned:
            if self._kept >= self.limits.max_kept:
                sock.close()
                continue
            sock.setblocking(False)
            connection = _Connection(sock, time.monotonic() + self.limits.idle_seconds, rest,
                                     kept=True)
            self._connections[sock] = connection
            self._kept += 1
            self._selector.register(sock, selectors.EVENT_READ)
            if rest:
                self._parse(connection)

    # the workers ------------------------------------------------------------------------

    def _serve(self, sock: socket.socket, request: Request, rest: bytes) -> None:
        keep = False
        with self._lock:
            self._busy.add(sock)
        try:
            sock.setblocking(True)
            sock.settimeout(self.limits.send_seconds)
            keep = self._answer(sock, request)
        except OSError as exc:
            logger.debug(f"{self.name}: client went away: {exc}")
        except Exception:
            logger.opt(exception=True).warning(f"{self.name}: answering a request failed")
        finally:
            with self._lock:
                self._queued -= 1
                self._busy.discard(sock)
                keep = keep and not self._closing.is_set()
                if keep:
                    self._returned.append((sock, rest))
            if keep:
                with contextlib.suppress(OSError):
                    self._wake_out.send(b"\0")
            else:
                sock.close()


def _listen() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if sys.platform == "win32":  # no other program, of any user, can bind this port over us
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _head_end(data: bytearray) -> int:
    """Where the request head ends (after its blank line), or -1 while it has not."""
    ends = [i + len(mark) for mark in (b"\r\n\r\n", b"\n\n") if (i := data.find(mark)) >= 0]
    return min(ends, default=-1)


class _BadRequest(ValueError):
    """A request the front door answers itself with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def _parse_head(head: bytes) -> tuple[str, str, Message]:
    """(method, target, headers); raises _BadRequest for anything that is not HTTP/1.x."""
    line, _, rest = head.partition(b"\n")
    words = line.rstrip(b"\r").decode("latin-1").split()
    if (len(words) != 3 or not words[0].isalpha() or not words[0].isascii()
            or words[2] not in ("HTTP/1.0", "HTTP/1.1")):
        raise _BadRequest(400, "not an HTTP/1.x request line")
    try:
        headers = http.client.parse_headers(io.BytesIO(rest))
    except http.client.HTTPException as exc:
        raise _BadRequest(431, f"too many or too long headers ({exc})") from None
    return words[0], words[1], headers


def _body_length(headers: Message) -> int:
    """The declared body length (0 without one); raises _BadRequest for a bad or chunked one."""
    if headers.get("Transfer-Encoding") is not None:
        raise _BadRequest(411, "chunked bodies are not accepted; send a Content-Length")
    values = {v.strip() for v in headers.get_all("Content-Length") or []}
    if not values:
        return 0
    value = values.pop()
    if values or not (value.isascii() and value.isdigit() and len(value) <= 15):
        raise _BadRequest(400, "bad Content-Length")
    return int(value)

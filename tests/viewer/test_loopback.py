"""The loopback front door (`daemon.loopback`) that the control channel and the viewer share,
against another local user who holds connections open, sends endless heads, or uses up the
process's file descriptors: nothing costs a thread before a request is whole, memory per
connection is capped, and the owner's request is still answered."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from daemon import loopback
from daemon.loopback import Limits, LoopbackServer, Request, response
from tests.conftest import wait_for
from tests.support.viewer_requests import call, raw_status, send_raw, viewer_session
from viewer.server import LIMITS, ViewerApp

ROOT = Path(__file__).resolve().parents[2]


def _closed_by_server(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.mark.timeout(120)
def test_hundreds_of_slow_clients_hold_no_thread_and_the_owner_is_answered(
        viewer_app: ViewerApp) -> None:
    """300 connections that send half a head, one byte or nothing: no thread each (the old
    server started one per connection), the owner's request is answered, and every slow
    one is closed once its time to send a request is up."""
    threads = threading.active_count()
    slow: list[socket.socket] = []
    try:
        for n in range(300):
            sock = socket.create_connection(("127.0.0.1", viewer_app.port), timeout=10)
            if n % 3 == 0:
                sock.sendall(b"GET /api/gallery HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            elif n % 3 == 1:
                sock.sendall(b"G")
            slow.append(sock)
        assert threading.active_count() <= threads, "a thread was started for a slow client"
        assert call(viewer_app, "GET", "/api/state")[0] == 200
        assert call(viewer_app, "GET", "/api/gallery")[0] == 200
        assert all(_closed_by_server(sock, LIMITS.request_seconds + 15) for sock in slow)
    finally:
        for sock in slow:
            sock.close()


@pytest.mark.timeout(120)
def test_endless_request_heads_are_cut_off_at_the_cap(viewer_app: ViewerApp) -> None:
    """Unfinished heads of 1 MB each (the old server read up to 6.5 MB of header lines per
    connection, and held them): each is answered 431 (or cut off) at 16 KiB, and what the
    viewer holds for 40 of them at once stays under a few MB."""
    line = b"X-Filler: " + b"a" * 60_000 + b"\r\n"
    held: list[socket.socket] = []
    tracemalloc.start()
    try:
        for _ in range(40):
            sock = socket.create_connection(("127.0.0.1", viewer_app.port), timeout=10)
            held.append(sock)
            status = send_raw(sock, b"GET /api/state HTTP/1.1\r\nHost: x\r\n" + line * 17)
            assert status in (431, None), status
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        for sock in held:
            sock.close()
    assert peak < 8 * 2**20, f"{peak / 2**20:.0f} MiB held for unfinished heads"
    assert call(viewer_app, "GET", "/api/state")[0] == 200


def test_the_front_door_answers_what_it_will_not_pass_on() -> None:
    """Bad, oversized and chunked requests get their 4xx from the selector thread; when the
    workers are busy and `max_queued` requests wait, the next is answered 503; a kept-alive
    connection carries the next request."""
    release = threading.Event()
    started: list[str] = []

    def answer(sock: socket.socket, request: Request) -> bool:
        started.append(request.target)
        if request.target == "/block":
            release.wait(20)
        sock.sendall(response(200, request.body or b"ok", "text/plain", close=False))
        return True

    limits = Limits(workers=1, max_queued=2, max_kept=4, max_head_bytes=1024,
                    max_body_bytes=10)
    server = LoopbackServer("test", limits, lambda request: None, answer)
    server.start()
    port = server.port
    try:
        for data, code in [
            (b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n", 413),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
            (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
            (b"HELLO\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431),
            (b"GET / HTTP/1.1\r\nX: " + b"a" * 2000, 431),
        ]:
            assert raw_status(port, data) == code, data
        assert raw_status(port, b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello") == 200

        first = socket.create_connection(("127.0.0.1", port), timeout=10)
        second = socket.create_connection(("127.0.0.1", port), timeout=10)
        for sock in (first, second):
            sock.sendall(b"GET /block HTTP/1.1\r\n\r\n")
        assert wait_for(lambda: started[-1:] == ["/block"] and server.waiting() == 0, 10)
        assert raw_status(port, b"GET /more HTTP/1.1\r\n\r\n") == 503
        release.set()
        assert send_raw(first, b"") == 200 and send_raw(second, b"") == 200
        assert send_raw(first, b"GET /again HTTP/1.1\r\n\r\n") == 200, "kept alive"
        assert started[-1] == "/again"
        first.close()
        second.close()
    finally:
        release.set()
        server.close()


SCRIPT = r"""
import json, os, resource, socket, sys, time
from pathlib import Path
from pipeline import DepthSettings
from viewer.server import Place, ViewerApp

accepts = [0]
real_accept = socket.socket.accept
def counting(self):
    accepts[0] += 1
    return real_accept(self)
socket.socket.accept = counting

folder = Path(sys.argv[1])
app = ViewerApp(Place(folder / "in", folder / "out", DepthSettings()), lambda: None, print,
                launch_dir=folder / "state")
app.start()
limit = len(os.listdir("/proc/self/fd")) + 40
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
print(json.dumps({"port": app.port, "launch": str(app.launch())}), flush=True)
sys.stdin.readline()  # the test has flooded the viewer and been answered
before = accepts[0]
time.sleep(2.0)
print(json.dumps({"accepts": accepts[0] - before}), flush=True)
sys.stdin.readline()
app.close()
"""


@pytest.mark.timeout(120)
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc and RLIMIT_NOFILE")
def test_out_of_file_descriptors_neither_spins_nor_locks_the_owner_out(tmp_path: Path) -> None:
    """A viewer allowed 40 more descriptors than it has open gets up to 200 slow
    connections: it accepts the owner's request all the same (by closing its oldest
    waiting connection), and once the flood stops it calls accept() a handful of times,
    not in a loop (the old server spun at 93-99 % CPU on EMFILE, accepted 7 of the 200
    and never answered the owner)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    viewer = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT,
                              env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert viewer.stdin is not None and viewer.stdout is not None
    slow: list[socket.socket] = []
    try:
        info = json.loads(viewer.stdout.readline())
        owner = SimpleNamespace(port=info["port"], launch=lambda: Path(info["launch"]))
        owner.token = viewer_session(owner)
        for _ in range(200):
            try:
                sock = socket.create_connection(("127.0.0.1", owner.port), timeout=5)
                sock.sendall(b"G")
            except OSError:
                break
            slow.append(sock)
        assert len(slow) >= 100, "the viewer stopped accepting connections"
        assert call(owner, "GET", "/api/state")[0] == 200
        viewer.stdin.write("flooded\n")
        viewer.stdin.flush()
        accepts = json.loads(viewer.stdout.readline())["accepts"]
        assert accepts < 50, f"{accepts} accept() calls in 2 s with nobody connecting"
        viewer.stdin.write("done\n")
        viewer.stdin.flush()
        assert viewer.wait(30) == 0
    finally:
        for sock in slow:
            sock.close()
        if viewer.poll() is None:
            viewer.kill()
            viewer.wait(10)


def test_on_windows_no_other_program_can_bind_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows lets another program (even another user's) bind a port already bound
    unless the first socket says SO_EXCLUSIVEADDRUSE; the front door does."""
    options: list[tuple[Any, ...]] = []

    class Recording(socket.socket):
        def setsockopt(self, *args: Any) -> None:  # type: ignore[override]
            options.append(args)

    windows_socket = SimpleNamespace(socket=Recording, AF_INET=socket.AF_INET,
                                     SOCK_STREAM=socket.SOCK_STREAM,
                                     SOL_SOCKET=socket.SOL_SOCKET, SO_EXCLUSIVEADDRUSE=-5)
    monkeypatch.setattr(loopback, "sys", SimpleNamespace(platform="win32"))
    monkeypatch.setattr(loopback, "socket", windows_socket)
    sock = loopback._listen()
    sock.close()
    assert options == [(socket.SOL_SOCKET, -5, 1)]

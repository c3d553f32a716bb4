"""The control channel: only a holder of the secret, on loopback, without an Origin, gets in."""

from __future__ import annotations

import json
import os
import socket
import stat
import sys

import pytest

from daemon import control
from daemon.instance import (
    INFO_NAME,
    SECRET_NAME,
    AlreadyRunning,
    Endpoint,
    Instance,
    read_endpoint,
)
from tests.support.running_program import raw


@pytest.fixture
def served(tmp_path):
    """A published control server whose actions count their calls."""
    calls: list[str] = []

    def action(name):
        def run():
            calls.append(name)
            return {"state": "paused" if name == "pause" else "idle", "did": name}
        return run

    instance = Instance(tmp_path)
    instance.acquire()
    server = control.ControlServer(instance.secret, {n: action(n) for n in
                                                     ("status", "pause", "resume", "stop")})
    server.start()
    instance.publish(server.port)
    yield tmp_path, server, calls
    server.close()
    instance.release()


def test_client_round_trip(served):
    state_dir, _, calls = served
    assert control.request(state_dir, "GET", "/status") == {"state": "idle", "did": "status"}
    assert control.request(state_dir, "POST", "/pause")["state"] == "paused"
    control.request(state_dir, "POST", "/resume")
    control.request(state_dir, "POST", "/stop")
    assert calls == ["status", "pause", "resume", "stop"]


def test_requests_without_the_secret_or_from_a_web_page_are_refused(served):
    _, server, calls = served
    port, secret = server.port, server.secret
    host = f"127.0.0.1:{port}"
    good = {"Host": host, "Authorization": f"Bearer {secret}"}
    assert raw(port, "GET", "/status", good)[0] == 200
    assert raw(port, "GET", "/status", {"Host": f"localhost:{port}",
                                        "Authorization": f"Bearer {secret}"})[0] == 200
    assert raw(port, "POST", "/pause", {"Host": host})[0] == 401
    assert raw(port, "POST", "/pause", {"Host": host, "Authorization": "Bearer nope"})[0] == 401
    assert raw(port, "POST", "/pause", {"Host": host, "Authorization": secret})[0] == 401
    assert raw(port, "POST", "/pause", {**good, "Origin": "https://evil.example"})[0] == 403
    assert raw(port, "POST", "/pause", {**good, "Origin": "null"})[0] == 403
    assert raw(port, "POST", "/pause", {**good, "Host": f"evil.example:{port}"})[0] == 403
    assert raw(port, "POST", "/pause", {**good, "Host": "127.0.0.1:1"})[0] == 403
    assert raw(port, "POST", "/pause", {"Authorization": f"Bearer {secret}"})[0] == 403
    assert raw(port, "POST", "/pause", {"Host": host})[1] == {"error": "missing or wrong secret"}
    assert raw(port, "GET", "/pause", good)[0] == 404
    assert raw(port, "POST", "/status", good)[0] == 404
    assert calls == ["status", "status"]


def test_server_listens_on_loopback_only(served):
    _, server, _ = served
    assert server.server_address[0] == "127.0.0.1"


def test_published_files_and_private_secret(served):
    state_dir, server, _ = served
    info = json.loads((state_dir / INFO_NAME).read_text())
    assert info == {"pid": os.getpid(), "port": server.port}
    assert read_endpoint(state_dir) == Endpoint(os.getpid(), server.port, server.secret)
    assert len(server.secret) >= 40
    if sys.platform != "win32":
        assert stat.S_IMODE((state_dir / SECRET_NAME).stat().st_mode) == 0o600
        assert stat.S_IMODE((state_dir / INFO_NAME).stat().st_mode) == 0o600


def test_second_instance_is_refused_and_told_who_runs(served):
    state_dir, server, _ = served
    with pytest.raises(AlreadyRunning) as refused:
        Instance(state_dir).acquire()
    assert refused.value.pid == os.getpid()
    assert refused.value.port == server.port
    assert f"pid {os.getpid()}, control port {server.port}" in str(refused.value)


def test_release_removes_files_and_frees_the_lock(tmp_path):
    first = Instance(tmp_path)
    first.acquire()
    first.publish(12345)
    first.release()
    assert not (tmp_path / SECRET_NAME).exists()
    assert read_endpoint(tmp_path) is None
    second = Instance(tmp_path)
    second.acquire()
    assert second.secret != first.secret
    second.release()


def test_not_running_is_reported_clearly(tmp_path):
    with pytest.raises(control.NotRunning, match="not running"):
        control.request(tmp_path, "GET", "/status")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    stale = Instance(tmp_path)
    stale.publish(dead_port)
    with pytest.raises(control.NotRunning, match="does not answer"):
        control.request(tmp_path, "GET", "/status")


def test_failing_action_answers_500_and_keeps_serving(tmp_path):
    def broken():
        raise RuntimeError("daemon exploded")

    server = control.ControlServer("s3cret", {"status": broken, "pause": lambda: {"ok": 1}})
    server.start()
    endpoint = Endpoint(os.getpid(), server.port, "s3cret")
    try:
        with pytest.raises(control.ControlError, match="HTTP 500 daemon exploded"):
            control.send(endpoint, "GET", "/status")
        assert control.send(endpoint, "POST", "/pause") == {"ok": 1}
    finally:
        server.close()

"""Control abuse against the real program.

`sharp-watch run --no-tray` runs in a subprocess started with umask 000, so nothing
protects the secret but the program itself. Then: requests without the secret, with a
wrong or near-miss secret, a foreign Host or any Origin are refused and change nothing;
garbage on the port does not stop it; the secret file is the owner's alone and is
never echoed back.
"""

from __future__ import annotations

import os
import random
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon import control
from daemon.instance import INFO_NAME, SECRET_NAME, Endpoint, read_endpoint
from service import cli
from tests.support.running_program import raw, status_of

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes and umask")


def _config_text(tmp: Path, depth_dir: Path) -> str:
    return (f'[folders]\ninputs = "{tmp / "inputs"}"\noutputs = "{tmp / "outputs"}"\n'
            f'[models]\ndevice = "cpu"\ndepth_model = "{depth_dir}"\n'
            'sharp_factory = "tests.support.sharp_double:build"\n'
            f'[daemon]\nstate_dir = "{tmp / "state"}"\nstable_seconds = 0.2\n'
            f'[service]\nlog_dir = "{tmp / "logs"}"\nnotifications = false\n')


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_depth_dir: Path
         ) -> Iterator[tuple[Endpoint, Path, Path]]:
    """A running `sharp-watch run --no-tray`, its endpoint, state dir and log dir."""
    tmp = tmp_path_factory.mktemp("control")
    config = tmp / "config.toml"
    config.write_text(_config_text(tmp, tiny_depth_dir), encoding="utf-8")
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp / "xdg"), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "run", "--no-tray", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        cwd=Path(__file__).resolve().parents[2], preexec_fn=lambda: os.umask(0))
    state = tmp / "state"
    try:
        deadline = time.monotonic() + 120
        while status_of(state).get("state") not in ("idle", "working"):
            assert process.poll() is None, f"sharp-watch run exited with {process.returncode}"
            assert time.monotonic() < deadline, "sharp-watch run did not come up"
            time.sleep(0.2)
        endpoint = read_endpoint(state)
        assert endpoint is not None and endpoint.pid == process.pid
        yield endpoint, state, tmp / "logs"
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def _good(endpoint: Endpoint) -> dict[str, str]:
    return {"Host": f"127.0.0.1:{endpoint.port}", "Authorization": f"Bearer {endpoint.secret}"}


@pytest.mark.timeout(180)
def test_secret_file_is_owner_only_even_under_umask_000(live) -> None:
    endpoint, state, _ = live
    for name in (SECRET_NAME, INFO_NAME):
        info = (state / name).stat()
        assert stat.S_IMODE(info.st_mode) == 0o600, f"{name} is {oct(info.st_mode)}"
        assert info.st_uid == os.getuid()
    assert (state / SECRET_NAME).read_text().strip() == endpoint.secret
    assert len(endpoint.secret) >= 32


def _near_misses(secret: str) -> list[str]:
    return ["", "Bearer", "Bearer ", f"Bearer {secret[:-1]}", f"Bearer {secret}x",
            f"bearer {secret}", f"Basic {secret}", secret, f"Bearer  {secret}",
            f"Bearer {secret.upper() if secret.upper() != secret else secret.lower()}",
            f"Bearer {secret}\t"]


@pytest.mark.timeout(180)
def test_requests_without_the_right_secret_are_refused_and_change_nothing(live) -> None:
    endpoint, state, _ = live
    host = f"127.0.0.1:{endpoint.port}"
    assert raw(endpoint.port, "POST", "/pause", {"Host": host})[0] == 401
    for attempt in _near_misses(endpoint.secret):
        code, body = raw(endpoint.port, "POST", "/pause", {"Host": host, "Authorization": attempt})
        assert code == 401, f"{attempt!r} got {code}"
        assert endpoint.secret not in str(body)
    assert raw(endpoint.port, "GET", "/status", {"Host": host})[0] == 401
    assert status_of(state)["state"] == "idle", "a refused pause paused the daemon"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("host", [
    "evil.example:{port}", "127.0.0.1.evil.example:{port}", "127.0.0.1:{other}", "127.0.0.1",
    "localhost", "[::1]:{port}", "0.0.0.0:{port}", "127.0.0.2:{port}", "",
])
def test_foreign_host_is_refused_even_with_the_secret(live, host: str) -> None:
    endpoint, state, _ = live
    value = host.format(port=endpoint.port, other=endpoint.port + 1)
    code, _ = raw(endpoint.port, "POST", "/pause", {**_good(endpoint), "Host": value})
    assert code == 403
    assert status_of(state)["state"] == "idle"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("origin", [
    "null", "https://evil.example", "http://127.0.0.1:{port}", "http://localhost:{port}",
    "chrome-extension://abcdef", "file://", "",
])
def test_any_origin_is_refused_even_with_the_secret(live, origin: str) -> None:
    endpoint, state, _ = live
    headers = {**_good(endpoint), "Origin": origin.format(port=endpoint.port)}
    assert raw(endpoint.port, "POST", "/pause", headers)[0] == 403
    assert raw(endpoint.port, "GET", "/status", headers)[0] == 403
    assert status_of(state)["state"] == "idle"


@pytest.mark.timeout(180)
def test_garbage_on_the_port_does_not_stop_the_channel(live) -> None:
    endpoint, state, _ = live
    rng = random.Random(3)
    payloads = [rng.randbytes(rng.randint(1, 3000)) for _ in range(30)]
    payloads += [b"GET /status HTTP/1.1\r\nHost: " + b"a" * 70000 + b"\r\n\r\n",
                 b"POST /pause HTTP/1.1\r\nContent-Length: -5\r\n\r\n", b"\r\n\r\n",
                 b"GET /../../etc/passwd HTTP/1.0\r\n\r\n", b"\x16\x03\x01\x02\x00"]
    for payload in payloads:
        with socket.create_connection(("127.0.0.1", endpoint.port), timeout=5) as conn:
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass
    assert status_of(state)["state"] == "idle"
    assert raw(endpoint.port, "GET", "/status", _good(endpoint))[0] == 200


@pytest.mark.timeout(180)
def test_the_secret_never_reaches_the_log(live) -> None:
    endpoint, _, logs = live
    raw(endpoint.port, "POST", "/pause", {"Host": "evil", "Authorization": "Bearer x"})
    time.sleep(0.5)
    text = "".join(p.read_text(errors="replace") for p in logs.rglob("*") if p.is_file())
    assert text, "no log file written"
    assert endpoint.secret not in text


@pytest.mark.timeout(180)
def test_idle_and_slow_clients_hold_no_thread_and_status_still_answers(live, capsys) -> None:
    psutil = pytest.importorskip("psutil")
    endpoint, state, _ = live
    daemon = psutil.Process(endpoint.pid)
    threads_before = daemon.num_threads()
    idle: list[socket.socket] = []
    try:
        for n in range(300):
            conn = socket.create_connection(("127.0.0.1", endpoint.port), timeout=10)
            if n % 3 == 0:
                conn.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
            idle.append(conn)
        time.sleep(1.0)
        extra_threads = daemon.num_threads() - threads_before
        assert extra_threads <= control.LIMITS.workers, f"{extra_threads} threads for idle clients"

        started = time.monotonic()
        assert cli.main(["status", "--config", str(state.parent / "config.toml")]) == 0
        assert time.monotonic() - started < 10
        assert "state:     idle" in capsys.readouterr().out

        deadline = time.monotonic() + control.LIMITS.request_seconds + 15
        for conn in idle:
            conn.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                assert conn.recv(1024) == b"", "an idle client got an answer"
            except ConnectionResetError:
                pass
            except TimeoutError:
                pytest.fail("an idle connection was still open after the request timeout")
    finally:
        for conn in idle:
            conn.close()
    assert status_of(state)["state"] == "idle"
    assert daemon.num_threads() - threads_before <= control.LIMITS.workers

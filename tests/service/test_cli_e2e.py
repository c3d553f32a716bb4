"""End to end: `sharp-watch run --no-tray` in a subprocess on tiny models, driven by the CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
import time

import pytest
import torch

from daemon.instance import INFO_NAME, SECRET_NAME, read_endpoint
from service import cli
from tests.support.running_program import raw, status_of, wait_or_fail

STARTUP_SECONDS = 180


def cli_run(args: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def service_env(tmp_path, monkeypatch):
    """Autostart lookups go to a temp XDG folder, for this process and its children."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def test_run_status_pause_resume_stop(make_daemon_config, config_toml, make_photo, service_env,
                                      tmp_path, capsys):
    config = make_daemon_config()
    toml = str(config_toml(config))
    state_dir = config.daemon.state_dir
    command = [sys.executable, "-m", "service", "run", "--no-tray", "--config", toml]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=service_env)
    try:
        wait_or_fail(lambda: status_of(state_dir).get("state") == "idle", STARTUP_SECONDS,
                     "the daemon to be idle", process)
        endpoint = read_endpoint(state_dir)
        assert endpoint is not None and endpoint.pid == process.pid

        code, out, err = cli_run(["status", "--config", toml], capsys)
        assert code == 0, err
        assert "state:     idle" in out
        assert f"inputs:    {config.folders.inputs}" in out
        assert "autostart: not installed" in out

        make_photo(config.folders.inputs / "first.jpg")
        wait_or_fail(lambda: status_of(state_dir).get("done") == 1, 120, "the first photo")
        assert len(list(config.folders.outputs.glob("first*.ply"))) == 1

        code, out, _ = cli_run(["pause", "--config", toml], capsys)
        assert (code, out.strip()) == (0, "sharp-watch is paused")
        make_photo(config.folders.inputs / "second.jpg", seed=1)
        wait_or_fail(lambda: status_of(state_dir).get("queue_length") == 1, 60, "a queued photo")
        time.sleep(1.0)
        paused = status_of(state_dir)
        assert (paused["state"], paused["done"], paused["queue_length"]) == ("paused", 1, 1)

        code, out, _ = cli_run(["resume", "--config", toml], capsys)
        assert code == 0 and "sharp-watch is" in out
        wait_or_fail(lambda: status_of(state_dir).get("done") == 2, 120, "the queued photo")

        code, out, err = cli_run(["status", "--json", "--config", toml], capsys)
        assert json.loads(out)["done"] == 2

        second = subprocess.run(command, capture_output=True, text=True, env=service_env,
                                timeout=120)
        assert second.returncode == 1
        assert f"already running (pid {process.pid}, control port {endpoint.port})" in \
            second.stderr + second.stdout

        host = f"127.0.0.1:{endpoint.port}"
        assert raw(endpoint.port, "POST", "/pause", {"Host": host})[0] == 401
        assert raw(endpoint.port, "POST", "/pause",
                   {"Host": host, "Authorization": "Bearer wrong"})[0] == 401
        authorised = {"Authorization": f"Bearer {endpoint.secret}"}
        assert raw(endpoint.port, "POST", "/pause", {**authorised, "Host": "evil.test"})[0] == 403
        assert raw(endpoint.port, "POST", "/pause",
                   {**authorised, "Host": host, "Origin": "http://evil.test"})[0] == 403
        assert status_of(state_dir)["state"] == "idle", "refused requests changed nothing"
        if sys.platform != "win32":
            assert stat.S_IMODE((state_dir / SECRET_NAME).stat().st_mode) == 0o600

        code, out, _ = cli_run(["stop", "--config", toml], capsys)
        assert code == 0 and "stopping" in out
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = process.stdout.read()
    assert f"inputs:  {config.folders.inputs}" in output
    assert f"logs:    {config.service.log_dir / 'sharp-watch.log'}" in output
    assert f"config:  {toml}" in output
    assert not (state_dir / INFO_NAME).exists() and not (state_dir / SECRET_NAME).exists()
    log = (config.service.log_dir / "sharp-watch.log").read_text()
    assert "first.jpg: done in" in log and "second.jpg: done in" in log

    code, _, err = cli_run(["status", "--config", toml], capsys)
    assert code == cli.NOT_RUNNING and "not running" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_run_explains_a_model_setting_it_cannot_use(make_daemon_config, config_toml,
                                                     service_env):
    config = make_daemon_config(models=dataclasses.replace(make_daemon_config().models,
                                                           device="cuda"))
    command = [sys.executable, "-m", "service", "run", "--no-tray", "--config",
               str(config_toml(config))]
    result = subprocess.run(command, capture_output=True, text=True, env=service_env,
                            timeout=120)
    assert result.returncode == 1
    assert "cannot start: device 'cuda' asked for" in result.stderr
    assert "Traceback" not in result.stderr
    assert read_endpoint(config.daemon.state_dir) is None

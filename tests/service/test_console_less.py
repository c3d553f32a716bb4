"""Console-less starts: pythonw, the `sharp-watch-tray` gui-script and the autostart entry.

A GUI-subsystem process starts with `sys.stdout` and `sys.stderr` set to None (and no
standard handles at all). These tests start the real program that way and check that the
first-run model download, the photo -> PLY path and logging all work, that the log file
gets the lines, and that nothing reaches the process's own stdout or stderr. File names
a stranger chose go through the same run: they must not forge log lines nor put control
characters on the terminal through `sharp-watch status`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from pipeline import DepthSettings
from service import cli, system
from service.logs import LOG_NAME, TRACE_INDENT
from service.text import printable
from tests.support.fake_hub import base_url, serve_file, serve_repo
from tests.support.running_program import status_of, wait_or_fail

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="starts POSIX subprocesses")

ROOT = Path(__file__).resolve().parents[2]
REPO_ID = "test-org/tiny-depth-pro"
NO_STREAMS = "import sys\nsys.stdout = sys.stderr = sys.__stdout__ = sys.__stderr__ = None\n"
TRAY_LAUNCHER = (NO_STREAMS
                 + "sys.argv = [r'C:\\Users\\Ann\\sharp-watch\\.venv\\Scripts\\sharp-watch-tray']\n"
                 "from service.cli import main\nsys.exit(main())\n")
"""What pip's gui-script launcher (sharp-watch-tray.exe, no console) runs: `main()` with no
arguments and argv[0] naming the launcher without `.exe`."""
RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \| [A-Z]+ +\| ")
FORGED = "2026-01-01 00:00:00.000 | ERROR    | MainThread | forged:1 | all photos deleted"
HOSTILE_PHOTOS = [f"evil\n{FORGED}.jpg", "\x1b[2J\x1b[31mred\r.jpg", "bidi\u202egpj.exe.jpg",
                  "bell\x07\x9b\x85.png"]
UNICODE_PHOTO = "café 猫 😀 photo.jpg"


def _environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("DISPLAY", "WAYLAND_DISPLAY") and not key.startswith("HF_")}
    return {**env, "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "PYTHONPATH": str(ROOT),
            "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1", **extra}


def _unsafe(text: str) -> list[str]:
    """Characters a terminal or viewer would act on rather than show (newline excepted)."""
    return [c for c in text if c != "\n" and (unicodedata.category(c) == "Cc"
                                              or c in "\u202a\u202b\u202c\u202d\u202e\u2066"
                                                      "\u2067\u2068\u2069\u200e\u200f\u2028\u2029")]


def _stop(process: subprocess.Popen, toml: str) -> tuple[bytes, bytes]:
    try:
        assert cli.main(["stop", "--config", toml]) == 0
        out, err = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return out, err


@pytest.mark.timeout(600)
def test_tray_launcher_without_console_downloads_logs_and_makes_splats(
        make_daemon_config, config_toml, tiny_depth_dir, make_photo, tmp_path, capsys,
        monkeypatch):
    hub = serve_repo(REPO_ID, tiny_depth_dir)
    base = make_daemon_config(defaults=DepthSettings())
    config = dataclasses.replace(base, models=dataclasses.replace(base.models,
                                                                  depth_model=REPO_ID))
    toml = config_toml(config)
    default_config = tmp_path / "xdg" / "sharp-watch" / "config.toml"
    default_config.parent.mkdir(parents=True)
    default_config.write_text(toml.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    state_dir, inputs = config.daemon.state_dir, config.folders.inputs
    process = subprocess.Popen([sys.executable, "-c", TRAY_LAUNCHER], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=_environment(tmp_path, HF_ENDPOINT=base_url(hub)))
    try:
        wait_or_fail(lambda: status_of(state_dir).get("state") == "idle", 240, "idle", process)
        assert any(r.startswith("GET") and r.endswith("/model.safetensors")
                   for r in hub.requests), "the depth model came from the (fake) hub"
        names = ["first.jpg", UNICODE_PHOTO, *HOSTILE_PHOTOS]
        for seed, name in enumerate(names):
            make_photo(inputs / name, seed=seed)
        (inputs / "broken\x1b[2J\nFAKE LINE.jpg").write_bytes(b"not a jpeg at all")
        wait_or_fail(lambda: status_of(state_dir).get("done", 0)
                     + status_of(state_dir).get("failed", 0) >= len(names) + 1, 240,
                     "every photo", process)
        status = status_of(state_dir)
        assert status["done"] >= 2 and status["failed"] >= 1, status

        capsys.readouterr()
        assert cli.main(["status", "--config", str(toml)]) == 0
        assert cli.main(["status", "--json", "--config", str(toml)]) == 0
        shown = capsys.readouterr()
        assert not _unsafe(shown.out + shown.err), shown
        assert "broken\\x1b[2J\\nFAKE LINE.jpg" in shown.out
        assert json.loads(shown.out[shown.out.index("{", shown.out.index("autostart")):]
                          )["failed"] >= 1
    finally:
        out, err = _stop(process, str(toml))
        hub.shutdown()
    assert process.returncode == 0
    assert (out, err) == (b"", b""), "a console-less process wrote to its standard streams"

    plys = sorted(config.folders.outputs.glob("*.ply"))
    assert any(p.name.startswith("first_") for p in plys)
    assert any(p.name.startswith("café 猫 😀 photo_") for p in plys)
    log = (config.service.log_dir / LOG_NAME).read_text(encoding="utf-8")
    lines = log.splitlines()
    assert "sharp-watch running" in log and "no tray icon" in log
    for line in lines:
        assert RECORD.match(line) or line.startswith(TRACE_INDENT), f"forged line: {line!r}"
    assert not _unsafe(log)
    assert not any(line.startswith(FORGED[:24]) for line in lines)
    assert UNICODE_PHOTO in log, "ordinary Unicode stays readable"
    for ply in plys:
        count = sum(printable(ply.name) in line for line in lines)
        assert count == 1, f"{ply.name!r} is on {count} log lines, not one"


@pytest.mark.timeout(300)
def test_autostart_command_runs_with_no_standard_handles(make_daemon_config, config_toml,
                                                         tmp_path, monkeypatch):
    """The autostart entry's exact argv, started with fds 0-2 closed: Python then sets
    stdin, stdout and stderr to None itself, as a GUI-subsystem process gets them."""
    config = make_daemon_config()
    toml = config_toml(config)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    argv = system.launch_argv(sys.executable, toml)
    assert argv[1:] == ["-m", "service", "run", "--config", str(toml)]

    def no_handles() -> None:
        for fd in (0, 1, 2):
            os.close(fd)

    process = subprocess.Popen(argv, cwd=ROOT, env=_environment(tmp_path),
                               preexec_fn=no_handles)
    try:
        wait_or_fail(lambda: status_of(config.daemon.state_dir).get("state") == "idle", 180,
                     "idle", process)
    finally:
        _stop(process, str(toml))
    assert process.returncode == 0
    log = (config.service.log_dir / LOG_NAME).read_text(encoding="utf-8")
    assert "sharp-watch running" in log and "sharp-watch stopped" in log


FETCH = NO_STREAMS + """import json
from pathlib import Path
from service.cli import console_less_streams
console_less_streams()
from pipeline.weights import fetch_checkpoint
seen = []
path = fetch_checkpoint(sys.argv[1], Path(sys.argv[2]), lambda name, part: seen.append(part))
Path(sys.argv[3]).write_text(json.dumps([str(path), seen]))
"""


def test_checkpoint_download_with_progress_bar_and_no_streams(tmp_path):
    data = bytes(range(256)) * (3 * 4096 + 7)
    server = serve_file("sharp_test.pt", data)
    report = tmp_path / "report.json"
    try:
        result = subprocess.run(
            [sys.executable, "-c", FETCH, f"{base_url(server)}/sharp_test.pt",
             str(tmp_path / "cache"), str(report)],
            cwd=ROOT, capture_output=True, env=_environment(tmp_path), timeout=120)
    finally:
        server.shutdown()
    assert result.returncode == 0
    assert (result.stdout, result.stderr) == (b"", b"")
    path, seen = json.loads(report.read_text())
    assert Path(path).read_bytes() == data
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) == 4

"""The `sharp-watch` commands in-process: help, no daemon running, autostart, logs, run loop."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from daemon import DaemonError, JobEvent, Status, control
from daemon.instance import INFO_NAME, Instance, read_endpoint
from daemon.status import WorkerStatus
from service import cli, runner, system
from tests.conftest import wait_for


@pytest.fixture
def toml(make_daemon_config, config_toml, tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return str(config_toml(make_daemon_config()))


@pytest.mark.parametrize(("command", "option"), [
    ("run", "--no-tray"), ("status", "--json"), ("pause", "--config"), ("resume", "--config"),
    ("stop", "--config"), ("logs", "--follow"), ("install", "--config"),
    ("uninstall", "--config"), ("doctor", "--config"), ("predict", "--input"),
    ("cluster-worker", "--scheduler"),
])
def test_every_command_has_help(command, option, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--help"])
    assert exited.value.code == 0
    assert option in capsys.readouterr().out


def test_cluster_worker_without_the_engine_says_how_to_install_it(toml, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # the cluster extra not installed
    assert cli.main(["cluster-worker", "--scheduler", "tcp://127.0.0.1:1", "--config",
                     toml]) == 2
    err = capsys.readouterr().err
    assert "the Dask engine is not installed" in err and 'pip install -e ".[cluster]"' in err


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "install" in capsys.readouterr().out


def test_tray_launcher_without_arguments_runs(monkeypatch):
    seen: list[bool] = []
    monkeypatch.setattr(cli.sys, "argv", [r"C:\venv\Scripts\sharp-watch-tray.exe"])
    monkeypatch.setattr(cli, "cmd_run", lambda args: seen.append(args.no_tray) or 0)
    assert cli.main() == 0
    assert seen == [False]


def test_console_less_launch_gets_harmless_streams(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setattr(cli.sys, "stdout", None)
    monkeypatch.setattr(cli.sys, "stderr", None)
    assert cli.main(["uninstall"]) == 0
    assert cli.sys.stdout is not None and cli.sys.stderr is not None
    cli.sys.stdout.close()
    cli.sys.stderr.close()


@pytest.mark.parametrize("command", ["status", "pause", "resume", "stop"])
def test_commands_say_when_nothing_runs(command, toml, capsys):
    assert cli.main([command, "--config", toml]) == cli.NOT_RUNNING
    out, err = capsys.readouterr()
    assert "sharp-watch is not running" in err and "sharp-watch run" in err
    if command == "status":
        assert out.strip() == "autostart: not installed"


def test_bad_config_names_file_and_key(tmp_path, capsys):
    bad = tmp_path / "config.toml"
    bad.write_text("[service]\nnotificatons = false\n")
    with pytest.raises(SystemExit) as exited:
        cli.main(["status", "--config", str(bad)])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "notificatons" in err and "notifications" in err


def test_install_is_idempotent_and_status_shows_it(toml, tmp_path, capsys):
    assert cli.main(["install", "--config", toml]) == 0
    assert cli.main(["install", "--config", toml]) == 0
    entries = list((tmp_path / "xdg" / "autostart").iterdir())
    assert [e.name for e in entries] == ["sharp-watch.desktop"]
    expected = system.launch_argv(cli.sys.executable, Path(toml).resolve())
    assert entries[0].read_text() == system.desktop_entry(expected)
    capsys.readouterr()
    assert cli.main(["status", "--config", toml]) == cli.NOT_RUNNING
    assert "autostart: installed" in capsys.readouterr().out
    assert cli.main(["uninstall"]) == 0
    assert cli.main(["uninstall"]) == 0
    out = capsys.readouterr().out
    assert "autostart removed" in out and "was not installed" in out
    assert not entries[0].exists()


def test_logs_prints_and_opens_the_log(toml, make_daemon_config, monkeypatch, capsys):
    log_file = make_daemon_config().service.log_dir / "sharp-watch.log"
    opened: list[Path] = []
    monkeypatch.setattr(system, "open_path", opened.append)
    assert cli.main(["logs", "--config", toml]) == 0
    assert capsys.readouterr().out.strip() == str(log_file)
    assert cli.main(["logs", "--open", "--config", toml]) == 1
    assert "no log yet" in capsys.readouterr().err
    log_file.parent.mkdir(parents=True)
    log_file.write_text("a line\n")
    assert cli.main(["logs", "--open", "--config", toml]) == 0
    assert opened == [log_file]


def test_follow_tails_and_survives_rotation(tmp_path):
    log = tmp_path / "sharp-watch.log"
    log.write_text("".join(f"old {n}\n" for n in range(30)))
    lines: list[str] = []
    stop = threading.Event()
    thread = threading.Thread(target=cli.follow, args=(log, lines.append, stop, 0.02, 5))
    thread.start()

    try:
        assert wait_for(lambda: len(lines) >= 5, 10), lines
        with log.open("a") as out:
            out.write("new 1\nnew 2 without end")
        assert wait_for(lambda: len(lines) >= 6, 10), lines
        time.sleep(0.1)
        assert lines == ["old 25", "old 26", "old 27", "old 28", "old 29", "new 1"]
        with log.open("a") as out:
            out.write("\n")
        assert wait_for(lambda: len(lines) >= 7, 10), lines
        log.rename(tmp_path / "sharp-watch.2026-01-01.log")
        log.write_text("after rotation\n")
        assert wait_for(lambda: len(lines) >= 8, 10), lines
    finally:
        stop.set()
        thread.join(5)
    assert lines[6:] == ["new 2 without end", "after rotation"]


class FakeDaemon:
    def __init__(self, fail_start: bool = False) -> None:
        self.calls: list[str] = []
        self.fail_start = fail_start
        self.subscribers: list = []
        self.state = "idle"
        self.problems: tuple[str, ...] = ()
        self.current_file: str | None = None

    def start(self) -> None:
        if self.fail_start:
            raise DaemonError("another sharp-watch daemon is already using /state")
        self.calls.append("start")

    def stop(self) -> None:
        self.calls.append("stop")

    def pause(self) -> None:
        self.state = "paused"

    def resume(self) -> None:
        self.state = "idle"

    def subscribe(self, callback) -> None:
        self.subscribers.append(callback)

    def status(self) -> Status:
        return Status(self.state, self.current_file, None, 0, 0, 0, None, None, None, "/in",
                      "/out", self.problems)


def serve(daemon, config, tmp_path) -> tuple[threading.Thread, list[int], Instance]:
    instance = Instance(config.daemon.state_dir)
    instance.acquire()
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(runner._serve(
        daemon, config, instance, tmp_path / "log", False, lambda text: None)))
    thread.start()
    return thread, codes, instance


def test_serve_runs_until_stop_and_stops_the_daemon_once(daemon_config, tmp_path):
    daemon = FakeDaemon()
    thread, codes, instance = serve(daemon, daemon_config, tmp_path)
    try:
        state_dir = daemon_config.daemon.state_dir
        assert wait_for(lambda: read_endpoint(state_dir) is not None, 10)
        assert control.request(state_dir, "POST", "/pause")["state"] == "paused"
        assert control.request(state_dir, "POST", "/resume")["state"] == "idle"
        assert control.request(state_dir, "POST", "/stop") == {"stopping": True}
        thread.join(10)
        assert codes == [0]
        assert daemon.calls == ["start", "stop"]
        assert len(daemon.subscribers) == 1, "job lines are logged"
        daemon.subscribers[0](JobEvent("/in/a.jpg", "done", "/out/a.ply", None, 1.0))
    finally:
        instance.release()
    assert not (daemon_config.daemon.state_dir / INFO_NAME).exists()


def test_serve_reports_a_daemon_that_cannot_start(daemon_config, tmp_path):
    thread, codes, instance = serve(FakeDaemon(fail_start=True), daemon_config, tmp_path)
    thread.join(10)
    instance.release()
    assert codes == [1]
    assert read_endpoint(daemon_config.daemon.state_dir) is None


def test_status_text_lists_what_matters():
    status = dataclasses.asdict(Status("working", "/in/cat.jpg", "sharp", 2, 5, 1, "bad.png: x",
                                       2048.4, None, "/in", "/out"))
    text = cli.status_text(status, None)
    assert text.splitlines() == [
        "state:     working", "working:   /in/cat.jpg (sharp)", "queue:     2",
        "done:      5, failed: 1", "last error: bad.png: x", "VRAM:      2048 MB",
        "inputs:    /in", "outputs:   /out", "autostart: not installed"]
    downloading = {**status, "state": "loading", "download_progress": 0.5, "current_file": None}
    assert "download:  50%" in cli.status_text(downloading, "pythonw -m service run")


def test_status_text_lists_each_worker_of_several():
    workers = (WorkerStatus("cuda:0", "/in/cat.jpg", "sharp"), WorkerStatus("cuda:1"))
    status = dataclasses.asdict(Status("working", "/in/cat.jpg", "sharp", 0, 0, 0, None, None,
                                       None, "/in", "/out", workers=workers))
    assert cli.status_text(status, None).splitlines()[1:3] == [
        "worker 1:  cuda:0: /in/cat.jpg (sharp)", "idle:      cuda:1"]
    slots = (*workers, *(WorkerStatus(f"cluster slot {n}") for n in range(3, 17)))
    busy = (*slots[:12], WorkerStatus("cluster slot 13", "/in/dog.jpg", "remote"), *slots[13:])
    lines = cli.status_text({**status, "workers": [dataclasses.asdict(w) for w in busy]},
                            None).splitlines()
    assert lines[1:4] == ["worker 1:  cuda:0: /in/cat.jpg (sharp)",
                          "worker 13:  cluster slot 13: /in/dog.jpg (remote)",
                          "idle:      14 of 16 workers"]


def test_second_run_is_refused_before_touching_anything(toml, daemon_config, capsys):
    holder = Instance(daemon_config.daemon.state_dir)
    holder.acquire()
    holder.publish(4242)
    try:
        assert cli.main(["run", "--no-tray", "--config", toml]) == 1
    finally:
        holder.release()
    err = capsys.readouterr().err
    assert f"error: sharp-watch is already running (pid {os.getpid()}, control port 4242)" in err
    assert not daemon_config.service.log_dir.exists(), "the refused run opened no log"


def test_status_text_lists_daemon_problems_one_per_line():
    status = dataclasses.asdict(Status("idle", None, None, 0, 0, 0, None, None, None, "/in",
                                       "/out", ("journal: database is locked since 12:01",
                                                "watcher: inputs folder is gone")))
    lines = cli.status_text(status, None).splitlines()
    assert lines[3:5] == ["problem:   journal: database is locked since 12:01",
                          "problem:   watcher: inputs folder is gone"]
    assert "problem" not in cli.status_text({**status, "problems": []}, None)


def test_status_prints_problems_and_escapes_names(toml, daemon_config, tmp_path, capsys):
    daemon = FakeDaemon()
    daemon.state = "working"
    daemon.current_file = "/in/evil\x1b[2J\n\rfake line\u202egpj.jpg"
    daemon.problems = ("intake: stalled on /in/\x1b]0;owned\x07.jpg",)
    thread, _, instance = serve(daemon, daemon_config, tmp_path)
    try:
        assert wait_for(lambda: read_endpoint(daemon_config.daemon.state_dir) is not None, 10)
        capsys.readouterr()
        assert cli.main(["status", "--config", toml]) == 0
        text = capsys.readouterr().out
        assert cli.main(["status", "--json", "--config", toml]) == 0
        raw_json = capsys.readouterr().out
    finally:
        control.request(daemon_config.daemon.state_dir, "POST", "/stop")
        thread.join(10)
        instance.release()
    assert "working:   /in/evil\\x1b[2J\\n\\rfake line\\u202egpj.jpg (...)" in text
    assert "problem:   intake: stalled on /in/\\x1b]0;owned\\x07.jpg" in text
    assert not any(c in text + raw_json for c in "\x1b\r\x07\u202e")
    assert json.loads(raw_json)["problems"] == ["intake: stalled on /in/\x1b]0;owned\x07.jpg"]

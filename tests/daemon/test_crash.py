"""Killing the daemon at the worst moment loses nothing and duplicates nothing."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from daemon import Daemon
from daemon.jobs import file_sha256, job_key, settings_to_json
from daemon.journal import Journal
from pipeline import DepthSettings
from pipeline.atomic import TEMP_SUFFIX
from tests.conftest import wait_for

REPO = Path(__file__).resolve().parents[2]


def build_slow():
    """The SHARP double, made slow and observable through environment variables.

    Each forward touches a file in `SLOW_SHARP_MARKER`, then sleeps
    `SLOW_SHARP_SECONDS`, so a test can kill the process while SHARP is running.
    """
    from tests.support.sharp_double import build

    model = build()
    marker = Path(os.environ["SLOW_SHARP_MARKER"])
    delay = float(os.environ.get("SLOW_SHARP_SECONDS", "0"))
    forward = model.forward

    def slow_forward(*args, **kwargs):
        marker.mkdir(parents=True, exist_ok=True)
        (marker / f"forward-{os.getpid()}-{time.monotonic_ns()}").touch()
        time.sleep(delay)
        return forward(*args, **kwargs)

    model.forward = slow_forward
    return model


def _start(config_file: Path, marker: Path, delay: float) -> subprocess.Popen:
    env = {**os.environ, "SLOW_SHARP_MARKER": str(marker), "SLOW_SHARP_SECONDS": str(delay),
           "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "daemon", "--config", str(config_file)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _jobs(state_dir: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(state_dir / "journal.sqlite3") as db:
        return db.execute("SELECT state, attempts FROM jobs").fetchall()


def test_sigkill_during_a_job_then_restart_finishes_it_exactly_once(make_daemon_config,
                                                                    config_toml, make_photo,
                                                                    tmp_path):
    import dataclasses

    base = make_daemon_config(preview=True, defaults=DepthSettings(depth_source="internal"))
    config = dataclasses.replace(base, models=dataclasses.replace(
        base.models, sharp_factory="tests.daemon.test_crash:build_slow"))
    config_file = config_toml(config)
    marker = tmp_path / "marker"
    make_photo(config.inputs / "victim.jpg")

    first = _start(config_file, marker, delay=60)
    try:
        assert wait_for(lambda: marker.is_dir() and any(marker.iterdir()), 60), \
            first.stdout.read1().decode() if first.poll() is not None else "no forward seen"
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        first.kill()
    assert not list(config.outputs.glob("*.ply"))
    assert _jobs(config.daemon.state_dir) == [("running", 1)]

    second = _start(config_file, marker, delay=0)
    try:
        assert wait_for(lambda: _jobs(config.daemon.state_dir) == [("done", 2)], 60)
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    finally:
        second.kill()
    plys = list(config.outputs.glob("*.ply"))
    assert len(plys) == 1 and plys[0].stat().st_size > 0
    assert json.loads(plys[0].with_suffix(".json").read_text())["photo"].endswith("victim.jpg")
    assert not [p for p in config.outputs.iterdir() if p.name.startswith(".")]
    assert len(list(marker.iterdir())) == 2


def test_results_of_an_interrupted_write_are_replaced_not_duplicated(daemon_config, make_photo,
                                                                      tiny_pipeline):
    photo = make_photo(daemon_config.inputs / "half.jpg")
    settings = daemon_config.defaults
    digest = file_sha256(photo)
    key = job_key(digest, settings, None)
    journal = Journal(daemon_config.daemon.state_dir / "journal.sqlite3")
    assert journal.submit(key, photo, digest, settings_to_json(settings)) == "queued"
    journal.claim(key)
    outputs = daemon_config.outputs
    outputs.mkdir(parents=True)
    stale = outputs / "half_20260101-000000.ply"
    journal.reserve_outputs(key, [str(stale), str(stale.with_suffix(".json"))])
    stale.write_bytes(b"ply from the killed attempt")
    (outputs / f".{stale.with_suffix('.json').name}.999-1{TEMP_SUFFIX}").write_text("{")
    journal.close()

    d = Daemon(daemon_config, tiny_pipeline)
    d.start()
    try:
        assert wait_for(lambda: d.status().done == 1) and d.wait_until_idle(30)
    finally:
        d.stop()
    plys = list(outputs.glob("*.ply"))
    assert len(plys) == 1 and plys[0] != stale
    assert not [p for p in outputs.iterdir() if p.name.startswith(".")]
    assert _jobs(daemon_config.daemon.state_dir) == [("done", 2)]

"""How the running daemon finds sidecars: in any letter case, never blocking on a pipe
named like one, and never failing a photo over a sidecar name that cannot exist."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon import Config, Daemon, JobEvent
from tests.conftest import wait_for, write_photo
from tests.support.daemon_runs import reports, settle
from tests.support.files import save_sidecar


@pytest.mark.timeout(90)
def test_an_upper_case_sidecar_is_used_and_editing_it_reruns_the_photo(
        running_daemon: Callable[..., Daemon], daemon_config: Config) -> None:
    inputs = daemon_config.inputs
    save_sidecar(inputs / "ROOM.TOML", "depth_scale = 0.8\n")
    write_photo(inputs / "room.jpg", seed=11)
    events: list[JobEvent] = []
    d = running_daemon(events=events)
    assert wait_for(lambda: len(events) == 1)
    settle(d)
    save_sidecar(inputs / "ROOM.TOML", "depth_scale = 0.5\n")
    assert wait_for(lambda: len(events) == 2)
    settle(d)
    assert [e.outcome for e in events] == ["done", "done"]
    assert [r["settings"]["depth_scale"] for r in reports(daemon_config.outputs)] == [0.8, 0.5]


@pytest.mark.timeout(60)
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs in this file namespace")
def test_a_fifo_named_like_a_sidecar_fails_its_photo_and_blocks_nothing(
        running_daemon: Callable[..., Daemon], daemon_config: Config) -> None:
    inputs = daemon_config.inputs
    inputs.mkdir(parents=True, exist_ok=True)
    os.mkfifo(inputs / "piped.toml")
    events: list[JobEvent] = []
    d = running_daemon(events=events)
    write_photo(inputs / "piped.jpg", seed=12)
    write_photo(inputs / "plain.jpg", seed=13)
    settle(d, 30)
    outcome = {Path(e.photo).name: e for e in events}
    assert outcome["piped.jpg"].outcome == "failed"
    assert f"{inputs / 'piped.toml'}: not a regular file" in (outcome["piped.jpg"].error or "")
    assert outcome["plain.jpg"].outcome == "done"


@pytest.mark.timeout(60)
def test_a_photo_with_the_longest_name_runs_without_a_sidecar(
        running_daemon: Callable[..., Daemon], daemon_config: Config, tmp_path: Path) -> None:
    """255 bytes is the most a name may have; the sidecar's would be 256, so none exists."""
    name = "p" * 251 + ".jpg"
    events: list[JobEvent] = []
    d = running_daemon(events=events)
    write_photo(tmp_path / "staging" / "p.jpg", seed=14)
    os.replace(tmp_path / "staging" / "p.jpg", daemon_config.inputs / name)
    settle(d)
    assert [(Path(e.photo).name, e.outcome, e.error) for e in events] == [(name, "done", None)]

"""Sidecar tuning end to end: edits re-run, debouncing, drop-together, the depth cache."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from plyfile import PlyData

from pipeline import DepthSettings
from tests.conftest import wait_for
from tests.support.daemon_runs import plys
from tests.support.files import save_sidecar


def _ply_z(path) -> np.ndarray:
    return np.asarray(PlyData.read(str(path))["vertex"]["z"], dtype=np.float64)


def test_sidecar_edit_gives_second_ply_scaled_by_depth_scale(running_daemon, daemon_config,
                                                             make_photo, overlap):
    inputs = daemon_config.inputs
    inputs.mkdir(parents=True)
    depth = np.linspace(1.0, 4.0, 48 * 64, dtype=np.float32).reshape(48, 64)
    np.save(inputs / "room_depth.npy", depth)
    save_sidecar(inputs / "room.toml",
                 'external_depth = "room_depth.npy"\ndepth_format = "metric"\n')
    make_photo(inputs / "room.jpg")
    events = []
    daemon = running_daemon(events=events)
    assert wait_for(lambda: len(events) == 1) and daemon.wait_until_idle(30)
    save_sidecar(inputs / "room.toml",
                 'external_depth = "room_depth.npy"\ndepth_format = "metric"\n'
                 "depth_scale = 0.5\n")
    assert wait_for(lambda: len(events) == 2) and daemon.wait_until_idle(30)
    assert [e.outcome for e in events] == ["done", "done"]
    first, second = plys(daemon_config.outputs, "room")
    z1, z2 = _ply_z(first), _ply_z(second)
    np.testing.assert_allclose(z2, 0.5 * z1, rtol=1e-4)
    report = json.loads(second.with_suffix(".json").read_text())
    assert report["settings"]["depth_scale"] == 0.5
    assert report["depth"]["source"] == "npy"
    assert report["depth"]["format"] == "metric"
    low, high = report["depth"]["range_m"]
    assert 0.5 <= low < high <= 2.0 + 1e-3


def test_sidecar_saved_twice_quickly_runs_once(running_daemon, daemon_config, make_photo,
                                               tiny_pipeline):
    inputs = daemon_config.inputs
    events = []
    daemon = running_daemon(events=events)
    make_photo(inputs / "p.jpg")
    assert wait_for(lambda: len(events) == 1) and daemon.wait_until_idle(30)
    calls = tiny_pipeline.sharp.predictor.calls
    (inputs / "p.toml").write_text("depth_scale = 0.9\n")
    (inputs / "p.toml").write_text("depth_scale = 0.8\n")
    assert wait_for(lambda: len(events) == 2) and daemon.wait_until_idle(30)
    assert tiny_pipeline.sharp.predictor.calls - calls == 1
    newest = plys(daemon_config.outputs, "p")[-1]
    assert json.loads(newest.with_suffix(".json").read_text())["settings"]["depth_scale"] == 0.8


def test_photo_and_sidecar_dropped_together_run_once_with_the_sidecar(running_daemon,
                                                                      daemon_config, make_photo,
                                                                      tmp_path):
    events = []
    daemon = running_daemon(events=events)
    staging = tmp_path / "staging"
    make_photo(staging / "duo.jpg")
    (staging / "duo.toml").write_text("depth_scale = 1.5\nfocal_mm = 50\n")
    os.replace(staging / "duo.jpg", daemon_config.inputs / "duo.jpg")
    os.replace(staging / "duo.toml", daemon_config.inputs / "duo.toml")
    assert wait_for(lambda: events) and daemon.wait_until_idle(30)
    assert len(events) == 1
    (ply,) = plys(daemon_config.outputs, "duo")
    report = json.loads(ply.with_suffix(".json").read_text())
    assert report["settings"]["depth_scale"] == 1.5
    assert report["focal"]["origin"] == "override"


def test_retune_uses_the_depth_cache(running_daemon, make_daemon_config, make_photo):
    daemon_config = make_daemon_config(defaults=DepthSettings())
    events = []
    daemon = running_daemon(daemon_config, events=events)
    make_photo(daemon_config.inputs / "c.jpg")
    assert wait_for(lambda: len(events) == 1) and daemon.wait_until_idle(30)
    (daemon_config.inputs / "c.toml").write_text("depth_offset = 0.25\n")
    assert wait_for(lambda: len(events) == 2) and daemon.wait_until_idle(30)
    first, second = (json.loads(p.with_suffix(".json").read_text())
                     for p in plys(daemon_config.outputs, "c"))
    assert first["depth"]["from_cache"] is False and "depth" in first["timings_s"]
    assert second["depth"]["from_cache"] is True and "depth" not in second["timings_s"]
    assert daemon.cache.hits == 1


@pytest.mark.parametrize("text, needle", [
    ("depth_scael = 2\n", "did you mean 'depth_scale'"),
    ('external_depth = "../outside.npy"\n', "outside the inputs folder"),
])
def test_bad_sidecar_fails_photo_then_fix_clears_it(running_daemon, daemon_config, make_photo,
                                                    text, needle):
    inputs = daemon_config.inputs
    inputs.mkdir(parents=True)
    (inputs.parent / "outside.npy").write_bytes(b"x")
    save_sidecar(inputs / "s.toml", text)
    make_photo(inputs / "s.jpg")
    events = []
    daemon = running_daemon(events=events)
    assert wait_for(lambda: events) and daemon.wait_until_idle(30)
    assert events[0].outcome == "failed" and needle in events[0].error
    error_file = daemon_config.outputs / "s.jpg.error.txt"
    assert "s.toml" in error_file.read_text() and needle in error_file.read_text()
    save_sidecar(inputs / "s.toml", "depth_scale = 2.0\n")
    assert wait_for(lambda: len(events) == 2) and daemon.wait_until_idle(30)
    assert events[1].outcome == "done"
    assert not error_file.exists()

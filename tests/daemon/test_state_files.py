"""The daemon's state folder: owner-only modes for the journal and the depth
cache, and a depth cache keyed by everything that changes the depth (model, precision,
weights), checked on a real daemon."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon import Config, Daemon, JobEvent
from pipeline import DepthSettings, ModelSettings, Pipeline
from pipeline.weights import local_hub_snapshot
from tests.conftest import SHARP_DOUBLE, wait_for, write_photo


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------- owner only


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes; Windows relies on the ACL")
@pytest.mark.timeout(60)
def test_state_is_owner_only_under_the_usual_umask(
        usual_umask: None, running_daemon: Callable[..., Daemon],
        make_daemon_config: Callable[..., Config]) -> None:
    config = make_daemon_config(defaults=DepthSettings())
    state = config.daemon.state_dir
    state.mkdir(parents=True, mode=0o755)  # as an older version left it
    (state / "journal.sqlite3-wal").write_bytes(b"")
    os.chmod(state / "journal.sqlite3-wal", 0o644)
    events: list[JobEvent] = []
    d = running_daemon(config, events=events)
    write_photo(config.inputs / "p.jpg", seed=1)
    assert wait_for(lambda: events, 30) and d.wait_until_idle(30)
    assert [e.outcome for e in events] == ["done"]
    cache = state / "depth-cache"
    entries = sorted(cache.iterdir())
    assert [p.suffix for p in entries] == [".json", ".npy"]
    modes = {p.name: _mode(p) for p in (state, cache, *entries,
                                         *state.glob("journal.sqlite3*"))}
    assert modes == {state.name: 0o700, cache.name: 0o700,
                     **{p.name: 0o600 for p in entries},
                     "journal.sqlite3": 0o600, "journal.sqlite3-wal": 0o600,
                     "journal.sqlite3-shm": 0o600}
    ply = next(config.outputs.glob("*.ply"))
    assert _mode(ply) == 0o644, "results are the user's to share; only state is private"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")
def test_sqlite_gives_its_wal_and_shm_the_journal_files_mode(tmp_path: Path,
                                                             usual_umask: None) -> None:
    from daemon.journal import Journal

    journal = Journal(tmp_path / "state" / "j.sqlite3")
    try:
        journal.counts()
        files = sorted((tmp_path / "state").iterdir())
        assert {p.name: _mode(p) for p in files} == {
            "j.sqlite3": 0o600, "j.sqlite3-shm": 0o600, "j.sqlite3-wal": 0o600}
        assert _mode(tmp_path / "state") == 0o700
    finally:
        journal.close()


# ---------------------------------------------------------------- the cache key


def _settings(depth_dir: Path, **changes: object) -> ModelSettings:
    base = {"device": "cpu", "depth_model": str(depth_dir), "sharp_factory": SHARP_DOUBLE}
    return ModelSettings(**{**base, **changes})  # type: ignore[arg-type]


def test_cache_key_changes_with_precision_and_weights_only(tiny_depth_dir: Path,
                                                           tmp_path: Path) -> None:
    key = Pipeline(_settings(tiny_depth_dir)).depth_cache_key(DepthSettings())
    assert key is not None and str(tiny_depth_dir.resolve()) in key
    assert Pipeline(_settings(tiny_depth_dir)).depth_cache_key(DepthSettings()) == key
    assert Pipeline(_settings(tiny_depth_dir)).depth_cache_key(
        DepthSettings(depth_scale=2.0, focal_mm=50.0)) == key, "tuning is applied after"
    assert Pipeline(_settings(tiny_depth_dir, depth_precision="float32")).depth_cache_key(
        DepthSettings()) == key, "auto is float32 on a CPU"
    others = {Pipeline(_settings(tiny_depth_dir, depth_precision=p)).depth_cache_key(
        DepthSettings()) for p in ("float16", "bfloat16")}
    copy = shutil.copytree(tiny_depth_dir, tmp_path / "copy")
    others.add(Pipeline(_settings(copy)).depth_cache_key(DepthSettings()))
    weights = next(copy.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes() + b"\0")  # the same path, new weights
    others.add(Pipeline(_settings(copy)).depth_cache_key(DepthSettings()))
    assert key not in others and len(others) == 4


def test_no_cache_key_without_a_depth_model_or_its_weights(tiny_depth_dir: Path,
                                                           tmp_path: Path) -> None:
    pipe = Pipeline(_settings(tiny_depth_dir))
    assert pipe.depth_cache_key(DepthSettings(depth_source="internal")) is None
    assert pipe.depth_cache_key(DepthSettings(depth_source="npy",
                                              external_depth=tmp_path / "d.npy")) is None
    not_downloaded = Pipeline(_settings(tiny_depth_dir, depth_model="apple/DepthPro-hf",
                                        cache_dir=tmp_path / "empty"))
    assert not_downloaded.depth_cache_key(DepthSettings()) is None
    apple = Pipeline(_settings(tiny_depth_dir, depth_pro_checkpoint=tmp_path / "depth_pro.pt"))
    assert apple.depth_cache_key(DepthSettings(depth_source="depth-pro-apple")) is None
    (tmp_path / "depth_pro.pt").write_bytes(b"weights")
    apple_key = apple.depth_cache_key(DepthSettings(depth_source="depth-pro-apple"))
    assert apple_key is not None and "depth_pro.pt" in apple_key


def test_hub_models_are_keyed_by_their_downloaded_revision(tiny_depth_dir: Path,
                                                           tmp_path: Path) -> None:
    repo = tmp_path / "hub" / "models--org--depth"
    keys = []
    for revision in ("1111111", "2222222"):
        snapshot = repo / "snapshots" / revision
        shutil.copytree(tiny_depth_dir, snapshot)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(revision)
        assert local_hub_snapshot("org/depth", tmp_path / "hub") == snapshot
        pipe = Pipeline(_settings(tiny_depth_dir, depth_model="org/depth",
                                  cache_dir=tmp_path / "hub"))
        keys.append(pipe.depth_cache_key(DepthSettings()))
    assert None not in keys and keys[0] != keys[1]
    assert "1111111" in (keys[0] or "") and "2222222" in (keys[1] or "")


def _pipeline_like(tiny: Pipeline, **changes: object) -> Pipeline:
    """`tiny`'s resident models under a config with `changes` (as after a config edit)."""
    models = ModelSettings(**{**{f: getattr(tiny.models, f)
                                 for f in ModelSettings.__dataclass_fields__}, **changes})
    return Pipeline(models, sharp=tiny.sharp,
                    depth_models={"depth-pro": tiny.depth_model("depth-pro")})


@pytest.mark.timeout(120)
def test_daemon_misses_the_cache_after_a_precision_or_checkpoint_change(
        running_daemon: Callable[..., Daemon], make_daemon_config: Callable[..., Config],
        tiny_pipeline: Pipeline, tiny_depth_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_depth_dir, tmp_path / "same-weights-elsewhere")
    config = make_daemon_config(defaults=DepthSettings())
    runs = [(tiny_pipeline, True), (_pipeline_like(tiny_pipeline), True),
            (_pipeline_like(tiny_pipeline, depth_precision="bfloat16"), False),
            (_pipeline_like(tiny_pipeline, depth_model=str(copy)), False),
            (_pipeline_like(tiny_pipeline, depth_model=str(copy)), True)]
    write_photo(config.inputs / "p.jpg", seed=2)
    first = _run(running_daemon, config, tiny_pipeline, None)
    assert first is False
    for scale, (pipe, hit) in enumerate(runs, start=2):
        assert _run(running_daemon, config, pipe, scale) is hit, (scale, pipe.models)


def _run(running_daemon: Callable[..., Daemon], config: Config, pipe: Pipeline,
         scale: int | None) -> bool:
    """Start a daemon on `pipe`, retune p.jpg to `scale` (a new job on the same photo), and
    return whether its depth came from the cache."""
    events: list[JobEvent] = []
    d = running_daemon(config, pipe, events=events)
    if scale is not None:
        (config.inputs / "p.toml").write_text(f"depth_scale = {scale}.0\n")
    assert wait_for(lambda: events, 30) and d.wait_until_idle(30)
    d.stop()
    assert [e.outcome for e in events] == ["done"], events
    report = json.loads(Path(events[0].output or "").with_suffix(".json").read_text())
    return bool(report["depth"]["from_cache"])

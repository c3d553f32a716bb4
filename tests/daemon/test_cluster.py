"""Photos run on a real Dask cluster (a scheduler and two `sharp-watch cluster-worker`
processes on loopback, tiny models on the CPU): each once, none lost when a worker dies,
and queued while the scheduler cannot be reached."""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from daemon import Config, Daemon
from daemon.cluster import MAX_DROPS, Cluster, cluster_stages
from daemon.config import ClusterConfig
from daemon.depth_cache import DepthCache
from daemon.remote import GPU_RESOURCE, PhotoReply, request_for, run_photo
from daemon.status import Problems
from pipeline import DepthSettings, InputError, ModelError, Pipeline, load_image
from pipeline.depth.external import NpyMap
from tests.conftest import wait_for, write_photo
from tests.support.cluster import LocalCluster
from tests.support.daemon_runs import log_lines, plys, reports, settle
from tests.support.files import save_sidecar

distributed = pytest.importorskip("distributed", reason="the cluster extra is not installed")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, tiny_depth_dir: Path,
            ) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path_factory.mktemp("cluster"), tiny_depth_dir)
    local.start_scheduler()
    local.start_worker()
    local.start_worker()
    try:
        local.wait_for_workers(2)
        yield local
    finally:
        local.stop()


def _remote(cluster: LocalCluster, request: object) -> PhotoReply:
    with distributed.Client(cluster.address, timeout=30, set_as_default=False) as client:
        reply: PhotoReply = client.submit(run_photo, request, resources={GPU_RESOURCE: 1},
                                          pure=False).result(timeout=120)
    return reply


def test_a_remote_worker_gives_the_local_pipeline_s_gaussians(
        cluster: LocalCluster, tiny_pipeline: Pipeline, tmp_path: Path) -> None:
    image = load_image(write_photo(tmp_path / "p.jpg"))
    settings = DepthSettings(depth_source="internal", save_internal_depth=True)
    reply = _remote(cluster, request_for(image, settings, {}, None, ()))
    assert reply.error is None and reply.worker.startswith("tcp://127.0.0.1:")
    remote, local = reply.result(), tiny_pipeline.predict(image, settings)
    for got, want in zip(remote.gaussians, local.gaussians, strict=True):
        assert got.dtype == want.dtype and np.array_equal(got.numpy(), want.numpy())
    assert remote.f_px == local.f_px and remote.depth_range_m == local.depth_range_m
    assert remote.internal_depth is not None and remote.internal_depth.shape == (2, 64, 64)


def test_a_shipped_npy_is_used_and_a_bad_one_is_refused_naming_the_photo(
        cluster: LocalCluster, tiny_pipeline: Pipeline, tmp_path: Path) -> None:
    photo = write_photo(tmp_path / "p.jpg", width=64, height=48)
    image = load_image(photo)
    settings = DepthSettings(depth_source="npy", external_depth=Path("/not/on/the/worker"),
                             depth_format="metric")
    depth = np.full((48, 64), 3.0, dtype=np.float32)
    reply = _remote(cluster, request_for(image, settings, {}, NpyMap(tmp_path / "d.npy", depth),
                                         ()))
    assert reply.error is None
    assert reply.result().depth_source == "npy" and reply.result().depth_range_m == (3.0, 3.0)

    missing = _remote(cluster, request_for(image, settings, {}, NpyMap(None, None), ()))
    assert missing.result().depth_source == "internal"
    assert missing.result().warnings == ["no p.npy in /not/on/the/worker; using SHARP's own "
                                         "depth"]

    turned = _remote(cluster, request_for(image, settings, {}, NpyMap(tmp_path / "d.npy",
                                                                      depth.T.copy()), ()))
    assert turned.error is not None and turned.error[0] == "InputError"
    with pytest.raises(InputError, match="turned by 90 degrees") as refused:
        turned.raise_error(photo, tmp_path / "d.npy")
    assert refused.value.path == tmp_path / "d.npy"  # the daemon's path of the map
    with pytest.raises(InputError) as refused:
        turned.raise_error(photo, tmp_path / "other.npy")
    assert refused.value.path == photo


def _on_cluster(make_daemon_config: Callable[..., Config], address: str,
                **changes: object) -> Config:
    """A daemon config sending its photos to the scheduler at `address` (two workers)."""
    return dataclasses.replace(make_daemon_config(preview=False, **changes),
                               cluster=ClusterConfig(address=address, max_workers=2,
                                                     connect_timeout_seconds=2.0))


def _drop(config: Config, count: int) -> list[str]:
    stems = [f"photo{i:02d}" for i in range(count)]
    for i, stem in enumerate(stems):
        write_photo(config.inputs / f"{stem}.jpg", seed=i)
    return stems


def _each_done_once(daemon: Daemon, config: Config, stems: list[str]) -> None:
    """Every photo has exactly one result (and the journal says done, once each)."""
    assert sorted(p.stem.rsplit("_", 2)[0] for p in plys(config.outputs)) == stems
    for stem in stems:
        assert len(plys(config.outputs, stem)) == 1, stem
    assert daemon.journal is not None and daemon.journal.counts()["done"] == len(stems)
    assert not list(config.outputs.glob("*.error.txt"))


def test_only_in_flight_per_worker_slots_per_connected_worker_take_photos(
        cluster: LocalCluster, make_daemon_config: Callable[..., Config], tmp_path: Path) -> None:
    config = dataclasses.replace(make_daemon_config(), cluster=ClusterConfig(
        address=cluster.address, in_flight_per_worker=3, max_workers=8))
    stages = cluster_stages(config, DepthCache(tmp_path / "cache", 0.0), Problems())
    assert len(stages) == 24
    assert [stage.ready() for stage in stages] == [True] * 6 + [False] * 18  # 2 workers


def test_twenty_photos_run_once_each_across_both_workers(
        cluster: LocalCluster, make_daemon_config: Callable[..., Config],
        running_daemon: Callable[..., Daemon]) -> None:
    config = _on_cluster(make_daemon_config, cluster.address)
    before = cluster.forwards()
    daemon = running_daemon(config)
    stems = _drop(config, 20)
    assert wait_for(lambda: len(plys(config.outputs)) == 20, 180), cluster.logs()
    settle(daemon)
    _each_done_once(daemon, config, stems)
    forwards = cluster.forwards() - before
    assert sum(forwards.values()) == 20  # SHARP ran once per photo, on the workers
    assert len(forwards) == 2, forwards  # and both workers took photos
    devices = {r["models"]["device"] for r in reports(config.outputs)}
    assert {device.split(" on ")[0] for device in devices} == {"cpu"}
    assert len(devices) == 2 and all(" on tcp://127.0.0.1:" in d for d in devices)  # which worker


def test_depth_made_on_a_worker_is_cached_here_and_sent_back_for_a_retune(
        cluster: LocalCluster, make_daemon_config: Callable[..., Config],
        running_daemon: Callable[..., Daemon]) -> None:
    config = _on_cluster(make_daemon_config, cluster.address, defaults=DepthSettings())
    daemon = running_daemon(config)
    write_photo(config.inputs / "retuned.jpg")
    assert wait_for(lambda: len(plys(config.outputs)) == 1, 120), cluster.logs()
    save_sidecar(config.inputs / "retuned.toml", "depth_scale = 1.5\n")
    assert wait_for(lambda: len(plys(config.outputs)) == 2, 120), cluster.logs()
    settle(daemon)
    first, retuned = reports(config.outputs)
    assert first["depth"]["source"] == "depth-pro" and first["depth"]["from_cache"] is False
    assert "depth" in first["timings_s"]  # Depth Pro ran on the worker
    assert retuned["depth"]["from_cache"] is True and "depth" not in retuned["timings_s"]
    assert retuned["settings"]["depth_scale"] == 1.5


def test_a_worker_killed_mid_photo_loses_nothing_and_duplicates_nothing(
        cluster: LocalCluster, make_daemon_config: Callable[..., Config],
        running_daemon: Callable[..., Daemon]) -> None:
    config = _on_cluster(make_daemon_config, cluster.address)
    victim = cluster.workers[-1]
    before = cluster.forwards()
    daemon = running_daemon(config)
    stems = _drop(config, 6)
    assert wait_for(lambda: (cluster.forwards() - before)[victim.pid] > 0, 120), cluster.logs()
    victim.send_signal(signal.SIGKILL)  # in SHARP's forward (it sleeps there), or just after
    victim.wait(10)
    cluster.start_worker()  # the next tests have two workers again
    assert wait_for(lambda: len(plys(config.outputs)) == 6, 180), cluster.logs()
    settle(daemon)
    _each_done_once(daemon, config, stems)
    forwards = cluster.forwards() - before
    assert forwards[victim.pid] >= 1
    assert sum(forwards.values()) > 6  # the photo it was running ran again elsewhere


def test_an_unreachable_scheduler_keeps_photos_queued_until_it_comes_up(
        tmp_path: Path, tiny_depth_dir: Path, make_daemon_config: Callable[..., Config],
        running_daemon: Callable[..., Daemon]) -> None:
    later = LocalCluster(tmp_path / "later", tiny_depth_dir, delay=0.0)
    config = _on_cluster(make_daemon_config, later.address)
    with log_lines() as lines:
        daemon = running_daemon(config)
        stems = _drop(config, 3)
        assert wait_for(lambda: daemon.status().queue_length == 3, 30)
        assert wait_for(lambda: any(later.address in p for p in daemon.status().problems), 30)
    problem = next(p for p in daemon.status().problems if later.address in p)
    assert "cannot reach the Dask scheduler at " + later.address in problem
    assert "sharp-watch cluster-worker" in problem and "docs/cluster.md" in problem
    assert any(later.address in line and line.startswith("WARNING") for line in lines)
    assert daemon.status().queue_length == 3 and not plys(config.outputs)
    try:
        later.start_worker()  # waits for its scheduler
        later.start_scheduler()
        assert wait_for(lambda: len(plys(config.outputs)) == 3, 180), later.logs()
        settle(daemon)
    finally:
        later.stop()
    _each_done_once(daemon, config, stems)
    assert not any(later.address in p for p in daemon.status().problems)
    assert sum(later.forwards().values()) == 3


class _Future:
    """A finished Dask future as `Cluster._wait` sees it. A dropped one's `result()`
    raises what distributed 2026.8's `sync` raised for a cancelled task on CI."""

    def __init__(self, status: str, reply: object = None) -> None:
        self.status, self.reply = status, reply

    def add_done_callback(self, callback: Callable[[object], None]) -> None:
        callback(self)

    def result(self, timeout: float | None = None) -> object:
        if self.status != "finished":
            raise UnboundLocalError("cannot access local variable 'result'")
        return self.reply


def test_a_task_the_scheduler_drops_is_sent_again_then_fails_naming_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancelled or lost task is not the photo's failure: it is sent again (a good photo
    failed "with an unexpected error" on CI when this was read with `result(timeout)`);
    a task dropped `MAX_DROPS` times fails the photo saying so."""
    cluster = Cluster(ClusterConfig(address="tcp://127.0.0.1:1"), Problems())
    futures = [_Future("cancelled"), _Future("lost"), _Future("finished", "the reply")]
    sent: list[object] = []

    class Client:
        status = "running"

        def submit(self, function: object, request: object, **kwargs: object) -> _Future:
            sent.append(request)
            return futures.pop(0)

    monkeypatch.setattr(cluster, "client", Client)
    assert cluster.run("photo") == "the reply"  # type: ignore[arg-type]
    assert sent == ["photo"] * 3
    futures[:] = [_Future("cancelled") for _ in range(MAX_DROPS)]
    with pytest.raises(ModelError, match=r"scheduler dropped the photo's task \(cancelled\), 3 "):
        cluster.run("photo")  # type: ignore[arg-type]
    assert not futures


def test_a_failing_device_on_a_worker_fails_the_photo_as_a_local_one_would(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A lost device (driver reset) is the photo's retryable model error, named as such;
    any other runtime error is a bug and reaches the daemon as one."""
    import daemon.remote as remote

    monkeypatch.setattr(remote, "get_worker", lambda: type("W", (), {"address": "tcp://w:1"}))
    monkeypatch.setattr(remote, "resident_pipeline",
                        lambda: type("P", (), {"device": torch.device("cpu")})())
    image = load_image(write_photo(tmp_path / "desk.jpg", width=32, height=24))
    request = request_for(image, DepthSettings(), {}, None, ())

    def failing(message: str) -> Callable[..., None]:
        def run(*args: object) -> None:
            raise RuntimeError(message)
        return run

    monkeypatch.setattr(remote, "_run", failing("CUDA error: an illegal memory access"))
    reply = run_photo(request)
    assert reply.error is not None and reply.error[0] == "ModelError"
    assert "the device cpu on tcp://w:1 failed (CUDA error" in reply.error[1]
    with pytest.raises(ModelError, match=r"desk\.jpg: the device cpu on tcp://w:1 failed"):
        reply.raise_error(tmp_path / "desk.jpg")
    monkeypatch.setattr(remote, "_run", failing("list index out of range"))
    with pytest.raises(RuntimeError, match="list index"):
        run_photo(request)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL")
def test_a_scheduler_lost_mid_photo_loses_nothing_and_duplicates_nothing(
        tmp_path: Path, tiny_depth_dir: Path, make_daemon_config: Callable[..., Config],
        running_daemon: Callable[..., Daemon]) -> None:
    """The scheduler killed while photos are on a worker, then started again: the photos
    in flight are sent again, each photo gets one result."""
    local = LocalCluster(tmp_path / "lost", tiny_depth_dir)
    config = _on_cluster(make_daemon_config, local.address)
    try:
        local.start_scheduler()
        local.start_worker()
        local.wait_for_workers(1)
        daemon = running_daemon(config)
        stems = _drop(config, 4)
        assert wait_for(lambda: sum(local.forwards().values()) > 0, 120), local.logs()
        assert local.scheduler is not None
        local.scheduler.send_signal(signal.SIGKILL)
        local.scheduler.wait(10)
        assert len(plys(config.outputs)) < 4
        local.start_scheduler()
        local.start_worker()  # in case the first one ended with its scheduler
        assert wait_for(lambda: len(plys(config.outputs)) == 4, 180), local.logs()
        settle(daemon)
    finally:
        local.stop()
    _each_done_once(daemon, config, stems)
    assert sum(local.forwards().values()) > 4  # the photo in flight ran again

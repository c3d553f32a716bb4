"""Photos run on a real Dask cluster (a scheduler and two `sharp-watch cluster-worker`
processes on loopback, tiny models on the CPU): each once, none lost when a worker dies,
and queued while the scheduler cannot be reached."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from daemon.remote import GPU_RESOURCE, PhotoReply, request_for, run_photo
from pipeline import DepthSettings, InputError, Pipeline, load_image
from pipeline.depth.external import NpyMap
from tests.conftest import write_photo
from tests.support.cluster import LocalCluster

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
    with pytest.raises(InputError, match=r"d\.npy") as refused:
        turned.raise_error(photo)
    assert refused.value.path == photo

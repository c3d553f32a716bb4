"""`[cluster]`: checked like every section, ray refused with the reason; without the
section the engine is never imported, and without the engine installed the daemon says
how to install it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon import ConfigError, load_config
from daemon.cluster import Cluster
from daemon.config import ClusterConfig
from daemon.status import Problems
from tests.support.files import write_config

REPO = Path(__file__).resolve().parents[2]


def test_a_cluster_section_is_read(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[cluster]\naddress = "tcp://gpu-box:8786"\n'
                                  'in_flight_per_worker = 3\n')
    assert load_config(path).cluster == ClusterConfig(address="tcp://gpu-box:8786",
                                                      in_flight_per_worker=3)


def test_without_the_section_there_is_no_cluster(tmp_path: Path) -> None:
    assert load_config(write_config(tmp_path, "[daemon]\npreview = false\n")).cluster is None


def test_tls_needs_its_three_files(tmp_path: Path) -> None:
    text = ('[cluster]\naddress = "tls://gpu-box:8786"\ntls_ca_file = "ca.pem"\n'
            'tls_cert = "me.pem"\ntls_key = "me.key"\n')
    cluster = load_config(write_config(tmp_path, text)).cluster
    assert cluster is not None and cluster.tls_key == tmp_path / "me.key"


@pytest.mark.parametrize("text, needles", [
    ('engine = "ray"\naddress = "tcp://h:8786"', ["engine 'ray' is not supported",
                                                  "docs/cluster.md#why-dask-and-not-ray",
                                                  'engine = "dask"']),
    ('engine = "spark"\naddress = "tcp://h:8786"', ["engine", "dask"]),
    ("in_flight_per_worker = 2", ["address ''", "tcp://host:8786"]),
    ('address = "gpu-box:8786"', ["'gpu-box:8786' is not a scheduler address"]),
    ('address = "tcp://gpu-box"', ["'tcp://gpu-box' is not a scheduler address"]),
    ('address = "http://gpu-box:8786"', ["is not a scheduler address"]),
    ('address = "tcp://h:8786"\nin_flight_per_worker = 0', ["in_flight_per_worker"]),
    ('address = "tls://h:8786"\ntls_ca_file = "ca.pem"', ["needs tls_ca_file, tls_cert and "
                                                          "tls_key"]),
    ('address = "tcp://h:8786"\ntls_cert = "me.pem"', ["tls_* keys are set", "tls://"]),
    ('adress = "tcp://h:8786"', ["unknown key 'adress'", "'address'"]),
])
def test_a_bad_cluster_section_is_one_clear_error(tmp_path: Path, text: str,
                                                  needles: list[str]) -> None:
    path = write_config(tmp_path, f"[cluster]\n{text}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and "[cluster]" in message
    for needle in needles:
        assert needle in message


def test_without_the_section_the_engine_is_never_imported(tmp_path: Path) -> None:
    """The whole product, imported and its daemon started and stopped, loads no Dask."""
    config = write_config(tmp_path, f'[folders]\ninputs = "{(tmp_path / "in").as_posix()}"\n'
                                    f'outputs = "{(tmp_path / "out").as_posix()}"\n'
                                    f'[daemon]\nstate_dir = "{(tmp_path / "s").as_posix()}"\n'
                                    '[models]\nload_at_start = false\n')
    code = ("import sys, daemon, daemon.api, daemon.worker, service.cli, viewer.server\n"
            "from daemon import Daemon, load_config\n"
            f"d = Daemon(load_config({str(config)!r})); d.start(); d.stop()\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('distributed', 'dask', 'daemon')))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = done.stdout.strip().splitlines()[-1]
    assert "'daemon.worker'" in loaded  # the check sees modules at all
    assert "distributed" not in loaded and "'dask" not in loaded
    assert "daemon.cluster" not in loaded and "daemon.remote" not in loaded


def test_a_missing_engine_is_reported_with_the_address_and_the_fix(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the extra were not installed
    problems = Problems()
    cluster = Cluster(ClusterConfig(address="tcp://10.1.2.3:8786"), problems)
    assert cluster.client() is None and cluster.capacity() == 0  # no slot sends a photo
    (line,) = problems.lines()
    assert line.startswith("cluster: cannot use the cluster at tcp://10.1.2.3:8786: the Dask "
                           "engine is not installed (distributed is missing)")
    assert 'pip install -e ".[cluster]"' in line

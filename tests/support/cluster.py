"""A real Dask cluster on this machine for the cluster tests: a `dask scheduler` and
`sharp-watch cluster-worker` subprocesses on loopback, with tiny models on the CPU.

- `free_port()`: a loopback port nobody listens on now.
- `LocalCluster(folder, depth_dir, address)`: `start_scheduler()`, `start_worker()`
  (each worker's SHARP double is `tests.daemon.test_crash:build_slow`: every forward
  touches `forward-<pid>-<ns>` in `marker`, then sleeps `delay` seconds),
  `wait_for_workers(n)`, `forwards()` (pid -> forwards seen), `stop()`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.conftest import stop_process, wait_for

REPO = Path(__file__).resolve().parents[2]
SLOW_SHARP = "tests.daemon.test_crash:build_slow"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalCluster:
    """Scheduler and worker processes of one test module, all stopped by `stop()`."""

    def __init__(self, folder: Path, depth_dir: Path, delay: float = 0.5) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.marker = folder / "marker"
        self.delay = delay
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.config = folder / "worker.toml"
        self.config.write_text(f'[models]\ndevice = "cpu"\ndepth_model = "{depth_dir.as_posix()}"'
                               f'\nsharp_factory = "{SLOW_SHARP}"\n'
                               '[defaults]\ndepth_source = "internal"\n', encoding="utf-8")

    def _env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(REPO), "SLOW_SHARP_MARKER": str(self.marker),
                "SLOW_SHARP_SECONDS": str(self.delay)}

    def _log(self, name: str) -> int:
        return os.open(self.folder / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def start_scheduler(self) -> None:
        port = self.address.rsplit(":", 1)[1]
        log = self._log("scheduler")
        self.scheduler = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
             "--port", port, "--no-dashboard"], env=self._env(), stdout=log,
            stderr=subprocess.STDOUT)
        os.close(log)

    def start_worker(self) -> subprocess.Popen[bytes]:
        log = self._log(f"worker-{len(self.workers)}")
        worker = subprocess.Popen(
            [sys.executable, "-m", "service", "cluster-worker", "--scheduler", self.address,
             "--device", "cpu", "--host", "127.0.0.1", "--config", str(self.config)],
            env=self._env(), stdout=log, stderr=subprocess.STDOUT)
        os.close(log)
        self.workers.append(worker)
        return worker

    def wait_for_workers(self, count: int, timeout: float = 120.0) -> None:
        """Until `count` workers are registered with the scheduler (or fail with the logs)."""
        from distributed import Client

        with Client(self.address, timeout=60, set_as_default=False) as client:
            if not wait_for(lambda: len(client.scheduler_info(n_workers=-1)["workers"]) >= count,
                            timeout):
                raise AssertionError(f"{count} workers did not join; logs:\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.folder.glob("*.log")))

    def forwards(self) -> Counter[int]:
        """SHARP forwards started, by worker process id."""
        names = [p.name for p in self.marker.iterdir()] if self.marker.is_dir() else []
        return Counter(int(name.split("-")[1]) for name in names)

    def stop(self) -> None:
        for process in [*self.workers, self.scheduler]:
            if process is not None:
                stop_process(process)

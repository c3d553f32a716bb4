"""The daemon's side of a cluster: one connection to the Dask scheduler, shared by slots.

With `[cluster]` the GPU stage of each photo runs on a remote worker (`daemon.remote`);
this daemon still owns the journal, the depth cache and the outputs and writes a result
only once the photo's future has resolved, so a worker lost mid-photo (its task is run
again elsewhere by the scheduler) never writes anything twice. The daemon keeps
`in_flight_per_worker x max_workers` slots (`DaskStage`, a `daemon.stage.Stage`, each
with its own `Worker`); a slot claims photos only while enough GPU workers are
connected (`Cluster.capacity`), so a big drop waits in the journal, not in memory.

The engine (`distributed`, the `cluster` extra) is imported on the first connection,
never without the section. Missing, or a scheduler that cannot be reached: the problem
is reported (status and log, naming the address and the fix), photos stay queued, and
the connection is tried again until it comes up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError
from typing import TYPE_CHECKING, Any

from loguru import logger

from pipeline import LoadedImage, ModelError
from pipeline.depth.external import read_npy_for
from pipeline.depth.sources import MODEL_SOURCES
from pipeline.errors import install_hint
from pipeline.settings import DepthSettings

from .config import ClusterConfig, Config
from .depth_cache import DepthCache
from .jobs import Job
from .results import Models
from .sidecar import depth_root
from .stage import Interrupted, StageOutput
from .status import Backoff, Problems

if TYPE_CHECKING:
    from distributed import Client

    from .remote import CachedDepth, PhotoReply, PhotoRequest

PROBLEM = "cluster"
"""The name cluster trouble is reported under in `Status.problems`."""
CAPACITY_REFRESH_S = 1.0
PHOTO_MAX = "2GB"


def security_of(cluster: ClusterConfig | None, address: str) -> Any:
    """Dask's TLS settings for a `tls://` address (None for `tcp://`): this machine's
    certificate, as client and as worker, signed by the cluster's CA."""
    if not address.startswith("tls://"):
        return None
    if cluster is None or None in (cluster.tls_ca_file, cluster.tls_cert, cluster.tls_key):
        raise ValueError(f"{address} is tls://: set tls_ca_file, tls_cert and tls_key in "
                         "[cluster] of the config (docs/cluster.md#security)")
    from distributed.security import Security

    ca, cert, key = str(cluster.tls_ca_file), str(cluster.tls_cert), str(cluster.tls_key)
    return Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key,
                    tls_worker_cert=cert, tls_worker_key=key, require_encryption=True)


MAX_DROPS = 3
"""Times the scheduler may drop one photo's task (cancelled or lost, its worker and the
connection fine) before the photo fails saying so."""


class Dropped(Exception):
    """The scheduler cancelled or lost a photo's task: it is sent again."""


class Cluster:
    """The Dask client, (re)connected on demand; thread-safe, shared by all slots."""

    def __init__(self, config: ClusterConfig, problems: Problems) -> None:
        self.config = config
        self.problems = problems
        self.stopping = threading.Event()
        """Set when the daemon stops: a photo not yet started is given back."""
        self.keys: dict[str, str] = {}
        """Depth cache keys the workers made raw depths under, by source (the daemon may
        not have the weights to compute them itself)."""
        self._lock = threading.Lock()
        self._client: Client | None = None
        self._capacity = (0, 0.0)
        self._backoff = Backoff()
        self._active = 0  # photos being sent or waited for
        self._next_try = 0.0

    def client(self) -> Client | None:
        """The connected client, or None (reported) while the scheduler cannot be reached."""
        with self._lock:
            if self._client is not None and self._client.status == "running":
                return self._client
            if time.monotonic() < self._next_try or self.stopping.is_set():
                return None
            self._close()
            try:
                self._client = self._connect()
            except Exception as exc:
                self._next_try = time.monotonic() + self._backoff.next()
                self.problems.report(PROBLEM, self._unreachable(exc))
                return None
            self._backoff.reset()
            self.problems.clear(PROBLEM)
            logger.info("connected to the Dask scheduler at {}", self.config.address)
            return self._client

    def _connect(self) -> Client:
        try:
            import dask
            from distributed import Client
        except ImportError as exc:
            raise ImportError(f"the Dask engine is not installed ({exc.name} is missing); "
                              f"{install_hint('cluster')}") from None
        # A photo travels inside its task (so another worker can run it if one is lost):
        # tens of MB by design, not the mistake Dask's warning is about.
        dask.config.set({"distributed.admin.large-graph-warning-threshold": PHOTO_MAX})
        # Results come straight from the worker, not through the scheduler: half the hops
        # (bench/cluster.py); the daemon must reach the workers' ports (docs/cluster.md).
        return Client(self.config.address, timeout=self.config.connect_timeout_seconds,
                      security=security_of(self.config, self.config.address),
                      set_as_default=False, direct_to_workers=True)

    def _unreachable(self, exc: Exception) -> str:
        if isinstance(exc, ImportError):
            return f"cannot use the cluster at {self.config.address}: {exc}"
        return (f"cannot reach the Dask scheduler at {self.config.address} ({type(exc).__name__}"
                f": {exc}); photos wait in the queue. Start it there (`dask scheduler --port "
                "PORT`) and a GPU worker (`sharp-watch cluster-worker --scheduler ADDRESS`), "
                "or fix [cluster] address in the config (docs/cluster.md)")

    def _close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            try:
                client.close(timeout=2)
            except Exception:  # a client whose scheduler went away may fail to close
                logger.debug("closing the old Dask client failed", exc_info=True)

    def capacity(self) -> int:
        """How many photos may be in flight now: `in_flight_per_worker` per GPU worker."""
        count, when = self._capacity
        if time.monotonic() - when < CAPACITY_REFRESH_S:
            return count
        client = self.client()
        workers = 0
        if client is not None:
            try:
                info = client.scheduler_info(n_workers=-1)["workers"].values()
                workers = sum(1 for w in info if w.get("resources", {}).get("GPU", 0) >= 1)
            except Exception as exc:
                logger.debug("no worker list from the scheduler ({!r})", exc)
        count = min(workers, self.config.max_workers) * self.config.in_flight_per_worker
        self._capacity = (count, time.monotonic())
        return count

    def run(self, request: PhotoRequest) -> PhotoReply:
        """The photo's reply from whichever worker the scheduler gives it to (again, if
        that worker is lost), waiting out a lost scheduler; `Interrupted` when stopping."""
        with self._lock:
            self._active += 1
        try:
            return self._run(request)
        finally:
            with self._lock:
                self._active -= 1
            self._close_if_stopped()

    def _run(self, request: PhotoRequest) -> PhotoReply:
        from .remote import GPU_RESOURCE, run_photo

        drops = 0
        while True:
            client = self.client()
            if client is None:
                if self.stopping.wait(0.5):
                    raise Interrupted
                continue
            try:
                future = client.submit(run_photo, request, resources={GPU_RESOURCE: 1},
                                       pure=False)
            except Exception as exc:
                self._lost(client, exc)
                continue
            try:
                return self._wait(future)
            except Interrupted:
                future.cancel()
                raise
            except Dropped as exc:
                drops += 1
                if drops >= MAX_DROPS:
                    raise ModelError(f"{exc}, {drops} times; see the scheduler's log") from None
                logger.warning("{}; sending it again", exc)
            except Exception as exc:
                if client.status == "running" and not _connection_error(exc):
                    raise _failure(exc) from exc
                self._lost(client, exc)

    def _wait(self, future: Any) -> PhotoReply:
        """The future's result, checking now and then whether the daemon is stopping (a
        photo in progress is waited for, like a local one; one still queued there is not).

        Waited for with a callback, then read once: `result(timeout=...)` in a loop could
        meet a task the scheduler cancelled, which distributed's `sync` then raises as an
        `UnboundLocalError` (it catches `Exception`, and asyncio's `CancelledError` is not
        one), failing a good photo. A task cancelled or lost there is `Dropped` instead."""
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        while not done.wait(0.5):
            if self.stopping.is_set() and future.status == "pending" and not _running(future):
                raise Interrupted
        if future.status in ("cancelled", "lost"):
            raise Dropped(f"the Dask scheduler dropped the photo's task ({future.status})")
        reply: PhotoReply = future.result()
        return reply

    def _lost(self, client: Client, exc: Exception) -> None:
        self.problems.report(PROBLEM, f"lost the Dask scheduler at {self.config.address} "
                             f"({type(exc).__name__}: {exc}); the photo is sent again once "
                             "it is back")
        with self._lock:
            if self._client is client:
                self._close()

    def stop(self) -> None:
        """Give back photos not yet started; close the connection once none is waited for."""
        self.stopping.set()
        self._close_if_stopped()

    def _close_if_stopped(self) -> None:
        with self._lock:
            if self.stopping.is_set() and self._active == 0:
                self._close()


def _running(future: Any) -> bool:
    """Whether the scheduler has the future's task running on a worker now (best effort)."""
    try:
        processing = future.client.processing()
    except Exception:
        return False
    return any(future.key in keys for keys in processing.values())


def _connection_error(exc: Exception) -> bool:
    from distributed.comm import CommClosedError

    return isinstance(exc, (CancelledError, CommClosedError, OSError, TimeoutError))


def _failure(exc: Exception) -> Exception:
    """A task failure as the daemon reports it: workers that kept dying on the photo are a
    model failure of this photo; anything else is raised as it came."""
    from distributed.scheduler import KilledWorker

    if isinstance(exc, KilledWorker):
        return ModelError(f"the GPU workers running it were lost too many times ({exc}); "
                          "see their logs")
    return exc


def cluster_stages(config: Config, cache: DepthCache, problems: Problems) -> list[DaskStage]:
    """One stage per photo that may be in flight: `in_flight_per_worker x max_workers`,
    sharing one connection."""
    assert config.cluster is not None
    cluster = Cluster(config.cluster, problems)
    return [DaskStage(cluster, slot, config, cache)
            for slot in range(config.cluster.in_flight_per_worker * config.cluster.max_workers)]


class DaskStage:
    """One in-flight slot (`daemon.stage.Stage`): a photo at a time sent to whichever GPU
    worker the scheduler picks; the depth cache, the `.npy` and the results stay here.
    Nothing is loaded in this process (`load` and `unload` do nothing)."""

    overlap = False  # the slots overlap each other; each slot's worker writes in turn

    def __init__(self, cluster: Cluster, slot: int, config: Config, cache: DepthCache) -> None:
        self.cluster = cluster
        self.slot = slot
        self.config = config
        self.cache = cache
        self.label = f"cluster slot {slot + 1}"
        self._models: dict[str, Models] = {}

    @property
    def loaded(self) -> bool:
        return False

    def load(self, sources: tuple[str, ...]) -> None:
        """The GPU workers load their models when they start (`sharp-watch cluster-worker`)."""

    def unload(self) -> None:
        """Nothing is loaded here."""

    def vram_used_mb(self) -> float | None:
        return None

    def ready(self) -> bool:
        """Whether this slot may take a photo now (enough GPU workers are connected)."""
        return self.slot < self.cluster.capacity()

    def stop(self) -> None:
        self.cluster.stop()

    def models(self, settings: DepthSettings) -> Models:
        """The models the last photo's source ran with on its worker (the worker writes
        each photo before it runs the next on this slot)."""
        return self._models[settings.depth_source]

    def run(self, job: Job, image: LoadedImage,
            progress: Callable[[str], None]) -> StageOutput:
        """The photo's Gaussians (or compare runs) from a remote worker; raises the
        pipeline's error for the photo as a local run would, `Interrupted` when stopping."""
        from .remote import request_for

        settings = job.settings
        if not settings.compare:  # the preview needs SHARP's own depth too
            want = settings.save_internal_depth or self.config.daemon.preview
            settings = settings.replace(save_internal_depth=want)
        npy = None
        if "npy" in settings.sources:
            assert settings.external_depth is not None
            npy = read_npy_for(settings.external_depth, job.photo,
                               depth_root(settings.external_depth, self.config.inputs))
        keep = tuple(s for s in self.config.defaults.sources if s in MODEL_SOURCES)
        # Not a stage that can take this process down (`journal.CRASH_STAGES`): a daemon
        # interrupted while it waits never gives the photo up for it.
        progress("remote")
        started = time.perf_counter()
        reply = self.cluster.run(request_for(image, settings, self._cached(job), npy, keep))
        reply.raise_error(job.photo, npy.path if npy is not None else None)
        for source, (key, raw) in reply.new_depths.items():
            self.cluster.keys[source] = key
            self.cache.put(job.photo_hash, key, raw)
        self._models = reply.models
        out = StageOutput(cache_hit=reply.cache_hit)
        if reply.compare:
            out.compare = reply.runs()
            for run in out.compare:
                for name, seconds in run.timings.items():
                    out.timings[name] = out.timings.get(name, 0.0) + seconds
        else:
            out.result = reply.result()
            out.timings.update(out.result.timings)
        out.timings["cluster"] = time.perf_counter() - started - sum(out.timings.values())
        logger.debug("{} ran on {}", job.photo.name, reply.worker)
        return out

    def _cached(self, job: Job) -> dict[str, CachedDepth]:
        """The raw depths this daemon has for the photo, under the keys workers use."""
        found = {}
        for source in job.settings.sources:
            key = self.cluster.keys.get(source)
            raw = self.cache.get(job.photo_hash, key) if key is not None else None
            if key is not None and raw is not None:
                found[source] = (key, raw)
        return found

"""`sharp-watch cluster-worker`: lend one GPU of this machine to a sharp-watch cluster.

Starts one Dask worker (one thread, custom resource `GPU=1`, so it runs one photo at a
time) with the models loaded once on `--device` before it joins the scheduler; the
daemon that watches the folder sends it photos (docs/cluster.md). One command per GPU.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

from pipeline.errors import PipelineError, install_hint

from .text import say, warn


def add_parser(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "cluster-worker", parents=[common],
        help="lend one GPU of this machine to a sharp-watch cluster (docs/cluster.md)",
        description="Start a Dask worker that holds the models on one device and runs the "
                    "photos the watching daemon sends it, one at a time. Run one per GPU. "
                    "Models come from [models] of --config (device from --device); TLS "
                    "certificates from its [cluster] tls_* keys.")
    p.add_argument("--scheduler", required=True, metavar="ADDRESS",
                   help="the scheduler, tcp://HOST:8786 (tls://HOST:8786 with TLS)")
    p.add_argument("--device", default=None,
                   help="where the models run: cuda:0, cuda:1, cpu (default: the first of "
                        "[models] device)")
    p.add_argument("--worker-port", type=int, default=0, metavar="PORT",
                   help="the port this worker listens on (fix it to open it in a firewall); "
                        "default: any free port")
    p.add_argument("--host", default=None,
                   help="the address the scheduler and daemon reach this worker at "
                        "(default: this machine's address towards the scheduler)")
    p.add_argument("--name", default=None, help="the worker's name on the dashboard")


def serve(config: Any, args: argparse.Namespace) -> int:
    """Load the models, then serve them to the scheduler until stopped (Ctrl+C)."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        warn(f"error: the Dask engine is not installed; {install_hint('cluster')}")
        return 2
    from daemon.cluster import security_of
    from daemon.remote import GPU_RESOURCE, ModelsPlugin
    from pipeline import Pipeline
    from pipeline.depth.sources import MODEL_SOURCES

    pipe = Pipeline(config.model_settings(args.device))
    try:
        pipe.load(tuple(s for s in config.defaults.sources if s in MODEL_SOURCES))
    except PipelineError as exc:
        warn(f"error: models could not be loaded: {exc}")
        return 1
    security = security_of(config.cluster, args.scheduler)
    say(f"models loaded on {pipe.device}; joining {args.scheduler}")
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C: the scheduler reschedules
        asyncio.run(_work(args, ModelsPlugin(pipe), GPU_RESOURCE, security))
    return 0


async def _work(args: argparse.Namespace, plugin: Any, resource: str, security: Any) -> None:
    from distributed import Worker

    async with Worker(args.scheduler, nthreads=1, resources={resource: 1}, plugins=(plugin,),
                      host=args.host, port=args.worker_port or None, name=args.name,
                      security=security) as worker:
        say(f"worker {worker.address} is serving {plugin.pipe.device} to {args.scheduler}")
        await worker.finished()

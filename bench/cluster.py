"""What sending a photo to a remote GPU worker costs, next to running it in this process.

    python bench/cluster.py [--photos 10] [--size 4032x3024] [--gaussians 1179648]

Starts a real Dask scheduler and one worker process on loopback (resource GPU=1, as
`sharp-watch cluster-worker` does) and times, per photo, the daemon's cluster path
without the models: the request (the decoded photo as a uint8 array and its settings)
is serialised and sent, the worker answers with a reply as the real one is made
(`daemon.remote.pack_prediction` of a prediction with `--gaussians` Gaussians, SHARP's
1,179,648 by default), and the daemon turns it back into a `Prediction`
(`PhotoReply.result`). The local path runs the same stand-in function in this process.
Prints the medians of each and their difference, the cluster overhead per photo
(target < 0.5 s), and how much of it is (de)serialisation alone.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daemon.cluster import PHOTO_MAX
from daemon.remote import GPU_RESOURCE, PhotoReply, PhotoRequest, pack_prediction, request_for
from pipeline import DepthSettings, Gaussians, LoadedImage, Prediction

TARGET_S = 0.5


def stand_in(request: PhotoRequest, gaussians: int) -> PhotoReply:
    """The worker's side without models: a reply as `run_photo` packs one."""
    height, width = request.rgb.shape[:2]
    tensors = Gaussians(*(torch.full((1, gaussians, k), 0.5) for k in (3, 3, 4, 3)),
                        torch.full((1, gaussians), 0.5))
    depth = np.ones((1536, 1536), dtype=np.float32)
    prediction = Prediction(gaussians=tensors, f_px=1000.0, focal_origin="exif",
                            image_size=(width, height), depth_source="depth-pro",
                            depth_format=None, depth_model="bench", depth_range_m=(1.0, 1.0),
                            used_depth=depth, internal_depth=None)
    return PhotoReply(prediction=pack_prediction(prediction), worker="bench")


def _request(width: int, height: int) -> PhotoRequest:
    rgb = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return request_for(LoadedImage(Path("bench.jpg"), rgb, 26.0), DepthSettings(), {}, None, ())


def _pickled(value: object) -> float:
    """Seconds to serialise and read back `value` as Dask does (pickle 5, buffers apart)."""
    start = time.perf_counter()
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    pickle.loads(data, buffers=buffers)
    return time.perf_counter() - start


def _median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=10)
    parser.add_argument("--size", default="4032x3024", help="photo WxH")
    parser.add_argument("--gaussians", type=int, default=1_179_648)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    request = _request(width, height)

    import dask
    from distributed import Client, LocalCluster

    local, remote, encode = [], [], []
    dask.config.set({"distributed.admin.large-graph-warning-threshold": PHOTO_MAX})
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      resources={GPU_RESOURCE: 1}, dashboard_address=None) as cluster, \
            Client(cluster, set_as_default=False, direct_to_workers=True) as client:
        for i in range(args.photos + 1):  # the first of each is a warm-up
            start = time.perf_counter()
            stand_in(request, args.gaussians).result()
            here = time.perf_counter() - start
            start = time.perf_counter()
            future = client.submit(stand_in, request, args.gaussians,
                                   resources={GPU_RESOURCE: 1}, pure=False)
            result = future.result().result()
            there = time.perf_counter() - start
            del future
            assert result.gaussians.mean_vectors.shape == (1, args.gaussians, 3)
            if i:
                local.append(here)
                remote.append(there)
                encode.append(_pickled(request) + _pickled(stand_in(request, args.gaussians)))
    overhead = statistics.median(remote) - statistics.median(local)
    reply_mb = (args.gaussians * 14 * 4 + 1536 * 1536 * 4) / 1e6
    print(f"Photo {width}x{height} RGB ({request.rgb.nbytes / 1e6:.0f} MB there), "
          f"{args.gaussians} Gaussians and the used depth ({reply_mb:.0f} MB back); loopback, "
          f"one worker process (results direct to the client); median of {args.photos} photos")
    print(f"| local path (same stand-in, this process) | {_median_ms(local)} |")
    print(f"| cluster path (submit -> Prediction back) | {_median_ms(remote)} |")
    print(f"| of which (de)serialising request + reply | {_median_ms(encode)} |")
    print(f"cluster overhead per photo: {overhead * 1000:.0f} ms (target < "
          f"{TARGET_S * 1000:.0f} ms)")
    print("targets met" if overhead < TARGET_S else "targets MISSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a second worker buys: a daemon's throughput with one worker and with two.

    python bench/workers.py [--photos 6] [--grid 1536] [--size 640x480]

Runs the daemon with `[models] device = ["cpu"]`, then `["cpu", "cpu"]`, each worker
limited to one CPU thread (as one GPU each would be: two workers, two devices), drops
the same number of new photos into each (after a warm-up photo per worker) and times
drop -> last PLY. Prints photos/s for 1 and 2 workers and their ratio, from one run.
Target >= 1.7x (with two free cores; a shared machine shows less). Models: the SHARP
test double at SHARP's internal grid (`--grid`, default 1536: 1.18 M Gaussians a
photo, a real PLY to write) with SHARP's own depth; no download, no GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # every thread's first value, workers' too

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import daemon.stage
from daemon import Config, Daemon
from daemon.config import DaemonConfig, FolderConfig, ModelConfig
from pipeline import DepthSettings
from tests.support.sharp_double import SharpDouble, build

STABLE_SECONDS = 0.1
GRID = [1536]  # set from --grid before the daemons start


def double() -> SharpDouble:
    """The SHARP double at `--grid` (the config's `sharp_factory` is `__main__:double`)."""
    return build(GRID[0])


def one_thread_per_worker() -> list[int]:
    """Make every stage run on one thread, and record the thread count each one saw."""
    seen: list[int] = []
    real = daemon.stage.LocalStage.run

    def run(self, job, image, progress):  # type: ignore[no-untyped-def]
        torch.set_num_threads(1)
        seen.append(torch.get_num_threads())
        return real(self, job, image, progress)

    daemon.stage.LocalStage.run = run  # type: ignore[method-assign]
    return seen


def _photo(path: Path, width: int, height: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def _config(root: Path, workers: int) -> Config:
    return Config(folders=FolderConfig(root / "inputs", root / "outputs"),
                  models=ModelConfig(device=("cpu",) * workers, sharp_factory="__main__:double"),
                  defaults=DepthSettings(depth_source="internal"),
                  daemon=DaemonConfig(stable_seconds=STABLE_SECONDS, preview=False,
                                      depth_cache_mb=0, state_dir=root / "state"))


def _drop(d: Daemon, photos: list[Path], inputs: Path) -> float:
    """Seconds from dropping `photos` into `inputs` to the last one's PLY."""
    done: list[float] = []
    d.subscribe(lambda event: done.append(time.perf_counter()))
    start = time.perf_counter()
    for photo in photos:
        os.replace(photo, inputs / photo.name)
    while len(done) < len(photos):
        time.sleep(0.01)
    seconds = done[len(photos) - 1] - start
    d.wait_until_idle(60)
    return seconds


def photos_per_second(root: Path, workers: int, photos: int, size: tuple[int, int]) -> float:
    config = _config(root, workers)
    staging = root / "staging"
    staging.mkdir(parents=True)
    warm = [_photo(staging / f"warm{i}.jpg", *size, 100 + i) for i in range(workers)]
    drops = [_photo(staging / f"drop{i}.jpg", *size, i) for i in range(photos)]
    d = Daemon(config)
    d.start()
    try:
        _drop(d, warm, config.inputs)  # models loaded and warmed up on every worker
        seconds = _drop(d, drops, config.inputs)
    finally:
        d.stop()
    return photos / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=6)
    parser.add_argument("--grid", type=int, default=1536, help="the SHARP double's grid")
    parser.add_argument("--size", default="640x480", help="photo size WxH")
    args = parser.parse_args()
    GRID[0] = args.grid
    width, height = (int(v) for v in args.size.split("x"))
    threads = one_thread_per_worker()
    with tempfile.TemporaryDirectory() as tmp:
        one = photos_per_second(Path(tmp) / "one", 1, args.photos, (width, height))
        two = photos_per_second(Path(tmp) / "two", 2, args.photos, (width, height))
    print(f"models: SHARP double at {args.grid}x{args.grid} on CPU, SHARP's own depth; "
          f"{args.photos} photos of {width}x{height}; {os.cpu_count()} CPU cores; "
          f"threads per worker: {max(threads)}")
    print(f"1 worker:   {one:.3f} photos/s")
    print(f"2 workers:  {two:.3f} photos/s")
    print(f"ratio:      {two / one:.2f}x  (target >= 1.7 with two free cores)")


if __name__ == "__main__":
    main()

"""What the daemon costs on top of the pipeline, and what the depth cache saves.

    python bench/daemon_overhead.py [--photos 20] [--size 640x480] [--full]

With the models resident and warmed up (on the thread that runs them), times the
pipeline itself per photo (decode, depth, SHARP, PLY write: `Pipeline.run` +
`write_ply`; the faster of a run before and one after the daemon's, so the ratio is not
flattered), then drops the same number of new photos into a running (warmed-up) daemon
and times drop -> PLY. Prints, from one run:
- steady-state ratio: daemon seconds per photo (median gap between consecutive PLYs)
  over the pipeline's seconds per photo (median). Target <= 1.10. Medians, because a
  shared CPU makes single runs jumpy. Also the same as a CPU-time ratio (process CPU
  seconds per photo, watcher and writer threads included), which load hardly moves.
- end-to-end ratio: drop -> last PLY over N x pipeline seconds; this also pays the
  one-off `stable_seconds` wait before the first photo is read.
- retune speed-up: one photo's compute time (its report's timings) on first run over
  its time after a sidecar edit, when Depth Pro's output comes from the depth cache.
Default: tiny random models on CPU (tests/support/tiny_models.py, the SHARP test double).
`--full`: the real Depth Pro and SHARP on the default device (a GPU machine).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daemon import Config, Daemon
from daemon.config import DaemonConfig, FolderConfig, ModelConfig
from daemon.results import timestamped_path
from pipeline import DepthSettings, Pipeline, write_ply

STABLE_SECONDS = 0.2
WARM_UP_RUNS = 10  # CPU kernels for a new input size take several runs to settle


def _photo(path: Path, width: int, height: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def _config(root: Path, full: bool) -> Config:
    if full:
        models = ModelConfig(load_at_start=True)
    else:
        from tests.support.tiny_models import save_tiny_depth_pro

        depth = save_tiny_depth_pro(root / "tiny-depth-pro")
        models = ModelConfig(device="cpu", depth_model=str(depth),
                             sharp_factory="tests.support.sharp_double:build")
    return Config(folders=FolderConfig(root / "inputs", root / "outputs"), models=models,
                  defaults=DepthSettings(),
                  daemon=DaemonConfig(stable_seconds=STABLE_SECONDS, preview=False,
                                      depth_cache_mb=512, state_dir=root / "state"))


def pipeline_seconds(pipe: Pipeline, warm: Path, photos: list[Path],
                     out: Path) -> tuple[float, float]:
    """Median wall seconds and mean CPU seconds per photo for the bare pipeline.

    Runs on one fresh thread, as the daemon's worker does, and warms up on that same
    thread first: on a CPU, torch's first runs on a new thread are several times slower.
    """
    out.mkdir(exist_ok=True)
    seconds: list[float] = []
    cpu: list[float] = []

    def one(photo: Path) -> None:
        result = pipe.run(photo, DepthSettings())
        write_ply(timestamped_path(out, photo.stem, ".ply"), result.gaussians, result.f_px,
                  result.image_size)

    def work() -> None:
        for _ in range(WARM_UP_RUNS):
            one(warm)
        cpu.append(time.process_time())
        for photo in photos:
            start = time.perf_counter()
            one(photo)
            seconds.append(time.perf_counter() - start)
        cpu.append(time.process_time())

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    return float(np.median(seconds)), (cpu[1] - cpu[0]) / len(photos)


def daemon_times(daemon: Daemon, photos: list[Path],
                 inputs: Path) -> tuple[float, list[float], float]:
    """Drop time, the time each PLY appeared, and CPU seconds per photo for it all."""
    done: list[float] = []
    listening = [True]
    daemon.subscribe(lambda event: done.append(time.perf_counter()) if listening[0] else None)
    cpu = time.process_time()
    dropped = time.perf_counter()
    for photo in photos:
        os.replace(photo, inputs / photo.name)
    while len(done) < len(photos):
        time.sleep(0.005)
    listening[0] = False
    return dropped, sorted(done), (time.process_time() - cpu) / len(photos)


def retune_speedup(daemon: Daemon, config: Config, photo: Path) -> float:
    def compute(report: Path) -> float:
        timings = json.loads(report.read_text())["timings_s"]
        return sum(timings.values())

    before = len(list(config.outputs.glob(f"{photo.stem}_*.json")))
    (config.inputs / f"{photo.stem}.toml").write_text("depth_scale = 0.8\n")
    while len(list(config.outputs.glob(f"{photo.stem}_*.json"))) == before:
        time.sleep(0.01)
    daemon.wait_until_idle(60)
    first, second = sorted(config.outputs.glob(f"{photo.stem}_*.json"),
                           key=lambda p: p.stat().st_mtime_ns)[-2:]
    return compute(first) / compute(second)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=20)
    parser.add_argument("--size", default="640x480", help="photo size WxH")
    parser.add_argument("--full", action="store_true", help="real models (GPU machine)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = _config(root, args.full)
        pipe = Pipeline(config.model_settings())
        pipe.load()
        warm = _photo(root / "warm.jpg", width, height, 999)
        bare = [_photo(root / f"bare{i}.jpg", width, height, i) for i in range(args.photos)]
        per_photo, cpu_photo = pipeline_seconds(pipe, warm, bare, root / "bare-out")

        staging = root / "staging"
        staging.mkdir()
        drops = [_photo(staging / f"drop{i}.jpg", width, height, 1000 + i)
                 for i in range(args.photos)]
        warm_drops = [_photo(staging / f"warm{i}.jpg", width, height, 2000 + i)
                      for i in range(WARM_UP_RUNS)]
        daemon = Daemon(config, pipe)
        daemon.start()
        try:
            daemon_times(daemon, warm_drops, config.inputs)  # warm up the worker thread
            daemon.wait_until_idle(60)
            dropped, done, cpu_daemon = daemon_times(daemon, drops, config.inputs)
            daemon.wait_until_idle(60)
            speedup = retune_speedup(daemon, config, drops[0])
        finally:
            daemon.stop()
        again, cpu_again = pipeline_seconds(pipe, warm, bare, root / "bare-out")
        per_photo, cpu_photo = min(per_photo, again), min(cpu_photo, cpu_again)
    n = args.photos
    steady = float(np.median(np.diff(done)))
    print(f"models: {'real' if args.full else 'tiny (CPU)'}; {n} photos of {width}x{height}; "
          f"stable_seconds={STABLE_SECONDS}")
    print(f"pipeline per photo:          {per_photo:.4f} s")
    print(f"daemon per photo (steady):   {steady:.4f} s")
    print(f"steady-state ratio:          {steady / per_photo:.3f}  (target <= 1.10)")
    print(f"CPU-time ratio:              {cpu_daemon / cpu_photo:.3f}  "
          f"(process CPU s per photo, {cpu_daemon:.4f} / {cpu_photo:.4f})")
    print(f"end-to-end ratio:            {(done[-1] - dropped) / (n * per_photo):.3f}  "
          f"(includes the {STABLE_SECONDS} s stability wait)")
    print(f"retune speed-up (depth cache): {speedup:.2f}x")


if __name__ == "__main__":
    main()

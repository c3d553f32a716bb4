"""Time of `pipeline.gaussians.unproject` for one SHARP-sized scene, against its floor.

    python bench/unproject.py [--n 1179648] [--repeat 3] [--device cpu] [--threads N]

Prints, best of `--repeat`, the wall and CPU seconds of `unproject` and of the float64
eigensolver of the same metric covariances alone (`pipeline.gaussians.eigh`, one slice
per thread): the one step `unproject` cannot avoid, so the ratio of the two is its
overhead; and of torch's own batched `torch.linalg.eigh`, which runs on one thread. The
steps take turns, one run each per round, so load from other processes on a shared
machine falls on all alike.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.gaussians import Gaussians, covariances, eigh, unproject

SHARP_N = 2 * 768 * 768
F_PX = 3100.5
SIZE = (4032, 3024)


def random_gaussians(n: int, device: torch.device, seed: int = 0) -> Gaussians:
    """NDC Gaussians with SHARP's shapes and float32 dtype."""
    g = torch.Generator().manual_seed(seed)
    gaussians = Gaussians(
        mean_vectors=torch.randn(1, n, 3, generator=g),
        singular_values=torch.exp(torch.randn(1, n, 3, generator=g)) * 0.01,
        quaternions=torch.nn.functional.normalize(torch.randn(1, n, 4, generator=g), dim=-1),
        colors=torch.rand(1, n, 3, generator=g),
        opacities=torch.rand(1, n, generator=g),
    )
    return Gaussians(*(t.to(device) for t in gaussians))


def best_times(steps: dict[str, Callable[[], object]], device: torch.device,
               repeat: int) -> dict[str, tuple[float, float]]:
    """Best wall and CPU (user + system, all threads) seconds per step."""
    best = {name: (float("inf"), float("inf")) for name in steps}
    for _ in range(repeat):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            wall, cpu = time.perf_counter(), time.process_time()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=SHARP_N)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch's CPU threads (default: its own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    ndc = random_gaussians(args.n, device)
    width, height = SIZE
    diag = torch.tensor([width / (2 * F_PX), height / (2 * F_PX), 1.0],
                        dtype=torch.float64, device=device)
    metric_covariances = diag[:, None] * covariances(ndc) * diag[None, :]
    best = best_times({
        "unproject": lambda: unproject(ndc, F_PX, width, height),
        "eigh (float64, floor)": lambda: eigh(metric_covariances[0]),
        "torch.linalg.eigh": lambda: torch.linalg.eigh(metric_covariances),
    }, device, args.repeat)

    print(f"N = {args.n:,} Gaussians on {device}, {torch.get_num_threads()} threads, "
          f"best of {args.repeat}")
    for name, (wall, cpu) in best.items():
        print(f"  {name:<24} {wall:7.3f} s wall  {cpu:7.3f} s CPU")
    ratio = best["unproject"][0] / best["eigh (float64, floor)"][0]
    print(f"  unproject / eigh: {ratio:.2f}x")
    sliced = best["torch.linalg.eigh"][0] / best["eigh (float64, floor)"][0]
    print(f"  torch.linalg.eigh / sliced eigh: {sliced:.2f}x")


if __name__ == "__main__":
    main()

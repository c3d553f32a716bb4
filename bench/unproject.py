"""Time of `pipeline.gaussians.unproject` for one SHARP-sized scene, and of its eigensolver
against the batched `eigh` it replaced.

    python bench/unproject.py [--n 1179648] [--repeat 3] [--device cpu] [--threads N]

Prints, best of `--repeat`, the wall and CPU seconds of:
- `unproject`, all of it (float32 Gaussians in and out, as SHARP gives them);
- `covariance_eigen` on the same metric covariances, chunk by chunk as `unproject` runs
  it, in float64 and in float32 (`unproject` uses float64 on a CPU, float32 on a GPU);
- the eigensolver it replaced: `torch.linalg.eigh` in float64 with the batch sliced
  over torch's CPU threads (torch solves a batch one matrix after another, on one
  thread), and torch's own batched `torch.linalg.eigh` on one call;
with, for each, the largest error of the covariances rebuilt from its answer, relative
to each matrix's norm (for `unproject`: rebuilt from its float32 scales and quaternions).
Then the ratios. The steps take turns, one run each per round, so load from other
processes on a shared machine falls on all alike.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.eigensolver import covariance_eigen
from pipeline.gaussians import Gaussians, chunk_size, covariances, unproject

SHARP_N = 2 * 768 * 768
F_PX = 3100.5
SIZE = (4032, 3024)
OURS = "covariance_eigen, float64"
SLICED = "eigh float64, sliced"
TARGET_SPEEDUP = 5.0


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


def sliced_eigh(matrices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`unproject`'s former eigensolver: one slice of the batch per torch CPU thread."""
    slices = torch.get_num_threads()
    if matrices.device.type != "cpu" or slices < 2:
        return torch.linalg.eigh(matrices)
    with ThreadPoolExecutor(slices) as pool:
        parts = list(pool.map(torch.linalg.eigh, matrices.chunk(slices)))
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def chunked_eigen(rows: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`covariance_eigen` over `(6, n)` rows in `unproject`'s chunks, chunk by chunk."""
    return [covariance_eigen(part) for part in rows.split(chunk_size(rows.device), dim=1)]


def rebuilt_from_rows(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """`(n, 3, 3)` float64 matrices from `chunked_eigen`'s answer."""
    values = torch.cat([p[0] for p in parts], 1)
    largest, middle = torch.cat([p[1] for p in parts], 1).double().view(2, 3, -1)
    basis = torch.stack([largest, middle, torch.linalg.cross(largest, middle, dim=0)], 1)
    basis = basis.permute(2, 0, 1)
    return (basis * values.double().T[:, None, :]) @ basis.mT


def rebuilt_from_eigh(values: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    return (vectors * values[:, None, :]) @ vectors.mT


def relative_error(rebuilt: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest `|rebuilt - expected| / |expected|` (Frobenius norms), per matrix."""
    norms = expected.norm(dim=(-2, -1))
    return float(((rebuilt - expected).norm(dim=(-2, -1)) / norms).max())


def best_times(steps: dict[str, Callable[[], object]], device: torch.device,
               repeat: int) -> tuple[dict[str, tuple[float, float]], dict[str, object]]:
    """Best wall and CPU (user + system, all threads) seconds per step, and its last answer."""
    best = {name: (float("inf"), float("inf")) for name in steps}
    answers: dict[str, object] = {}
    for _ in range(repeat):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            wall, cpu = time.perf_counter(), time.process_time()
            answers[name] = step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best, answers


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
    matrices = (diag[:, None] * covariances(ndc) * diag[None, :])[0]
    rows = torch.stack([matrices[:, i, j] for i, j in
                        ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))])
    rows32 = rows.float()
    best, answers = best_times({
        "unproject": lambda: unproject(ndc, F_PX, width, height),
        OURS: lambda: chunked_eigen(rows),
        "covariance_eigen, float32": lambda: chunked_eigen(rows32),
        SLICED: lambda: sliced_eigh(matrices),
        "torch.linalg.eigh float64": lambda: torch.linalg.eigh(matrices),
    }, device, args.repeat)

    errors = {name: relative_error(rebuilt_from_rows(answer), matrices)  # type: ignore[arg-type]
              for name, answer in answers.items() if name.startswith("covariance_eigen")}
    errors |= {name: relative_error(rebuilt_from_eigh(*answer), matrices)  # type: ignore[misc]
               for name, answer in answers.items() if "eigh" in name}
    errors["unproject"] = relative_error(covariances(answers["unproject"])[0],  # type: ignore[arg-type]
                                         matrices)

    print(f"N = {args.n:,} Gaussians on {device}, {torch.get_num_threads()} threads, "
          f"best of {args.repeat}")
    print(f"  {'step':<28} {'wall s':>8} {'CPU s':>8}  max covariance error")
    for name, (wall, cpu) in best.items():
        print(f"  {name:<28} {wall:8.3f} {cpu:8.3f}  {errors[name]:.1e}")
    speedup = best[SLICED][0] / best[OURS][0]
    print(f"  sliced eigh / covariance_eigen (float64), wall: {speedup:.2f}x "
          f"(target {TARGET_SPEEDUP:.0f}x: {'met' if speedup >= TARGET_SPEEDUP else 'MISSED'}); "
          f"CPU: {best[SLICED][1] / best[OURS][1]:.2f}x")
    batched = best["torch.linalg.eigh float64"][0] / best[OURS][0]
    print(f"  torch.linalg.eigh / covariance_eigen (float64), wall: {batched:.2f}x")
    print(f"  unproject / covariance_eigen (float64), wall: "
          f"{best['unproject'][0] / best[OURS][0]:.2f}x")


if __name__ == "__main__":
    main()

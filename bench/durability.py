"""What durability costs per photo: the fsyncs of the result files, and the journal at
`synchronous=FULL` against `NORMAL` (issue 10).

    python bench/durability.py [--n 1179648] [--repeat 3] [--photos 20] [--dir DIR]

(a) One photo's result files (SHARP's PLY of `--n` Gaussians, the JSON report, a
1536 x 1536 depth preview PNG) written with `pipeline.atomic.atomic_write`, `durable=True`
(file fsync before the rename, folder fsync after) against `durable=False`. The bytes are
made once beforehand, so only the writing is timed.
(b) The journal's write transactions for one photo as the daemon makes them (hash store,
submit, claim, two stage marks, reserve_outputs, finish) on `daemon.journal.Journal`,
opened as the daemon opens it, with `PRAGMA synchronous` FULL against NORMAL.
Best of `--repeat`, the modes taking turns, in one run. fsync costs depend on the disk:
run it with `--dir` on the drive the outputs folder is on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ply_write import F_PX, SHARP_N, SIZE, random_gaussians
from daemon.journal import Journal
from daemon.outputs import preview_png
from pipeline.atomic import atomic_write
from pipeline.ply import ply_bytes

SYNCHRONOUS = {"NORMAL": 1, "FULL": 2}
GRID = 1536  # SHARP's depth grid: the preview's source size


def result_files(n: int) -> dict[str, bytes | Callable[[BinaryIO], None]]:
    """What one finished photo writes, as `atomic_write` takes it."""
    header, vertices, trailer = ply_bytes(random_gaussians(n), F_PX, SIZE)

    def ply(out: BinaryIO) -> None:
        out.write(header)
        out.write(np.ascontiguousarray(vertices, dtype="<f4").data.cast("B"))
        out.write(trailer)
    rng = np.random.default_rng(0)  # a smooth ramp with sensor-like noise: a typical PNG size
    depth = (np.linspace(0.5, 20.0, GRID * GRID, dtype=np.float32).reshape(GRID, GRID)
             + rng.normal(0.0, 0.2, (GRID, GRID)).astype(np.float32))
    report = {"photo": "photo.jpg", "settings": {"depth_scale": 1.0}, "gaussians": n,
              "files": ["photo.ply", "photo.json", "photo_depth.png"], "padding": "x" * 1500}
    return {"photo.ply": ply, "photo.json": json.dumps(report, indent=2).encode(),
            "photo_depth.png": preview_png(depth, np.stack([depth * 1.1, depth * 1.3]))}


def write_results(folder: Path, files: dict[str, bytes | Callable[[BinaryIO], None]],
                  durable: bool) -> float:
    start = time.perf_counter()
    for name, data in files.items():
        atomic_write(folder / name, data, durable=durable)
    return time.perf_counter() - start


def journal_photos(path: Path, synchronous: str, photos: int, start: int) -> float:
    """Seconds for `photos` photos' journal transactions at `synchronous`."""
    journal = Journal(path)
    try:
        journal._db.execute(f"PRAGMA synchronous={synchronous}")
        got = journal._db.execute("PRAGMA synchronous").fetchone()[0]
        assert got == SYNCHRONOUS[synchronous], f"synchronous is {got}, not {synchronous}"
        settings = json.dumps({"depth_scale": 1.0})
        begin = time.perf_counter()
        for i in range(start, start + photos):
            photo, digest, key = path.parent / f"photo{i}.jpg", f"{i:064x}", f"key{i}"
            journal.store_hash(photo, (i, 1000, 1, 1), digest)
            journal.submit(key, photo, digest, settings)
            journal.claim(key)
            journal.set_stage(key, "depth")
            journal.set_stage(key, "sharp")
            outputs = [str(path.parent / f"photo{i}_{s}") for s in (".ply", ".json", ".png")]
            journal.reserve_outputs(key, outputs)
            journal.finish(key, outputs, {"sharp": 1.0})
        return time.perf_counter() - begin
    finally:
        journal.close()


TRANSACTIONS = 7  # per photo in journal_photos


def mount_of(folder: Path) -> str:
    """The file system `folder` is on (Linux: from /proc/mounts), for the record."""
    try:
        mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "unknown file system"
    real = str(folder.resolve())
    best = max((m for m in mounts if real == m[0] or real.startswith(m[0].rstrip("/") + "/")),
               key=lambda m: len(m[0]), default=None)
    return f"{best[0]} ({best[1]})" if best else "unknown file system"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=SHARP_N, help="number of Gaussians")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    parser.add_argument("--photos", type=int, default=20, help="photos per journal run")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: temp)")
    args = parser.parse_args(argv)

    files = result_files(args.n)
    best = {"durable": float("inf"), "not durable": float("inf"),
            "FULL": float("inf"), "NORMAL": float("inf")}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        where = mount_of(folder)
        for round_ in range(args.repeat):
            for label, durable in (("durable", True), ("not durable", False)):
                best[label] = min(best[label], write_results(folder, files, durable))
            for mode in ("FULL", "NORMAL"):
                took = journal_photos(folder / f"journal-{mode}.sqlite3", mode, args.photos,
                                      round_ * args.photos)
                best[mode] = min(best[mode], took / args.photos)
        sizes = {name: (folder / name).stat().st_size for name in files}
    print(f"N = {args.n} Gaussians, PLY {sizes['photo.ply'] / 1e6:.1f} MB, report "
          f"{sizes['photo.json'] / 1e3:.1f} kB, preview {sizes['photo_depth.png'] / 1e3:.0f} kB; "
          f"best of {args.repeat}; {args.photos} photos per journal run; on {where}; "
          f"torch {torch.__version__}, {os.cpu_count()} CPUs")
    print("| per photo | durable | not durable | cost | ratio |")
    print("|---|---|---|---|---|")
    rows = (("result files (fsync vs none)", best["durable"], best["not durable"]),
            (f"journal, {TRANSACTIONS} transactions (FULL vs NORMAL)", best["FULL"],
             best["NORMAL"]))
    for label, slow, fast in rows:
        print(f"| {label} | {_ms(slow)} | {_ms(fast)} | +{_ms(max(slow - fast, 0.0))} | "
              f"{slow / fast:.2f}x |")
    total = best["durable"] + best["FULL"] - best["not durable"] - best["NORMAL"]
    print(f"durability in all: +{_ms(max(total, 0.0))} per photo")
    return 0


if __name__ == "__main__":
    sys.exit(main())

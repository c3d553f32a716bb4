"""How fast a big drop is queued: thousands of photos dropped at once into a paused daemon.

    python bench/big_drop.py [--photos 10000] [--seconds 120] [--profile FILE]

Starts a daemon in this process (models not loaded: it stays paused, so only the watcher,
the settler and the intake work), has another process write `--photos` distinct small
JPEGs into its inputs folder as fast as it can (a copy from a card or a folder), and samples
the journal's queued count every 0.1 s until every photo is queued or `--seconds` pass.
Prints the queued count once a second, then one line of numbers from this run: the time
the drop took, the time until every photo was queued (from the first file written), the
rate, and the longest pause (the longest time the count stood still before all were
queued). `--profile FILE` writes a cProfile of the whole run (all threads' time shows
under the main thread only as waits; use py-spy for the daemon's threads).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from loguru import logger
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daemon import Config, Daemon
from daemon.config import DaemonConfig, FolderConfig, ModelConfig, ServiceConfig
from pipeline import DepthSettings

SAMPLE_SECONDS = 0.1


def photo_bytes(count: int) -> list[bytes]:
    """`count` distinct small JPEGs: one image, each copy with its own comment segment."""
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    base = buffer.getvalue()
    out = []
    for index in range(count):
        text = f"photo {index}".encode()
        comment = b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text
        out.append(base[:2] + comment + base[2:])
    return out


def config(root: Path) -> Config:
    models = ModelConfig(device="cpu", sharp_factory="tests.support.sharp_double:build",
                         load_at_start=False)
    return Config(folders=FolderConfig(root / "inputs", root / "outputs"), models=models,
                  defaults=DepthSettings(depth_source="internal"),
                  daemon=DaemonConfig(state_dir=root / "state"),
                  service=ServiceConfig(notifications=False, log_dir=root / "logs"))


def drop(inputs: Path, photos: list[bytes]) -> None:
    for index, data in enumerate(photos):
        with open(inputs / f"drop {index:05d}.jpg", "wb") as f:
            f.write(data)


def longest_pause(samples: list[tuple[float, int]], total: int) -> float:
    """The longest time the queued count stood still while photos were still missing."""
    longest, since, last = 0.0, samples[0][0], samples[0][1]
    for moment, queued in samples:
        if queued != last:
            since, last = moment, queued
        if queued < total:
            longest = max(longest, moment - since)
    return longest


def measure(root: Path, count: int, limit: float) -> None:
    photos = photo_bytes(count)
    daemon = Daemon(config(root))
    daemon.start()
    daemon.pause()
    assert daemon.journal is not None
    journal = daemon.journal
    try:
        started = time.monotonic()
        writer = multiprocessing.Process(target=drop, args=(root / "inputs", photos))
        writer.start()
        samples: list[tuple[float, int]] = []
        printed = 0.0
        while True:
            moment = time.monotonic() - started
            queued = journal.counts()["queued"]
            samples.append((moment, queued))
            if moment >= printed:
                print(f"{moment:6.1f} s  queued {queued:6d}", flush=True)
                printed += 1.0
            if queued >= count or moment > limit:
                break
            time.sleep(SAMPLE_SECONDS)
        writer.join()
        dropped = _dropped_after(root / "inputs", count, started)
    finally:
        daemon.stop()
    moment, queued = samples[-1]
    print(f"photos={count} queued={queued} drop_s={dropped:.1f} all_queued_s="
          f"{moment:.1f} rate={queued / max(moment, 1e-9):.0f}/s longest_pause_s="
          f"{longest_pause(samples, count):.1f} load={os.getloadavg()[0]:.1f}")


def _dropped_after(inputs: Path, count: int, started: float) -> float:
    """Seconds from the start until the last photo was written (its mtime)."""
    last = max(entry.stat().st_mtime for entry in os.scandir(inputs))
    return last - (time.time() - (time.monotonic() - started))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=120.0, help="give up after this")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the run here")
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="INFO")
    with tempfile.TemporaryDirectory() as tmp:
        if args.profile is None:
            measure(Path(tmp), args.photos, args.seconds)
            return
        profile = cProfile.Profile()
        profile.runcall(measure, Path(tmp), args.photos, args.seconds)
        profile.dump_stats(args.profile)


if __name__ == "__main__":
    main()

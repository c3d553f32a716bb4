"""The long hardening runs of issue 5, against a real `python -m daemon` process.

    python bench/soak.py [--burst 500] [--photos 50] [--kills 20] [--fuzz 1000] [--seed 1]
                         [--only burst,crash,fuzz]

- burst: one photo alone (its peak RSS is the baseline), then `--burst` different photos
  dropped at once; each must give exactly one PLY; peak RSS of the daemon process is
  sampled every 50 ms.
- crash: `--photos` photos, SIGKILL at `--kills` random moments (restarting each time, two
  photos retuned midway), then a clean run; exactly one complete PLY per settings
  version, no temp files, journal agrees with files.
- fuzz: the CI fuzz corpus at full size (`--fuzz` photos of 320x240, 200 `.npy`, 300
  sidecars via the CI test) through the loaders, then every fuzzed photo dropped into a
  running daemon followed by a good photo: each bad one gets its error note, the daemon
  stays up, the good one succeeds.

Tiny random models on CPU (the CI test models). The last line printed is the summary:
`processed=N duplicated=N lost=N errors=N peak_rss_mb=X single_rss_mb=Y`, where errors
counts broken promises (a crash, an escaped exception, a missing error note, a daemon
that died), not the fuzzed files refused as they should be.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from daemon import Config, load_config  # noqa: E402
from tests.conftest import write_photo  # noqa: E402
from tests.daemon.test_stress import (  # noqa: E402
    crash_run,
    plys_quiet,
    start_daemon,
    tally_outputs,
)
from tests.pipeline.test_fuzzed_loaders import (  # noqa: E402
    check_image,
    check_npy,
    image_corpus,
    npy_corpus,
    run_corpus,
)
from tests.support.tiny_models import save_tiny_depth_pro  # noqa: E402


def write_config(root: Path, depth_dir: Path, stable_seconds: float = 0.2) -> tuple[Config, Path]:
    text = (f'[folders]\ninputs = "{root / "inputs"}"\noutputs = "{root / "outputs"}"\n'
            f'[models]\ndevice = "cpu"\ndepth_model = "{depth_dir}"\n'
            'sharp_factory = "tests.support.sharp_double:build"\n'
            f'[daemon]\nstate_dir = "{root / "state"}"\nstable_seconds = {stable_seconds}\n'
            'depth_cache_mb = 64.0\n'
            f'[service]\nlog_dir = "{root / "logs"}"\nnotifications = false\n')
    path = root / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    config = load_config(path)
    config.inputs.mkdir(parents=True, exist_ok=True)
    return config, path


class PeakRss:
    """Samples a process's RSS every 50 ms in a thread; `take()` returns and resets the peak."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return

    def take(self) -> int:
        peak, self.peak = self.peak, 0
        return peak

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def journal_open(config: Config) -> int:
    """Jobs queued or running (0 when the journal does not exist yet)."""
    path = config.daemon.state_dir / "journal.sqlite3"
    if not path.exists():
        return 1
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')"
                              ).fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 1


def wait_quiet(config: Config, proc: subprocess.Popen[bytes], timeout: float,
               done: Callable[[], bool] = lambda: True) -> bool:
    """Until `done()` and no queued/running job and no new output for 2 s."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline and proc.poll() is None:
        outputs = config.outputs
        listing = sorted(p.name for p in outputs.iterdir()) if outputs.is_dir() else []
        if listing != last:
            last, since = listing, time.monotonic()
        if done() and journal_open(config) == 0 and time.monotonic() - since > 2.0:
            return True
        time.sleep(0.2)
    return False


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def burst(root: Path, depth_dir: Path, count: int) -> dict[str, Any]:
    config, config_file = write_config(root, depth_dir)
    proc = start_daemon(config_file, root / "daemon.log")
    rss = PeakRss(proc.pid)
    try:
        write_photo(config.inputs / "single.jpg", seed=999_999)
        assert wait_quiet(config, proc, 300, lambda: len(plys_quiet(config.outputs)) == 1)
        single = rss.take()
        started = time.monotonic()
        for i in range(count):
            write_photo(config.inputs / f"burst {i:04d}.jpg", seed=i)
        finished = wait_quiet(config, proc, 60 + 2 * count,
                              lambda: len(plys_quiet(config.outputs)) >= count + 1)
        seconds = time.monotonic() - started
        peak = rss.take()
        alive = proc.poll() is None
    finally:
        rss.stop()
        stop(proc)
    versions = {"single": 1, **{f"burst {i:04d}": 1 for i in range(count)}}
    tally = tally_outputs(config, versions)
    print(f"burst: {count} photos in {seconds:.1f} s ({count / seconds:.1f}/s), finished "
          f"{finished}; single-file peak RSS {single / 2**20:.0f} MiB, burst peak "
          f"{peak / 2**20:.0f} MiB ({peak / max(single, 1):.2f}x); {_brief(tally)}", flush=True)
    return {"processed": tally["processed"], "duplicated": tally["duplicated"],
            "lost": len(tally["lost"]), "errors": _broken(tally) + (not alive),
            "peak": peak, "single": single}


def crash(root: Path, depth_dir: Path, photos: int, kills: int, seed: int) -> dict[str, Any]:
    config, config_file = write_config(root, depth_dir, stable_seconds=0.1)
    started = time.monotonic()
    versions = crash_run(config, config_file, root / "daemon.log", photos, kills,
                         random.Random(seed))
    tally = tally_outputs(config, versions)
    print(f"crash: {photos} photos, {kills} SIGKILLs, {sum(versions.values())} settings "
          f"versions, {time.monotonic() - started:.0f} s; {_brief(tally)}", flush=True)
    return {"processed": tally["processed"], "duplicated": tally["duplicated"],
            "lost": len(tally["lost"]), "errors": _broken(tally)}


def fuzz(root: Path, depth_dir: Path, count: int) -> dict[str, Any]:
    corpus = image_corpus(root / "corpus", count, seed=4242, size=(320, 240))
    started = time.monotonic()
    outcomes, problems = run_corpus(corpus, check_image)
    npy_outcomes, npy_problems = run_corpus(npy_corpus(root / "npy", 200, root / "marker"),
                                            check_npy)
    pickle_ran = (root / "marker").exists()
    print(f"fuzz loaders: {count} photos {dict(outcomes)}, 200 npy {dict(npy_outcomes)}, "
          f"{len(problems) + len(npy_problems)} broken promises, pickle ran: {pickle_ran} "
          f"({time.monotonic() - started:.1f} s)", flush=True)
    for line in (problems + npy_problems)[:10]:
        print("  " + line)
    sidecars = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "tests/daemon/test_fuzzed_sidecars.py"], cwd=REPO,
                              capture_output=True, text=True)
    print(f"fuzz sidecars (300, hypothesis): {'ok' if sidecars.returncode == 0 else 'FAILED'}",
          flush=True)

    config, config_file = write_config(root / "daemon", depth_dir)
    unique: dict[str, Any] = {}
    for case in corpus:
        if case.path.suffix.lower() in (".jpg", ".jpeg", ".png", ".heic", ".heif", ".tif",
                                        ".tiff", ".webp"):
            unique.setdefault(hashlib.sha256(case.path.read_bytes()).hexdigest(), case)
    proc = start_daemon(config_file, root / "daemon.log")
    try:
        for index, case in enumerate(unique.values()):
            shutil.copy(case.path, config.inputs / f"f{index:04d}{case.path.suffix}")
        write_photo(config.inputs / "zz good.jpg", seed=1)
        finished = wait_quiet(config, proc, 600, lambda: bool(plys_quiet(config.outputs))
                              and any(p.name.startswith("zz good")
                                      for p in plys_quiet(config.outputs)))
        alive = proc.poll() is None
    finally:
        stop(proc)
    results = {p.name.split("_")[0] for p in plys_quiet(config.outputs)}
    notes = {p.name.removesuffix(".error.txt").rsplit(".", 1)[0]
             for p in config.outputs.glob("*.error.txt")}
    silent = [f"f{i:04d}" for i in range(len(unique))
              if f"f{i:04d}" not in results and f"f{i:04d}" not in notes]
    good_ok = "zz good" in results
    print(f"fuzz daemon: {len(unique)} distinct fuzzed photos dropped: {len(results) - good_ok} "
          f"results, {len(notes)} error notes, {len(silent)} with neither {silent[:5]}; "
          f"good photo after them: {'done' if good_ok else 'MISSING'}; daemon alive {alive}, "
          f"finished {finished}", flush=True)
    errors = (len(problems) + len(npy_problems) + pickle_ran + (sidecars.returncode != 0)
              + len(silent) + (not good_ok) + (not alive))
    return {"processed": len(results), "duplicated": 0, "lost": len(silent), "errors": errors}


def _broken(tally: dict[str, Any]) -> int:
    return (len(tally["incomplete"]) + len(tally["unexpected"]) + len(tally["temp_files"])
            + len(tally["error_notes"]) + len(tally["journal_vs_files"]) + tally["journal_open"])


def _brief(tally: dict[str, Any]) -> str:
    shown = {k: v for k, v in tally.items() if v not in ([], 0)}
    return ", ".join(f"{k}={v if not isinstance(v, list) else v[:5]}" for k, v in shown.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--photos", type=int, default=50)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--fuzz", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", default="burst,crash,fuzz")
    args = parser.parse_args()
    sections = set(args.only.split(","))
    totals = {"processed": 0, "duplicated": 0, "lost": 0, "errors": 0, "peak": 0, "single": 0}
    with tempfile.TemporaryDirectory(prefix="sharp-soak-") as tmp:
        root = Path(tmp)
        depth_dir = save_tiny_depth_pro(root / "tiny-depth-pro")
        runs = []
        if "burst" in sections:
            runs.append(burst(root / "burst", depth_dir, args.burst))
        if "crash" in sections:
            runs.append(crash(root / "crash", depth_dir, args.photos, args.kills, args.seed))
        if "fuzz" in sections:
            runs.append(fuzz(root / "fuzz", depth_dir, args.fuzz))
    for run in runs:
        for key in ("processed", "duplicated", "lost", "errors"):
            totals[key] += run[key]
        totals["peak"] = max(totals["peak"], run.get("peak", 0))
        totals["single"] = max(totals["single"], run.get("single", 0))
    print(f"processed={totals['processed']} duplicated={totals['duplicated']} "
          f"lost={totals['lost']} errors={totals['errors']} "
          f"peak_rss_mb={totals['peak'] / 2**20:.0f} single_rss_mb={totals['single'] / 2**20:.0f}")
    return 0 if totals["duplicated"] == totals["lost"] == totals["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

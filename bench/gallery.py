"""What an open gallery costs with many results, old way against new, in one run.

    python bench/gallery.py [--sizes 10 3000 10000] [--idle-seconds 60] [--old-max 3000]
                            [--no-browser]

For each size N, a folder of N synthetic results (`tests.conftest.write_small_result`: a
stand-in PLY, which nothing here reads, a report and a small depth preview; one result
in 100 is part of a 3-source compare set, and there is one error note per 100 results),
made from 20 photos of 3000 x 2000 pixels. It prints:

- old: what each poll of the old `/api/gallery` did (read every report, look for every
  preview, read every error note, encode all of it), per call; the old page polled every
  2 s, so an open gallery kept a core busy for min(1, that / 2 s);
- index, cold: a fresh index's first page (listing, 48 reports, the failures);
- index, all reports read (what the old way did on every poll, now once);
- a poll of an up-to-date page (`since=` the current version), server side, CPU;
- a poll after one new result (the watchdog event arrived; its report read, the first
  page sent again), server side, CPU;
- in headless Chromium, against a viewer in its own process: navigation to the first
  cards drawn, with the viewer just started (its index cold) and on a reload;
- that viewer process's CPU time while the page stays open and nothing changes, over
  `--idle-seconds`, as a share of one core (target: under 2 %).

Targets: first cards within 1 s and an open gallery under 2 % of a core, at 10,000 results.
Server-side times are CPU (`time.thread_time`) so the other programs on a shared machine
do not count; the browser times are wall-clock.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import DepthSettings  # noqa: E402
from viewer import results  # noqa: E402
from viewer.index import ResultIndex  # noqa: E402
from viewer.notes import estimate_note  # noqa: E402
from viewer.server import PAGE_SIZE, Place, ViewerApp  # noqa: E402

PHOTOS = 20
PHOTO_SIZE = (3000, 2000)
SOURCES = ("depth-pro", "internal", "depth-anything")
T0 = 1_700_000_000.0
FIRST_SCREEN_TARGET_S = 1.0
IDLE_TARGET = 0.02
POLL_SECONDS = 2.0
"""How often the page polls (`POLL_MS` in gallery.js)."""


def make_results(folder: Path, count: int) -> Place:
    """`count` results of `PHOTOS` photos in `folder/out`, the photos in `folder/in`."""
    from PIL import Image

    from daemon.results import Compare
    from tests.conftest import small_report, write_small_result

    inputs, outputs = folder / "in", folder / "out"
    inputs.mkdir(parents=True)
    photos = []
    for i in range(PHOTOS):
        photo = inputs / f"photo_{i:02d}.jpg"
        Image.new("RGB", PHOTO_SIZE, (40 + 10 * i, 120, 200 - 5 * i)).save(photo, quality=90)
        photos.append(small_report([], photo))
    i = 0
    while i < count:
        report = photos[i % PHOTOS]
        if i % 100 == 99 and i + len(SOURCES) <= count:
            sheet = f"set_{i:05d}_compare.png"
            for j, source in enumerate(SOURCES):
                write_small_result(outputs, f"set_{i:05d}_compare_{source}",
                                   report._replace(compare=Compare(source, SOURCES, sheet)),
                                   preview=False, mtime=T0 + i + j / 10)
            (outputs / sheet).write_bytes((outputs / "r_00000_depth.png").read_bytes())
            i += len(SOURCES)
            continue
        write_small_result(outputs, f"r_{i:05d}", report, mtime=T0 + i)
        if i % 100 == 50:
            (outputs / f"bad_{i:05d}.jpg.error.txt").write_text(
                f"bad_{i:05d}.jpg: cannot decode the photo\n", encoding="utf-8")
        i += 1
    return Place(inputs, outputs, DepthSettings())


def cpu(task: Callable[[], object], repeat: int = 1) -> float:
    """CPU seconds of this thread per call of `task` (the median of `repeat` calls)."""
    times = []
    for _ in range(repeat):
        start = time.thread_time()
        task()
        times.append(time.thread_time() - start)
    return statistics.median(times)


def old_gallery(place: Place) -> bytes:
    """What every poll of the old `/api/gallery` did (the old page asked every 2 s)."""
    found = results.list_results(place.outputs)
    failures = [results.read_failure(p, place.outputs, p.stat().st_mtime)
                for p in place.outputs.glob("*.error.txt")]
    defaults = place.defaults.as_dict()
    body = {"results": [{**results.summary(r),  # looks for the preview on disk
                         "tuned": {k: v for k, v in (r.report.settings if r.report else {})
                                   .items() if v != defaults.get(k)}} for r in found],
            "failures": [f.summary() for f in failures if f],
            "estimate": estimate_note(found, None)}
    return json.dumps(body, default=str).encode()


def server_side(place: Place, old: bool) -> dict[str, float]:
    out: dict[str, float] = {}
    if old:
        start = time.perf_counter()
        out["old /api/gallery, per call (s)"] = cpu(lambda: old_gallery(place))
        out["old /api/gallery, per call, wall-clock (s)"] = time.perf_counter() - start
    index = ResultIndex(place.outputs)
    out["index cold: first page (s)"] = cpu(lambda: (index.refresh(), index.page(PAGE_SIZE),
                                                     index.newest(results.RECENT),
                                                     index.failures(50)))
    out["index: every report read (s)"] = cpu(lambda: index.page(10**9))
    app = ViewerApp(place, lambda: None, lambda _: None)
    app.start()
    try:
        version = app.gallery()["version"]
        out["poll, nothing changed (ms)"] = 1e3 * cpu(
            lambda: json.dumps(app.gallery(PAGE_SIZE, None, str(version))), repeat=200)
        report = app.index.newest(1)[0].report
        assert report is not None
        from tests.conftest import write_small_result

        costs = []
        for n in range(5):
            write_small_result(place.outputs, f"new_{n}", report, mtime=time.time())
            time.sleep(0.3)  # watchdog's event arrives
            start = time.thread_time()
            answer = app.gallery(PAGE_SIZE, None, str(version))
            costs.append(time.thread_time() - start)
            assert answer["results"][0]["name"] == f"new_{n}.ply", "the new result is first"
            version = answer["version"]
        out["poll after 1 new result (ms)"] = 1e3 * statistics.median(costs)
    finally:
        app.close()
    return out


def serve(inputs: Path, outputs: Path) -> None:
    """`--serve`: a viewer in its own process (as the tray starts it), until stdin closes."""
    app = ViewerApp(Place(inputs, outputs, DepthSettings()), lambda: None, lambda _: None)
    app.start()
    print(app.url("/"), flush=True)
    sys.stdin.read()
    app.close()


def in_browser(place: Place, idle_seconds: float) -> dict[str, float]:
    import psutil

    from tests.support.viewer_browser import browser

    out: dict[str, float] = {}
    with browser() as chrome:
        page = chrome.new_page(viewport={"width": 1280, "height": 800})
        page.goto("about:blank")
        viewer = subprocess.Popen([sys.executable, __file__, "--serve", str(place.inputs),
                                   str(place.outputs)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert viewer.stdout is not None
            url = viewer.stdout.readline().strip()  # the viewer is up, its index not built
            start = time.perf_counter()
            page.goto(url, wait_until="commit")
            page.wait_for_selector(".card", timeout=120_000)
            out["first cards, viewer just started (s)"] = time.perf_counter() - start
            start = time.perf_counter()
            page.reload(wait_until="commit")
            page.wait_for_selector(".card", timeout=120_000)
            out["first cards, reload (s)"] = time.perf_counter() - start
            out["cards on the first screen"] = page.locator(".card").count()
            page.wait_for_load_state("networkidle")  # the first screen's thumbnails made
            time.sleep(POLL_SECONDS * 2)
            process = psutil.Process(viewer.pid)
            before = sum(process.cpu_times()[:2])
            time.sleep(idle_seconds)
            used = sum(process.cpu_times()[:2]) - before
            out["viewer CPU, page open, nothing changing (% of a core)"] = \
                100 * used / idle_seconds
        finally:
            if viewer.stdin:
                viewer.stdin.close()
            viewer.wait(30)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 3000, 10000])
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--old-max", type=int, default=3000,
                        help="time the old /api/gallery up to this many results")
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--serve", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return
    table: dict[str, dict[int, float]] = {}
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            place = make_results(Path(folder), size)
            print(f"{size} results made in {time.perf_counter() - started:.0f} s",
                  file=sys.stderr)
            rows = server_side(place, old=size <= args.old_max)
            if not args.no_browser:
                rows |= in_browser(place, args.idle_seconds)
        for name, value in rows.items():
            table.setdefault(name, {})[size] = value
    old = table.get("old /api/gallery, per call (s)", {})
    table["old page open: share of a core (%, from the call's cost)"] = {
        n: 100 * min(1.0, s / POLL_SECONDS) for n, s in old.items()}
    table["new poll: share of a core (%, from the poll's cost)"] = {
        n: 100 * ms / 1e3 / POLL_SECONDS for n, ms in table["poll, nothing changed (ms)"].items()}
    print("| results | " + " | ".join(f"{n:,}" for n in args.sizes) + " |")
    print("|---|" + "---|" * len(args.sizes))
    for name, values in table.items():
        print(f"| {name} | " + " | ".join(f"{values[n]:.3g}" if n in values else "-"
                                          for n in args.sizes) + " |")
    biggest = args.sizes[-1]
    first = table.get("first cards, viewer just started (s)", {}).get(biggest)
    idle = table.get("viewer CPU, page open, nothing changing (% of a core)", {}).get(biggest)
    if first is not None and idle is not None:
        met = {True: "met", False: "MISSED"}
        print(f"\nAt {biggest:,} results: first cards {first:.2f} s (target "
              f"{FIRST_SCREEN_TARGET_S:.0f} s: {met[first <= FIRST_SCREEN_TARGET_S]}), "
              f"open gallery {idle:.2f} % of a core (target {100 * IDLE_TARGET:.0f} %: "
              f"{met[idle / 100 <= IDLE_TARGET]})")


if __name__ == "__main__":
    main()

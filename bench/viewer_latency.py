"""How fast the viewer shows a full-size result, and what Apply costs besides SHARP.

    python bench/viewer_latency.py [--side 768] [--timeout 300] [--skip-apply]

1. Time to visible: a SHARP-sized scene (2 x 768 x 768 = 1,179,648 Gaussians, laid out
   like SHARP's output: two layers on the pixel grid, each Gaussian about one pixel's
   footprint) written with `pipeline.write_ply`; then, in one run, the viewer process's
   part (read the PLY, build the covariances, hand it to viser) and the browser's part
   (headless Chromium opening the viewer page until a screenshot of the 3D view is no
   longer the empty scene's colour: `tests/viewer_browser.drawn_fraction`).
2. Apply to new view: a real `Daemon` (tiny Depth Pro, SHARP test double at SHARP's
   full 1536 grid, so the PLY has 1,179,648 Gaussians) and the viewer; Apply changes
   `depth_scale`; the time until the viewer has swapped the new result into its scene,
   minus SHARP's forward as the report times it, is the overhead. Its parts come from
   the report's timings. Apply asks the daemon to queue the photo at once (`rerun`, the
   control channel's `POST /rerun`), so no settle wait (`stable_seconds`) is spent.

Targets (issue 11): visible within 5 s of opening; Apply-to-new-view overhead under 1 s.
WebGL here is SwiftShader (software rendering on the CPU): every frame of a
million-Gaussian scene costs seconds, so the browser's part measures this machine's
software GPU, not the viewer; the viewer process's part is what a real GPU does not change.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import DepthSettings, Gaussians, write_ply  # noqa: E402
from tests.viewer_browser import SCENE_BOX, browser, chromium_path, drawn_fraction, region  # noqa: E402
from viewer.scene import BACKGROUND, SplatScene  # noqa: E402
from viewer.server import Place, ViewerApp  # noqa: E402
from viewer.splat import read_splat  # noqa: E402

F_PX = 3100.5
SIZE = (4032, 3024)
VISIBLE_TARGET_S = 5.0
OVERHEAD_TARGET_S = 1.0
DEBUG_SHOTS = os.environ.get("VIEWER_LATENCY_SHOT")
"""Where to save the first screenshot counted as visible (to look at it), if set."""


def sharp_like(side: int = 768, f_px: float = F_PX, size: tuple[int, int] = SIZE) -> Gaussians:
    """2 x side x side Gaussians on the photo's pixel grid: a gently curved front surface
    receding towards the top, a back layer 15 % behind it, colours varying smoothly."""
    width, height = size
    v, u = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    u = (u.float() + 0.5) / side * width
    v = (v.float() + 0.5) / side * height
    front = 2.0 + 1.5 * torch.sin(u / width * 6.28) * torch.cos(v / height * 3.14) \
        + 6.0 * (1.0 - v / height)
    means, scales, colours = [], [], []
    for depth in (front, front * 1.15):
        x, y = (u - width / 2) * depth / f_px, (v - height / 2) * depth / f_px
        means.append(torch.stack([x, y, depth], -1).reshape(1, -1, 3))
        footprint = (depth * width / side / f_px * 0.7).reshape(1, -1, 1)
        scales.append(footprint.expand(1, -1, 3) * torch.tensor([1.0, 1.0, 0.3]))
        colours.append(torch.stack([0.5 + 0.4 * torch.sin(u / 290), 0.5 + 0.4 * torch.cos(v / 170),
                                    (depth / 12).clamp(0.05, 0.95)], -1).reshape(1, -1, 3))
    n = 2 * side * side
    quaternions = torch.zeros(1, n, 4)
    quaternions[..., 0] = 1.0
    return Gaussians(mean_vectors=torch.cat(means, 1), singular_values=torch.cat(scales, 1),
                     quaternions=quaternions, colors=torch.cat(colours, 1),
                     opacities=torch.full((1, n), 0.95))


def full_size_double() -> Any:
    """The SHARP test double at SHARP's own 1536 grid (`sharp_factory` for the daemon)."""
    from tests.sharp_double import build

    return build(resolution=1536)


def wait_drawn(page: Any, timeout: float) -> tuple[float | None, int]:
    """Seconds until the 3D view is drawn (None: not within `timeout`), and screenshots taken."""
    start = time.perf_counter()
    shots = 0
    while time.perf_counter() - start < timeout:
        left = max(1.0, timeout - (time.perf_counter() - start))
        png = page.locator("#scene").screenshot(timeout=left * 1000)
        shots += 1
        if drawn_fraction(region(png, SCENE_BOX), BACKGROUND) > 0.05:
            if DEBUG_SHOTS:
                Path(DEBUG_SHOTS).write_bytes(png)
            return time.perf_counter() - start, shots
    return None, shots


def _report(name: str, seconds: float | None, target: float, note: str = "") -> None:
    shown = "not within the timeout" if seconds is None else f"{seconds:.2f} s"
    verdict = "" if seconds is None else ("  (target met)" if seconds <= target
                                          else f"  (over the {target:g} s target)")
    print(f"{name:<46} {shown}{verdict}{note}", flush=True)


def time_to_visible(folder: Path, side: int, timeout: float, full: bool,
                    label: str = "browser: page opened -> splat visible") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    ply = folder / "scene.ply"
    write_ply(ply, sharp_like(side), F_PX, SIZE)
    count = 2 * side * side
    (folder / "scene.json").write_text(json.dumps({
        "photo": "", "settings": {}, "files": [ply.name], "image_size": list(SIZE),
        "focal": {"f_px": F_PX, "origin": "bench"}}), encoding="utf-8")
    start = time.perf_counter()
    read_splat(ply)
    read_s = time.perf_counter() - start
    app = ViewerApp(Place(folder, folder, DepthSettings()), lambda: None, SplatScene,
                    lambda _: None)
    app.start()
    try:
        print(f"scene: {count:,} Gaussians, PLY {ply.stat().st_size / 1e6:.1f} MB", flush=True)
        _report("viewer process: read PLY + covariances", read_s, VISIBLE_TARGET_S)
        with browser() as chrome:
            page = chrome.new_page(viewport={"width": 1280, "height": 800})
            start, wall = time.perf_counter(), time.time()
            page.goto(app.url(f"/view?ply={ply.name}"))
            seconds, shots = wait_drawn(page, timeout)
            total = None if seconds is None else time.perf_counter() - start
            assert app.scene is not None
            _report(label, total, VISIBLE_TARGET_S,
                    f"  ({app.shown_count or 0:,} of {count:,} Gaussians sent: software "
                    f"WebGL seen: {app.budget is not None}; {shots} screenshots)")
            _report("  of which: page opened -> scene sent", app.scene.shown_at - wall,
                    VISIBLE_TARGET_S, "  (page, PLY read, thinning, hand-over to viser)")
            if total is not None:
                start = time.perf_counter()
                page.locator("#scene").screenshot(timeout=timeout * 1000)
                _report("browser: next frame (orbiting speed)", time.perf_counter() - start,
                        VISIBLE_TARGET_S)
            if full and app.budget is not None:
                start = time.perf_counter()
                page.click("#show-all")
                while app.shown_count != count:
                    time.sleep(0.01)
                page.locator("#scene").screenshot(timeout=timeout * 1000)
                _report("browser: 'Show all' -> all Gaussians drawn",
                        time.perf_counter() - start, VISIBLE_TARGET_S, "  (SwiftShader)")
    finally:
        app.close()


def apply_overhead(folder: Path, timeout: float) -> None:
    from daemon import Config, Daemon
    from daemon.config import DaemonConfig, FolderConfig, ModelConfig, ServiceConfig
    from tests.conftest import write_photo
    from tests.tiny_models import save_tiny_depth_pro

    depth_dir = save_tiny_depth_pro(folder / "tiny-depth-pro")
    inputs, outputs = folder / "inputs", folder / "outputs"
    config = Config(folders=FolderConfig(inputs, outputs),
                    models=ModelConfig(device="cpu", depth_model=str(depth_dir),
                                       sharp_factory="viewer_latency:full_size_double"),
                    daemon=DaemonConfig(state_dir=folder / "state"),
                    service=ServiceConfig(notifications=False, log_dir=folder / "logs"))
    write_photo(inputs / "bench.jpg", width=640, height=480)
    daemon = Daemon(config)
    daemon.start()
    try:
        deadline = time.monotonic() + timeout
        while not list(outputs.glob("bench_*.ply")):
            if time.monotonic() > deadline:
                print("apply: the first result never appeared", flush=True)
                return
            time.sleep(0.1)
        first = next(outputs.glob("bench_*.ply"))
        # `rerun` is what the control channel's POST /rerun calls in the daemon process.
        app = ViewerApp(Place(inputs, outputs, config.defaults),
                        lambda: daemon.status().as_dict(), SplatScene, lambda _: None,
                        rerun=daemon.rerun)
        app.start()
        try:
            app.show(first.name)
            while app.shown != first.name:
                time.sleep(0.01)
            start = time.perf_counter()
            app.apply(first.name, {"depth_scale": 1.5})
            while app.pending is None or app.pending.seconds is None:
                if time.perf_counter() - start > timeout:
                    print("apply: the new result never appeared", flush=True)
                    return
                time.sleep(0.005)
            total = app.pending.seconds
            assert app.pending.result is not None
            report = json.loads((outputs / app.pending.result).with_suffix(".json").read_text())
            timings = report["timings_s"]
            overhead = total - timings.get("sharp", 0.0)
            print(f"apply: {report['gaussians']:,} Gaussians, depth from cache: "
                  f"{report['depth']['from_cache']}", flush=True)
            _report("apply -> new result in the scene", total, OVERHEAD_TARGET_S)
            _report("  of which SHARP's forward (report)", timings.get("sharp"),
                    OVERHEAD_TARGET_S)
            _report("overhead (everything but SHARP's forward)", overhead, OVERHEAD_TARGET_S)
            print(f"  daemon's sidecar settle wait: skipped by the rerun (stable_seconds "
                  f"{config.daemon.stable_seconds:.2f} s applies to files dropped in)", flush=True)
            print("  report timings: " + ", ".join(f"{k} {v:.3f} s" for k, v in timings.items()),
                  flush=True)
            appeared = (outputs / app.pending.result).stat().st_mtime
            swapped = app.pending.applied_at + total
            _report("  viewer: new PLY on disk -> in the scene", swapped - appeared,
                    OVERHEAD_TARGET_S, "  (poll, PLY read, covariances, hand-over)")
            _report("  daemon: Apply -> new PLY on disk", appeared - app.pending.applied_at,
                    OVERHEAD_TARGET_S, "  (queue, depth cache, SHARP, unproject, write)")
        finally:
            app.close()
    finally:
        daemon.stop(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=768,
                        help="grid side: 2 x side^2 Gaussians (768 -> 1,179,648)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds to wait for the browser or the daemon")
    parser.add_argument("--skip-apply", action="store_true", help="only time to visible")
    parser.add_argument("--skip-browser", action="store_true", help="only the Apply overhead")
    parser.add_argument("--full", action="store_true",
                        help="also time 'Show all' (every Gaussian in software WebGL: minutes)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="viewer-latency-") as tmp:
        folder = Path(tmp)
        if not args.skip_browser:
            if chromium_path() is None:
                print("time to visible: skipped (chromium is not installed)")
            else:
                time_to_visible(folder / "scene", args.side, args.timeout, args.full)
                # The floor: the same page and viser client with a tiny scene.
                time_to_visible(folder / "small", 32, args.timeout, False,
                                "baseline: the same with 2,048 Gaussians")
        if not args.skip_apply:
            apply_overhead(folder / "apply", args.timeout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

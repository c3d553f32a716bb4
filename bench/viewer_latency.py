"""How fast the viewer shows a full-size result, and what Apply costs besides SHARP.

    python bench/viewer_latency.py [--side 768] [--timeout 300] [--skip-apply] [--full]
                                   [--applies 3] [--gpu] [--device cuda]

1. Time to visible: a SHARP-sized scene (2 x 768 x 768 = 1,179,648 Gaussians, laid out
   like SHARP's output: two layers on the pixel grid, each Gaussian about one pixel's
   footprint) written with `pipeline.write_ply`; then headless Chromium opens the viewer
   page, and every frame its compositor produces is recorded (`tests.support.viewer_browser.
   Screencast`): visible is the first frame whose 3D view is no longer the empty scene's
   colour (`drawn_fraction`). Its parts: the page's own report that the splat is drawn
   (`/api/shown`), and the same with a 2,048-Gaussian scene (the page's fixed cost).
2. Apply to new view: a real `Daemon` (tiny Depth Pro, SHARP test double at SHARP's
   full 1536 grid, so the PLY has 1,179,648 Gaussians) and the viewer page; Apply changes
   `depth_scale`; the time until the page has drawn the new result, minus SHARP's
   forward as the report times it, is the overhead. `--applies` Applies in a row, each to
   the result the one before drew; on a shared machine their median is the figure. Its
   parts come from the report's timings and the new PLY's time on disk. Apply asks the
   daemon to queue the photo at once (`rerun`, the control channel's `POST /rerun`), so
   no settle wait is spent.

Targets (issue 11): visible within 5 s of opening; Apply-to-new-view overhead under 1 s.
WebGL here is SwiftShader (software rendering on the CPU), so the page asks for a thinned
scene (`SOFTWARE_BUDGET` Gaussians); `--full` also times "Show all" (every Gaussian:
minutes a frame in software). On a machine with a GPU, `--gpu` lets Chromium use it (the
WebGL renderer it got is printed) and `--device cuda` runs the daemon's models, and so the
unprojection, there.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import DepthSettings, Gaussians, write_ply  # noqa: E402
from tests.support.viewer_browser import SCENE_BOX, Screencast, browser, chromium_path  # noqa: E402
from viewer.server import SOFTWARE_BUDGET, Place, ViewerApp  # noqa: E402

F_PX = 3100.5
SIZE = (4032, 3024)
VIEWPORT = {"width": 1280, "height": 800}
VISIBLE_TARGET_S = 5.0
OVERHEAD_TARGET_S = 1.0
IDLE_S = 2.0
"""Seconds before each Apply: `REDRAW_MS` (1.5 s, viewer/static/scene.js) and a margin."""
APPLY_SCALES = (1.5, 2.0, 2.5, 3.0, 3.5)
"""`depth_scale` of each Apply in a row: each a new setting, so each a new result."""


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
    from tests.support.sharp_double import build

    return build(resolution=1536)


def _report(name: str, seconds: float | None, target: float, note: str = "") -> None:
    shown = "not within the timeout" if seconds is None else f"{seconds:.2f} s"
    verdict = "" if seconds is None else ("  (target met)" if seconds <= target
                                          else f"  (over the {target:g} s target)")
    print(f"{name:<46} {shown}{verdict}{note}", flush=True)


FRAME_SECONDS = """() => {
  const view = window.sharpWatchView, gl = view.renderer.getContext();
  const pixel = new Uint8Array(4), start = performance.now();
  for (let i = 0; i < 3; i++) {
    view.renderer.render(view.scene, view.camera);
    gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, pixel);  // waits for the frame
  }
  return (performance.now() - start) / 3000;
}"""
"""Seconds the page takes to draw one frame of its scene, as when the user orbits."""


def viewport_box(page: Any) -> tuple[float, float, float, float]:
    """`SCENE_BOX` (fractions of the 3D view) as fractions of the whole viewport."""
    box = page.locator("#scene").bounding_box()
    left, top, right, bottom = SCENE_BOX
    w, h = VIEWPORT["width"], VIEWPORT["height"]
    return ((box["x"] + left * box["width"]) / w, (box["y"] + top * box["height"]) / h,
            (box["x"] + right * box["width"]) / w, (box["y"] + bottom * box["height"]) / h)


def wait_until(condition: Any, page: Any, timeout: float) -> bool:
    """Poll `condition` while letting Playwright deliver the page's events."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        page.wait_for_timeout(20)
    return True


def open_view(chrome: Any, app: ViewerApp, ply: str, timeout: float) -> tuple[Any, float | None,
                                                                            float | None]:
    """Open the viewer page on `ply`; (page, seconds to the first drawn frame, seconds to
    the page's own report that it drew), from the moment the address was opened."""
    page = chrome.new_page(viewport=VIEWPORT)
    cast = Screencast(page)
    opened = time.time()
    page.goto(app.launch(f"/view?ply={ply}").as_uri())
    reported = None
    if wait_until(lambda: app.shown == ply, page, timeout):
        reported = time.time() - opened
    box = viewport_box(page)
    wait_until(lambda: cast.first_drawn(opened, box) is not None, page, timeout)
    cast.stop()
    drawn = cast.first_drawn(opened, box)
    page.cast = cast
    return page, (None if drawn is None else drawn - opened), reported


def webgl_renderer(page: Any) -> str:
    """The WebGL renderer the page's scene got (SwiftShader: software)."""
    return page.evaluate("""() => {
      const gl = window.sharpWatchView.renderer.getContext();
      const info = gl.getExtension("WEBGL_debug_renderer_info");
      return String(gl.getParameter(info ? info.UNMASKED_RENDERER_WEBGL : gl.RENDERER));
    }""")


def time_to_visible(folder: Path, side: int, timeout: float, full: bool, gpu: bool,
                    label: str = "browser: page opened -> splat visible") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    ply = folder / "scene.ply"
    write_ply(ply, sharp_like(side), F_PX, SIZE)
    count = 2 * side * side
    # Opened as `sharp-watch view scene.ply` opens a PLY that is not a result: its camera
    # comes from the PLY's own intrinsics.
    (folder / "outputs").mkdir(exist_ok=True)
    app = ViewerApp(Place(folder, folder / "outputs", DepthSettings()), lambda: None,
                    lambda _: None, extra=ply)
    app.start()
    try:
        print(f"scene: {count:,} Gaussians, PLY {ply.stat().st_size / 1e6:.1f} MB", flush=True)
        with browser(gpu=gpu) as chrome:
            page, drawn, reported = open_view(chrome, app, ply.name, timeout)
            print(f"WebGL: {webgl_renderer(page)}", flush=True)
            _report(label, drawn, VISIBLE_TARGET_S,
                    f"  ({app.shown_count or 0:,} of {count:,} Gaussians drawn)")
            _report("  page's own report: splat drawn", reported, VISIBLE_TARGET_S,
                    "  (PLY fetched and parsed, one frame later)")
            if drawn is not None:
                _report("browser: one frame (orbiting speed)", page.evaluate(FRAME_SECONDS),
                        VISIBLE_TARGET_S)
            if full and (app.shown_count or 0) < count:
                start = time.perf_counter()
                page.click("#show-all")
                wait_until(lambda: app.shown_count == count, page, timeout)
                _report("browser: 'Show all' -> all Gaussians drawn",
                        time.perf_counter() - start, VISIBLE_TARGET_S, "  (SwiftShader)")
    finally:
        app.close()


def _one_apply(app: ViewerApp, page: Any, outputs: Path, scale: float,
               timeout: float) -> float | None:
    """Press Apply with `depth_scale = scale`, wait for the page to draw the new result,
    print the times; returns the overhead (None: it never came). First the page is left
    idle as a person leaves it while looking at the view and moving a slider: it draws
    frames for `IDLE_S` after a new splat, in software WebGL half a second of CPU each."""
    page.wait_for_timeout(IDLE_S * 1000)
    app.apply(app.shown or "", {"depth_scale": scale})
    pending = app.pending
    assert pending is not None
    if not wait_until(lambda: pending.seconds is not None, page, timeout):
        print("apply: the new result was never drawn", flush=True)
        return None
    total = pending.seconds
    assert total is not None and pending.result is not None
    report = json.loads((outputs / pending.result).with_suffix(".json").read_text())
    timings = report["timings_s"]
    overhead = total - timings.get("sharp", 0.0)
    print(f"apply (depth_scale {scale}): {report['gaussians']:,} Gaussians, depth from cache: "
          f"{report['depth']['from_cache']}; {app.shown_count:,} drawn "
          f"(software WebGL: {SOFTWARE_BUDGET:,} at most)", flush=True)
    _report("apply -> new result drawn", total, OVERHEAD_TARGET_S)
    _report("  of which SHARP's forward (report)", timings.get("sharp"), OVERHEAD_TARGET_S)
    _report("overhead (everything but SHARP's forward)", overhead, OVERHEAD_TARGET_S)
    print("  report timings: " + ", ".join(f"{k} {v:.3f} s" for k, v in timings.items()),
          flush=True)
    appeared = (outputs / pending.result).stat().st_mtime
    _report("  daemon: Apply -> new PLY on disk", appeared - pending.applied_at,
            OVERHEAD_TARGET_S, "  (queue, depth cache, SHARP, unproject, write)")
    _report("  page: new PLY on disk -> drawn", pending.applied_at + total - appeared,
            OVERHEAD_TARGET_S, "  (polls, PLY fetch and parse, one frame)")
    return overhead


def apply_overhead(folder: Path, timeout: float, gpu: bool, device: str,
                   applies: int) -> None:
    from daemon import Config, Daemon
    from daemon.config import DaemonConfig, FolderConfig, ModelConfig, ServiceConfig
    from tests.conftest import write_photo
    from tests.support.tiny_models import save_tiny_depth_pro

    depth_dir = save_tiny_depth_pro(folder / "tiny-depth-pro")
    inputs, outputs = folder / "inputs", folder / "outputs"
    config = Config(folders=FolderConfig(inputs, outputs),
                    models=ModelConfig(device=device, depth_model=str(depth_dir),
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
                        lambda: daemon.status().as_dict(), lambda _: None, rerun=daemon.rerun)
        app.start()
        try:
            with browser(gpu=gpu) as chrome:
                page, _, reported = open_view(chrome, app, first.name, timeout)
                if reported is None:
                    print("apply: the first result was never drawn", flush=True)
                    return
                overheads = []
                for scale in APPLY_SCALES[:applies]:
                    overhead = _one_apply(app, page, outputs, scale, timeout)
                    if overhead is None:
                        return
                    overheads.append(overhead)
            if len(overheads) > 1:
                _report(f"overhead, median of {len(overheads)} Applies "
                        f"({', '.join(f'{o:.2f}' for o in overheads)} s)",
                        statistics.median(overheads), OVERHEAD_TARGET_S)
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
    parser.add_argument("--gpu", action="store_true",
                        help="let Chromium use the GPU (default: software WebGL, as in CI)")
    parser.add_argument("--device", default="cpu", help="the daemon's models: cpu, cuda, ...")
    parser.add_argument("--applies", type=int, default=3, choices=range(1, len(APPLY_SCALES) + 1),
                        metavar=f"1..{len(APPLY_SCALES)}",
                        help="Applies in a row (the median overhead is the one to read)")
    parser.add_argument("--full", action="store_true",
                        help="also time 'Show all' (every Gaussian in software WebGL: minutes)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="viewer-latency-") as tmp:
        folder = Path(tmp)
        if not args.skip_browser:
            if chromium_path() is None:
                print("time to visible: skipped (chromium is not installed)")
            else:
                time_to_visible(folder / "scene", args.side, args.timeout, args.full, args.gpu)
                # The floor: the same page and renderer with a tiny scene.
                time_to_visible(folder / "small", 32, args.timeout, False, args.gpu,
                                "baseline: the same with 2,048 Gaussians")
        if not args.skip_apply:
            apply_overhead(folder / "apply", args.timeout, args.gpu, args.device, args.applies)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

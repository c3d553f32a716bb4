"""The README's viewer and gallery screenshots, made the way a user would see them.

    python tools/viewer_screenshots.py [--photo PHOTO] [--out docs/img]

No SHARP weights can be downloaded here, so the scene is a stand-in built from the photo:
its pixels on a 2 x 256 x 256 grid (SHARP's layout at a third of its resolution) over a
synthetic depth that recedes towards the top of the frame, written with
`pipeline.write_ply` with a report and depth preview like the daemon's. The pages,
the viewer and the browser (headless Chromium, software WebGL) are the real ones.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import DepthSettings, Gaussians, write_ply  # noqa: E402
from pipeline.preview import preview_png  # noqa: E402
from tests.support.viewer_browser import (  # noqa: E402
    BACKGROUND,
    SCENE_BOX,
    browser,
    drawn_fraction,
    region,
)
from viewer.server import Place, ViewerApp  # noqa: E402

EXAMPLE = ROOT.parent / "shared" / "data" / "example.jpg"
SIDE = 256
MAX_BYTES = 300 * 1024


def demo_scene(photo: Path, side: int) -> tuple[Gaussians, np.ndarray, tuple[int, int], float]:
    """(Gaussians, front depth on the grid, photo size, f_px) for a stand-in result."""
    image = Image.open(photo).convert("RGB")
    width, height = image.size
    f_px = 30.0 * float(np.hypot(width, height)) / float(np.hypot(36, 24))
    pixels = np.asarray(image.resize((side, side), Image.Resampling.BILINEAR)) / 255.0
    linear = torch.from_numpy(np.where(pixels <= 0.04045, pixels / 12.92,
                                       ((pixels + 0.055) / 1.055) ** 2.4)).float()
    v, u = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    u = (u.float() + 0.5) / side * width
    v = (v.float() + 0.5) / side * height
    front = 1.5 + 6.0 * (1.0 - v / height) ** 1.5
    means, scales = [], []
    for depth in (front, front * 1.1):
        x, y = (u - width / 2) * depth / f_px, (v - height / 2) * depth / f_px
        means.append(torch.stack([x, y, depth], -1).reshape(1, -1, 3))
        footprint = (depth * width / side / f_px * 0.8).reshape(1, -1, 1)
        scales.append(footprint.expand(1, -1, 3).clone())
    n = 2 * side * side
    quaternions = torch.zeros(1, n, 4)
    quaternions[..., 0] = 1.0
    colours = linear.reshape(1, -1, 3).repeat(1, 2, 1)
    gaussians = Gaussians(mean_vectors=torch.cat(means, 1), singular_values=torch.cat(scales, 1),
                          quaternions=quaternions, colors=colours,
                          opacities=torch.full((1, n), 0.97))
    return gaussians, front.numpy(), (width, height), f_px


def write_demo_result(outputs: Path, photo: Path, stem: str, settings: DepthSettings,
                      seconds: float) -> Path:
    gaussians, depth, size, f_px = demo_scene(photo, SIDE)
    gaussians = gaussians._replace(mean_vectors=gaussians.mean_vectors * settings.depth_scale)
    ply = write_ply(outputs / f"{stem}.ply", gaussians, f_px, size)
    preview = outputs / f"{stem}_depth.png"
    preview.write_bytes(preview_png(depth * settings.depth_scale, depth, size))
    report = {
        "photo": str(photo), "photo_sha256": "0" * 64, "job": "0" * 64,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        "settings": settings.as_dict(), "image_size": list(size),
        "focal": {"f_px": f_px, "origin": "exif"},
        "depth": {"source": settings.depth_source, "format": "metric", "model": "demo",
                  "range_m": [float(depth.min()) * settings.depth_scale,
                              float(depth.max()) * settings.depth_scale],
                  "from_cache": settings.depth_scale != 1.0},
        "models": {"device": "no model (stand-in)"}, "gaussians": 2 * SIDE * SIDE,
        "timings_s": {"decode": 0.12, "depth": round(seconds * 0.4, 2),
                      "sharp": round(seconds * 0.6, 2)},
        "warnings": [], "files": [ply.name, preview.name, f"{stem}.json"],
    }
    (outputs / f"{stem}.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return ply


def save(png: bytes, path: Path) -> None:
    """Save a screenshot under `MAX_BYTES`, with fewer colours if needed."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    for colours in (None, 256, 128, 64):
        shown = image if colours is None else image.quantize(colours, dither=Image.Dither.NONE)
        buf = io.BytesIO()
        shown.save(buf, format="PNG", optimize=True)
        if buf.tell() <= MAX_BYTES:
            break
    path.write_bytes(buf.getvalue())
    print(f"{path}: {buf.tell() / 1024:.0f} KB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photo", type=Path, default=EXAMPLE)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="viewer-shots-") as tmp:
        inputs, outputs = Path(tmp) / "inputs", Path(tmp) / "outputs"
        inputs.mkdir()
        outputs.mkdir()
        photo = inputs / "garden.jpg"
        shutil.copyfile(args.photo, photo)
        write_demo_result(outputs, photo, "garden_20261201-101500", DepthSettings(), 3.1)
        newest = write_demo_result(outputs, photo, "garden_20261201-101742",
                                   DepthSettings(depth_scale=1.4), 1.9)
        (outputs / "blurry.heic.error.txt").write_text(
            "blurry.heic: cannot decode the photo (the file is truncated); sharp-watch "
            "tries again when the file changes\n", encoding="utf-8")
        status = {"state": "working", "current_file": str(inputs / "beach.jpg"),
                  "stage": "sharp", "queue_length": 2}
        app = ViewerApp(Place(inputs, outputs, DepthSettings()), lambda: status,
                        lambda _: None)
        app.start()
        try:
            with browser() as chrome:
                page = chrome.new_page(viewport={"width": 1280, "height": 800})
                page.goto(app.launch(f"/view?ply={newest.name}").as_uri())
                page.wait_for_selector("#facts tr")
                deadline = time.monotonic() + 240
                while time.monotonic() < deadline:
                    shot = page.locator("#scene").screenshot(timeout=120_000)
                    if drawn_fraction(region(shot, SCENE_BOX), BACKGROUND) > 0.3:
                        break
                page.click("#show-all")  # every Gaussian: slow in software, fine for a still
                while app.shown_count != 2 * SIDE * SIDE:
                    page.wait_for_timeout(50)
                page.wait_for_timeout(3000)  # Spark's sort of the full scene, redrawn
                with page.expect_download(timeout=120_000):  # the card then offers it
                    page.click("#share")
                page.wait_for_selector("#share-note.good")
                save(page.screenshot(timeout=120_000), args.out / "viewer.png")
                page.goto(app.launch("/").as_uri())
                page.wait_for_selector(".card img")
                time.sleep(1.5)
                save(page.screenshot(timeout=60_000), args.out / "gallery.png")
        finally:
            app.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

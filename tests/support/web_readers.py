"""Web viewers' own decoders run on our exports, in headless Chromium
(`tests.support.viewer_browser`).

`reader_page` opens a page whose import map names ES modules on disk and whose script
reads `/files/<name>`; Playwright's request routing serves all of it from Python, so there
is no server and nothing leaves the machine. `SPARK` is the script for the Spark the viewer
vendors (2.2.0): `SplatMesh({fileBytes, fileName, extSplats: true})`, Spark's own decoder
for PLY, SPZ and SOG, keeping float32 centres, half-float colour, opacity and log scales,
and 32-bit quaternions; `spark_columns` turns what it read into our PLY's columns.
"""

from __future__ import annotations

import json
import math
import mimetypes
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tests.support.splat_reader import OPACITY, assert_decoded

ROOT = Path(__file__).resolve().parents[2]
HOST = "http://sharp-watch.test"
VENDOR = ROOT / "viewer" / "static" / "vendor"
SPARK_MODULES = {
    "three": VENDOR / "three" / "three.module.min.js",
    "three/addons/": VENDOR / "three" / "addons",
    "@sparkjsdev/spark": VENDOR / "spark" / "spark.module.min.js",
}
SPARK = """
import { SplatMesh } from "@sparkjsdev/spark";
window.readSplats = async (name) => {
  const bytes = new Uint8Array(await (await fetch("/files/" + name)).arrayBuffer());
  const mesh = new SplatMesh({ fileBytes: bytes, fileName: name, extSplats: true });
  await mesh.initialized;
  const rows = [];
  mesh.extSplats.forEachSplat((i, c, s, q, o, rgb) => rows.push(
    [c.x, c.y, c.z, rgb.r, rgb.g, rgb.b, o, s.x, s.y, s.z, q.w, q.x, q.y, q.z]));
  return rows;
};
"""
SH_C0 = math.sqrt(1 / (4 * math.pi))
SPARK_CENTRE = 2.0 ** -18
"""Spark decodes SOG positions in float32: a few ulps of the log-space value (up to about
4 here), times `|x| + 1` (the exponential's slope); PLY and SPZ centres are exact."""
SPARK_HALF = 2.0 ** -11
"""Half-float colour, opacity and log scale: within 2^-11 of the value (relative)."""
SPARK_QUATERNION = 0.005
"""Spark's quaternion: axis in 10 + 10 bits of an octahedral map (within about 0.0035
rad), angle in 12 bits over [0, pi] (within 4e-4)."""


def reader_page(chrome: Any, modules: Mapping[str, Path], script: str,
                files: Mapping[str, Path]) -> Any:
    """A Playwright page that imports `modules` (specifier -> file, or -> folder for a
    specifier ending in "/") and runs `script` (a module); `fetch("/files/NAME")` gets
    `files[NAME]`. Returns once the script has run."""
    folders = {str(i): path if name.endswith("/") else path.parent
               for i, (name, path) in enumerate(modules.items())}
    imports = {name: f"/lib/{i}/" + ("" if name.endswith("/") else path.name)
               for i, (name, path) in enumerate(modules.items())}
    page_html = (f"<!doctype html><script type='importmap'>{json.dumps({'imports': imports})}"
                 f"</script><script type='module'>{script}\nwindow.ready = true;</script>")

    def serve(route: Any) -> None:
        url = route.request.url.removeprefix(HOST).split("?")[0]
        if url == "/":
            return route.fulfill(body=page_html, content_type="text/html")
        if url.startswith("/files/") and url.removeprefix("/files/") in files:
            return route.fulfill(body=files[url.removeprefix("/files/")].read_bytes())
        parts = url.split("/", 3)  # "", "lib", mount, path
        target = ROOT / "missing"
        if len(parts) == 4 and parts[1] == "lib" and parts[2] in folders:
            target = folders[parts[2]] / parts[3]
        if not target.is_file():
            return route.fulfill(status=404)
        kind = mimetypes.guess_type(target.name)[0] or "text/javascript"
        return route.fulfill(body=target.read_bytes(), content_type=kind)

    errors: list[str] = []
    page = chrome.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.route(HOST + "/**", serve)
    page.goto(HOST + "/")
    try:
        page.wait_for_function("window.ready === true", timeout=120_000)
    except Exception as exc:
        raise AssertionError(f"the reader page did not start: {errors or exc}") from exc
    return page


def spark_columns(rows: list[list[float]]) -> np.ndarray:
    """What Spark read, as our PLY's `(N, 14)` columns (SH DC colour, opacity logit, log
    scales, wxyz)."""
    splats = np.asarray(rows, dtype=np.float64).reshape(-1, 14)
    opacity = np.clip(splats[:, 6], 1e-7, 1 - 1e-7)
    return np.hstack([splats[:, 0:3], (splats[:, 3:6] - 0.5) / SH_C0,
                      np.log(opacity / (1 - opacity))[:, None], np.log(splats[:, 7:10]),
                      splats[:, 10:14]])


def assert_read_by_spark(got: np.ndarray, want: np.ndarray, position: float | np.ndarray,
                         dc: float | np.ndarray, log_scale: float | np.ndarray,
                         rotation: float, centre: float = 0.0) -> None:
    """`assert_decoded` with Spark's own precision added to the format's bounds: `centre`
    (relative to `|x| + 1`) for its position decode, `SPARK_HALF` for its half floats
    (colours as `SH_C0 dc + 0.5`, up to 2 for SPZ's wide range), `SPARK_QUATERNION`."""
    assert_decoded(got, want, np.add(position, (np.abs(want[:, :3]) + 1) * centre),
                   np.add(dc, 2 * SPARK_HALF / SH_C0),
                   np.add(log_scale, (np.abs(want[:, 7:10]) + 1) * SPARK_HALF),
                   rotation + SPARK_QUATERNION, OPACITY + SPARK_HALF)

"""Which web reader opens which of our exports: the table in docs/formats.md, remade.

    python tools/format_readers.py [--n 3000]

One small scene written as PLY, SPZ versions 2 and 3, SOG (ours) and SPZ version 4
(splat-transform's writer: we do not write it), then opened by each reader in its own
decoder, printing how many Gaussians each got (or its error):

- splat-transform 3.7.0 (node; SuperSplat's importer): its CLI converts the file to PLY.
- Spark 2.2.0, the copy the viewer vendors: `SplatMesh` in headless Chromium.
- the PlayCanvas engine 2.23.3 (splat-transform's dependency): a `gsplat` asset, loaded
  and decompressed on the GPU (SwiftShader) in headless Chromium.
- gaussian-splats-3d 0.4.7 (with three 0.180.0): its `PlyLoader` and `SpzLoader`
  (it has no SOG loader) in headless Chromium.

Needs node/npm (the packages are installed once into the user cache), Chromium and
playwright; nothing leaves the machine once installed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.viewer_compare import ENTRY_POINTS, NPM_CANDIDATES, ensure_npm
from pipeline import write_ply
from pipeline.exports import write_spz
from pipeline.sog import write_sog
from tests.support.splat_reader import (
    F_PX,
    SIZE,
    SPLAT_TRANSFORM_VERSION,
    read_back,
    scene,
    splat_transform_command,
)
from tests.support.viewer_browser import browser
from tests.support.web_readers import SPARK, SPARK_MODULES, reader_page

COUNT_SPARK = SPARK + """
window.count = async (name) => (await window.readSplats(name)).length;
"""
COUNT_PLAYCANVAS = """
import * as pc from "playcanvas";
const canvas = document.createElement("canvas");
const app = new pc.AppBase(canvas);
const options = new pc.AppOptions();
options.graphicsDevice = await pc.createGraphicsDevice(canvas, { deviceTypes: ["webgl2"] });
options.componentSystems = [pc.RenderComponentSystem, pc.CameraComponentSystem,
                            pc.GSplatComponentSystem];
options.resourceHandlers = [pc.TextureHandler, pc.GSplatHandler];
app.init(options);
app.start();
window.count = (name) => new Promise((resolve, reject) => {
  const asset = new pc.Asset(name, "gsplat", { url: "/files/" + name }, { decompress: true });
  asset.on("load", () => resolve(asset.resource.gsplatData.numSplats));
  asset.on("error", (error) => reject(new Error(String(error))));
  app.assets.add(asset);
  app.assets.load(asset);
});
"""
COUNT_GS3D = """
import { PlyLoader, SpzLoader } from "@mkkellogg/gaussian-splats-3d";
const LOADERS = { ply: PlyLoader, spz: SpzLoader };
window.count = async (name) => {
  const loader = LOADERS[name.split(".").pop()];
  if (!loader) throw new Error("no loader for this format");
  const bytes = await (await fetch("/files/" + name)).arrayBuffer();
  const buffer = await loader.loadFromFileData(bytes, 0, 0, false);
  return buffer.getSplatCount();
};
"""


def write_files(folder: Path, n: int, splat_transform: list[str]) -> dict[str, Path]:
    """Our exports of one scene, and splat-transform's SPZ version 4 of our PLY."""
    g = scene(n)
    ply = write_ply(folder / "scene.ply", g, F_PX, SIZE)
    files = {"PLY": ply, "SPZ v2": write_spz(folder / "scene-v2.spz", g, version=2),
             "SPZ v3": write_spz(folder / "scene-v3.spz", g, version=3),
             "SPZ v4": folder / "scene-v4.spz", "SOG v2": write_sog(folder / "scene.sog", g)}
    subprocess.run([*splat_transform, "-q", "-w", "--spz-version", "4", str(ply),
                    str(files["SPZ v4"])], check=True, capture_output=True, timeout=240)
    return files


def in_browser(chrome: Any, modules: dict[str, Path], script: str,
               files: dict[str, Path]) -> dict[str, str]:
    """Each file's count as the page's `count(name)` gives it, or its error (the reader's
    own console error where it logged one before failing)."""
    page = reader_page(chrome, modules, script, {path.name: path for path in files.values()})
    logged: list[str] = []
    page.on("console", lambda message: message.type == "error" and logged.append(message.text))
    results = {}
    for label, path in files.items():
        logged.clear()
        try:
            results[label] = str(page.evaluate("name => window.count(name)", path.name))
        except Exception as exc:  # the reader's own words are the result
            said = logged[0] if logged else str(exc).removeprefix("Page.evaluate: ")
            results[label] = "no: " + said.splitlines()[0][:90]
    page.close()
    return results


def with_splat_transform(command: list[str], files: dict[str, Path],
                         folder: Path) -> dict[str, str]:
    results = {}
    for label, path in files.items():
        try:
            results[label] = str(read_back(command, path, folder).shape[0])
        except AssertionError as exc:
            results[label] = "no: " + str(exc).strip().splitlines()[-1][:80]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="Gaussians in the scene")
    args = parser.parse_args(argv)
    try:
        command = splat_transform_command()
    except pytest.skip.Exception as exc:
        print(f"cannot run: {exc}")
        return 1
    gs3d, problem = ensure_npm("gaussian-splats-3d")
    if gs3d is None:
        print(f"cannot run: {problem}")
        return 1
    playcanvas = Path(command[-1]).parents[3] / "playcanvas"  # splat-transform's dependency
    engine = json.loads((playcanvas / "package.json").read_text())["version"]
    packages = dict(NPM_CANDIDATES["gaussian-splats-3d"])
    gs3d_modules = {name: gs3d / "node_modules" / name / ENTRY_POINTS[name] for name in packages}
    with tempfile.TemporaryDirectory() as temp, browser() as chrome:
        folder = Path(temp)
        files = write_files(folder, args.n, command)
        rows = {
            f"splat-transform {SPLAT_TRANSFORM_VERSION}":
                with_splat_transform(command, files, folder),
            "Spark 2.2.0 (vendored)": in_browser(chrome, SPARK_MODULES, COUNT_SPARK, files),
            f"PlayCanvas engine {engine}": in_browser(
                chrome, {"playcanvas": playcanvas / "build" / "playcanvas.mjs"},
                COUNT_PLAYCANVAS, files),
            f"gaussian-splats-3d {packages['@mkkellogg/gaussian-splats-3d']}": in_browser(
                chrome, gs3d_modules, COUNT_GS3D, files),
        }
    print(f"Gaussians read of {args.n}, per reader and file ('no: ' and the reader's error "
          "where it refuses):")
    print("| reader | " + " | ".join(files) + " |")
    print("|---" * (len(files) + 1) + "|")
    for reader, results in rows.items():
        print(f"| {reader} | " + " | ".join(results[label] for label in files) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

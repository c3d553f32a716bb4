"""Viewer libraries compared on one SHARP-sized scene: load time, memory, install size, offline.

    python bench/viewer_compare.py [--gaussians 1179648] [--scene random|grid] [--ply PLY]
                                   [--only viser spark ...] [--screenshots DIR] [--gpu]

The evidence behind the viewer's library (issue 11). Candidates, measured one after the
other in one run on the same PLY (ours, written by `pipeline.write_ply`; synthetic, from
`bench/ply_write.py` or `bench/exports.py`'s grid, unless `--ply` is given):

- viser: a Python `ViserServer` given the PLY through `scene.add_gaussian_splats`; its
  client is the prebuilt page inside the wheel.
- spark and gaussian-splats-3d: a static page (three.js plus `@sparkjsdev/spark`, or plus
  `@mkkellogg/gaussian-splats-3d`) that loads our PLY itself, served by a tiny Python
  HTTP server. The pinned npm packages are installed once into the user cache.

Every candidate gets its server in a child process and a fresh headless Chromium (new
profile, so a cold cache; SwiftShader WebGL unless `--gpu`; no network beyond loopback:
a dead SOCKS proxy and a resolver that knows only localhost), driven over the DevTools
protocol, all from SHARP's source camera. Columns:

- visible s: from `Page.navigate` to the first screenshot in which the splat shows
  (`visible()`: at least 25 % of the middle quarter of the viewport differs from that
  area's commonest colour; a blank canvas of any colour gives 0 %, checked at start).
  A screenshot waits for the page's next frame, so the visible time is when the first
  frame with the splat was done; frame s is how long that screenshot took (about the
  time to draw that frame). cpu s: the CPU seconds browser and server spent until
  visible (less sensitive than wall time to other load; load: the 1-minute average).
  server s: the server's start (Python, imports, PLY read); total s the sum.
- srv / brw RSS: RSS of the server process, and summed over Chromium's process tree (so
  shared pages count once per process; PSS beside it), when the splat became visible;
  peak: the highest of samples twice a second.
- disk MB / dl MB: what the candidate adds to a sharp-watch install: for viser, viser and
  its dependencies outside sharp-watch's own, installed (RECORD sizes) and as win_amd64
  wheels (fetched once with pip); for npm, node_modules on disk and the tarballs in npm's
  cache. page MB: what the browser fetched over HTTP besides the PLY.
- offline: visible, and no request (HTTP or websocket) to any host but loopback.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


CHROMIUM = "/usr/bin/chromium"
WINDOW = (1280, 800)
VISIBLE_SHARE = 0.25
"""Share of the middle of the viewport that must differ from its commonest colour."""
COLOUR_STEP = 24
"""Summed |R|+|G|+|B| difference (0..765) that counts a pixel as different."""
POLL_S = 0.1
CALL_TIMEOUT_S = 600
"""A screenshot waits for a frame; under SwiftShader one frame of a million splats can
take a minute on 2 cores."""
BLANK = "not-a-page"
"""Opened before the timed navigation: a 404 on the candidate's own server."""
LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}
THREE = ("three", "0.180.0")
NPM_CANDIDATES = {
    "spark": (("@sparkjsdev/spark", "2.2.0"), THREE),
    "gaussian-splats-3d": (("@mkkellogg/gaussian-splats-3d", "0.4.7"), THREE),
}
"""Each page's npm packages, pinned (three at the version Spark's README uses)."""
WHEEL_PLATFORM = ("win_amd64", "3.11")
"""Wheels are sized for the users' platform, not this machine's."""
VERTEX_PROPERTIES = (  # pipeline.ply's; not imported, as that would load torch in servers
    ["x", "y", "z"] + [f"f_dc_{i}" for i in range(3)] + ["opacity"]
    + [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)]
)
SH_C0 = math.sqrt(1.0 / (4.0 * math.pi))


# -- the scene -----------------------------------------------------------------------

@dataclass(frozen=True)
class Scene:
    """Our PLY's vertex block and the camera it was made from."""

    path: Path
    vertices: np.ndarray
    """`(N, 14)` float32 rows as `pipeline.ply` writes them, mapped (read on first use)."""
    f_px: float
    image_size: tuple[int, int]

    @property
    def fov_y(self) -> float:
        """Vertical field of view in radians, from the intrinsics and image height."""
        return 2 * math.atan(self.image_size[1] / (2 * self.f_px))


def read_scene(path: Path) -> Scene:
    """Our layout only: a vertex element of the 14 float properties, then SHARP's extras."""
    with open(path, "rb") as f:
        head = f.read(4096)
    end = head.find(b"end_header\n")
    lines = head[:end].decode("ascii", "replace").splitlines() if end > 0 else []
    if not lines or lines[0] != "ply" or "format binary_little_endian 1.0" not in lines:
        raise SystemExit(f"{path}: not a binary little-endian PLY (no header found)")
    elements = [line.split() for line in lines if line.startswith("element ")]
    properties = [line.split()[-1] for line in lines if line.startswith("property ")]
    if not elements or elements[0][1] != "vertex" or properties[:14] != VERTEX_PROPERTIES:
        raise SystemExit(f"{path}: not sharp-watch's PLY layout (vertex x..rot_3 first)")
    if [e[1:] for e in elements[1:4]] != [["extrinsic", "16"], ["intrinsic", "9"],
                                           ["image_size", "2"]]:
        raise SystemExit(f"{path}: no SHARP camera after the vertices (extrinsic, intrinsic, "
                         "image_size), so no source camera to view it from")
    count = int(elements[0][2])
    offset = end + len(b"end_header\n")
    trailer = np.fromfile(path, dtype="<f4", count=27, offset=offset + count * 56)
    if trailer.size != 27:
        raise SystemExit(f"{path}: shorter than its header's {count} vertices")
    vertices = np.memmap(path, dtype="<f4", mode="r", offset=offset, shape=(count * 14,))
    width, height = trailer[25:27].view("<u4")
    return Scene(path, vertices.reshape(count, 14), float(trailer[16]), (int(width), int(height)))


def make_scene(n: int, kind: str, folder: Path) -> Path:
    """A synthetic scene of `n` Gaussians written by `pipeline.write_ply`."""
    from bench.exports import grid_gaussians
    from bench.ply_write import F_PX, SIZE, random_gaussians
    from pipeline import write_ply

    gaussians = random_gaussians(n) if kind == "random" else grid_gaussians(n)
    return write_ply(folder / f"scene-{kind}-{n}.ply", gaussians, F_PX, SIZE)


def viser_arrays(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`add_gaussian_splats` arguments: centres, covariances R S^2 R^T, sRGB, opacity."""
    w, x, y, z = (vertices[:, 10 + i] for i in range(4))
    norm = np.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / norm, x / norm, y / norm, z / norm
    rotation = np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], axis=-1).reshape(-1, 3, 3)
    scaled = rotation * np.exp(vertices[:, None, 7:10])
    return (vertices[:, 0:3], scaled @ scaled.transpose(0, 2, 1),
            np.clip(0.5 + SH_C0 * vertices[:, 3:6], 0.0, 1.0),
            1.0 / (1.0 + np.exp(-vertices[:, 6:7])))


# -- the servers (run as child processes of this script) ----------------------------

def announce(port: int) -> None:
    """Tell the parent the server is ready, on which port."""
    print(f"READY {port}", flush=True)


def serve_viser(ply: Path) -> None:
    """A viser server showing the PLY from SHARP's camera (OpenCV axes: y down, z ahead)."""
    import viser

    scene = read_scene(ply)
    server = viser.ViserServer(host="127.0.0.1", port=0, verbose=False)
    server.scene.add_gaussian_splats("/scene", *viser_arrays(scene.vertices))
    server.initial_camera.fov = scene.fov_y
    server.initial_camera.position = (0.0, 0.0, 0.0)
    server.initial_camera.look_at = (0.0, 0.0, 1.0)
    server.initial_camera.up = (0.0, -1.0, 0.0)
    announce(server.get_port())
    threading.Event().wait()


PAGES = {
    "spark": """
import { SparkRenderer, SplatMesh } from "@sparkjsdev/spark";
const renderer = new THREE.WebGLRenderer({ antialias: false });
renderer.setSize(innerWidth, innerHeight);
document.body.appendChild(renderer.domElement);
const scene = new THREE.Scene();
scene.add(new SparkRenderer({ renderer }));
scene.add(new SplatMesh({ url: "/scene.ply" }));
renderer.setAnimationLoop(() => renderer.render(scene, camera));
""",
    "gaussian-splats-3d": """
import * as GS3D from "@mkkellogg/gaussian-splats-3d";
const viewer = new GS3D.Viewer({ camera, cameraUp: [0, -1, 0], initialCameraPosition: [0, 0, 0],
                                 initialCameraLookAt: [0, 0, 1], sharedMemoryForWorkers: false,
                                 sphericalHarmonicsDegree: 0 });
viewer.addSplatScene("/scene.ply", { format: GS3D.SceneFormat.Ply, progressiveLoad: false })
  .then(() => viewer.start());
""",
}
"""Each page's module body; `camera` (SHARP's, from the PLY) is defined before it."""

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{name}</title>
<style>html, body {{ margin: 0; height: 100%; overflow: hidden; background: #000 }}</style>
<script type="importmap">{imports}</script>
</head><body><script type="module">
import * as THREE from "three";
const camera = new THREE.PerspectiveCamera({fov}, innerWidth / innerHeight, 0.01, 1000);
camera.up.set(0, -1, 0);
camera.position.set(0, 0, 0);
camera.lookAt(0, 0, 1);
{body}
</script></body></html>
"""

ENTRY_POINTS = {
    "three": "build/three.module.js",
    "@sparkjsdev/spark": "dist/spark.module.js",
    "@mkkellogg/gaussian-splats-3d": "build/gaussian-splats-3d.module.js",
}


def page_html(name: str, fov_y: float) -> str:
    """The static page of an npm candidate, importing from `/npm/` on the same server."""
    imports = {package: f"/npm/{package}/{ENTRY_POINTS[package]}"
               for package, _ in NPM_CANDIDATES[name]}
    imports["three/addons/"] = "/npm/three/examples/jsm/"
    return PAGE.format(name=name, imports=json.dumps({"imports": imports}),
                       fov=math.degrees(fov_y), body=PAGES[name])


class StaticHandler(SimpleHTTPRequestHandler):
    """`/` the page, `/scene.ply` the PLY, `/npm/...` node_modules; nothing else."""

    routes: ClassVar[dict[str, Path]] = {}
    page = b""

    def translate_path(self, path: str) -> str:
        path = urlsplit(path).path
        if path == "/scene.ply":
            return str(self.routes["ply"])
        if path.startswith("/npm/"):
            root = self.routes["npm"].resolve()
            target = (root / path.removeprefix("/npm/")).resolve()
            return str(target) if target.is_relative_to(root) else str(root / "missing")
        return str(self.routes["npm"] / "missing")

    def do_GET(self) -> None:
        if urlsplit(self.path).path in ("/", "/index.html"):
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(self.page)))
            self.end_headers()
            self.wfile.write(self.page)
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the browser's own log says what was fetched."""


def serve_static(name: str, ply: Path, npm: Path) -> None:
    """The page of npm candidate `name` with its PLY, on 127.0.0.1."""
    scene = read_scene(ply)
    handler = type("Handler", (StaticHandler,), {
        "routes": {"ply": ply, "npm": npm},
        "page": page_html(name, scene.fov_y).encode(),
        "extensions_map": {**StaticHandler.extensions_map, ".js": "text/javascript"},
    })
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    announce(server.server_address[1])
    server.serve_forever()


# -- the browser, over the DevTools protocol -----------------------------------------

class DevTools:
    """A synchronous DevTools session on one page: calls, and the events seen meanwhile."""

    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        self.socket = connect(url, max_size=None, open_timeout=30)
        self.events: list[dict[str, Any]] = []
        self.next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=CALL_TIMEOUT_S))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            if "method" in message:
                self.events.append(message)

    def close(self) -> None:
        self.socket.close()


@dataclass(frozen=True)
class Browser:
    """How pages are opened: which Chromium, WebGL on the GPU or SwiftShader, for how long."""

    executable: str
    gpu: bool
    timeout: float
    screenshots: Path | None


def chromium_flags(profile: Path, gpu: bool) -> list[str]:
    """Headless, no network but loopback, a fresh profile; SwiftShader WebGL unless `gpu`.

    Requests are logged to `net.json` beside the profile by the NetLog rather than the
    DevTools Network domain, which would copy every websocket frame (viser's whole
    scene) to us and so slow down the very page being timed.
    """
    webgl = [] if gpu else ["--disable-gpu", "--use-angle=swiftshader",
                            "--enable-unsafe-swiftshader"]
    return [
        "--headless", "--no-sandbox", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        *webgl, "--proxy-server=socks5://127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND, "
        "EXCLUDE localhost, EXCLUDE 127.0.0.1",
        f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--user-data-dir={profile}",
        f"--log-net-log={profile.parent / 'net.json'}",
        "--remote-debugging-port=0", "about:blank",
    ]


@contextmanager
def chromium(profile: Path, browser: Browser) -> Iterator[tuple[subprocess.Popen[bytes],
                                                                 DevTools]]:
    """A Chromium process and a DevTools session on its first page."""
    from urllib.request import urlopen

    process = subprocess.Popen([browser.executable, *chromium_flags(profile, browser.gpu)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("Chromium did not open its DevTools port within 30 s")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        with urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
            targets = json.load(answer)
        page = next(t for t in targets if t["type"] == "page")
        session = DevTools(page["webSocketDebuggerUrl"])
        try:
            yield process, session
        finally:
            session.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def visible(middle: np.ndarray) -> tuple[bool, float]:
    """Whether the middle of the viewport shows something, and the share of it that does.

    A pixel counts when it differs from the area's commonest colour (quantised to 8
    levels per channel) by at least `COLOUR_STEP`; a uniform canvas, whatever its
    colour, gives 0.
    """
    pixels = middle.reshape(-1, 3).astype(np.int32)
    keys = (pixels // 32) @ np.array([64, 8, 1])
    reference = pixels[keys == np.bincount(keys).argmax()].mean(axis=0)
    share = float((np.abs(pixels - reference).sum(axis=1) >= COLOUR_STEP).mean())
    return share >= VISIBLE_SHARE, share


def screenshot(session: DevTools, middle: bool = True) -> np.ndarray:
    """The viewport's middle quarter at half scale (or all of it) as `(H, W, 3)` bytes.

    The small clip keeps each poll cheap under SwiftShader. Retried while a navigation
    swaps the page's renderer.
    """
    from PIL import Image

    width, height = WINDOW
    clip = {"x": width / 4, "y": height / 4, "width": width / 2, "height": height / 2,
            "scale": 0.5}
    params: dict[str, Any] = {"format": "png", **({"clip": clip} if middle else {})}
    for attempt in range(20):
        try:
            answer = session.call("Page.captureScreenshot", **params)
            break
        except RuntimeError:
            if attempt == 19:
                raise
            time.sleep(0.1)
    data = base64.b64decode(answer["data"])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# -- memory ---------------------------------------------------------------------------

def process_tree(root: int) -> list[Any]:
    """`root` and its descendants, as psutil processes (empty once it has exited)."""
    import psutil

    try:
        parent = psutil.Process(root)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_total(root: int, read: Callable[[Any], float]) -> float:
    """`read(process)` summed over a process tree, skipping processes that just exited."""
    import psutil

    total = 0.0
    for process in process_tree(root):
        try:
            total += read(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def rss(process: Any) -> float:
    return float(process.memory_info().rss)


def pss(process: Any) -> float:
    """Proportional set size where the platform has it (Linux), else RSS."""
    info = process.memory_full_info()
    return float(getattr(info, "pss", info.rss))


def cpu_seconds(process: Any) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


@dataclass
class Memory:
    """Latest and peak summed RSS of a process tree, sampled on a thread.

    RSS only, twice a second: reading PSS walks every mapping (smaps), which costs
    enough CPU on a 2-core machine to slow the browser being measured.
    """

    root: int
    rss: float = 0.0
    peak: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        self.rss = tree_total(self.root, rss)
        self.peak = max(self.peak, self.rss)

    def run(self) -> None:
        while not self.stop.wait(0.5):
            self.sample()


@contextmanager
def sampled(root: int) -> Iterator[Memory]:
    memory = Memory(root)
    memory.sample()
    thread = threading.Thread(target=memory.run, daemon=True)
    thread.start()
    try:
        yield memory
    finally:
        memory.stop.set()
        thread.join()


# -- install sizes --------------------------------------------------------------------

def cache_folder() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("sharp-watch")) / "bench-tools"


def needed(line: str) -> str | None:
    """The distribution a `Requires-Dist` line names, if a plain install (no extras,
    this platform's markers) needs it."""
    from packaging.requirements import Requirement

    requirement = Requirement(line)
    marker = requirement.marker
    return requirement.name if marker is None or marker.evaluate({"extra": ""}) else None


def requirement_closure(names: list[str]) -> dict[str, metadata.Distribution]:
    """Installed distributions `names` need, transitively."""
    from packaging.utils import canonicalize_name

    found: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        found[name] = dist
        todo += [n for n in map(needed, dist.requires or []) if n is not None]
    return found


def base_requirements() -> list[str]:
    """sharp-watch's own dependencies, without extras."""
    requires = metadata.distribution("sharp-watch").requires or []
    return [name for name in map(needed, requires) if name is not None]


def wheel_bytes(name: str, version: str) -> int | None:
    """Size of the win_amd64 wheel of `name==version`, downloaded once into the cache."""
    folder = cache_folder() / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[-_.]+", "_", name).lower()

    def cached() -> Path | None:
        for wheel in folder.glob("*.whl"):
            parts = wheel.name.split("-")
            if re.sub(r"[-_.]+", "_", parts[0]).lower() == stem and parts[1] == version:
                return wheel
        return None

    if cached() is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                        "--only-binary=:all:", "--platform", WHEEL_PLATFORM[0],
                        "--python-version", WHEEL_PLATFORM[1], "-d", str(folder),
                        f"{name}=={version}"], capture_output=True, timeout=300)
    wheel = cached()
    return wheel.stat().st_size if wheel else None


@dataclass(frozen=True)
class Install:
    """What a candidate adds to a sharp-watch install."""

    packages: list[str]
    disk: int
    download: int | None


def python_install(name: str) -> Install:
    """`name` and its dependencies that sharp-watch does not already need."""
    ours = requirement_closure(base_requirements())
    extra = {key: dist for key, dist in requirement_closure([name]).items() if key not in ours}
    disk = sum(f.size or 0 for dist in extra.values() for f in dist.files or [])
    sizes = [wheel_bytes(dist.metadata["Name"], dist.version) for dist in extra.values()]
    download = None if None in sizes else sum(s for s in sizes if s is not None)
    packages = sorted(f"{dist.metadata['Name']} {dist.version}" for dist in extra.values())
    return Install(packages, disk, download)


def npm_tarball_bytes(cache: Path, integrity: str) -> int | None:
    """Size of a tarball in npm's content cache (`cacache`), found by its integrity hash."""
    algorithm, _, digest = integrity.partition("-")
    hexdigest = base64.b64decode(digest).hex()
    path = cache / "_cacache" / "content-v2" / algorithm / hexdigest[:2] / hexdigest[2:4] / (
        hexdigest[4:])
    return path.stat().st_size if path.exists() else None


def npm_install(prefix: Path) -> Install:
    """node_modules of a candidate's prefix: bytes on disk, and its tarballs' bytes."""
    lock = json.loads((prefix / "package-lock.json").read_text())
    entries = {key: value for key, value in lock["packages"].items() if key}
    disk = sum(f.stat().st_size for f in (prefix / "node_modules").rglob("*")
               if f.is_file() and f.name != ".package-lock.json")
    npm = shutil.which("npm") or "npm"
    cache = Path(subprocess.run([npm, "config", "get", "cache"], capture_output=True,
                                text=True).stdout.strip())
    sizes = [npm_tarball_bytes(cache, entry.get("integrity", "-")) for entry in entries.values()]
    download = None if None in sizes else sum(s for s in sizes if s is not None)
    packages = sorted(f"{key.removeprefix('node_modules/')} {value['version']}"
                      for key, value in entries.items())
    return Install(packages, disk, download)


def ensure_npm(name: str) -> tuple[Path | None, str]:
    """The candidate's npm prefix, installing its pinned packages when missing."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        return None, "node/npm not installed"
    specs = [f"{package}@{version}" for package, version in NPM_CANDIDATES[name]]
    prefix = cache_folder() / f"{name}-{'-'.join(v for _, v in NPM_CANDIDATES[name])}"
    entry_points = [prefix / "node_modules" / p / ENTRY_POINTS[p] for p, _ in NPM_CANDIDATES[name]]
    if not all(path.exists() for path in entry_points):
        prefix.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit",
                               "--no-fund", "--ignore-scripts", *specs],
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            return None, f"npm install {' '.join(specs)} failed: {done.stderr.strip()[-300:]}"
    return prefix, ""


# -- one candidate --------------------------------------------------------------------

@dataclass
class Result:
    name: str
    skipped: str = ""
    server_ready_s: float = math.nan
    visible_s: float = math.nan
    frame_s: float = math.nan
    """Seconds the first visible screenshot took: it waits for the page's next frame, so
    about the time to draw the first frame with the splat (the visible time is when that
    frame was done, to within the readback)."""
    cpu_s: float = math.nan
    """CPU seconds (user + system) of browser and server from opening to visible."""
    load: float = math.nan
    """The machine's 1-minute load average when the candidate started."""
    share: float = math.nan
    """`visible()`'s share on the first frame that passed."""
    blank_share: float = math.nan
    """... and on the last frame before it."""
    server_rss: float = 0.0
    server_peak: float = 0.0
    browser_rss: float = 0.0
    browser_peak: float = 0.0
    browser_pss: float = 0.0
    install: Install | None = None
    outside: list[str] = field(default_factory=list)
    page_bytes: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def offline(self) -> bool:
        return not math.isnan(self.visible_s) and not self.outside


def start_server(command: list[str], log: Path) -> tuple[subprocess.Popen[str], int, float]:
    """A child server; its port and seconds to ready (PLY read included).

    Its stderr goes to `log`; its stdout is drained on a thread after the ready line,
    so a chatty server never blocks on a full pipe.
    """
    start = time.perf_counter()
    with open(log, "w") as errors:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True)
    assert process.stdout is not None
    line = "-"
    while line and not line.startswith("READY "):
        line = process.stdout.readline()
    if not line.startswith("READY "):
        process.wait()
        raise RuntimeError(f"server {' '.join(command[-3:])} did not start: "
                           f"{log.read_text()[-800:]}")
    threading.Thread(target=process.stdout.read, daemon=True).start()
    return process, int(line.split()[1]), time.perf_counter() - start


def host_of(url: str) -> str | None:
    """The host of a network URL; None for data:, blob: and the like."""
    parts = urlsplit(url)
    return parts.hostname if parts.scheme in {"http", "https", "ws", "wss"} else None


def measure(name: str, command: list[str], install: Install, browser: Browser) -> Result:
    """Open the candidate's page in a fresh Chromium; time, memory and requests."""
    result = Result(name, install=install)
    with tempfile.TemporaryDirectory() as folder:
        server, port, result.server_ready_s = start_server(command, Path(folder) / "server.log")
        try:
            browse(result, server, port, Path(folder) / "profile", browser)
        finally:
            server.terminate()
            server.wait(timeout=10)
    return result


def browse(result: Result, server: subprocess.Popen[str], port: int, profile: Path,
           browser: Browser) -> None:
    """The page from opening to visible (or `timeout`), in a fresh Chromium profile."""
    import psutil

    profile.mkdir()
    result.load = psutil.getloadavg()[0]
    with chromium(profile, browser) as (process, session), \
            sampled(process.pid) as browser_memory, sampled(server.pid) as server_memory:
        for domain in ("Page", "Runtime"):
            session.call(f"{domain}.enable")
        session.call("Emulation.setDeviceMetricsOverride", width=WINDOW[0], height=WINDOW[1],
                     deviceScaleFactor=1, mobile=False)
        # Same origin first, so the timed navigation stays in one renderer process.
        session.call("Page.navigate", url=f"http://127.0.0.1:{port}/{BLANK}")
        time.sleep(1.0)
        session.events.clear()

        def cpu() -> float:
            return tree_total(process.pid, cpu_seconds) + tree_total(server.pid, cpu_seconds)

        cpu_start, start = cpu(), time.perf_counter()
        session.call("Page.navigate", url=f"http://127.0.0.1:{port}/")
        while (asked := time.perf_counter()) - start < browser.timeout:
            shown, share = visible(screenshot(session))
            now = time.perf_counter()
            if shown:
                result.visible_s, result.share = now - start, share
                result.frame_s = now - asked
                result.cpu_s = cpu() - cpu_start
                break
            result.blank_share = share
            time.sleep(POLL_S)
        for memory in (browser_memory, server_memory):
            memory.sample()
        result.browser_rss, result.server_rss = browser_memory.rss, server_memory.rss
        result.browser_pss = tree_total(process.pid, pss)
        time.sleep(1.0)
        result.browser_peak, result.server_peak = browser_memory.peak, server_memory.peak
        if browser.screenshots is not None:
            from PIL import Image

            Image.fromarray(screenshot(session, middle=False)).save(
                browser.screenshots / f"{result.name}.png")
        result.page_bytes = int(session.call("Runtime.evaluate", expression=PAGE_BYTES,
                                             returnByValue=True)["result"].get("value", 0))
        result.errors = page_errors(session.events)
    result.outside = outside_requests(profile.parent / "net.json", f"http://127.0.0.1:{port}")


def page_errors(events: list[dict[str, Any]]) -> list[str]:
    """Uncaught exceptions and console errors the page logged."""
    errors = []
    for event in events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            errors.append(details.get("exception", {}).get("description", details["text"]))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            errors.append(" ".join(str(a.get("value", a.get("description", "")))
                                   for a in params.get("args", [])))
    return [error[:200] for error in errors]


def read_net_log(path: Path) -> dict[str, Any]:
    """A NetLog, also one cut short (a browser killed mid-write leaves the events list
    open): complete lines are kept and the list closed."""
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.rstrip().splitlines()
    for cut in range(len(lines), max(len(lines) - 50, 0), -1):
        body = "\n".join(lines[:cut]).rstrip().rstrip(",")
        for ending in ("", "]}", "}"):
            try:
                log: dict[str, Any] = json.loads(body + ending)
                return log
            except json.JSONDecodeError:
                continue
    raise RuntimeError(f"{path}: not a NetLog, even cut short")


def outside_requests(net_log: Path, origin: str) -> list[str]:
    """URLs the page (its frames and workers: initiator `origin`) asked for on a host
    other than loopback, from Chromium's NetLog; the browser's own background requests
    (initiator "not an origin") are not the page's doing and are left out."""
    log = read_net_log(net_log)
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = []
    for event in log["events"]:
        params = event.get("params") or {}
        if event["type"] == start_job and params.get("initiator") == origin:
            host = host_of(params.get("url", ""))
            if host is not None and host not in LOOPBACK:
                urls.append(params["url"])
    return list(dict.fromkeys(urls))


PAGE_BYTES = """performance.getEntries()
  .filter(e => "transferSize" in e && !e.name.endsWith("/scene.ply"))
  .reduce((sum, e) => sum + e.transferSize, 0)"""
"""Bytes the page fetched over HTTP (the document and its resources) besides the PLY."""


# -- the report -----------------------------------------------------------------------

def mb(value: float | None) -> str:
    return "n/a" if value is None or value == 0 else f"{value / 1e6:.1f}"


def seconds(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


METRICS: list[tuple[str, Callable[[Result], float | None]]] = [
    ("open->visible", lambda r: r.visible_s),
    ("server start + open->visible", lambda r: r.server_ready_s + r.visible_s),
    ("server RSS at visible", lambda r: r.server_rss),
    ("browser RSS at visible", lambda r: r.browser_rss),
    ("cpu to visible", lambda r: r.cpu_s),
    ("server + browser peak RSS", lambda r: r.server_peak + r.browser_peak),
    ("install on disk", lambda r: r.install.disk if r.install else None),
    ("download", lambda r: r.install.download if r.install else None),
]


COLUMNS: list[tuple[str, Callable[[Result], str]]] = [
    ("visible s", lambda r: seconds(r.visible_s)),
    ("frame s", lambda r: seconds(r.frame_s)),
    ("cpu s", lambda r: seconds(r.cpu_s)),
    ("server s", lambda r: seconds(r.server_ready_s)),
    ("total s", lambda r: seconds(r.server_ready_s + r.visible_s)),
    ("srv RSS", lambda r: mb(r.server_rss)),
    ("srv peak", lambda r: mb(r.server_peak)),
    ("brw RSS", lambda r: mb(r.browser_rss)),
    ("brw PSS", lambda r: mb(r.browser_pss)),
    ("brw peak", lambda r: mb(r.browser_peak)),
    ("disk MB", lambda r: mb(r.install.disk if r.install else None)),
    ("dl MB", lambda r: mb(r.install.download if r.install else None)),
    ("page MB", lambda r: mb(r.page_bytes)),
    ("load", lambda r: f"{r.load:.1f}"),
]


def offline_text(r: Result) -> str:
    if r.outside:
        return f"no: {len(r.outside)} requests outside loopback, e.g. {r.outside[0]}"
    return "yes" if r.offline else "not visible (within the timeout)"


def report(results: list[Result], scene: Scene, scene_kind: str, browser: Browser) -> None:
    """The table, what each candidate installs, page errors, and the ratio lines."""
    print(f"scene: {scene.path.name}, {scene.vertices.shape[0]} Gaussians "
          f"({scene_kind}), {scene.path.stat().st_size / 1e6:.1f} MB; headless Chromium "
          f"{WINDOW[0]}x{WINDOW[1]}, WebGL on {'the GPU' if browser.gpu else 'SwiftShader'}; "
          f"{os.cpu_count()} CPUs")
    print(f"{'candidate':<19}" + "".join(f" {title:>9}" for title, _ in COLUMNS) + "  offline")
    for r in results:
        if r.skipped:
            print(f"{r.name:<19} skipped: {r.skipped}")
            continue
        print(f"{r.name:<19}" + "".join(f" {cell(r):>9}" for _, cell in COLUMNS)
              + f"  {offline_text(r)}")
    for r in results:
        if r.skipped:
            continue
        print(f"{r.name}: pixel check share {r.blank_share:.3f} on the last frame before "
              f"visible, {r.share:.3f} on the first visible one (threshold {VISIBLE_SHARE})")
        if r.install:
            print(f"{r.name} installs: {', '.join(r.install.packages)}")
        for error in dict.fromkeys(r.errors):
            print(f"{r.name} page error: {error}")
    measured = {r.name: r for r in results if not r.skipped}
    viser = measured.pop("viser", None)
    if viser is None or not measured:
        print("ratios: need viser and at least one alternative measured")
        return
    for label, metric in METRICS:
        ratios = []
        for name, r in measured.items():
            value, base = metric(r), metric(viser)
            known = value is not None and base and not math.isnan(value) and not math.isnan(base)
            ratio = f"{value / base:.2f}x" if known else "n/a"  # type: ignore[operator]
            ratios.append(f"{name}/viser {ratio}")
        print(f"ratio {label}: " + "  ".join(ratios))
    print("offline: " + "  ".join(
        f"{r.name} {'yes' if r.offline else 'no' if r.outside else 'n/a (not visible)'}"
        for r in (viser, *measured.values())))


def check_pixel_test() -> None:
    """`visible()` must fail on blank canvases, or no load time means anything."""
    for colour in ((0, 0, 0), (255, 255, 255), (40, 90, 200)):
        shown, share = visible(np.full((200, 320, 3), colour, dtype=np.uint8))
        if shown or share:
            raise SystemExit(f"visible() passes a blank {colour} canvas (share {share})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gaussians", type=int, default=2 * 768 * 768,
                        help="synthetic scene size (SHARP's: two layers of 768 x 768)")
    parser.add_argument("--scene", choices=("random", "grid"), default="random",
                        help="synthetic scene: bench/ply_write's or bench/exports' grid")
    parser.add_argument("--ply", type=Path, help="measure this PLY (our layout) instead")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds a page may take to show the splat")
    parser.add_argument("--only", nargs="+", choices=("viser", *NPM_CANDIDATES),
                        help="measure only these candidates")
    parser.add_argument("--screenshots", type=Path, help="save each page's last frame here")
    parser.add_argument("--chromium", default=shutil.which("chromium") or CHROMIUM,
                        help="Chromium or Chrome executable (default: chromium on PATH)")
    parser.add_argument("--gpu", action="store_true",
                        help="WebGL on the GPU instead of SwiftShader (a machine with one)")
    parser.add_argument("--serve", nargs=2, metavar=("CANDIDATE", "PLY"), help=argparse.SUPPRESS)
    parser.add_argument("--npm", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.serve:
        name, ply = args.serve[0], Path(args.serve[1])
        if name == "viser":
            serve_viser(ply)
        else:
            serve_static(name, ply, args.npm)
        return 0
    if not Path(args.chromium).exists():
        print(f"{args.chromium} not found: install Chromium (Debian: apt install chromium) "
              "or pass --chromium")
        return 1
    missing = [name for name in ("websockets", "psutil", "packaging")
               if importlib.util.find_spec(name) is None]
    if missing:
        print(f"this bench needs {', '.join(missing)}: pip install {' '.join(missing)} "
              "(websockets comes with viser, psutil with sharp-watch[test])")
        return 1
    browser = Browser(args.chromium, args.gpu, args.timeout, args.screenshots)
    check_pixel_test()
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        ply = args.ply if args.ply else make_scene(args.gaussians, args.scene, Path(folder))
        scene = read_scene(ply)
        names = args.only or ["viser", *NPM_CANDIDATES]
        results = [run_candidate(name, ply, browser) for name in names]
        report(results, scene, "--ply" if args.ply else args.scene, browser)
    return 0


def run_candidate(name: str, ply: Path, browser: Browser) -> Result:
    """Install (or find) a candidate, then measure it; a skip says why."""
    own = [sys.executable, str(Path(__file__).resolve()), "--serve", name, str(ply)]
    if name == "viser":
        if importlib.util.find_spec("viser") is None:
            return Result(name, skipped="viser is not installed in this Python: pip install viser")
        install = python_install("viser")
        command = own
    else:
        prefix, problem = ensure_npm(name)
        if prefix is None:
            return Result(name, skipped=problem)
        install = npm_install(prefix)
        command = [*own, "--npm", str(prefix / "node_modules")]
    try:
        return measure(name, command, install, browser)
    except (RuntimeError, OSError) as error:
        return Result(name, skipped=f"failed: {error}")


if __name__ == "__main__":
    sys.exit(main())

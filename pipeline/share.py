"""The share page: one `.html` file that shows a result in any current browser, from disk,
offline, with nothing to install.

It holds the scene as a SOG (`pipeline.sog`, the smallest format Spark reads; base64),
plus a copy thinned for browsers that draw WebGL in software (`pipeline.browser`, as the
viewer thins it), and the viewer's own renderer: the page's module (`share.js`), the 3D
view it shares with the viewer (`scene.js`), and Spark and three.js as vendored, read
from the viewer's static folder. Those modules travel gzipped in one base64 block; the
page unpacks them into blob: URLs and names them in an import map. A vendored module's
relative imports (three.js's `./three.core.min.js`) are rewritten, in the page only, to
bare names the map resolves, so the files on disk stay as vendored. The page starts at
the photo's own viewpoint (`pipeline.browser`: the viewer's camera).

Nothing in the page can reach a network: a Content-Security-Policy allows only its own
inline scripts, blob: modules and workers (Spark starts its workers from blob: URLs),
WebAssembly, inline styles and data:/blob: images. The photo's name is escaped.

    write_share_page(path, gaussians_or_ply_rows, f_px, (width, height), "garden.jpg")
"""

from __future__ import annotations

import base64
import functools
import gzip
import html
import json
import math
import posixpath
import re
from pathlib import Path
from string import Template
from typing import Any

import numpy as np

from .atomic import atomic_write
from .browser import SOFTWARE_BUDGET, orbit_depth, thinned, vertical_fov
from .encodable import Scene
from .errors import OutputError
from .ply import vertex_rows
from .sog import sog_bytes

STATIC = Path(__file__).resolve().parents[1] / "viewer" / "static"
"""The viewer's pages and vendored libraries (shipped with the package either way)."""
TEMPLATE = STATIC / "share.html"
ENTRY = STATIC / "share.js"
IMPORT_MAP_PAGE = STATIC / "view.html"
"""The viewer page whose import map names the vendored modules (`three`, Spark): the share
page resolves the same names to the same files."""
CSP = ("default-src 'none'; script-src 'unsafe-inline' blob: 'wasm-unsafe-eval'; "
       "worker-src blob: data:; style-src 'unsafe-inline'; img-src data: blob:; "
       "base-uri 'none'; form-action 'none'")
"""The page's Content-Security-Policy: its inline scripts (the loader and the import map
it writes), blob: modules, Spark's workers (blob:, or data: where a browser refuses blob
workers) and its WebAssembly; nothing from any network, no other file."""
_SPECIFIER = re.compile(r"""(\bfrom\s*|\bimport\s*\(?\s*)(["'])([^"'\n]+)\2""")
"""A module specifier after `from`, `import` or `import(` (the vendored files are
minified, so no space is assumed)."""
_GZIP_LEVEL = 9
"""The modules are packed once per process (`_packed_modules`), so the smallest is cheap."""


def _import_map() -> dict[str, str]:
    """The viewer page's import map: specifier (or prefix ending in "/") -> `/static/` URL."""
    page = IMPORT_MAP_PAGE.read_text(encoding="utf-8")
    found = re.search(r'<script type="importmap">(.*?)</script>', page, re.DOTALL)
    if found is None:
        raise OutputError("has no import map naming the renderer's modules", IMPORT_MAP_PAGE)
    imports: dict[str, str] = json.loads(found.group(1))["imports"]
    return imports


def _static_path(url: str) -> Path:
    return STATIC / url.removeprefix("/static/")


def _specifier(path: Path, imports: dict[str, str]) -> str:
    """The name a module goes by in the page: its specifier in the viewer's import map,
    else its path in the static folder (a bare name, as an import map needs)."""
    relative = path.relative_to(STATIC).as_posix()
    for name, url in imports.items():
        target = url.removeprefix("/static/")
        if name.endswith("/") and relative.startswith(target):
            return name + relative.removeprefix(target)
        if relative == target:
            return name
    return "sharp-watch/" + relative


def _resolve(specifier: str, importer: Path, imports: dict[str, str]) -> Path:
    """The file `specifier`, imported by `importer`, names; as the viewer's page resolves it."""
    if specifier.startswith(("./", "../")):
        relative = posixpath.normpath(posixpath.join(
            importer.parent.relative_to(STATIC).as_posix(), specifier))
        return STATIC / relative
    if specifier in imports:
        return _static_path(imports[specifier])
    for name, url in imports.items():
        if name.endswith("/") and specifier.startswith(name):
            return _static_path(url + specifier.removeprefix(name))
    raise OutputError(f"imports {specifier!r}, which the viewer's import map does not name",
                      importer)


def page_modules() -> tuple[str, dict[str, str]]:
    """The share page's entry module's name and every module it needs, by name, with each
    import rewritten to the name of the module it means (nothing changes on disk)."""
    imports = _import_map()
    modules: dict[str, str] = {}
    waiting = [ENTRY]
    while waiting:
        path = waiting.pop()
        name = _specifier(path, imports)
        if name in modules:
            continue
        try:
            source = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"the share page's renderer cannot be read ({exc.strerror or exc})",
                              path) from exc

        def rewrite(found: re.Match[str], importer: Path = path) -> str:
            target = _resolve(found.group(3), importer, imports)
            waiting.append(target)
            return f"{found.group(1)}{found.group(2)}{_specifier(target, imports)}{found.group(2)}"
        modules[name] = _SPECIFIER.sub(rewrite, source)
    return _specifier(ENTRY, imports), modules


@functools.cache
def _packed_modules() -> tuple[str, str]:
    """The entry's name and every module as gzipped JSON in base64 (made once: the files
    are the package's own)."""
    entry, modules = page_modules()
    packed = gzip.compress(json.dumps(modules).encode("utf-8"), _GZIP_LEVEL, mtime=0)
    return entry, base64.b64encode(packed).decode("ascii")


def _json_in_html(value: Any) -> str:
    """JSON that cannot end the `<script>` element holding it."""
    return json.dumps(value).replace("<", "\\u003c")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def share_page(scene: Scene, f_px: float, image_size: tuple[int, int], title: str,
               warnings: list[str] | None = None, path: Path | str = "share.html") -> bytes:
    """The share page of `scene` (SHARP's Gaussians, or a PLY's `(N, 14)` columns) taken
    with focal length `f_px` at `image_size` `(width, height)`, headed `title` (the
    photo's name). `path` is the file's name in `warnings` and errors (what the SOG
    encoder had to change). Raises `OutputError` where the renderer's files cannot be read
    or the camera is unusable.
    """
    path = Path(path)
    rows = scene if isinstance(scene, np.ndarray) else vertex_rows(scene).numpy()
    try:
        fov = math.degrees(vertical_fov(f_px, image_size[1]))
    except ValueError as exc:
        raise OutputError(f"cannot place the photo's viewpoint ({exc})", path) from exc
    count = int(rows.shape[0])
    small = count > SOFTWARE_BUDGET
    facts = {"camera": {"fov_deg": fov, "orbit_depth": orbit_depth(rows[:, 2])},
             "gaussians": count, "thinned": SOFTWARE_BUDGET if small else None}
    thinned_scene = ""
    if small:
        thinned_scene = ('<script type="application/octet-stream" id="scene-thinned-sog">'
                         f"{_b64(sog_bytes(thinned(rows, SOFTWARE_BUDGET), None, path))}</script>")
    entry, modules = _packed_modules()
    page = Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
        csp=CSP, title=html.escape(title), facts=_json_in_html(facts),
        scene=_b64(sog_bytes(rows, warnings, path)), thinned_scene=thinned_scene,
        entry=html.escape(entry), modules=modules)
    return page.encode("utf-8")


def write_share_page(path: Path | str, scene: Scene, f_px: float, image_size: tuple[int, int],
                     title: str, warnings: list[str] | None = None) -> Path:
    """Write `share_page` to `path` atomically."""
    path = Path(path)
    return atomic_write(path, share_page(scene, f_px, image_size, title, warnings, path))

"""The share page as a file (`pipeline.share`): one page holding the scene as the SOG of
the PLY, a thinned copy where the viewer would thin, the viewer's own renderer and camera,
and no way to reach anything outside itself. Drawn in real browsers by
`test_share_browser.py`.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pipeline.share as share
from pipeline import OutputError
from pipeline.browser import SOFTWARE_BUDGET, orbit_depth, thinned, vertical_fov
from pipeline.ply import vertex_rows
from pipeline.share import CSP, STATIC, page_modules, share_page, write_share_page
from pipeline.sog import sog_bytes
from tests.support.splat_reader import F_PX, SIZE, scene

MAX_OVERHEAD = 5_000_000
"""What the renderer and the page may add to the scene (bytes)."""
NOT_FETCHED = {"http://www.w3.org/1999/xhtml", "https://github.com/mrdoob/three.js/pull/21358"}
"""The URLs inside the vendored modules: an XML namespace's name (`createElementNS`) and a
link in a comment of three.js's `Pass.js`; neither is ever requested (the browser test
records every request)."""


class _Page(HTMLParser):
    """Every element's tag, attributes and text, in order."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.texts: dict[str, str] = {}
        self._open: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        self._open = dict(attrs).get("id") or tag

    def handle_endtag(self, tag: str) -> None:
        self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self.texts[self._open] = self.texts.get(self._open, "") + data


def _parsed(page: bytes) -> _Page:
    return _Page(page.decode("utf-8"))


def _facts(parsed: _Page) -> dict[str, Any]:
    facts: dict[str, Any] = json.loads(parsed.texts["share-facts"])
    return facts


def _modules(parsed: _Page) -> dict[str, str]:
    modules: dict[str, str] = json.loads(gzip.decompress(base64.b64decode(parsed.texts["modules"])))
    return modules


def test_the_page_holds_the_sog_of_the_ply_and_the_viewers_camera(tmp_path: Path) -> None:
    g = scene(3000)
    warnings: list[str] = []
    page = write_share_page(tmp_path / "garden.html", g, F_PX, SIZE, "garden.jpg", warnings)
    parsed = _parsed(page.read_bytes())
    rows = vertex_rows(g).numpy()
    assert base64.b64decode(parsed.texts["scene-sog"]) == sog_bytes(rows)
    assert "scene-thinned-sog" not in parsed.texts  # few enough to draw in software
    facts = _facts(parsed)
    assert facts == {"camera": {"fov_deg": math.degrees(vertical_fov(F_PX, SIZE[1])),
                                "orbit_depth": orbit_depth(rows[:, 2])},
                     "gaussians": 3000, "thinned": None}
    assert warnings == []


def test_a_scene_a_software_renderer_cannot_draw_whole_gets_the_viewers_thinned_copy() -> None:
    """The same fixed subset the viewer sends such a browser (`pipeline.browser.thinned`)."""
    rows = vertex_rows(scene(SOFTWARE_BUDGET + 500)).numpy()
    parsed = _parsed(share_page(rows, F_PX, SIZE, "big.jpg"))
    assert base64.b64decode(parsed.texts["scene-thinned-sog"]) == sog_bytes(
        thinned(rows, SOFTWARE_BUDGET))
    assert base64.b64decode(parsed.texts["scene-sog"]) == sog_bytes(rows)
    assert _facts(parsed)["thinned"] == SOFTWARE_BUDGET
    assert _facts(parsed)["gaussians"] == SOFTWARE_BUDGET + 500


def test_the_page_reaches_nothing_outside_itself(tmp_path: Path) -> None:
    page = share_page(scene(300), F_PX, SIZE, "garden.jpg")
    text = page.decode("utf-8")
    parsed = _parsed(page)
    (csp,) = [a["content"] for tag, a in parsed.elements
              if tag == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp == CSP
    directives = dict(d.strip().split(" ", 1) for d in CSP.split(";"))
    assert directives["default-src"] == "'none'"
    assert "connect-src" not in directives  # so nothing can be fetched, not even data:
    for name, sources in directives.items():
        assert not re.search(r"https?:|\*|'self'|file:", sources), (name, sources)
    assert not re.search(r"[a-z][a-z0-9+.-]*://", text, re.IGNORECASE), "a URL in the page"
    for tag, attributes in parsed.elements:
        assert not {"src", "href", "action", "srcset"} & set(attributes), (tag, attributes)
    found = {url for source in _modules(parsed).values()
             for url in re.findall(r"https?://[^\s\"'`)]+", source)}
    assert found == NOT_FETCHED


def test_the_photos_name_is_escaped() -> None:
    name = '</title><script>alert("x")</script>&amp; café.jpg'
    parsed = _parsed(share_page(scene(50), F_PX, SIZE, name))
    assert parsed.texts["h1"] == name  # shown as written, as text
    assert parsed.texts["title"] == f"{name} - 3D photo"
    assert [tag for tag, _ in parsed.elements].count("script") == 4  # facts, scene, modules, loader


def test_every_import_resolves_to_an_embedded_module_and_the_files_stay_as_vendored() -> None:
    entry, modules = page_modules()
    assert entry in modules
    specifiers = {found[2] for source in modules.values()
                  for found in share._SPECIFIER.findall(source)}
    assert specifiers <= set(modules), "an import the page's map cannot resolve"
    assert not any(s.startswith(".") for s in specifiers)
    three = (STATIC / "vendor" / "three" / "three.module.min.js").read_text(encoding="utf-8")
    assert three.count('"./three.core.min.js"') == 2  # on disk: relative, as vendored
    assert modules["three"] == three.replace('"./three.core.min.js"',
                                             '"sharp-watch/vendor/three/three.core.min.js"')
    spark = (STATIC / "vendor" / "spark" / "spark.module.min.js").read_text(encoding="utf-8")
    assert modules["@sparkjsdev/spark"] == spark  # bare imports: kept, the map names them
    assert set(modules) == {"sharp-watch/share.js", "sharp-watch/scene.js", "three",
                            "sharp-watch/vendor/three/three.core.min.js",
                            "three/addons/controls/OrbitControls.js",
                            "three/addons/postprocessing/Pass.js", "@sparkjsdev/spark"}


def test_the_renderer_and_the_page_add_at_most_5_mb() -> None:
    rows = vertex_rows(scene(SOFTWARE_BUDGET + 10)).numpy()
    page = share_page(rows, F_PX, SIZE, "garden.jpg")
    scenes = _parsed(page)
    embedded = len(scenes.texts["scene-sog"]) + len(scenes.texts["scene-thinned-sog"])
    assert len(page) - embedded <= MAX_OVERHEAD
    assert len(scenes.texts["modules"]) < len(page) - embedded


def test_an_unusable_camera_is_refused_naming_the_page(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"garden\.html: cannot place the photo's viewpoint"):
        write_share_page(tmp_path / "garden.html", scene(10), 0.0, SIZE, "garden.jpg")
    assert list(tmp_path.iterdir()) == []


def test_a_module_the_page_cannot_resolve_is_named(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "share.js"
    broken.write_text('import { x } from "left-pad";\n', encoding="utf-8")
    monkeypatch.setattr(share, "STATIC", tmp_path)
    monkeypatch.setattr(share, "ENTRY", broken)
    share._packed_modules.cache_clear()
    try:
        with pytest.raises(OutputError, match=r"share\.js: imports 'left-pad', which the "
                                              r"viewer's import map does not name"):
            share_page(scene(10), F_PX, SIZE, "x.jpg")
        broken.write_text('import "./gone.js";\n', encoding="utf-8")
        with pytest.raises(OutputError, match=r"gone\.js: the share page's renderer cannot "
                                              r"be read"):
            share_page(scene(10), F_PX, SIZE, "x.jpg")
    finally:
        share._packed_modules.cache_clear()


def test_the_same_scene_gives_the_same_page() -> None:
    rows = vertex_rows(scene(400)).numpy()
    first = share_page(rows, F_PX, SIZE, "a.jpg")
    assert share_page(rows.copy(), F_PX, SIZE, "a.jpg") == first
    assert np.array_equal(rows, vertex_rows(scene(400)).numpy())  # the caller's rows untouched

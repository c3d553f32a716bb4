"""Imports point one way: pipeline -> daemon -> viewer -> service.

A package may import only packages to its left, so the pipeline runs alone, the daemon
never pulls in the viewer, and the viewer starts without the service. The sources are
read with `ast`, so an import inside a function or a `TYPE_CHECKING` block counts as
much as one at the top; an import-time check would miss both.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("pipeline", "daemon", "viewer", "service")
"""Bottom to top: each may import the ones before it, never the ones after."""


def imported_packages(path: Path, root: Path) -> Iterator[tuple[int, str]]:
    """(line, top-level package) of every import in `path`; relative ones are resolved."""
    package = path.relative_to(root).parent.parts
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.partition(".")[0]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else ()
            yield node.lineno, base[0] if base else (node.module or "").partition(".")[0]


def wrong_way(root: Path) -> list[str]:
    """`file:line: ...` for each import of a package to the importer's right."""
    problems = []
    for rank, layer in enumerate(LAYERS):
        for path in sorted((root / layer).rglob("*.py")):
            for line, name in sorted(imported_packages(path, root)):
                if name in LAYERS[rank + 1:]:
                    problems.append(f"{path.relative_to(root).as_posix()}:{line}: "
                                    f"{layer} imports {name}")
    return problems


def test_imports_point_one_way() -> None:
    problems = wrong_way(ROOT)
    assert not problems, "imports against " + " -> ".join(LAYERS) + ":\n" + "\n".join(problems)


def test_every_product_package_has_a_layer() -> None:
    """A package pyproject ships cannot slip in without a place in the order."""
    include = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))[
        "tool"]["setuptools"]["packages"]["find"]["include"]
    shipped = {folder.name for folder in ROOT.iterdir() if folder.is_dir()
               and any(fnmatch(folder.name, pattern) for pattern in include)}
    assert shipped == set(LAYERS)


def test_the_check_names_each_wrong_import(tmp_path: Path) -> None:
    """Lazy, `TYPE_CHECKING` and relative imports are all caught; leftward ones pass."""
    sources = {
        "pipeline/__init__.py": "",
        "pipeline/a.py": "import os\n\n\ndef f():\n    import daemon.jobs\n",
        "daemon/b.py": ("from typing import TYPE_CHECKING\n\nimport pipeline\n"
                        "if TYPE_CHECKING:\n    from viewer.server import ViewerApp\n"),
        "viewer/c.py": "from . import d\nfrom daemon import access\nfrom ..service import cli\n",
        "viewer/sub/e.py": "from .. import c\nfrom ...service.launch import launch\n",
        "service/f.py": "from pipeline import atomic\nfrom viewer import run\nfrom . import g\n",
    }
    for name, text in sources.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    assert wrong_way(tmp_path) == [
        "pipeline/a.py:5: pipeline imports daemon",
        "daemon/b.py:5: daemon imports viewer",
        "viewer/c.py:3: viewer imports service",
        "viewer/sub/e.py:2: viewer imports service",
    ]

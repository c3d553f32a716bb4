"""Does the README's install find a wheel for every dependency on 64-bit Windows?

Resolves `pip install -e .[test]` (pyproject's dependencies plus the `test` extra) for
win_amd64 and CPython 3.11, 3.12 and 3.13, then prints, per Python version, each resolved
package's wheel, or NO WHEEL when the version Windows pip would pick has only a source
archive (building it needs a compiler the user likely lacks). Exits 1 if any is missing.

Why uv (`uv pip compile --python-platform x86_64-pc-windows-msvc --format pylock.toml`)
and not pip: pip evaluates environment markers against the machine it runs on even with
`--platform win_amd64`, so on Linux it pulls in torch's Linux-only nvidia-* packages and
the resolution fails; uv evaluates them for the target. It reads only index metadata (no
wheel is downloaded) and ignores pip's configuration, so a torch cap in a pip constraints
file does not apply; the torch version it resolved is printed. PyPI's Windows torch is the
CPU build: the CUDA one comes from PyTorch's own index with the same dependencies.

Usage: `pip install uv` once, then `python tools/windows_wheels.py [3.11 3.12 3.13]`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parents[1]
PYTHONS = ("3.11", "3.12", "3.13")
PLATFORM = "win_amd64"
UV_PLATFORM = "x86_64-pc-windows-msvc"
EXTRAS = ("test",)


def requirements(project: dict[str, Any], extras: Iterable[str] = EXTRAS) -> list[str]:
    """The requirement lines `pip install -e .[extras]` resolves."""
    lines = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        lines += optional[extra]
    return lines


def direct_names(lines: Iterable[str]) -> set[str]:
    """Canonical names of the packages the requirement lines ask for by name."""
    from packaging.requirements import Requirement

    return {canonicalize_name(Requirement(line).name) for line in lines}


def target_tags(python: str, platform: str = PLATFORM) -> list[Tag]:
    """Wheel tags CPython `python` on `platform` accepts, best first (as pip orders them)."""
    version = tuple(int(part) for part in python.split("."))
    interpreter = f"cp{version[0]}{version[1]}"
    return [*cpython_tags(version, platforms=[platform]),
            *compatible_tags(version, interpreter, platforms=[platform])]


def wheel_name(entry: dict[str, Any]) -> str:
    return str(entry.get("name") or entry["url"].rsplit("/", 1)[-1])


def pick_wheel(package: dict[str, Any], tags: list[Tag]) -> str | None:
    """The wheel of a pylock package entry that the target installs, or None if none fits."""
    rank = {tag: n for n, tag in enumerate(tags)}
    fitting = []
    for entry in package.get("wheels", []):
        name = wheel_name(entry)
        best = min((rank[tag] for tag in parse_wheel_filename(name)[3] if tag in rank),
                   default=None)
        if best is not None:
            fitting.append((best, name))
    return min(fitting)[1] if fitting else None


def report(lock: dict[str, Any], python: str, direct: set[str]) -> tuple[list[str], int]:
    """Lines for one Python version (direct dependencies marked `*`) and the missing count."""
    tags = target_tags(python)
    lines, missing = [], 0
    for package in sorted(lock.get("packages", []), key=lambda p: p["name"]):
        wheel = pick_wheel(package, tags)
        missing += wheel is None
        mark = "*" if canonicalize_name(package["name"]) in direct else " "
        shown = wheel or ("NO WHEEL (source archive only)" if "sdist" in package
                          else "NO WHEEL")
        lines.append(f" {mark} {package['name']}=={package['version']}  {shown}")
    return lines, missing


def resolve(lines: list[str], python: str, folder: Path) -> dict[str, Any]:
    """Run uv's resolver for Windows; raises RuntimeError with uv's message if it fails."""
    uv = shutil.which("uv")
    if uv is None:
        raise RuntimeError("uv is not installed: pip install uv")
    source = folder / "requirements.in"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    lock = folder / f"pylock.cp{python.replace('.', '')}.toml"
    result = subprocess.run(
        [uv, "pip", "compile", str(source), "--no-config", "--quiet", "--no-header",
         "--python-platform", UV_PLATFORM, "--python-version", python,
         "--format", "pylock.toml", "-o", str(lock)],
        cwd=folder, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip() or result.stdout.strip())
    return tomllib.loads(lock.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    pythons = (argv if argv is not None else sys.argv[1:]) or list(PYTHONS)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = requirements(project)
    direct = direct_names(lines)
    failed = False
    with tempfile.TemporaryDirectory(prefix="windows-wheels-") as folder:
        for python in pythons:
            print(f"CPython {python} on {PLATFORM} (* = asked for by pyproject.toml):")
            try:
                lock = resolve(lines, python, Path(folder))
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                print(f"  cannot resolve: {exc}")
                failed = True
                continue
            shown, missing = report(lock, python, direct)
            print("\n".join(shown))
            print(f"  {len(shown)} packages, {missing} without a wheel\n")
            failed = failed or missing > 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

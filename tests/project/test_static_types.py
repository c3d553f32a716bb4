"""The static Windows gate: mypy over the product for win32 (Python 3.11 and 3.12) and linux.

typeshed encodes which calls each platform and version has, so this finds a call the
Windows Python lacks (`os.set_blocking` on 3.11, `fcntl`, `os.getuid`...) on a Linux CI
machine, where no test would ever execute the Windows branch. Zero errors is the bar;
the configuration (checked folders, modules without stubs) is `[tool.mypy]` in
pyproject.toml.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGETS = [("win32", "3.11"), ("win32", "3.12"), ("linux", "3.11")]


def _command(platform: str, version: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "mypy", "--platform", platform, "--python-version", version,
            "--cache-dir", str(ROOT / ".mypy_cache" / f"{platform}-{version}"), *args]


def _mypy(platform: str, version: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(_command(platform, version, *args), cwd=cwd, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def product_checks() -> Iterator[dict[tuple[str, str], subprocess.Popen[str]]]:
    """The three runs over the product, started together: each is one process on one
    core, so on CI's cores they take about half the time one after another takes."""
    running = {target: subprocess.Popen(_command(*target), cwd=ROOT, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
               for target in TARGETS}
    yield running
    for process in running.values():
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize(("platform", "version"), TARGETS, ids=[f"{p}-{v}" for p, v in TARGETS])
def test_product_type_checks_for_each_platform(
        product_checks: dict[tuple[str, str], subprocess.Popen[str]], platform: str,
        version: str) -> None:
    output, _ = product_checks[(platform, version)].communicate(timeout=600)
    assert product_checks[(platform, version)].returncode == 0, \
        f"mypy {platform}/{version}:\n{output}"
    assert "Success: no issues found" in output


def test_gate_catches_a_call_windows_python_lacks(tmp_path: Path) -> None:
    """The gate can fail: the call that broke every photo on Windows is flagged for
    win32/3.11, and a POSIX-only module is flagged for win32 at all."""
    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent("""
        import os

        def unblock(fd: int) -> None:
            os.set_blocking(fd, True)

        def owner() -> int:
            return os.getuid()
    """))
    on_windows = _mypy("win32", "3.11", "--no-incremental", str(probe), cwd=tmp_path)
    assert on_windows.returncode == 1
    assert 'Module has no attribute "set_blocking"' in on_windows.stdout
    assert 'Module has no attribute "getuid"' in on_windows.stdout
    on_linux = _mypy("linux", "3.11", "--no-incremental", str(probe), cwd=tmp_path)
    assert on_linux.returncode == 0, on_linux.stdout

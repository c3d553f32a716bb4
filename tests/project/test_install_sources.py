"""Installing needs no Git: Apple's packages come as zip archives of pinned commits.

pyproject.toml holds each URL, docs/upstream-contract.md names the same commits, and
`sharp-watch doctor` prints the URL the installed metadata gives (no commit of its own).
There is no network to GitHub here, so the URLs' form is what is checked.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from service import doctor

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
ARCHIVE = re.compile(r"https://github\.com/apple/(?P<repo>[\w.-]+)/archive/"
                     r"(?P<commit>[0-9a-f]{40})\.zip")
PINNED = {"sharp": ("sharp", "ml-sharp"), "depth-pro-apple": ("depth_pro", "ml-depth-pro")}
"""Each extra with a direct URL: the package it installs and Apple's repository."""


def requirement_lines() -> list[tuple[str | None, str]]:
    """(extra or None, line) for every dependency pyproject.toml declares."""
    lines: list[tuple[str | None, str]] = [(None, line) for line in PROJECT["dependencies"]]
    for extra, extra_lines in PROJECT["optional-dependencies"].items():
        lines += [(extra, line) for line in extra_lines]
    return lines


def direct_urls() -> dict[str, Requirement]:
    """The extras whose requirement is a direct URL, and that requirement."""
    return {extra: requirement for extra, line in requirement_lines()
            if (requirement := Requirement(line)).url and extra is not None}


def metadata_lines() -> list[str]:
    """`Requires-Dist` lines as an install of this pyproject.toml writes them."""
    lines = []
    for extra, line in requirement_lines():
        if extra is None:
            lines.append(line)
        else:
            assert ";" not in line, "an extra's marker would need brackets here"
            lines.append(f'{line} ; extra == "{extra}"')
    return lines


def documented_pins() -> dict[str, tuple[str, str]]:
    """extra -> (package, commit) from the table in docs/upstream-contract.md."""
    text = (ROOT / "docs" / "upstream-contract.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([\w-]+)` \| `(\w+)` \| .+ \| `([0-9a-f]{40})` \|$", text,
                      flags=re.MULTILINE)
    return {extra: (package, commit) for extra, package, commit in rows}


def test_no_dependency_installs_with_git():
    lines = requirement_lines()
    assert len(lines) > 10
    for _, line in lines:
        requirement = Requirement(line)
        assert "git+" not in line, line
        if requirement.url:
            assert ARCHIVE.fullmatch(requirement.url), f"not a GitHub archive zip: {line}"


def test_apple_packages_are_archives_of_the_commits_the_docs_name():
    urls = direct_urls()
    assert set(urls) == set(PINNED)
    pins = {}
    for extra, (package, repository) in PINNED.items():
        match = ARCHIVE.fullmatch(urls[extra].url or "")
        assert match, urls[extra]
        assert (urls[extra].name, match["repo"]) == (package, repository)
        pins[extra] = (package, match["commit"])
    assert documented_pins() == pins


@pytest.mark.parametrize("text", [
    "sharp @ git+https://github.com/apple/ml-sharp@1eaa046834b81852261262b41b0919f5c1efdd2e",
    "sharp @ https://github.com/apple/ml-sharp/archive/main.zip",
    "sharp @ https://github.com/apple/ml-sharp/archive/1eaa046.zip",
    "sharp @ https://example.com/apple/ml-sharp/archive/"
    "1eaa046834b81852261262b41b0919f5c1efdd2e.zip",
])
def test_a_git_branch_or_foreign_url_is_not_taken_for_a_pinned_archive(text):
    assert not ARCHIVE.fullmatch(Requirement(text).url or "")


def test_no_install_instruction_uses_git():
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "service").glob("*.py"))]
    for path in texts:
        assert "git+" not in path.read_text(encoding="utf-8"), path


def test_doctor_prints_the_archive_pyproject_pins(monkeypatch):
    monkeypatch.setattr(doctor, "declared_requirements", metadata_lines)
    for extra, requirement in direct_urls().items():
        assert doctor.install_command(extra) == \
            f'pip install "{requirement.name} @ {requirement.url}"'
    assert doctor.install_command("viewer") == \
        'pip install -e ".[viewer]" in the sharp-watch folder', "no URL: the checkout's extra"


def test_doctor_falls_back_without_metadata_and_skips_what_it_cannot_read(monkeypatch):
    monkeypatch.setattr(doctor, "DISTRIBUTION", "no-such-distribution-here")
    assert doctor.declared_requirements() == []
    assert doctor.install_command("sharp") == \
        'pip install -e ".[sharp]" in the sharp-watch folder'
    monkeypatch.setattr(doctor, "declared_requirements",
                        lambda: ["sharp @ @ not a requirement", *metadata_lines()])
    assert doctor.install_command("sharp") == \
        f'pip install "sharp @ {direct_urls()["sharp"].url}"'


def test_doctor_line_for_a_missing_sharp_carries_the_command(monkeypatch, daemon_config):
    try:
        import sharp.models  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("sharp is installed: its line is OK")
    monkeypatch.setattr(doctor, "declared_requirements", metadata_lines)
    config = dataclasses.replace(daemon_config, models=dataclasses.replace(
        daemon_config.models, sharp_factory=None))
    found = {check.name: check for check in doctor.check_imports(config)}
    assert found["SHARP"].level == "FAIL"
    assert found["SHARP"].detail.endswith(
        f'; pip install "sharp @ {direct_urls()["sharp"].url}"')


def test_missing_part_messages_name_the_install_that_adds_it(monkeypatch):
    """sharp-watch is not on PyPI: `pip install "sharp-watch[x]"` would fail, so every
    "not installed" message names the editable install of the extra from its folder."""
    import builtins

    import torch

    import viewer
    from pipeline import ModelError
    from pipeline.depth.apple_backend import AppleDepthPro
    from pipeline.sharp_stage import SharpStage

    real_import = builtins.__import__

    def no_apple(name, *args, **kwargs):
        if name.split(".")[0] in ("sharp", "depth_pro"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_apple)
    with pytest.raises(ModelError) as sharp:
        SharpStage.load(torch.device("cpu"))
    with pytest.raises(ModelError) as depth:
        AppleDepthPro.load(None, torch.device("cpu"), torch.float32)
    for message, extra in ((str(sharp.value), "sharp"), (str(depth.value), "depth-pro-apple"),
                           (viewer.MISSING, "viewer")):
        assert f'python -m pip install -e ".[{extra}]"' in message, message
        assert "sharp-watch[" not in message

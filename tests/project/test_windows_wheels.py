"""tools/windows_wheels.py's parsing and report, offline (the resolver is replaced)."""

from __future__ import annotations

import pytest

from tests.conftest import load_tool

ww = load_tool("windows_wheels")

BASE = "https://files.pythonhosted.org/packages/aa/bb/"


def wheel(name: str) -> dict:
    return {"url": BASE + name, "size": 1}


LOCK = {"packages": [
    {"name": "torch", "version": "2.15.0",
     "wheels": [wheel("torch-2.15.0-cp312-cp312-manylinux_2_28_x86_64.whl"),
                wheel("torch-2.15.0-cp312-cp312-win_amd64.whl"),
                wheel("torch-2.15.0-cp311-cp311-win_amd64.whl")]},
    {"name": "safetensors", "version": "0.8.0",
     "wheels": [wheel("safetensors-0.8.0-cp310-abi3-win_amd64.whl")]},
    {"name": "tqdm", "version": "4.70.1", "wheels": [wheel("tqdm-4.70.1-py3-none-any.whl")]},
    {"name": "Pillow-HEIF", "version": "1.8.1",
     "wheels": [{"name": "pillow_heif-1.8.1-cp312-cp312-win_amd64.whl", "url": BASE + "x"},
                wheel("pillow_heif-1.8.1-py3-none-any.whl")]},
    {"name": "oddball", "version": "1.0", "sdist": {"url": BASE + "oddball-1.0.tar.gz"}},
    {"name": "linuxonly", "version": "2.0",
     "wheels": [wheel("linuxonly-2.0-cp312-cp312-manylinux_2_17_x86_64.whl"),
                wheel("linuxonly-2.0-cp313-cp313-win_amd64.whl")]},
]}


def test_requirements_are_the_dependencies_plus_the_test_extra():
    project = {"dependencies": ["torch>=2.4", "python-xlib>=0.33; sys_platform == 'linux'"],
               "optional-dependencies": {"test": ["pytest>=8"], "sharp": ["sharp @ https://x/archive/1.zip"]}}
    lines = ww.requirements(project)
    assert lines == ["torch>=2.4", "python-xlib>=0.33; sys_platform == 'linux'", "pytest>=8"]
    assert ww.direct_names(lines) == {"torch", "python-xlib", "pytest"}


def test_target_tags_put_the_exact_interpreter_first():
    tags = [str(tag) for tag in ww.target_tags("3.12")]
    assert tags[0] == "cp312-cp312-win_amd64"
    assert "cp312-abi3-win_amd64" in tags and "cp310-abi3-win_amd64" in tags
    assert "py3-none-any" in tags and "py3-none-win_amd64" in tags
    assert not any("linux" in tag or "cp313" in tag for tag in tags)
    assert tags.index("cp312-cp312-win_amd64") < tags.index("cp312-abi3-win_amd64") < \
        tags.index("py3-none-any")


def test_pick_wheel_takes_the_best_fitting_one_or_none():
    tags = ww.target_tags("3.12")
    by_name = {p["name"]: p for p in LOCK["packages"]}
    assert ww.pick_wheel(by_name["torch"], tags) == "torch-2.15.0-cp312-cp312-win_amd64.whl"
    assert ww.pick_wheel(by_name["torch"], ww.target_tags("3.11")) == \
        "torch-2.15.0-cp311-cp311-win_amd64.whl"
    assert ww.pick_wheel(by_name["torch"], ww.target_tags("3.13")) is None
    assert ww.pick_wheel(by_name["Pillow-HEIF"], tags) == \
        "pillow_heif-1.8.1-cp312-cp312-win_amd64.whl", "a specific wheel beats py3-none-any"
    assert ww.pick_wheel(by_name["oddball"], tags) is None
    assert ww.pick_wheel(by_name["linuxonly"], tags) is None


def test_report_marks_direct_dependencies_and_counts_the_missing():
    lines, missing = ww.report(LOCK, "3.12", {"torch", "pillow-heif", "tqdm"})
    assert missing == 2
    assert lines == [
        " * Pillow-HEIF==1.8.1  pillow_heif-1.8.1-cp312-cp312-win_amd64.whl",
        "   linuxonly==2.0  NO WHEEL",
        "   oddball==1.0  NO WHEEL (source archive only)",
        "   safetensors==0.8.0  safetensors-0.8.0-cp310-abi3-win_amd64.whl",
        " * torch==2.15.0  torch-2.15.0-cp312-cp312-win_amd64.whl",
        " * tqdm==4.70.1  tqdm-4.70.1-py3-none-any.whl"]


@pytest.mark.parametrize(("lock", "code"), [
    (LOCK, 1),
    ({"packages": [p for p in LOCK["packages"] if p["name"] in ("tqdm", "safetensors")]}, 0),
])
def test_main_exits_non_zero_when_a_wheel_is_missing(monkeypatch, capsys, lock, code):
    asked: list[str] = []
    monkeypatch.setattr(ww, "resolve", lambda lines, python, folder: asked.append(python) or lock)
    assert ww.main(["3.12", "3.13"]) == code
    out = capsys.readouterr().out
    assert asked == ["3.12", "3.13"]
    assert "CPython 3.12 on win_amd64" in out and "CPython 3.13 on win_amd64" in out
    assert ("NO WHEEL" in out) == (code == 1)


def test_main_reports_a_failed_resolution(monkeypatch, capsys):
    def fail(lines, python, folder):
        raise RuntimeError("No solution found when resolving dependencies")

    monkeypatch.setattr(ww, "resolve", fail)
    assert ww.main(["3.11"]) == 1
    assert "cannot resolve: No solution found" in capsys.readouterr().out

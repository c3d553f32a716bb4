"""What the OS layer would do on Windows (exact Run key value), checked on any OS."""

from __future__ import annotations

import sys
import types
from pathlib import Path, PureWindowsPath

import pytest

from service import system

PYTHON = r"C:\Users\Ann Lee\sharp-watch\.venv\Scripts\python.exe"
CONFIG = PureWindowsPath(r"C:\Users\Ann Lee\AppData\Local\sharp-watch\config.toml")


def test_console_less_python_on_windows_only():
    assert system.gui_python(PYTHON, "win32") == \
        r"C:\Users\Ann Lee\sharp-watch\.venv\Scripts\pythonw.exe"
    assert system.gui_python(r"C:\Python311\PYTHON.EXE", "win32") == r"C:\Python311\pythonw.exe"
    assert system.gui_python(r"C:\Python311\pythonw.exe", "win32") == r"C:\Python311\pythonw.exe"
    assert system.gui_python("/usr/bin/python3", "linux") == "/usr/bin/python3"


@pytest.mark.parametrize(("console", "gui"), [
    (r"C:\Py312\python3.12.exe", r"C:\Py312\pythonw3.12.exe"),
    (r"C:\Users\Ann\AppData\Local\Microsoft\WindowsApps\python3.exe",
     r"C:\Users\Ann\AppData\Local\Microsoft\WindowsApps\pythonw3.exe"),
    (r"C:\Py311\python_d.exe", r"C:\Py311\pythonw_d.exe"),
    (r"C:\tools\my-python.exe", r"C:\tools\my-python.exe"),
    (r"C:\Py311\pythonw3.11.exe", r"C:\Py311\pythonw3.11.exe"),
])
def test_versioned_and_debug_pythons_get_their_console_less_twin(console, gui):
    assert system.gui_python(console, "win32") == gui
    value = system.run_key_value(system.launch_argv(console, CONFIG, "win32"))
    assert value.startswith(f"{gui} -m service run --config ")


def test_run_key_value_is_the_exact_windows_command_line():
    argv = system.launch_argv(PYTHON, CONFIG, platform="win32")
    assert argv == [r"C:\Users\Ann Lee\sharp-watch\.venv\Scripts\pythonw.exe", "-m", "service",
                    "run", "--config", str(CONFIG)]
    assert system.run_key_value(argv) == (
        r'"C:\Users\Ann Lee\sharp-watch\.venv\Scripts\pythonw.exe" -m service run --config '
        r'"C:\Users\Ann Lee\AppData\Local\sharp-watch\config.toml"')
    assert system.run_key_value(system.launch_argv(r"C:\Py\python.exe", None, "win32")) == \
        r"C:\Py\pythonw.exe -m service run"


def test_desktop_entry_quotes_paths_with_spaces():
    entry = system.desktop_entry(["/opt/my env/bin/python", "-m", "service", "run"])
    assert 'Exec="/opt/my env/bin/python" -m service run\n' in entry
    assert entry.startswith("[Desktop Entry]\nType=Application\nName=sharp-watch\n")
    assert "Terminal=false\n" in entry


def test_open_command_per_platform():
    target = Path("/data/outputs")
    assert system.open_command(target, "win32") is None
    assert system.open_command(target, "linux") == ["xdg-open", "/data/outputs"]
    assert system.open_command(target, "darwin") == ["open", "/data/outputs"]


class FakeRegistry(types.ModuleType):
    """Just enough of `winreg` to run the Windows executor on Linux."""

    HKEY_CURRENT_USER = "HKCU"
    KEY_SET_VALUE = 2
    REG_SZ = 1

    def __init__(self) -> None:
        super().__init__("winreg")
        self.values: dict[tuple[str, str], object] = {}
        self.calls: list[tuple] = []

    class _Key:
        def __init__(self, path: str) -> None:
            self.path = path

        def __enter__(self):
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    def CreateKeyEx(self, root, path, reserved, access):
        self.calls.append(("CreateKeyEx", root, path, access))
        return self._Key(path)

    def OpenKey(self, root, path, reserved=0, access=1):
        return self._Key(path)

    def SetValueEx(self, key, name, reserved, kind, value):
        self.calls.append(("SetValueEx", key.path, name, kind, value))
        self.values[(key.path, name)] = value

    def DeleteValue(self, key, name):
        if (key.path, name) not in self.values:
            raise FileNotFoundError(name)
        del self.values[(key.path, name)]

    def QueryValueEx(self, key, name):
        if (key.path, name) not in self.values:
            raise FileNotFoundError(name)
        return self.values[(key.path, name)], self.REG_SZ


def test_windows_autostart_writes_the_hkcu_run_value_idempotently(monkeypatch):
    registry = FakeRegistry()
    monkeypatch.setitem(sys.modules, "winreg", registry)
    monkeypatch.setattr(sys, "platform", "win32")
    argv = system.launch_argv(PYTHON, CONFIG, platform="win32")
    assert system.autostart_command() is None
    where = system.install_autostart(argv)
    system.install_autostart(argv)
    assert where == r"HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run\sharp-watch"
    assert registry.calls[0] == ("CreateKeyEx", "HKCU", system.RUN_KEY, registry.KEY_SET_VALUE)
    assert registry.values == {(system.RUN_KEY, "sharp-watch"): system.run_key_value(argv)}
    assert system.autostart_command() == system.run_key_value(argv)
    assert system.uninstall_autostart() is True
    assert system.uninstall_autostart() is False
    assert registry.values == {}
    assert system.autostart_command() is None


def test_windows_open_uses_startfile(monkeypatch):
    opened: list[Path] = []
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(system.os, "startfile", opened.append, raising=False)
    system.open_path(Path("C:/Users/Ann/Pictures/sharp-watch/outputs"))
    assert opened == [Path("C:/Users/Ann/Pictures/sharp-watch/outputs")]


@pytest.mark.skipif(sys.platform == "win32", reason="XDG autostart is the non-Windows path")
def test_linux_autostart_is_an_idempotent_desktop_file(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    argv = ["/venv/bin/python", "-m", "service", "run"]
    assert system.autostart_command() is None
    first = system.install_autostart(argv)
    system.install_autostart(argv)
    entry = tmp_path / "autostart" / "sharp-watch.desktop"
    assert first == str(entry)
    assert entry.read_text() == system.desktop_entry(argv)
    assert system.autostart_command() == "/venv/bin/python -m service run"
    assert system.uninstall_autostart() is True
    assert system.uninstall_autostart() is False
    assert not entry.exists()


@pytest.mark.skipif(sys.platform == "win32", reason="xdg-open is the non-Windows opener")
def test_open_without_an_opener_reports_instead_of_crashing(monkeypatch):
    monkeypatch.setenv("PATH", "")
    assert system.open_path(Path("/tmp")) is False


def test_tray_gui_script_is_the_console_less_entry_point():
    """pip makes a GUI-subsystem launcher (no console) for `gui-scripts` on Windows; ours must
    call the same `main`, which starts `run` when argv[0] names the tray launcher."""
    import tomllib

    from service import cli

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml")
                            .read_text(encoding="utf-8"))["project"]
    assert project["gui-scripts"] == {"sharp-watch-tray": "service.cli:main"}
    assert project["scripts"] == {"sharp-watch": "service.cli:main"}
    module, _, function = project["gui-scripts"]["sharp-watch-tray"].partition(":")
    assert getattr(__import__(module, fromlist=[function]), function) is cli.main

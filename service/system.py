"""Every OS-specific call in one place: autostart, opening files, console-less launch.

What would be done is computed by pure functions (`launch_argv`, `run_key_value`,
`desktop_entry`, `open_command`) so tests can check the exact Windows registry value on
Linux; the few functions at the bottom only execute those plans.

Autostart on Windows is the per-user Run key (HKCU\\...\\CurrentVersion\\Run): it needs
no administrator rights on any Windows edition, shows up (and can be switched off) in
Task Manager's Startup tab, and is a single value to add or delete, so install and
uninstall are trivially idempotent. On Linux it is an XDG autostart `.desktop` file.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path, PureWindowsPath

from loguru import logger

APP_NAME = "sharp-watch"
RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"


_CONSOLE_PYTHON = re.compile(r"python(\d+(?:\.\d+)?)?(_d)?\.exe", re.IGNORECASE)


def gui_python(executable: str, platform: str | None = None) -> str:
    """The console-less twin of a Python executable on Windows: pythonw.exe beside
    python.exe, and likewise for the versioned (python3.12.exe) and debug builds."""
    if (platform or sys.platform) != "win32":
        return executable
    path = PureWindowsPath(executable)
    console = _CONSOLE_PYTHON.fullmatch(path.name)
    if console is None:
        return executable
    version, debug = console.group(1) or "", console.group(2) or ""
    return str(path.with_name(f"pythonw{version}{debug}.exe"))


def launch_argv(executable: str, config: Path | None = None,
                platform: str | None = None) -> list[str]:
    """The command autostart runs: the tray daemon, without a console window on Windows."""
    argv = [gui_python(executable, platform), "-m", "service", "run"]
    if config is not None:
        argv += ["--config", str(config)]
    return argv


def run_key_value(argv: list[str]) -> str:
    """The Run key's REG_SZ data: one command line, quoted the way Windows parses it."""
    return subprocess.list2cmdline(argv)


def desktop_entry(argv: list[str]) -> str:
    """An XDG autostart entry (Linux desktops) for the same command."""
    exec_line = " ".join(_desktop_quote(arg) for arg in argv)
    return ("[Desktop Entry]\n"
            "Type=Application\n"
            f"Name={APP_NAME}\n"
            "Comment=Turn photos dropped in a folder into 3D Gaussian splats\n"
            f"Exec={exec_line}\n"
            "Terminal=false\n"
            "X-GNOME-Autostart-enabled=true\n")


def _desktop_quote(arg: str) -> str:
    if arg and not any(c in arg for c in ' \t\n"\'\\><~|&;$*?#()`'):
        return arg
    escaped = "".join("\\" + c if c in '"`$\\' else c for c in arg)
    return f'"{escaped}"'


def desktop_entry_path(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".config")
    return Path(base) / "autostart" / f"{APP_NAME}.desktop"


def open_command(path: Path, platform: str | None = None) -> list[str] | None:
    """The command that opens a file or folder in its default app; None = os.startfile."""
    platform = platform or sys.platform
    if platform == "win32":
        return None
    if platform == "darwin":
        return ["open", str(path)]
    return ["xdg-open", str(path)]


def open_path(path: Path) -> bool:
    """Open a folder in the file manager or a file in its viewer; never waits for it.

    Returns False (and logs why) when nothing can open it, so a tray click never crashes.
    """
    command = open_command(path)
    try:
        if command is not None:
            subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        elif sys.platform == "win32":
            os.startfile(path)
    except OSError as exc:
        logger.warning(f"cannot open {path} ({exc}); open it by hand")
        return False
    return True


def install_autostart(argv: list[str]) -> str:
    """Start `argv` at logon for this user; running it again just rewrites the same entry."""
    if sys.platform == "win32":
        import winreg

        with winreg.CreateKeyEx(winreg.HKEY_CURRENT_USER, RUN_KEY, 0,
                                winreg.KEY_SET_VALUE) as key:
            winreg.SetValueEx(key, APP_NAME, 0, winreg.REG_SZ, run_key_value(argv))
        return rf"HKEY_CURRENT_USER\{RUN_KEY}\{APP_NAME}"
    target = desktop_entry_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(desktop_entry(argv), encoding="utf-8")
    return str(target)


def uninstall_autostart() -> bool:
    """Remove the logon entry; False when there was none (not an error)."""
    if sys.platform == "win32":
        import winreg

        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY, 0,
                                winreg.KEY_SET_VALUE) as key:
                winreg.DeleteValue(key, APP_NAME)
        except FileNotFoundError:
            return False
        return True
    target = desktop_entry_path()
    if not target.exists():
        return False
    target.unlink()
    return True


def autostart_command() -> str | None:
    """The command registered to start at logon, or None when autostart is not installed."""
    if sys.platform == "win32":
        import winreg

        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY) as key:
                return str(winreg.QueryValueEx(key, APP_NAME)[0])
        except FileNotFoundError:
            return None
    target = desktop_entry_path()
    if not target.is_file():
        return None
    for line in target.read_text(encoding="utf-8").splitlines():
        if line.startswith("Exec="):
            return line[len("Exec="):]
    return None

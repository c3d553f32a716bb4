"""Logging: one file with everything (library logs included), tracebacks only in the file."""

from __future__ import annotations

import logging
import os
import stat
import sys
import warnings

import pytest
from loguru import logger

from daemon.status import JobEvent as Event
from service import logs


@pytest.fixture
def restore_logging():
    """Loguru and stdlib logging are process-global: put them back after each test."""
    root = logging.getLogger()
    saved_root = (root.handlers[:], root.level)
    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate)
             for name in logs.LIBRARIES}
    saved_showwarning = warnings.showwarning
    yield
    logger.remove()
    logger.configure(patcher=lambda record: None)
    logger.add(sys.stderr)
    logging.captureWarnings(False)
    warnings.showwarning = saved_showwarning
    root.handlers, root.level = saved_root
    for name, (handlers, propagate) in saved.items():
        logging.getLogger(name).handlers = handlers
        logging.getLogger(name).propagate = propagate


def test_file_gets_tracebacks_console_does_not(tmp_path, capsys, restore_logging):
    path = logs.setup(tmp_path / "logs", "INFO")
    assert path == tmp_path / "logs" / "sharp-watch.log"
    logger.debug("hidden detail")
    try:
        raise ValueError("boom inside")
    except ValueError:
        logger.exception("unexpected failure")
    logger.complete()
    text = path.read_text()
    console = capsys.readouterr().err
    assert "unexpected failure" in console
    assert "Traceback" not in console and "boom inside" not in console
    assert "unexpected failure" in text
    assert "Traceback" in text and "ValueError: boom inside" in text
    assert "hidden detail" not in text and "hidden detail" not in console


def test_warning_level_still_writes_info_to_file(tmp_path, capsys, restore_logging):
    path = logs.setup(tmp_path, "WARNING")
    logger.info("progress line")
    logger.complete()
    assert "progress line" in path.read_text()
    assert "progress line" not in capsys.readouterr().err


def test_library_logging_lands_in_the_file(tmp_path, capsys, restore_logging):
    path = logs.setup(tmp_path, "INFO")
    logs.route_library_logging()
    logging.getLogger("transformers.modeling_utils").warning("weights look odd")
    logging.getLogger("huggingface_hub.file_download").warning("slow download")
    logging.getLogger("torch.serialization").warning("torch says hi")
    logging.getLogger("watchdog.observers").warning("inotify limit")
    logger.complete()
    text = path.read_text()
    for message in ("weights look odd", "slow download", "torch says hi", "inotify limit"):
        assert message in text
        assert text.count(message) == 1
    for name in ("torch", "transformers", "huggingface_hub"):
        handlers = logging.getLogger(name).handlers
        assert [type(h) for h in handlers] == [logs.InterceptHandler], name
        assert logging.getLogger(name).propagate is False


def test_console_less_process_still_logs_to_file(tmp_path, monkeypatch, restore_logging):
    monkeypatch.setattr(sys, "stderr", None)
    path = logs.setup(tmp_path, "INFO")
    logger.info("from pythonw")
    logger.complete()
    assert "from pythonw" in path.read_text()


def test_one_line_per_job():
    done = Event("C:/in/cat.jpg", "done", "C:/out/cat_20260101-120000.ply", None, 12.345)
    failed = Event("/in/dog.heic", "failed", None, "not an image: truncated file", 0.25)
    assert done.line() == "cat.jpg: done in 12.3 s -> C:/out/cat_20260101-120000.ply"
    assert failed.line() == "dog.heic: failed after 0.2 s: not an image: truncated file"
    assert "\n" not in failed.line()


def test_job_events_are_logged_at_the_right_level(tmp_path, restore_logging):
    path = logs.setup(tmp_path, "INFO")
    logs.log_job(Event("a.jpg", "done", "a.ply", None, 1.0))
    logs.log_job(Event("b.jpg", "failed", None, "bad", 2.0))
    logger.complete()
    lines = path.read_text().splitlines()
    assert any("| INFO     |" in line and "a.jpg: done in 1.0 s -> a.ply" in line for line in lines)
    assert any("| WARNING  |" in line and "b.jpg: failed after 2.0 s: bad" in line
               for line in lines)


def test_no_console_means_no_console_sink(tmp_path, capsys, restore_logging):
    path = logs.setup(tmp_path, "INFO", console=False)
    logger.warning("only in the file")
    logger.complete()
    assert "only in the file" in path.read_text()
    assert capsys.readouterr() == ("", "")


def test_warnings_land_in_the_log_file(tmp_path, capsys, restore_logging):
    path = logs.setup(tmp_path, "INFO", console=False)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("torch.load without weights_only is deprecated", FutureWarning,
                      stacklevel=1)
    logger.complete()
    assert "FutureWarning: torch.load without weights_only is deprecated" in path.read_text()
    assert capsys.readouterr().err == ""


HOSTILE = "evil\n2026-01-01 00:00:00.000 | ERROR    | x | y:1 | forged\r\x1b[2J\u202egpj.jpg"


def test_control_characters_are_escaped_in_file_and_console(tmp_path, capsys,
                                                            restore_logging):
    path = logs.setup(tmp_path, "INFO")
    logs.route_library_logging()
    logger.info("{} -> {}", HOSTILE, "ok.ply")
    logging.getLogger("transformers.x").warning("library says %s", HOSTILE)
    try:
        raise ValueError(f"cannot decode {HOSTILE}")
    except ValueError:
        logger.exception("failed on {}", HOSTILE)
    logger.info("café 猫 😀.jpg -> done")
    logger.complete()
    lines = path.read_text(encoding="utf-8").splitlines()
    records = [line for line in lines if not line.startswith(logs.TRACE_INDENT)]
    assert len(records) == 4, lines
    escaped = ("evil\\n2026-01-01 00:00:00.000 | ERROR    | x | y:1 | "
               "forged\\r\\x1b[2J\\u202egpj.jpg")
    assert records[0].endswith(f"| {escaped} -> ok.ply")
    assert records[1].endswith(f"| library says {escaped}")
    assert records[2].endswith(f"| failed on {escaped}")
    assert records[3].endswith("| café 猫 😀.jpg -> done")
    trace = [line for line in lines if line.startswith(logs.TRACE_INDENT)]
    assert trace[0] == "    Traceback (most recent call last):"
    assert trace[-2:] == ["    ValueError: cannot decode evil",
                          "    2026-01-01 00:00:00.000 | ERROR    | x | y:1 | "
                          "forged\\r\\x1b[2J\\u202egpj.jpg"], "a newline in it only indents"
    text = "\n".join(lines) + capsys.readouterr().err
    assert not any(c in text for c in "\r\x1b\u202e")
    console = [line for line in text.splitlines() if " INFO " in line or " ERROR " in line]
    assert console and all("\x1b" not in line for line in console)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")
@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_log_folder_and_file_are_owner_only(tmp_path, umask, restore_logging):
    old = os.umask(umask)
    try:
        path = logs.setup(tmp_path / "new" / "logs", "INFO")
        logger.info("hello")
        logger.complete()
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")
def test_an_older_world_readable_log_file_is_narrowed(tmp_path, restore_logging):
    old = tmp_path / logs.LOG_NAME
    old.write_text("from an older version\n")
    old.chmod(0o644)
    tmp_path.chmod(0o755)
    logs.setup(tmp_path, "INFO")
    logger.info("hello")
    logger.complete()
    assert stat.S_IMODE(old.stat().st_mode) == 0o600
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755, "a folder we did not make is left"

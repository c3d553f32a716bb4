"""Logging: one file with everything (library logs included), tracebacks only in the file."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

import pytest
from loguru import logger

from service import logs


@dataclass(frozen=True)
class Event:
    photo: str
    outcome: str
    output: str | None
    error: str | None
    seconds: float


@pytest.fixture
def restore_logging():
    """Loguru and stdlib logging are process-global: put them back after each test."""
    root = logging.getLogger()
    saved_root = (root.handlers[:], root.level)
    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate)
             for name in logs.LIBRARIES}
    yield
    logger.remove()
    logger.add(sys.stderr)
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
    assert logs.job_line(done) == "cat.jpg: done in 12.3 s -> C:/out/cat_20260101-120000.ply"
    assert logs.job_line(failed) == "dog.heic: failed after 0.2 s: not an image: truncated file"
    assert "\n" not in logs.job_line(failed)


def test_job_events_are_logged_at_the_right_level(tmp_path, restore_logging):
    path = logs.setup(tmp_path, "INFO")
    logs.log_job(Event("a.jpg", "done", "a.ply", None, 1.0))
    logs.log_job(Event("b.jpg", "failed", None, "bad", 2.0))
    logger.complete()
    lines = path.read_text().splitlines()
    assert any("| INFO     |" in line and "a.jpg: done in 1.0 s -> a.ply" in line for line in lines)
    assert any("| WARNING  |" in line and "b.jpg: failed after 2.0 s: bad" in line
               for line in lines)

"""A copy that pauses longer than `stable_seconds` (USB, MTP, a network share, a phone app)
is read half-written: that must never tell the user a good photo failed. A file that is
really cut short is reported once, after it has stayed unchanged for
`settle_report_seconds`."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import daemon.worker
from daemon import Config, JobEvent
from daemon.readiness import looks_incomplete
from pipeline import InputError, load_image
from tests.conftest import wait_for

CUT = 0.5  # where the copy pauses


def _jpeg(width: int = 320, height: int = 240, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG")
    return out.getvalue()


def _record_reads(monkeypatch: pytest.MonkeyPatch,
                  before: Callable[[Path], None] = lambda path: None) -> list[int]:
    """The size of the photo at every decode the worker makes; `before(path)` runs after
    the size is taken, before the decoder reads."""
    sizes: list[int] = []
    real = daemon.worker.load_image

    def spy(path: Path, *args: Any) -> Any:
        sizes.append(Path(path).stat().st_size)
        before(Path(path))
        return real(path, *args)

    monkeypatch.setattr(daemon.worker, "load_image", spy)
    return sizes


@contextmanager
def _watch_for_notes(outputs: Path) -> Iterator[list[str]]:
    """Every error note that appears in `outputs` while the block runs (polled each 10 ms)."""
    seen: list[str] = []
    done = threading.Event()

    def poll() -> None:
        while not done.wait(0.01):
            if outputs.is_dir():
                seen.extend(p.name for p in outputs.glob("*.error.txt") if p.name not in seen)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join()


@pytest.mark.timeout(120)
def test_copy_that_pauses_is_never_reported_and_gives_one_result(
        running_daemon, daemon_config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = _record_reads(monkeypatch)
    events: list[JobEvent] = []
    d = running_daemon(events=events)
    data = _jpeg()
    half = int(len(data) * CUT)
    target = daemon_config.inputs / "stalled.jpg"
    with _watch_for_notes(daemon_config.outputs) as notes, open(target, "wb") as out:
        out.write(data[:half])
        out.flush()
        assert wait_for(lambda: half in reads, 30), "the half-written file was never read"
        assert wait_for(lambda: d.status().current_file is None, 30)
        out.write(data[half:])
        out.flush()
        out.close()
        assert wait_for(lambda: [e.outcome for e in events] == ["done"], 60), events
        assert d.wait_until_idle(30)
    assert notes == []
    assert reads == [half, len(data)]
    assert len(list(daemon_config.outputs.glob("stalled_*.ply"))) == 1
    assert d.status().failed == 0 and d.status().queue_length == 0


@pytest.mark.timeout(120)
def test_copy_that_resumes_while_the_photo_is_read_is_requeued_quietly(
        running_daemon, daemon_config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rest arrives between the moment the decoder starts and its failure."""
    data = _jpeg(seed=1)
    half = int(len(data) * CUT)
    target = daemon_config.inputs / "resumed.jpg"
    real = daemon.worker.load_image
    resumed = threading.Event()

    def read_then_resume(path: Path, *args: Any) -> Any:
        try:
            return real(path, *args)
        finally:
            if Path(path) == target and not resumed.is_set():
                resumed.set()
                with open(target, "ab") as out:
                    out.write(data[half:])

    monkeypatch.setattr(daemon.worker, "load_image", read_then_resume)
    events: list[JobEvent] = []
    d = running_daemon(events=events)
    with _watch_for_notes(daemon_config.outputs) as notes:
        target.write_bytes(data[:half])
        assert wait_for(resumed.is_set, 30)
        assert wait_for(lambda: events, 60) and d.wait_until_idle(30)
    assert notes == [] and [e.outcome for e in events] == ["done"]
    assert len(list(daemon_config.outputs.glob("resumed_*.ply"))) == 1


@pytest.mark.timeout(120)
def test_file_cut_short_for_good_is_reported_once_after_it_stays_unchanged(
        running_daemon, make_daemon_config: Callable[..., Config],
        monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_daemon_config(settle_report_seconds=2.0)
    reads = _record_reads(monkeypatch)
    events: list[JobEvent] = []
    d = running_daemon(config, events=events)
    data = _jpeg(seed=2)
    target = config.inputs / "cut.jpg"
    note = config.outputs / "cut.jpg.error.txt"
    target.write_bytes(data[:len(data) // 2])
    assert wait_for(lambda: len(reads) == 1, 30)
    assert events == [] and not note.exists()  # held, quietly
    assert d.status().queue_length == 1
    assert wait_for(lambda: events, 60) and d.wait_until_idle(30)
    assert [e.outcome for e in events] == ["failed"] and "truncated" in (events[0].error or "")
    assert "truncated" in note.read_text() and len(reads) == 2
    d.stop()
    again: list[JobEvent] = []
    restarted = running_daemon(config, events=again)
    assert restarted.wait_until_idle(30)
    assert again == [] and len(reads) == 2  # reported once, not again at the next start


def _decode_error(path: Path, data: bytes) -> InputError:
    path.write_bytes(data)
    with pytest.raises(InputError) as caught:
        load_image(path)
    return caught.value


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF", "WEBP", "HEIF"])
@pytest.mark.parametrize("cut", [0.05, 0.5, 0.95])
def test_a_file_cut_short_looks_incomplete(tmp_path: Path, fmt: str, cut: float) -> None:
    pixels = np.random.default_rng(3).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt)
    data = out.getvalue()
    path = tmp_path / f"photo.{fmt.lower()}"
    assert looks_incomplete(path, _decode_error(path, data[:int(len(data) * cut)]))


@pytest.mark.parametrize("name", ["garbage", "bit flips", "text", "empty"])
def test_a_damaged_file_does_not_look_incomplete_unless_empty(tmp_path: Path, name: str) -> None:
    good = bytearray(_jpeg(seed=4))
    data = {"garbage": b"\xff\xd8\xff" + bytes(range(256)) * 8,
            "bit flips": bytes(good[:20]) + bytes(b ^ 0x5A for b in good[20:400]) + bytes(
                good[400:]),
            "text": b"hello, not a picture\n", "empty": b""}[name]
    path = tmp_path / "photo.jpg"
    error = _decode_error(path, data)
    assert looks_incomplete(path, error) is (name == "empty")

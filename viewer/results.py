"""The outputs folder as the viewer and gallery show it: summaries, failures, time per photo.

Results and their reports are read by `daemon.results` (the one reader the journal rebuild
uses too); a failure is a `<photo>.error.txt` note (`daemon.naming`). Which of them are
read when is the index's business (`viewer.index`): each once, and again only if it
changed.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.naming import NOTE_SUFFIX
from daemon.results import (
    Result,
    find_result,
    latest_for,
    list_results,
    read_result,
    takeaways,
)
from pipeline import InputError
from pipeline.image import open_regular_file

__all__ = ["Failure", "Result", "find_result", "latest_for", "list_results", "photo_from_note",
           "read_failure", "read_result", "seconds_per_photo", "summary"]

RECENT = 5
"""How many recent results the time-per-photo estimate averages."""
MAX_NOTE_CHARS = 2000
_ESCAPE = re.compile(r"%([0-9A-F]{2})")


def summary(result: Result, has_preview: bool | None = None) -> dict[str, Any]:
    """What the gallery and the viewer's side panel show (JSON-friendly), with the downloads
    (`takeaways`: those the report lists that are there); `has_preview`
    when the caller already knows (the index does, from its listing), else looked up."""
    report = result.report
    if report is None:  # a PLY from elsewhere, shown without facts
        return {"name": result.name, "photo": "", "created": None, "image_size": None,
                "gaussians": None, "focal": {"f_px": None, "origin": None},
                "depth": {"source": None, "range_m": None, "from_cache": None},
                "settings": {}, "timings_s": {}, "seconds": None, "device": None,
                "warnings": [], "has_preview": False, "compare": None, "takeaways": []}
    depth = report.depth
    return {
        "name": result.name,
        "photo": report.photo.name,
        "created": report.created,
        "image_size": report.image_size,
        "gaussians": report.gaussians,
        "focal": {"f_px": report.focal.f_px, "origin": report.focal.origin},
        "depth": {"source": depth.source, "range_m": depth.range_m,
                  "from_cache": depth.from_cache},
        "settings": report.settings,
        "timings_s": report.timings,
        "seconds": report.seconds,
        "device": report.models.device,
        "warnings": list(report.warnings),
        "has_preview": result.preview is not None if has_preview is None else has_preview,
        "compare": report.compare._asdict() if report.compare else None,
        "takeaways": [name for name in takeaways(result.name, report.files)
                      if (result.ply.parent / name).is_file()],
    }


@dataclass(frozen=True)
class Failure:
    """A photo that failed: the note the daemon wrote, and when."""

    note: Path
    photo: str
    text: str
    modified: float

    def summary(self) -> dict[str, Any]:
        return {"photo": self.photo, "note": self.note.name, "text": self.text,
                "modified": self.modified}


def photo_from_note(name: str) -> str:
    """The photo path a note stands for (`a%2Fphoto.jpg.error.txt` -> `a/photo.jpg`)."""
    base = name.removesuffix(NOTE_SUFFIX)
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), base)


def read_failure(note: Path, outputs: Path, modified: float) -> Failure | None:
    """The note at `note` (at most `MAX_NOTE_CHARS`), opened only as a regular file inside
    `outputs` (a FIFO named like a note cannot hang the gallery); None if it cannot be."""
    try:
        with open_regular_file(note, outputs) as f:
            raw = f.read(4 * (MAX_NOTE_CHARS + 1))  # UTF-8: at most 4 bytes a character
    except (OSError, InputError):
        return None
    text = raw.decode("utf-8", errors="replace")
    if len(text) > MAX_NOTE_CHARS:
        text = text[:MAX_NOTE_CHARS] + "..."
    return Failure(note, photo_from_note(note.name), text.strip(), modified)


def seconds_per_photo(results: list[Result], recent: int = RECENT) -> float | None:
    """The median total time of the `recent` newest results that report one."""
    times = [s for s in (r.report.seconds for r in results[:recent] if r.report)
             if s is not None]
    return statistics.median(times) if times else None

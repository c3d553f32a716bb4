"""The outputs folder as the viewer and gallery see it: results, failures, time per photo.

A result is a report JSON of ours (`daemon/worker.py` writes it beside its PLY) whose PLY
still exists; a failure is a `<photo>.error.txt` note. Everything is read from disk on
each call, so the gallery shows what is there now, whoever wrote it.
"""

from __future__ import annotations

import json
import os
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.naming import NOTE_SUFFIX

REPORT_SUFFIX = ".json"
PREVIEW_SUFFIX = "_depth.png"
RECENT = 5
"""How many recent results the time-per-photo estimate averages."""
MAX_REPORT_BYTES = 1024 * 1024
MAX_NOTE_CHARS = 2000
_ESCAPE = re.compile(r"%([0-9A-F]{2})")


@dataclass(frozen=True)
class Result:
    """One finished photo: its files and the report's facts a person reads."""

    ply: Path
    report: dict[str, Any]
    modified: float

    @property
    def name(self) -> str:
        return self.ply.name

    @property
    def photo(self) -> Path:
        return Path(str(self.report.get("photo", "")))

    @property
    def compare(self) -> dict[str, Any] | None:
        """`{source, sources, contact_sheet}` for one source of a compare set, else None."""
        compare = self.report.get("compare")
        return compare if isinstance(compare, dict) else None

    @property
    def preview(self) -> Path | None:
        """The depth preview; for a compare set, its contact sheet (all sources at once)."""
        sheet = (self.compare or {}).get("contact_sheet")
        for name in self.report.get("files") or ():
            if ((str(name).endswith(PREVIEW_SUFFIX) or name == sheet)
                    and (self.ply.parent / name).is_file()):
                return self.ply.parent / str(name)
        return None

    @property
    def f_px(self) -> float | None:
        value = (self.report.get("focal") or {}).get("f_px")
        return float(value) if isinstance(value, (int, float)) and value > 0 else None

    @property
    def image_size(self) -> tuple[int, int] | None:
        size = self.report.get("image_size")
        if isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size):
            return int(size[0]), int(size[1])
        return None

    @property
    def seconds(self) -> float | None:
        """The photo's total time (decode, depth, SHARP, write) from the report."""
        timings = self.report.get("timings_s") or {}
        values = [v for v in timings.values() if isinstance(v, (int, float))]
        return float(sum(values)) if values else None

    @property
    def device(self) -> str | None:
        device = (self.report.get("models") or {}).get("device")
        return str(device) if device else None

    def summary(self) -> dict[str, Any]:
        """What the gallery and the viewer's side panel show (JSON-friendly)."""
        report = self.report
        depth = report.get("depth") or {}
        focal = report.get("focal") or {}
        return {
            "name": self.name,
            "photo": self.photo.name,
            "created": report.get("created"),
            "image_size": self.image_size,
            "gaussians": report.get("gaussians"),
            "focal": {"f_px": self.f_px, "origin": focal.get("origin")},
            "depth": {"source": depth.get("source"), "range_m": depth.get("range_m"),
                      "from_cache": depth.get("from_cache")},
            "settings": report.get("settings") or {},
            "timings_s": report.get("timings_s") or {},
            "seconds": self.seconds,
            "device": self.device,
            "warnings": [str(w) for w in report.get("warnings") or ()],
            "has_preview": self.preview is not None,
            "compare": self.compare,
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


def _read_report(path: Path) -> dict[str, Any] | None:
    try:
        if path.stat().st_size > MAX_REPORT_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        return None
    return data if "photo" in data and "settings" in data else None


def read_result(ply: Path) -> Result | None:
    """The result whose PLY is `ply`, or None when its report is missing or not ours."""
    report = _read_report(ply.with_suffix(REPORT_SUFFIX))
    if report is None or ply.name not in report["files"]:
        return None
    try:
        modified = ply.stat().st_mtime
    except OSError:
        return None
    return Result(ply, report, modified)


def list_results(outputs: Path) -> list[Result]:
    """Every result in `outputs`, newest first (by the PLY's time, then name)."""
    try:
        names = [e.name for e in os.scandir(outputs) if e.name.endswith(".ply")]
    except OSError:
        return []
    found = [r for r in (read_result(outputs / name) for name in names) if r is not None]
    return sorted(found, key=lambda r: (r.modified, r.name), reverse=True)


def find_result(outputs: Path, name: str) -> Result | None:
    """The result called `name` in `outputs`; only a plain file name is accepted."""
    if not name or Path(name).name != name or not name.endswith(".ply"):
        return None
    return read_result(outputs / name)


def latest_for(outputs: Path, photo: Path,
               settings: dict[str, Any] | None = None) -> Result | None:
    """The newest result of `photo` (with exactly these settings, when given)."""
    for result in list_results(outputs):
        if result.photo != photo:
            continue
        if settings is None or result.report.get("settings") == settings:
            return result
    return None


def photo_from_note(name: str) -> str:
    """The photo path a note stands for (`a%2Fphoto.jpg.error.txt` -> `a/photo.jpg`)."""
    base = name.removesuffix(NOTE_SUFFIX)
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), base)


def list_failures(outputs: Path) -> list[Failure]:
    """Every error note in `outputs`, newest first."""
    try:
        entries = [e for e in os.scandir(outputs) if e.name.endswith(NOTE_SUFFIX)]
    except OSError:
        return []
    failures = []
    for entry in entries:
        try:
            with open(entry.path, encoding="utf-8", errors="replace") as f:
                text = f.read(MAX_NOTE_CHARS + 1)
            modified = entry.stat().st_mtime
        except OSError:
            continue
        if len(text) > MAX_NOTE_CHARS:
            text = text[:MAX_NOTE_CHARS] + "..."
        failures.append(Failure(Path(entry.path), photo_from_note(entry.name), text.strip(),
                                modified))
    return sorted(failures, key=lambda f: (f.modified, f.note.name), reverse=True)


def seconds_per_photo(results: list[Result], recent: int = RECENT) -> float | None:
    """The median total time of the `recent` newest results that report one."""
    times = [s for s in (r.seconds for r in results[:recent]) if s is not None]
    return statistics.median(times) if times else None

"""Sentences for the pages: what the daemon is doing, and how long a photo takes.

A person who pressed Apply should never wait without knowing why: paused, busy with
another photo, loading models, not running at all. Plain words, no status codes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .results import Result, seconds_per_photo

CPU_NOTE = ("sharp-watch runs on the CPU here: each photo takes minutes (a GPU takes "
            "seconds).")


def _minutes(seconds: float) -> str:
    """`about 12 s`, `about 3 min`, or `under a second`."""
    if seconds < 1:
        return "under a second"
    if seconds < 90:
        return f"about {seconds:.0f} s"
    return f"about {seconds / 60:.0f} min"


def daemon_note(status: dict[str, Any] | None, photo: Path | None) -> str:
    """One sentence on the daemon, from the point of view of `photo` (an applied photo)."""
    if status is None:
        return ("sharp-watch is not running, so nothing reruns: start it with "
                "`sharp-watch run` (settings you apply are kept and used then).")
    state = status.get("state")
    current = status.get("current_file")
    queued = int(status.get("queue_length") or 0)
    working = [w for w in status.get("workers") or () if w.get("current_file")] or (
        [status] if current else [])
    mine = next((w for w in working if photo is not None
                 and Path(w["current_file"]).name == photo.name), None)
    if status.get("download_progress") is not None:
        return (f"sharp-watch is downloading models "
                f"({float(status['download_progress']) * 100:.0f}%); photos wait until then.")
    if state == "paused":
        return ("sharp-watch is paused: nothing reruns until you resume it (tray menu: "
                f"Resume, or `sharp-watch resume`). {queued} queued.")
    if state in ("starting", "loading"):
        return "sharp-watch is loading its models; photos start when that is done."
    if state == "error":
        return f"sharp-watch has a problem: {status.get('last_error') or 'see its log'}."
    if state == "working" and mine:
        return f"Rerunning {photo.name if photo else ''} now ({mine.get('stage') or '...'})."
    if state == "working":
        waiting = f"{queued} queued" + (" (yours among them)" if photo is not None else "")
        if len(working) > 1:
            on = " and ".join(f"{Path(w['current_file']).name} ({w.get('stage') or '...'}) on "
                              f"{w.get('device')}" for w in working)
            return f"sharp-watch is busy with {on}; {waiting}."
        name = Path(current).name if current else "another photo"
        return f"sharp-watch is busy with {name} ({status.get('stage') or '...'}); {waiting}."
    if photo is not None:
        return "sharp-watch is idle; your photo should start in a moment."
    return f"sharp-watch is {state or 'idle'}; {queued} queued."


def estimate_note(results: list[Result], status: dict[str, Any] | None) -> str:
    """The queue's expected time, from the recent results' own timings."""
    per_photo = seconds_per_photo(results)
    on_cpu = any(r.report is not None and r.report.models.device == "cpu"
                 for r in results[:5])
    lead = CPU_NOTE + " " if on_cpu else ""
    if per_photo is None:
        return lead + "No finished photo yet, so no estimate of the time per photo."
    queued = int((status or {}).get("queue_length") or 0)
    workers = max(1, len((status or {}).get("workers") or ()))  # one photo at a time each
    text = f"Recent photos took {_minutes(per_photo)} each"
    if queued:
        text += f"; the {queued} queued should take {_minutes(per_photo * queued / workers)}"
    return lead + text + "."

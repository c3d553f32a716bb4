"""Result names that never collide with an earlier result."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path


def timestamped_path(folder: Path, stem: str, suffix: str, when: datetime | None = None) -> Path:
    """`<folder>/<stem>_<YYYYmmdd-HHMMSS><suffix>`, with `-2`, `-3`... if that name is taken."""
    stamp = (when or datetime.now()).strftime("%Y%m%d-%H%M%S")
    candidate = folder / f"{stem}_{stamp}{suffix}"
    n = 2
    while candidate.exists():
        candidate = folder / f"{stem}_{stamp}-{n}{suffix}"
        n += 1
    return candidate


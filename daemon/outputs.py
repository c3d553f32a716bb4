"""Everything the daemon writes into the outputs folder, always via `pipeline.atomic`.

A reader (a viewer, Explorer's preview, a sync client) never sees a half-written file:
each file is written under a temp name of ours (`pipeline.atomic.temp_path`) and renamed
into place; our leftovers from a killed process are removed at start, and no one else's.
Result names carry a timestamp and never overwrite an earlier result (in any letter
case); every name is valid on Windows (`pipeline.naming`).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path, PurePath
from typing import Any

import numpy as np
from PIL import Image

from pipeline import OutputError, Prediction, timestamped_path, write_ply
from pipeline.atomic import atomic_write, temp_files
from pipeline.naming import note_name

PREVIEW_HEIGHT = 384
# A dark-to-bright ramp (near is bright), enough to read a depth map at a glance.
_RAMP = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99],
                  [212, 72, 66], [245, 125, 21], [250, 193, 39], [252, 255, 164]], dtype=float)
_REPORT, _PREVIEW, _INTERNAL = ".json", "_depth.png", "_internal_depth.npy"


@dataclass(frozen=True)
class ResultNames:
    """The files one finished job produces, decided before any is written."""

    ply: Path
    report: Path
    preview: Path | None
    internal_depth: Path | None

    def all(self) -> list[Path]:
        return [p for p in (self.ply, self.report, self.preview, self.internal_depth) if p]


class OutputFolder:
    """The outputs folder: result names, atomic writes, error notes.

    `inputs` is the watched folder: a photo's error note is named after its path there,
    so `a/photo.jpg`, `photo.jpg` and `photo.png` each get their own note.
    """

    def __init__(self, path: Path, inputs: Path | None = None) -> None:
        self.path = path
        self.inputs = inputs

    def ensure(self) -> None:
        """Create the folder (again, if someone deleted it); refuse a file in its place."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"outputs folder cannot be created ({exc.strerror or exc})",
                              self.path) from exc
        if not os.access(self.path, os.W_OK):
            raise OutputError("outputs folder is not writable", self.path)

    def clean_temp(self) -> list[Path]:
        """Remove temp files a killed process of ours left behind (never anyone else's)."""
        removed = []
        for tmp in temp_files(self.path):
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
        return removed

    def names(self, stem: str, preview: bool, internal_depth: bool) -> ResultNames:
        ply = timestamped_path(self.path, stem, ".ply", companions=(_REPORT, _PREVIEW, _INTERNAL))
        base = ply.with_suffix("")
        return ResultNames(ply=ply, report=ply.with_suffix(_REPORT),
                           preview=base.with_name(base.name + _PREVIEW) if preview else None,
                           internal_depth=(base.with_name(base.name + _INTERNAL)
                                           if internal_depth else None))

    def write_result(self, names: ResultNames, result: Prediction,
                     report: dict[str, Any]) -> None:
        """Extras and report first, the PLY last: a visible PLY always has its report.

        Any failure removes what this call wrote.
        """
        try:
            if names.internal_depth is not None and result.internal_depth is not None:
                buf = _npy_bytes(result.internal_depth.astype(np.float32))
                atomic_write(names.internal_depth, buf)
            if names.preview is not None:
                atomic_write(names.preview, preview_png(result.used_depth, result.internal_depth,
                                                        result.image_size))
            atomic_write(names.report, json.dumps(report, indent=2, default=str).encode())
            write_ply(names.ply, result.gaussians, result.f_px, result.image_size)
        except OSError as exc:
            self.remove(names.all())
            raise OutputError(f"cannot write results ({exc.strerror or exc})", self.path) from exc
        except OutputError:
            self.remove(names.all())
            raise

    @staticmethod
    def remove(paths: list[Path]) -> None:
        """Delete result files and any temp file of ours an interrupted write left."""
        for path in map(Path, paths):
            for victim in (path, *temp_files(path.parent, path.name)):
                with contextlib.suppress(OSError):
                    victim.unlink(missing_ok=True)

    def error_path(self, photo: Path) -> Path:
        """The note for `photo` (a path in the inputs folder, or relative to it)."""
        return self.path / note_name(self._relative(photo))

    def _relative(self, photo: Path) -> PurePath:
        if not photo.is_absolute():
            return photo
        if self.inputs is not None:
            with contextlib.suppress(ValueError):
                return photo.relative_to(self.inputs)
        return PurePath(photo.name)

    def write_error(self, photo: Path, message: str) -> Path | None:
        """`<photo name>.error.txt` with the reason; None when even that cannot be written."""
        try:
            self.ensure()
            path = self.error_path(photo)
            atomic_write(path, (message.rstrip() + "\n").encode("utf-8", "replace"))
        except (OutputError, OSError):
            return None
        return path

    def clear_error(self, photo: Path) -> None:
        with contextlib.suppress(OSError):
            self.error_path(photo).unlink(missing_ok=True)


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _colorize(inverse: np.ndarray, low: float, high: float) -> np.ndarray:
    t = np.clip((inverse - low) / max(high - low, 1e-12), 0.0, 1.0)
    stops = np.linspace(0.0, 1.0, len(_RAMP))
    rgb = np.stack([np.interp(t, stops, _RAMP[:, c]) for c in range(3)], axis=-1)
    return rgb.astype(np.uint8)


def preview_png(used: np.ndarray, internal: np.ndarray | None,
                image_size: tuple[int, int] | None = None) -> bytes:
    """Injected depth (left) beside SHARP's own depth (right), on one shared colour scale.

    Both maps live on SHARP's square grid; each panel is stretched back to the photo's
    aspect ratio (`image_size` is `(width, height)`).
    """
    maps = [np.asarray(used, dtype=np.float32)]
    if internal is not None:
        front = np.asarray(internal, dtype=np.float32)
        maps.append(front[0] if front.ndim == 3 else front)
    inverses = [1.0 / np.clip(m, 1e-3, None) for m in maps]
    stacked = np.concatenate([i.ravel() for i in inverses])
    low, high = (float(v) for v in np.percentile(stacked, [1, 99]))
    panels = []
    for inverse in inverses:
        image = Image.fromarray(_colorize(inverse, low, high))
        aspect = image_size[0] / image_size[1] if image_size else image.width / image.height
        width = max(1, round(PREVIEW_HEIGHT * aspect))
        panels.append(image.resize((width, PREVIEW_HEIGHT), Image.Resampling.BILINEAR))
    gap = 8
    sheet = Image.new("RGB", (sum(p.width for p in panels) + gap * (len(panels) - 1),
                              PREVIEW_HEIGHT), (255, 255, 255))
    x = 0
    for panel in panels:
        sheet.paste(panel, (x, 0))
        x += panel.width + gap
    buf = BytesIO()
    sheet.save(buf, format="PNG", optimize=False)
    return buf.getvalue()

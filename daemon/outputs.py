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
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from pipeline import OutputError, Prediction, timestamped_path, write_ply
from pipeline.atomic import atomic_write, temp_files
from pipeline.compare import SourceRun
from pipeline.depth.sources import DEPTH_SOURCES
from pipeline.exports import EXPORTERS
from pipeline.naming import MAX_STEM_BYTES, note_name, shorten
from pipeline.ply import ply_bytes, ply_size, write_ply_bytes
from pipeline.preview import PREVIEW_HEIGHT, preview_png

__all__ = ["PREVIEW_HEIGHT", "CompareNames", "OutputFolder", "ResultNames", "preview_png"]

_REPORT, _PREVIEW, _INTERNAL = ".json", "_depth.png", "_internal_depth.npy"
_COMPARE = "_compare"
_LONGEST_SOURCE = max(len(name) for name in DEPTH_SOURCES)


@dataclass(frozen=True)
class ResultNames:
    """The files one finished job produces, decided before any is written."""

    ply: Path
    report: Path
    preview: Path | None
    internal_depth: Path | None
    exports: dict[str, Path] = field(default_factory=dict)
    """Beside the PLY, by format (`spz`, `splat`)."""

    def all(self) -> list[Path]:
        return [p for p in (self.ply, self.report, self.preview, self.internal_depth,
                            *self.exports.values()) if p]


@dataclass(frozen=True)
class CompareNames:
    """A compare's files, decided before any is written; they sort together:
    `<stem>_<stamp>_compare.png`, then `<stem>_<stamp>_compare_<source>.json/.ply`."""

    sheet: Path
    plys: dict[str, Path]
    reports: dict[str, Path]
    internal_depth: Path | None
    exports: dict[str, dict[str, Path]] = field(default_factory=dict)
    """Per source, beside its PLY, by format (`spz`, `splat`)."""

    def all(self) -> list[Path]:
        return [self.sheet, *(p for s in self.plys for p in (self.reports[s], self.plys[s],
                                                             *self.exports.get(s, {}).values())),
                *([self.internal_depth] if self.internal_depth else [])]


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

    def names(self, stem: str, preview: bool, internal_depth: bool,
              formats: tuple[str, ...] = ("ply",)) -> ResultNames:
        extra = _extra_suffixes(formats)
        ply = timestamped_path(self.path, stem, ".ply",
                               companions=(_REPORT, _PREVIEW, _INTERNAL, *extra.values()))
        base = ply.with_suffix("")
        return ResultNames(ply=ply, report=ply.with_suffix(_REPORT),
                           preview=base.with_name(base.name + _PREVIEW) if preview else None,
                           internal_depth=(base.with_name(base.name + _INTERNAL)
                                           if internal_depth else None),
                           exports={f: ply.with_suffix(suffix) for f, suffix in extra.items()})

    def compare_names(self, stem: str, sources: tuple[str, ...], internal_depth: bool,
                      formats: tuple[str, ...] = ("ply",)) -> CompareNames:
        """Names for a compare of `sources`, none taken in any letter case."""
        # Room for the longest source's suffix on top of what every result name needs.
        stem = shorten(stem, MAX_STEM_BYTES - len(_COMPARE) - 1 - _LONGEST_SOURCE)
        extra = _extra_suffixes(formats)
        endings = [f"{_COMPARE}_{s}{suffix}" for s in sources
                   for suffix in (".ply", _REPORT, *extra.values())]
        sheet = timestamped_path(self.path, stem, f"{_COMPARE}.png",
                                 companions=(*endings, f"{_COMPARE}{_INTERNAL}"))
        base = sheet.name.removesuffix(f"{_COMPARE}.png")
        return CompareNames(
            sheet=sheet,
            plys={s: self.path / f"{base}{_COMPARE}_{s}.ply" for s in sources},
            reports={s: self.path / f"{base}{_COMPARE}_{s}{_REPORT}" for s in sources},
            internal_depth=self.path / f"{base}{_COMPARE}{_INTERNAL}" if internal_depth else None,
            exports={s: {f: self.path / f"{base}{_COMPARE}_{s}{suffix}"
                         for f, suffix in extra.items()} for s in sources})

    def write_compare(self, names: CompareNames, runs: list[SourceRun], sheet_png: bytes,
                      reports: dict[str, dict[str, Any]]) -> None:
        """The contact sheet, then per source its report and its PLY (so a visible PLY
        always has its report); any failure removes what this call wrote.

        Each report gets `file_bytes`: the size of the sheet, every PLY, every export and
        the internal depth (reports list each other by name only: their sizes depend on each
        other). The exports of every source are written before the first report.
        """
        with self._all_or_nothing(names.all()):
            plys = {run.source: ply_bytes(run.prediction.gaussians, run.prediction.f_px,
                                          run.prediction.image_size) for run in runs}
            sizes = {names.sheet.name: len(sheet_png)}
            sizes |= {names.plys[s].name: len(h) + v.nbytes + len(t)
                      for s, (h, v, t) in plys.items()}
            internal = runs[0].prediction.internal_depth
            npy = None
            if names.internal_depth is not None and internal is not None:
                npy = _npy_bytes(internal.astype(np.float32))
                sizes[names.internal_depth.name] = len(npy)
            atomic_write(names.sheet, sheet_png)
            if npy is not None and names.internal_depth is not None:
                atomic_write(names.internal_depth, npy)
            warnings: dict[str, list[str]] = {}
            for run in runs:
                warnings[run.source] = []
                sizes |= _write_exports(names.exports.get(run.source, {}), run.prediction,
                                        warnings[run.source])
            for run in runs:
                _write_report(names.reports[run.source], reports[run.source], sizes,
                              warnings[run.source])
                write_ply_bytes(names.plys[run.source], plys.pop(run.source))

    def write_result(self, names: ResultNames, result: Prediction,
                     report: dict[str, Any]) -> list[str]:
        """Extras, exports and report first, the PLY last: a visible PLY always has its
        report. The report gets `file_bytes` (every file but itself, by name) and any
        warning an export gave; those warnings are returned too.

        Any failure removes what this call wrote.
        """
        with self._all_or_nothing(names.all()):
            sizes: dict[str, int] = {}
            if names.internal_depth is not None and result.internal_depth is not None:
                buf = _npy_bytes(result.internal_depth.astype(np.float32))
                atomic_write(names.internal_depth, buf)
                sizes[names.internal_depth.name] = len(buf)
            if names.preview is not None:
                png = _preview(result)
                atomic_write(names.preview, png)
                sizes[names.preview.name] = len(png)
            warnings: list[str] = []
            sizes |= _write_exports(names.exports, result, warnings)
            sizes[names.ply.name] = ply_size(int(result.gaussians.mean_vectors.shape[-2]))
            _write_report(names.report, report, sizes, warnings)
            write_ply(names.ply, result.gaussians, result.f_px, result.image_size)
        return warnings

    @contextlib.contextmanager
    def _all_or_nothing(self, paths: list[Path]) -> Iterator[None]:
        """Any failure in the block removes `paths` (what it was writing) and is an
        `OutputError` naming the outputs folder."""
        try:
            yield
        except OSError as exc:
            self.remove(paths)
            raise OutputError(f"cannot write results ({exc.strerror or exc})", self.path) from exc
        except OutputError:
            self.remove(paths)
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


def _write_report(path: Path, report: dict[str, Any], sizes: dict[str, int],
                  warnings: list[str]) -> None:
    """The report with every other file's size and the exports' warnings added."""
    report = report | {"file_bytes": sizes, "warnings": [*report.get("warnings", []), *warnings]}
    atomic_write(path, json.dumps(report, indent=2, default=str).encode())


def _extra_suffixes(formats: tuple[str, ...]) -> dict[str, str]:
    """The file endings of the formats written beside the PLY."""
    return {f: EXPORTERS[f].suffix for f in formats if f != "ply"}


def _write_exports(paths: dict[str, Path], result: Prediction,
                   warnings: list[str]) -> dict[str, int]:
    """Write each export (atomically) and return its size by file name."""
    sizes = {}
    for fmt, path in paths.items():
        EXPORTERS[fmt].write(path, result.gaussians, result.f_px, result.image_size, warnings)
        sizes[path.name] = path.stat().st_size
    return sizes


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _preview(result: Prediction) -> bytes:
    """The `_depth.png`: what SHARP was given beside its own depth; one panel when it was
    given nothing (its own depth is all there is)."""
    if result.depth_source == "internal":
        return preview_png(result.used_depth, None, result.image_size,
                           ("SHARP's own depth (nothing injected)", ""))
    return preview_png(result.used_depth, result.internal_depth, result.image_size,
                       (f"injected depth ({result.depth_source})", "SHARP's own depth"))

"""Everything the daemon writes into the outputs folder, always via `pipeline.atomic`.

A reader (a viewer, Explorer's preview, a sync client) never sees a half-written file:
each file is written under a temp name of ours (`pipeline.atomic.temp_path`) and renamed
into place; our leftovers from a killed process are removed at start, and no one else's.
A result is written all or nothing, whatever stops the write. Its names and its report
are `daemon.results`'; error notes are named by `daemon.naming`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path, PurePath
from typing import TypeVar

import numpy as np

from pipeline import DepthSettings, InputError, OutputError, Prediction, write_ply
from pipeline.atomic import atomic_write, temp_files
from pipeline.compare import SourceRun
from pipeline.exports import EXPORTERS, ExportOptions
from pipeline.ply import SplatError, ply_bytes, ply_size, read_ply, write_ply_bytes
from pipeline.preview import PREVIEW_HEIGHT, preview_png
from pipeline.schema import keys

from .naming import note_name
from .results import (
    CompareNames,
    Report,
    ResultNames,
    add_to_report,
    read_result,
    write_report,
)

__all__ = ["PREVIEW_HEIGHT", "Exported", "OutputFolder", "preview_png"]

Names = TypeVar("Names", ResultNames, CompareNames)


@dataclass(frozen=True)
class Exported:
    """What `OutputFolder.export` wrote: each file by format, the warnings, and the report it
    updated (None where it updated none)."""

    files: dict[str, Path]
    warnings: list[str]
    report: Path | None


class OutputFolder:
    """The outputs folder: results written all or nothing (named by `daemon.results`), and
    error notes.

    `inputs` is the watched folder: a photo's error note is named after its path there,
    so `a/photo.jpg`, `photo.jpg` and `photo.png` each get their own note.
    """

    def __init__(self, path: Path, inputs: Path | None = None) -> None:
        self.path = path
        self.inputs = inputs
        self._names_lock = threading.Lock()
        self._held: set[str] = set()

    @contextlib.contextmanager
    def reserved(self, choose: Callable[[AbstractSet[str]], Names]) -> Iterator[Names]:
        """Names from `choose(held)`, held until the block ends: `held` is what the other
        workers chose and have not written yet, so two never pick the same name (neither
        sees the other's files until they are renamed into place)."""
        with self._names_lock:
            names = choose(frozenset(self._held))
            mine = {path.name.casefold() for path in names.all()}
            self._held |= mine
        try:
            yield names
        finally:
            with self._names_lock:
                self._held -= mine

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

    def write_compare(self, names: CompareNames, runs: list[SourceRun], sheet_png: bytes,
                      reports: dict[str, Report]) -> None:
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
                                        warnings[run.source], reports[run.source])
            for run in runs:
                _write_report(names.reports[run.source], reports[run.source], sizes,
                              warnings[run.source])
                write_ply_bytes(names.plys[run.source], plys.pop(run.source))

    def write_result(self, names: ResultNames, result: Prediction,
                     report: Report) -> list[str]:
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
            sizes |= _write_exports(names.exports, result, warnings, report)
            sizes[names.ply.name] = ply_size(int(result.gaussians.mean_vectors.shape[-2]))
            _write_report(names.report, report, sizes, warnings)
            write_ply(names.ply, result.gaussians, result.f_px, result.image_size)
        return warnings

    def export(self, ply: Path, formats: Sequence[str],
               spz_version: int | None = None) -> Exported:
        """Make `formats` (names of `EXPORTERS` but `ply`) from the PLY `ply` (SHARP's
        layout: results made before these formats existed too) as `<ply stem><suffix>` in
        this folder, all or nothing, never over an existing file.

        The title and the SPZ version (unless `spz_version`) come from the result's
        report where it has one of ours. Written beside the PLY, the files are added to
        that report (`daemon.results.add_to_report`), last, so a failure leaves it as it
        was. Raises ValueError for a format it cannot make, `InputError` naming the PLY
        when it is not one of ours, `OutputError` naming a file in the way or the folder
        that cannot be written.
        """
        problems = keys(DepthSettings)["formats"].problems(tuple(formats))
        if spz_version is not None:
            problems += keys(DepthSettings)["spz_version"].problems(spz_version)
        if "ply" in formats or not formats:
            problems.append(f"formats: list what to make from {ply.name} (any of "
                            f"{', '.join(f for f in EXPORTERS if f != 'ply')})")
        if problems:
            raise ValueError("; ".join(problems))
        try:
            scene = read_ply(ply)
        except SplatError as exc:
            raise InputError(str(exc).removeprefix(f"{ply}: "), ply) from exc
        except OSError as exc:
            raise InputError(f"cannot be read ({exc.strerror or exc})", ply) from exc
        found = read_result(ply)
        options = (export_options(found.report) if found is not None and found.report
                   else ExportOptions(title=ply.name))
        if spz_version is not None:
            options = options._replace(spz_version=spz_version)
        paths = {f: self.path / (ply.stem + EXPORTERS[f].suffix) for f in formats}
        self.ensure()
        _refuse_taken(list(paths.values()))
        warnings: list[str] = []
        with self._all_or_nothing(list(paths.values())):
            for fmt, path in paths.items():
                EXPORTERS[fmt].write(path, scene.rows, scene.f_px, scene.image_size, warnings,
                                     options)
            report = None
            if self.path.resolve() == ply.parent.resolve():
                report = add_to_report(ply, {p.name: p.stat().st_size for p in paths.values()},
                                       warnings)
        return Exported(paths, warnings, report)

    @contextlib.contextmanager
    def _all_or_nothing(self, paths: list[Path]) -> Iterator[None]:
        """Whatever ends the block early (a full disk, a bug, Ctrl+C) removes `paths` (what
        it was writing): no report, preview or export is left without its PLY. An
        `OSError` becomes an `OutputError` naming the outputs folder; anything else goes on
        unchanged."""
        try:
            yield
        except BaseException as exc:
            self.remove(paths)
            if isinstance(exc, OSError):
                raise OutputError(f"cannot write results ({exc.strerror or exc})",
                                  self.path) from exc
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


def _refuse_taken(paths: list[Path]) -> None:
    """`OutputError` naming the first of `paths` that exists in any letter case (Windows
    sees one file)."""
    for path in paths:
        try:
            taken = {entry.name.casefold() for entry in os.scandir(path.parent)}
        except OSError:
            return  # no folder yet: nothing in the way
        if path.name.casefold() in taken:
            raise OutputError("already exists; nothing was written (move it away, or write "
                              "elsewhere with -o)", path)


def _write_report(path: Path, report: Report, sizes: dict[str, int],
                  warnings: list[str]) -> None:
    """The report with every other file's size and the exports' warnings added."""
    write_report(path, report._replace(file_bytes=sizes,
                                       warnings=(*report.warnings, *warnings)))


def export_options(report: Report) -> ExportOptions:
    """What the exports need beyond the Gaussians, from the report of the run that made
    them: the photo's name (the share page's title) and the `spz_version` it ran with."""
    settings = report.settings
    version = settings.get("spz_version", ExportOptions().spz_version)
    return ExportOptions(spz_version=version, title=report.photo.name)


def _write_exports(paths: dict[str, Path], result: Prediction, warnings: list[str],
                   report: Report) -> dict[str, int]:
    """Write each export (atomically) and return its size by file name."""
    sizes = {}
    options = export_options(report)
    for fmt, path in paths.items():
        EXPORTERS[fmt].write(path, result.gaussians, result.f_px, result.image_size, warnings,
                             options)
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

"""A result's contract: the names of its files, and the JSON report beside its PLY.

The daemon's worker, `sharp-watch predict` and `sharp-watch compare` write results (through
`daemon.outputs`); the journal rebuild (`daemon.jobs.finished_results`), the gallery and the
viewer read them back. All of them take names, suffixes and the report from here, so what
one writes the others read.

A result is `<stem>_<stamp>.ply` with its report `<stem>_<stamp>.json` beside it, and maybe
a preview `_depth.png`, SHARP's own depth `_internal_depth.npy` and exports (`.spz`,
`.splat`). A compare set shares one stamp: the contact sheet `<stem>_<stamp>_compare.png`,
then per source `<stem>_<stamp>_compare_<source>.ply` and `.json`. Names never take one an
earlier result has, in any letter case, and are valid on Windows (`daemon.naming`).

A report carries `schema_version`. Reports written before that field existed have none and
are version 1 (the shape has not changed since), so old results stay listed and still
rebuild a lost journal. A report that is over `MAX_REPORT_BYTES`, not JSON, not of our
shape, or from a newer schema than this program knows, is not read: its PLY is not a result.
Reading never imports torch (the viewer reads reports and must start fast).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from pipeline.atomic import MAX_NAME_BYTES, atomic_write
from pipeline.depth.sources import DEPTH_SOURCES
from pipeline.errors import InputError
from pipeline.image import open_regular_file

from .naming import shorten, windows_safe_name

if TYPE_CHECKING:
    from pipeline import DepthSettings, Pipeline, Prediction
    from pipeline.compare import SourceRun

SCHEMA_VERSION = 1
"""The report's shape; a report without `schema_version` is version 1."""
PLY_SUFFIX = ".ply"
REPORT_SUFFIX = ".json"
PREVIEW_SUFFIX = "_depth.png"
INTERNAL_DEPTH_SUFFIX = "_internal_depth.npy"
COMPARE_TAG = "_compare"
SHEET_SUFFIX = f"{COMPARE_TAG}.png"
MAX_REPORT_BYTES = 1024 * 1024
"""A larger `.json` is not one of our reports (ours are a few kB): it is not read."""
STAMP_FORMAT = "%Y%m%d-%H%M%S"
MAX_STEM_BYTES = MAX_NAME_BYTES - len("_YYYYmmdd-HHMMSS-NNN") - len(INTERNAL_DEPTH_SUFFIX)
"""Room for the longest result name (`<stem>_<stamp>-N_internal_depth.npy`)."""
_LONGEST_SOURCE = max(len(name) for name in DEPTH_SOURCES)


# ---------------------------------------------------------------- names


def safe_stem(stem: str) -> str:
    """`stem`, shortened so every result name (and its temp name) fits in 255 bytes."""
    return shorten(stem, MAX_STEM_BYTES)


def timestamped_path(folder: Path, stem: str, suffix: str, when: datetime | None = None,
                     companions: Sequence[str] = (), held: AbstractSet[str] = frozenset()) -> Path:
    """`<folder>/<stem>_<YYYYmmdd-HHMMSS><suffix>`, with `-2`, `-3`... if that name is taken.

    A name is taken if any file in `folder` has it in any letter case (Windows sees one
    file), or is in `held` (case-folded names another worker is about to write), or has
    one of the `companions` endings (`.json`, `_depth.png`) in place of `suffix`. The
    name is made valid on Windows (`windows_safe_name`) and short enough (`safe_stem`).
    """
    stamp = (when or datetime.now()).strftime(STAMP_FORMAT)
    stem = safe_stem(stem)
    try:
        taken = {entry.name.casefold() for entry in os.scandir(folder)} | held
    except OSError:
        taken = set(held)
    endings = (suffix, *companions)
    n = 1
    while True:
        base = windows_safe_name(f"{stem}_{stamp}" + (f"-{n}" if n > 1 else "") + suffix)
        base = base.removesuffix(suffix)
        if not any((base + ending).casefold() in taken for ending in endings):
            return folder / (base + suffix)
        n += 1


@dataclass(frozen=True)
class ResultNames:
    """The files one finished photo produces, decided before any is written."""

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


def result_names(folder: Path, stem: str, preview: bool, internal_depth: bool,
                 formats: tuple[str, ...] = ("ply",),
                 held: AbstractSet[str] = frozenset()) -> ResultNames:
    """Names in `folder` for a result of a photo called `stem`, none taken in any case
    (nor `held`: see `timestamped_path`)."""
    extra = _extra_suffixes(formats)
    ply = timestamped_path(folder, stem, PLY_SUFFIX,
                           companions=(REPORT_SUFFIX, PREVIEW_SUFFIX, INTERNAL_DEPTH_SUFFIX,
                                       *extra.values()), held=held)
    base = ply.with_suffix("")
    return ResultNames(ply=ply, report=ply.with_suffix(REPORT_SUFFIX),
                       preview=base.with_name(base.name + PREVIEW_SUFFIX) if preview else None,
                       internal_depth=(base.with_name(base.name + INTERNAL_DEPTH_SUFFIX)
                                       if internal_depth else None),
                       exports={f: ply.with_suffix(suffix) for f, suffix in extra.items()})


def compare_names(folder: Path, stem: str, sources: tuple[str, ...], internal_depth: bool,
                  formats: tuple[str, ...] = ("ply",),
                  held: AbstractSet[str] = frozenset()) -> CompareNames:
    """Names in `folder` for a compare of `sources`, none taken in any letter case (nor
    `held`)."""
    # Room for the longest source's suffix on top of what every result name needs.
    stem = shorten(stem, MAX_STEM_BYTES - len(COMPARE_TAG) - 1 - _LONGEST_SOURCE)
    extra = _extra_suffixes(formats)
    endings = [f"{COMPARE_TAG}_{s}{suffix}" for s in sources
               for suffix in (PLY_SUFFIX, REPORT_SUFFIX, *extra.values())]
    sheet = timestamped_path(folder, stem, SHEET_SUFFIX,
                             companions=(*endings, f"{COMPARE_TAG}{INTERNAL_DEPTH_SUFFIX}"),
                             held=held)
    base = sheet.name.removesuffix(SHEET_SUFFIX) + COMPARE_TAG
    return CompareNames(
        sheet=sheet,
        plys={s: folder / f"{base}_{s}{PLY_SUFFIX}" for s in sources},
        reports={s: folder / f"{base}_{s}{REPORT_SUFFIX}" for s in sources},
        internal_depth=folder / f"{base}{INTERNAL_DEPTH_SUFFIX}" if internal_depth else None,
        exports={s: {f: folder / f"{base}_{s}{suffix}" for f, suffix in extra.items()}
                 for s in sources})


def _extra_suffixes(formats: tuple[str, ...]) -> dict[str, str]:
    """The file endings of the formats written beside the PLY."""
    from pipeline.exports import EXPORTERS  # imports torch: only writers name results

    return {f: EXPORTERS[f].suffix for f in formats if f != "ply"}


# ---------------------------------------------------------------- the report


class Origin(NamedTuple):
    """What a result is made from: the photo, its content hash, its job key (as the
    daemon computes it, `daemon.jobs`) and the settings it ran with."""

    photo: Path
    photo_hash: str
    key: str
    settings: DepthSettings


class Focal(NamedTuple):
    """The focal length SHARP was given, in pixels, and where it came from."""

    f_px: float | None = None
    origin: str | None = None
    """`override`, `exif`, `depth-model` or `default-30mm`."""
    estimated_by: str | None = None
    """The depth model whose estimate it is, for `depth-model`."""


class Depth(NamedTuple):
    """The depth SHARP was given: source, what the `.npy` held, model, range, cache."""

    source: str | None = None
    format: str | None = None
    model: str | None = None
    range_m: tuple[float, float] | None = None
    from_cache: bool | None = None


class Models(NamedTuple):
    """The models that made a result, and where they ran."""

    depth: str | None = None
    sharp: str | None = None
    device: str | None = None
    sharp_precision: str | None = None

    @classmethod
    def of(cls, pipe: Pipeline, settings: DepthSettings) -> Models:
        """The models `pipe` runs `settings` (one source's) with."""
        return cls(pipe.depth_model_id(settings), pipe.sharp.model_id, str(pipe.device),
                   pipe.sharp.precision)


class Compare(NamedTuple):
    """For one source of a compare set: which, among which, and the set's contact sheet."""

    source: str
    sources: tuple[str, ...]
    contact_sheet: str | None


class Report(NamedTuple):
    """The JSON beside a result's PLY, as typed fields.

    `settings` is the job's, as plain JSON values (with a compare's `compare` list), so a
    lost journal is rebuilt from any report. `files` names every file of the result (the
    whole set for a compare); `file_bytes` the size of each but the reports.
    """

    photo: Path
    photo_hash: str
    job: str
    settings: dict[str, Any]
    files: tuple[str, ...]
    created: str | None
    image_size: tuple[int, int] | None
    focal: Focal
    depth: Depth
    models: Models
    gaussians: int | None
    timings: dict[str, float]
    warnings: tuple[str, ...]
    file_bytes: dict[str, int]
    compare: Compare | None
    version: int = SCHEMA_VERSION

    @property
    def seconds(self) -> float | None:
        """The photo's total time (decode, depth, SHARP, write), if the report has one."""
        return float(sum(self.timings.values())) if self.timings else None


def build_report(origin: Origin, prediction: Prediction, *, models: Models,
                 timings: Mapping[str, float], from_cache: bool, files: Iterable[Path],
                 compare: Compare | None = None) -> Report:
    """The report of `prediction`, made from `origin`; `file_bytes` is the writer's to add
    (`daemon.outputs`), once the files exist."""
    low, high = prediction.depth_range_m
    return Report(
        photo=origin.photo,
        photo_hash=origin.photo_hash,
        job=origin.key,
        settings=origin.settings.as_dict(),
        files=tuple(p.name for p in files),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        image_size=(int(prediction.image_size[0]), int(prediction.image_size[1])),
        focal=Focal(float(prediction.f_px), prediction.focal_origin,
                    prediction.focal_estimated_by),
        depth=Depth(prediction.depth_source, prediction.depth_format, prediction.depth_model,
                    (float(low), float(high)), from_cache),
        models=models,
        gaussians=int(prediction.gaussians.mean_vectors.shape[-2]),
        timings={k: round(v, 4) for k, v in timings.items()},
        warnings=tuple(prediction.warnings),
        file_bytes={},
        compare=compare)


def compare_reports(origin: Origin, runs: Sequence[SourceRun],
                    models: Callable[[DepthSettings], Models], names: CompareNames,
                    files: Iterable[Path],
                    timings: Mapping[str, float] | None = None) -> dict[str, Report]:
    """One report per source of a compare set, by source; `models(settings)`: the models
    that ran a source (`Models.of(pipe, ...)`, a stage's `models`); each source's timings
    follow `timings` (what the set shared, e.g. decoding the photo)."""
    files = list(files)
    sources = tuple(origin.settings.compare)
    return {run.source: build_report(
        origin, run.prediction, models=models(origin.settings.for_source(run.source)),
        timings={**(timings or {}), **run.timings}, from_cache=run.from_cache, files=files,
        compare=Compare(run.source, sources, names.sheet.name)) for run in runs}


def report_json(report: Report) -> dict[str, Any]:
    """The report as written: the keys and shapes every version 1 reader knows."""
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "photo": str(report.photo),
        "photo_sha256": report.photo_hash,
        "job": report.job,
        "created": report.created,
        "settings": report.settings,
        "image_size": list(report.image_size) if report.image_size else None,
        "focal": report.focal._asdict(),
        "depth": report.depth._asdict(),
        "models": report.models._asdict(),
        "gaussians": report.gaussians,
        "timings_s": report.timings,
        "warnings": list(report.warnings),
        "files": list(report.files),
        "file_bytes": report.file_bytes,
    }
    if report.compare is not None:
        out["compare"] = report.compare._asdict()
    return out


def write_report(path: Path, report: Report) -> None:
    """Write `report` at `path` atomically (`pipeline.atomic`)."""
    atomic_write(path, json.dumps(report_json(report), indent=2).encode())


def _report_data(path: Path, within: Path | None = None) -> object:
    """The JSON at `path`, or None when it is missing, too large or not JSON.

    It is opened as the daemon opens photos (`open_regular_file`): a pipe or device named
    like a report cannot hang or flood the reader, nor can a link lead it out of `within`
    (the report's own folder unless given); and no more than `MAX_REPORT_BYTES` (and one)
    is read.
    """
    try:
        with open_regular_file(path, path.parent if within is None else within) as f:
            raw = f.read(MAX_REPORT_BYTES + 1)
        if len(raw) > MAX_REPORT_BYTES:
            return None
        return json.loads(raw.decode("utf-8"))
    except (OSError, InputError, ValueError, RecursionError):
        return None


def read_report(path: Path, within: Path | None = None) -> Report | None:
    """The report at `path`, or None when it is missing, too large, not JSON, not of our
    shape or of a newer schema (see the module's docstring)."""
    return parse_report(_report_data(path, within))


def add_to_report(ply: Path, sizes: Mapping[str, int], warnings: Sequence[str]) -> Path | None:
    """Record files made later from result `ply` (`sharp-watch export`) in its report: their
    names in `files`, their sizes in `file_bytes`, what making them warned of in
    `warnings`. The report is rewritten atomically with every other key as written, so it
    keeps its schema and its job. Returns the report, or None (nothing written) where
    `ply` has no report of ours that lists it."""
    path = ply.with_suffix(REPORT_SUFFIX)
    data = _report_data(path)
    report = parse_report(data)
    if report is None or ply.name not in report.files or not isinstance(data, dict):
        return None
    data["files"] = [*report.files, *(name for name in sizes if name not in report.files)]
    data["file_bytes"] = {**report.file_bytes, **sizes}
    data["warnings"] = [*report.warnings, *warnings]
    atomic_write(path, json.dumps(data, indent=2).encode())
    return path


def parse_report(data: object) -> Report | None:
    """`data` (a report's JSON) as a `Report`, or None when it is not one of ours.

    What names a result (photo, its hash, the job key, settings, files) must be there
    with the right types; a fact only shown (focal, depth, timings...) that is missing or
    malformed reads as unknown.
    """
    if not isinstance(data, dict):
        return None
    version = data.get("schema_version", 1)
    if type(version) is not int or not 1 <= version <= SCHEMA_VERSION:
        return None
    photo, photo_hash, job = data.get("photo"), data.get("photo_sha256"), data.get("job")
    settings, files = data.get("settings"), data.get("files")
    if not (isinstance(photo, str) and isinstance(photo_hash, str) and isinstance(job, str)
            and isinstance(settings, dict) and isinstance(files, list)
            and all(isinstance(name, str) for name in files)):
        return None
    focal, depth, models = (_object(data.get(k)) for k in ("focal", "depth", "models"))
    from_cache = depth.get("from_cache")
    return Report(
        photo=Path(photo), photo_hash=photo_hash, job=job, settings=settings,
        files=tuple(files), created=_text(data.get("created")),
        image_size=_size(data.get("image_size")),
        focal=Focal(_positive(focal.get("f_px")), _text(focal.get("origin")),
                    _text(focal.get("estimated_by"))),
        depth=Depth(_text(depth.get("source")), _text(depth.get("format")),
                    _text(depth.get("model")), _range(depth.get("range_m")),
                    from_cache if isinstance(from_cache, bool) else None),
        models=Models(*(_text(models.get(k)) for k in Models._fields)),
        gaussians=_count(data.get("gaussians")),
        timings={str(k): seconds for k, v in _object(data.get("timings_s")).items()
                 if (seconds := _number(v)) is not None},
        warnings=tuple(str(w) for w in _list(data.get("warnings"))),
        file_bytes={str(k): v for k, v in _object(data.get("file_bytes")).items()
                    if _count(v) is not None},
        compare=_compare(data.get("compare")),
        version=version)


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: object) -> float | None:
    """A finite JSON number (not a bool, nor an integer too large for a float), else None."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _positive(value: object) -> float | None:
    number = _number(value)
    return number if number is not None and number > 0 else None


def _count(value: object) -> int | None:
    return value if type(value) is int and value >= 0 else None


def _size(value: object) -> tuple[int, int] | None:
    if isinstance(value, list) and len(value) == 2:
        width, height = _count(value[0]), _count(value[1])
        if width is not None and height is not None:
            return width, height
    return None


def _range(value: object) -> tuple[float, float] | None:
    if isinstance(value, list) and len(value) == 2:
        low, high = _number(value[0]), _number(value[1])
        if low is not None and high is not None:
            return low, high
    return None


def _compare(value: object) -> Compare | None:
    if not isinstance(value, dict):
        return None
    source, sources, sheet = value.get("source"), value.get("sources"), value.get("contact_sheet")
    if not (isinstance(source, str) and isinstance(sources, list)
            and all(isinstance(s, str) for s in sources)):
        return None
    return Compare(source, tuple(sources), _text(sheet))


# ---------------------------------------------------------------- results on disk


@dataclass(frozen=True)
class Result:
    """A PLY in the outputs folder and its report (None only for a PLY from elsewhere
    that the viewer was asked to show)."""

    ply: Path
    report: Report | None
    modified: float

    @property
    def name(self) -> str:
        return self.ply.name

    @property
    def photo(self) -> Path:
        """The photo it was made from (an empty path when there is no report)."""
        return self.report.photo if self.report is not None else Path("")

    @property
    def preview(self) -> Path | None:
        """The depth preview; for a compare set, its contact sheet (all sources at once)."""
        if self.report is None:
            return None
        for name in preview_names(self.report):
            if (self.ply.parent / name).is_file():
                return self.ply.parent / name
        return None


def preview_names(report: Report) -> list[str]:
    """The files that show a result flat, in the report's order: its depth preview; for a
    compare set, its contact sheet (all sources at once)."""
    sheet = report.compare.contact_sheet if report.compare else None
    return [name for name in report.files if name.endswith(PREVIEW_SUFFIX) or name == sheet]


def read_result(ply: Path) -> Result | None:
    """The result whose PLY is `ply`, or None when its report is missing or not ours."""
    report = read_report(ply.with_suffix(REPORT_SUFFIX))
    if report is None or ply.name not in report.files:
        return None
    try:
        modified = ply.stat().st_mtime
    except OSError:
        return None
    return Result(ply, report, modified)


def list_results(outputs: Path) -> list[Result]:
    """Every result in `outputs`, newest first (by the PLY's time, then name)."""
    try:
        names = [e.name for e in os.scandir(outputs) if e.name.endswith(PLY_SUFFIX)]
    except OSError:
        return []
    found = [r for r in (read_result(outputs / name) for name in names) if r is not None]
    return sorted(found, key=lambda r: (r.modified, r.name), reverse=True)


def find_result(outputs: Path, name: str) -> Result | None:
    """The result called `name` in `outputs`; only a plain file name is accepted."""
    if not name or Path(name).name != name or not name.endswith(PLY_SUFFIX):
        return None
    return read_result(outputs / name)


def latest_for(outputs: Path, photo: Path,
               settings: dict[str, Any] | None = None) -> Result | None:
    """The newest result of `photo` (with exactly these settings, when given)."""
    for result in list_results(outputs):
        if result.photo != photo:
            continue
        if settings is None or (result.report is not None
                                and result.report.settings == settings):
            return result
    return None

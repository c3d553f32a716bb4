"""`sharp-watch predict`: SHARP Custom's one-shot command on resident models, photo or folder."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.image import SUPPORTED_EXTENSIONS

from . import options
from .text import printable_lines, warn

if TYPE_CHECKING:
    from pipeline import Prediction


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict", help="turn one photo or a folder of photos into PLYs, then exit",
        description="Depth Pro depth injected into SHARP, once, without the daemon. Every result "
                    "gets a new timestamped name; nothing is overwritten. Settings come from "
                    "the options given, else the photo's sidecar, else the config's "
                    "[defaults]; the models from the options, else the config's [models].")
    p.add_argument("-i", "--input", required=True, type=Path, help="a photo or a folder of photos")
    p.add_argument("-o", "--output", required=True, type=Path, help="folder for the results")
    options.add_config_option(p)
    options.add_setting_options(p, skip=("compare",))  # `sharp-watch compare` runs several
    p.set_defaults(func=run)


def find_photos(path: Path) -> list[Path]:
    """The photo itself, or every supported photo under the folder, in a stable order."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*")
                  if p.is_file() and p.suffix.lower() in SUPPORTED_EXTENSIONS
                  and not p.name.startswith("."))


def summary(name: str, result: Prediction) -> str:
    low, high = result.depth_range_m
    stages = " ".join(f"{stage} {seconds:.2f}s" for stage, seconds in result.timings.items())
    fmt = f"/{result.depth_format}" if result.depth_format else ""
    return (f"{name}: depth {low:.2f}-{high:.2f} m ({result.depth_source}{fmt}), "
            f"focal {result.f_px:.0f} px ({result.focal_origin}), {stages}")


def run(args: argparse.Namespace) -> int:
    """Each result is written as the daemon writes it (`daemon.outputs.OutputFolder`): the
    PLY, its exports and internal depth and a JSON report the gallery lists, all or nothing."""
    from tqdm.auto import tqdm

    from daemon.jobs import origin_of
    from daemon.outputs import OutputFolder
    from daemon.results import Models, build_report, result_names
    from pipeline import ModelError, OutputError, Pipeline, PipelineError

    try:
        opts = options.load_options(args, compare=())  # one result per photo
    except ValueError as exc:  # a ConfigError too
        warn(f"error: {exc}")
        return 2
    if not args.input.exists():
        warn(f"error: {args.input} does not exist")
        return 2
    photos = find_photos(args.input)
    if not photos:
        warn(f"error: no photos ({', '.join(sorted(SUPPORTED_EXTENSIONS))}) in {args.input}")
        return 2
    inputs = args.input if args.input.is_dir() else args.input.parent  # sidecars' depth maps
    folder = OutputFolder(args.output)
    try:
        folder.ensure()
    except OutputError as exc:
        warn(f"error: {exc}")
        return 1
    pipe = Pipeline(opts.models)
    failed = 0
    for photo in tqdm(photos, unit="photo", disable=len(photos) < 2):
        try:
            settings = opts.settings(photo, inputs)
            result = pipe.run(photo, settings)
            origin = origin_of(photo, settings)
            start = time.perf_counter()
            names = result_names(folder.path, photo.stem, preview=False,
                                 internal_depth=settings.save_internal_depth,
                                 formats=settings.formats)
            # As the daemon's: timed up to the write; the summary line adds the write.
            report = build_report(origin, result, models=Models.of(pipe, settings),
                                  timings=result.timings, from_cache=False, files=names.all())
            try:
                result.warnings += folder.write_result(names, result, report)
            except OutputError as exc:  # name the photo, not only the folder
                raise OutputError(f"{exc.reason} in {folder.path}", photo) from exc
            result.timings["write"] = time.perf_counter() - start
        except ModelError as exc:
            warn(f"error: {exc}")
            return 1
        except PipelineError as exc:
            failed += 1
            tqdm.write(printable_lines(f"FAILED {exc}"), file=sys.stderr)
            continue
        for warning in result.warnings:
            tqdm.write(printable_lines(f"warning: {photo.name}: {warning}"), file=sys.stderr)
        tqdm.write(printable_lines(summary(photo.name, result) + f" -> {names.ply}"))
    if failed:
        warn(f"{failed} of {len(photos)} photos failed")
    return 1 if failed else 0

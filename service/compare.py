"""`sharp-watch compare PHOTO`: one photo through several depth sources, side by side.

The same work and the same files as a sidecar's `compare = [...]` in the watch folder
(`pipeline.compare`, `daemon.outputs`): one PLY and report per source, sorting together,
and one contact sheet. Model and tuning options are `sharp-watch predict`'s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.depth.sources import DEPTH_SOURCES

from . import predict

DEFAULT_SOURCES = ("depth-pro", "depth-anything-outdoor", "internal")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare", help="run one photo with several depth sources; one PLY each + a sheet",
        description="Run PHOTO once per depth source (each depth model loaded once) and write "
                    "<stem>_<stamp>_compare_<source>.ply and .json per source plus one "
                    "<stem>_<stamp>_compare.png contact sheet: the photo, each source's depth "
                    "on one colour scale, a colour bar in metres and depth histograms.")
    p.add_argument("photo", type=Path, help="the photo")
    p.add_argument("--sources", type=predict.names_list, default=DEFAULT_SOURCES,
                   help=f"comma-separated, in the order shown (default: "
                        f"{','.join(DEFAULT_SOURCES)}); any of {', '.join(DEPTH_SOURCES)}")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="folder for the results (default: the watch folder's outputs, so the "
                        "gallery shows them)")
    p.add_argument("--config", type=Path, default=None,
                   help="config.toml whose outputs folder is the default -o")
    predict.add_tuning_options(p)
    predict.add_model_options(p)
    p.set_defaults(func=run)


def _output_folder(args: argparse.Namespace) -> Path:
    if args.output is not None:
        return Path(args.output)
    from daemon.config import load_config

    return load_config(args.config).outputs


def run(args: argparse.Namespace) -> int:
    from daemon.config import ConfigError
    from daemon.jobs import origin_of
    from daemon.outputs import OutputFolder
    from daemon.results import compare_names, compare_reports
    from pipeline import DepthSettings, Pipeline, PipelineError, load_image
    from pipeline.compare import contact_sheet_png, run_compare

    try:
        settings = DepthSettings(compare=args.sources, **predict.tuning(args))
        models = predict.model_settings(args)
        folder = OutputFolder(_output_folder(args))
    except (ValueError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        image = load_image(args.photo)
        origin = origin_of(image.path, settings)  # an unreadable .npy stops here, named
        pipe = Pipeline(models)
        runs = run_compare(pipe, image, settings)
        folder.ensure()
        names = compare_names(folder.path, image.path.stem, settings.compare,
                              settings.save_internal_depth, settings.formats)
        reports = compare_reports(origin, runs, pipe, names, names.all())
        folder.write_compare(names, runs, contact_sheet_png(image, runs), reports)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for r in runs:
        for warning in r.prediction.warnings:
            print(f"warning: {r.source}: {warning}", file=sys.stderr)
        print(predict.summary(r.source, r.prediction) + f" -> {names.plys[r.source]}")
    print(f"contact sheet -> {names.sheet}")
    return 0

"""`sharp-watch compare PHOTO`: one photo through several depth sources, side by side.

The same work and the same files as a sidecar's `compare = [...]` in the watch folder
(`pipeline.compare`, `daemon.outputs`): one PLY and report per source, sorting together,
and one contact sheet. Its options are `predict`'s (`service.options`): the config, and
every setting as a flag, `--sources` for `compare`.
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

from . import options, predict
from .text import say, warn

DEFAULT_SOURCES = ("depth-pro", "depth-anything-outdoor", "internal")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare", help="run one photo with several depth sources; one PLY each + a sheet",
        description="Run PHOTO once per depth source (each depth model loaded once) and write "
                    "<stem>_<stamp>_compare_<source>.ply and .json per source plus one "
                    "<stem>_<stamp>_compare.png contact sheet: the photo, each source's depth "
                    "on one colour scale, a colour bar in metres and depth histograms. "
                    "Settings come from the options given, else the photo's sidecar, else "
                    "the config's [defaults]; the sources from --sources, else the sidecar's "
                    f"or the config's compare, else {','.join(DEFAULT_SOURCES)}.")
    p.add_argument("photo", type=Path, help="the photo")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="folder for the results (default: the config's outputs folder, so the "
                        "gallery shows them)")
    options.add_config_option(p)
    options.add_setting_options(p, skip=("depth_source",),  # each source of the set is one
                                defaults={"compare": ",".join(DEFAULT_SOURCES)})
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from daemon.jobs import origin_of
    from daemon.outputs import OutputFolder
    from daemon.results import Models, compare_names, compare_reports
    from pipeline import Pipeline, PipelineError, load_image
    from pipeline.compare import contact_sheet_png, run_compare

    try:
        opts = options.load_options(args)
        folder = OutputFolder(args.output or opts.config.outputs)
    except ValueError as exc:  # a ConfigError too
        warn(f"error: {exc}")
        return 2
    try:
        settings = opts.settings(args.photo, args.photo.parent)
        settings = settings if settings.compare else settings.replace(compare=DEFAULT_SOURCES)
        image = load_image(args.photo)
        origin = origin_of(image.path, settings)  # an unreadable .npy stops here, named
        pipe = Pipeline(opts.models)
        runs = run_compare(pipe, image, settings)
        folder.ensure()
        names = compare_names(folder.path, image.path.stem, settings.compare,
                              settings.save_internal_depth, settings.formats)
        reports = compare_reports(origin, runs, partial(Models.of, pipe), names, names.all())
        folder.write_compare(names, runs, contact_sheet_png(image, runs), reports)
    except PipelineError as exc:
        warn(f"error: {exc}")
        return 1
    for r in runs:
        for warning in r.prediction.warnings:
            warn(f"warning: {r.source}: {warning}")
        say(predict.summary(r.source, r.prediction) + f" -> {names.plys[r.source]}")
    say(f"contact sheet -> {names.sheet}")
    return 0

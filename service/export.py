"""`sharp-watch export RESULT.ply --formats sog,spz,splat,html`: a result's other formats,
made from its PLY.

The same files a `formats = [...]` setting makes when the photo runs (`pipeline.exports`),
from any PLY in SHARP's layout, so results made before a format existed can be shared
too; `html` is the single-file share page. Written beside the PLY (and added to its
report) or into `-o`, all or nothing, never over a file (`daemon.outputs`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.schema import keys
from pipeline.settings import DepthSettings

from . import options
from .text import say, warn


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="make .sog, .spz, .splat or a share page (.html) from a result's PLY",
        description="Convert a result's PLY (SHARP's layout, however old) into other formats: "
                    "sog (about a tenth of the PLY), spz, splat, and html: one page with the "
                    "3D photo in it that opens in any current browser, offline, by "
                    "double-click. The files are named after the PLY and written beside it "
                    "(and listed in its report), or into --output; none is written over an "
                    "existing file, and if one fails none is left.")
    p.add_argument("ply", type=Path, help="the result's .ply")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="folder for the files (default: beside the PLY)")
    declared = keys(DepthSettings)
    formats, version = declared["formats"], declared["spz_version"]
    p.add_argument(formats.flag, dest="formats", required=True,
                   help="the formats to make: any of "
                        f"{', '.join(c for c in formats.spec.choices if c != 'ply')}",
                   **options.flag_parsing(formats))
    p.add_argument(version.flag, dest="spz_version", default=None,
                   help=f"{version.spec.help}; {version.allowed()} (default: the one the "
                        f"result was made with, else {version.shown_default()})",
                   **options.flag_parsing(version))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from daemon.outputs import OutputFolder
    from pipeline import PipelineError

    folder = OutputFolder(args.output or args.ply.absolute().parent)
    try:
        done = folder.export(args.ply, args.formats, args.spz_version)
    except ValueError as exc:
        warn(f"error: {exc}")
        return 2
    except PipelineError as exc:
        warn(f"error: {exc}")
        return 1
    for warning in done.warnings:
        warn(f"warning: {warning}")
    for path in done.files.values():
        say(f"{path} ({path.stat().st_size / 1e6:.2f} MB)")
    if done.report is not None:
        say(f"listed in {done.report.name}")
    return 0

"""`sharp-watch predict`: the seed's one-shot CLI, on resident models, for a photo or a folder."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.depth.sources import DEFAULT_DEPTH_MODEL
from pipeline.image import SUPPORTED_EXTENSIONS
from pipeline.settings import DEPTH_FORMATS, DEPTH_SOURCES, EXPORT_FORMATS, PRECISIONS

if TYPE_CHECKING:
    from pipeline import ModelSettings, Prediction


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict", help="turn one photo or a folder of photos into PLYs, then exit",
        description="Depth Pro depth injected into SHARP, once, without the daemon. Every result "
                    "gets a new timestamped name; nothing is overwritten.")
    p.add_argument("-i", "--input", required=True, type=Path, help="a photo or a folder of photos")
    p.add_argument("-o", "--output", required=True, type=Path, help="folder for the results")
    p.add_argument("--depth-source", choices=DEPTH_SOURCES, default=None,
                   help="depth-pro (transformers, default), depth-pro-apple, "
                        "depth-anything-indoor, depth-anything-outdoor, npy, or internal "
                        "(SHARP's own depth); npy when --external-depth is given")
    add_tuning_options(p)
    add_model_options(p)
    p.set_defaults(func=run)


def add_tuning_options(p: argparse.ArgumentParser) -> None:
    """The per-photo depth options (`DepthSettings`), shared with `sharp-watch compare`."""
    p.add_argument("--external-depth", type=Path, default=None,
                   help=".npy file for every photo, or a folder of <photo stem>.npy files")
    p.add_argument("--depth-format", choices=DEPTH_FORMATS, default="auto",
                   help="what the .npy holds (default: auto)")
    p.add_argument("--back-surface-factor", type=float, default=1.0,
                   help="1.0 = back surface from SHARP's own back/front ratio (recommended); "
                        ">1.0 = back = front x factor")
    p.add_argument("--depth-scale", type=float, default=1.0,
                   help="multiply depth: <1 closer, >1 farther")
    p.add_argument("--depth-offset", type=float, default=0.0,
                   help="metres added after scaling: >0 farther, <0 closer")
    p.add_argument("--focal-mm", type=float, default=None,
                   help="35 mm-equivalent focal length; default: EXIF, else Depth Pro's estimate")
    p.add_argument("--save-internal-depth", action="store_true",
                   help="also save SHARP's own 2-layer depth as <result>_internal_depth.npy")
    p.add_argument("--formats", type=names_list, default=("ply",),
                   help=f"comma-separated result formats, ply always included "
                        f"({', '.join(EXPORT_FORMATS)}; default: ply)")


def names_list(text: str) -> tuple[str, ...]:
    """`a,b, c` as `("a", "b", "c")`: a command-line list of names."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Which models load and where (`ModelSettings`), shared with `sharp-watch compare`."""
    p.add_argument("--device", default="auto", help="auto, cuda, cuda:N, mps or cpu")
    p.add_argument("--depth-model", default=DEFAULT_DEPTH_MODEL,
                   help="hub id or local folder of the transformers metric depth model behind "
                        "depth-pro (the named sources need none)")
    p.add_argument("--depth-pro-checkpoint", type=Path, default=None,
                   help="local depth_pro.pt for --depth-source depth-pro-apple")
    p.add_argument("--sharp-checkpoint", type=Path, default=None,
                   help="local SHARP .pt (default: download the official one once)")
    p.add_argument("--sharp-factory", default=None, help=argparse.SUPPRESS)
    p.add_argument("--sharp-precision", choices=PRECISIONS, default="float32",
                   help="SHARP's precision (default float32)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="where downloaded weights are kept (default: torch hub's and the "
                        "Hugging Face cache)")


def tuning(args: argparse.Namespace) -> dict[str, Any]:
    """`DepthSettings` keywords from `add_tuning_options`' flags."""
    return dict(depth_scale=args.depth_scale, depth_offset=args.depth_offset,
                back_surface_factor=args.back_surface_factor,
                external_depth=args.external_depth, depth_format=args.depth_format,
                focal_mm=args.focal_mm, save_internal_depth=args.save_internal_depth,
                formats=args.formats)


def model_settings(args: argparse.Namespace) -> ModelSettings:
    """`ModelSettings` from `add_model_options`' flags (raises ValueError on bad values)."""
    from pipeline import ModelSettings

    return ModelSettings(device=args.device, depth_model=args.depth_model,
                         depth_pro_checkpoint=args.depth_pro_checkpoint,
                         sharp_checkpoint=args.sharp_checkpoint,
                         sharp_factory=args.sharp_factory,
                         sharp_precision=args.sharp_precision, cache_dir=args.cache_dir)


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
    from pipeline import DepthSettings, ModelError, OutputError, Pipeline, PipelineError

    try:
        settings = DepthSettings(
            depth_source=args.depth_source or ("npy" if args.external_depth else "depth-pro"),
            **tuning(args))
        models = model_settings(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.input.exists():
        print(f"error: {args.input} does not exist", file=sys.stderr)
        return 2
    photos = find_photos(args.input)
    if not photos:
        print(f"error: no photos ({', '.join(sorted(SUPPORTED_EXTENSIONS))}) in {args.input}",
              file=sys.stderr)
        return 2
    folder = OutputFolder(args.output)
    try:
        folder.ensure()
    except OutputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    pipe = Pipeline(models)
    failed = 0
    for photo in tqdm(photos, unit="photo", disable=len(photos) < 2):
        try:
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
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except PipelineError as exc:
            failed += 1
            tqdm.write(f"FAILED {exc}", file=sys.stderr)
            continue
        for warning in result.warnings:
            tqdm.write(f"warning: {photo.name}: {warning}", file=sys.stderr)
        tqdm.write(summary(photo.name, result) + f" -> {names.ply}")
    if failed:
        print(f"{failed} of {len(photos)} photos failed", file=sys.stderr)
    return 1 if failed else 0

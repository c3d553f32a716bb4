"""Per-stage speed and memory of the product's pipeline with both models resident.

    python bench/gpu.py [--photos 20] [--folder DIR] [--vram-gb 12] [--tiny]

Builds full-size Depth Pro (transformers, apple/DepthPro-hf's architecture) and
full-size SHARP (`create_predictor(PredictorParams())`), with their weights when they
are cached and random weights otherwise (same speed and memory), keeps both resident,
and runs the product's own `pipeline.Pipeline` over the photos. It reports:

- load time of each model, VRAM with both resident and idle, peak and steady VRAM;
- per photo: decode, depth, SHARP, unprojection, PLY write, and total drop-to-PLY,
  against the bare forward passes of the two models;
- a batch with decoding (prefetch thread) and writing (writer thread) overlapped with
  the GPU work, and the GPU busy fraction over it (GPU work / wall time);
- depth-cache retune (SHARP only, cached depth) against a full run;
- precision: SHARP fp32 vs bf16 / fp16 autocast, Depth Pro fp16 vs fp32.

Without CUDA it runs the same code with the tiny test models and says so; its
numbers then only show that the code works.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean, median

import numpy as np
import torch
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import (  # noqa: E402
    SUPPORTED_EXTENSIONS,
    DepthSettings,
    Gaussians,
    LoadedImage,
    ModelSettings,
    OutOfMemoryError,
    Pipeline,
    RawDepth,
    SharpStage,
    load_image,
)
from pipeline.depth.base import normalized_square  # noqa: E402
from pipeline.depth.transformers_backend import TransformersDepth  # noqa: E402
from pipeline.ply import ply_bytes, write_ply_bytes  # noqa: E402
from pipeline.weights import SHARP_URL, cached_checkpoint  # noqa: E402

EXAMPLE = ROOT.parent / "shared" / "data" / "example.jpg"
DEPTH_PRO_HF = "apple/DepthPro-hf"
GIB = 2**30
TARGET_VRAM_GB = 11.0
TARGET_OVERHEAD = 1.10
TARGET_BUSY = 0.95
TARGET_RETUNE = 1.3
TINY_PHOTO_SIDE = 640


def depth_pro_hf_config():  # type: ignore[no-untyped-def]
    """apple/DepthPro-hf's architecture: three ViT-L/16 DINOv2 encoders at 384 px."""
    from transformers import DepthProConfig

    vit = dict(model_type="dinov2", hidden_size=1024, num_hidden_layers=24,
               num_attention_heads=16, image_size=384, patch_size=16, mlp_ratio=4,
               layerscale_value=1.0, use_swiglu_ffn=False)
    return DepthProConfig(
        patch_size=384, fusion_hidden_size=256, intermediate_hook_ids=[11, 5],
        intermediate_feature_dims=[256, 256], scaled_images_ratios=[0.25, 0.5, 1.0],
        scaled_images_overlap_ratios=[0.0, 0.5, 0.25], scaled_images_feature_dims=[1024, 1024, 512],
        merge_padding_value=3, use_batch_norm_in_fusion_residual=False,
        use_bias_in_fusion_residual=True, use_fov_model=True, num_fov_head_layers=2,
        image_model_config=dict(vit), patch_model_config=dict(vit), fov_model_config=dict(vit),
    )


# ---------------------------------------------------------------- timing and memory

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def timed(device: torch.device, into: list[float]) -> Iterator[None]:
    sync(device)
    start = time.perf_counter()
    yield
    sync(device)
    into.append(time.perf_counter() - start)


def vram_gb(device: torch.device, peak: bool = False) -> float | None:
    """Bytes torch holds on the GPU (reserved, which is what the card must have)."""
    if device.type != "cuda":
        return None
    value = (torch.cuda.max_memory_reserved(device) if peak
             else torch.cuda.memory_reserved(device))
    return value / GIB


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def fmt_gb(value: float | None) -> str:
    return "n/a (no CUDA)" if value is None else f"{value:.2f} GB"


# ---------------------------------------------------------------- models and photos

@dataclass
class Models:
    pipe: Pipeline
    depth: TransformersDepth
    sharp: SharpStage
    kind: str
    load_s: dict[str, float] = field(default_factory=dict)


def load_models(device: torch.device, tiny: bool, sharp_checkpoint: Path | None,
                workdir: Path) -> Models:
    """Both models resident on `device`; load times include moving them there."""
    depth_dtype = torch.float16 if device.type == "cuda" else torch.float32
    load_s: dict[str, float] = {}
    if tiny:
        from tests.support.sharp_double import build
        from tests.support.tiny_models import save_tiny_depth_pro

        folder = save_tiny_depth_pro(workdir / "tiny-depth-pro")
        start = time.perf_counter()
        depth = TransformersDepth.load(str(folder), device, depth_dtype)
        sync(device)
        load_s["depth"] = time.perf_counter() - start
        start = time.perf_counter()
        sharp = SharpStage(build().to(device))
        sync(device)
        load_s["sharp"] = time.perf_counter() - start
        kind = "tiny test models (tests.support.tiny_models + tests.support.sharp_double)"
    else:
        start = time.perf_counter()
        depth, depth_kind = _full_depth_pro(device, depth_dtype)
        sync(device)
        load_s["depth"] = time.perf_counter() - start
        start = time.perf_counter()
        sharp, sharp_kind = _full_sharp(device, sharp_checkpoint)
        sync(device)
        load_s["sharp"] = time.perf_counter() - start
        kind = f"full size: Depth Pro {depth_kind}, SHARP {sharp_kind}"
    pipe = Pipeline(ModelSettings(device=str(device)), sharp=sharp,
                    depth_models={"depth-pro": depth})
    return Models(pipe, depth, sharp, kind, load_s)


def _full_depth_pro(device: torch.device, dtype: torch.dtype) -> tuple[TransformersDepth, str]:
    from huggingface_hub import try_to_load_from_cache
    from transformers import DepthProForDepthEstimation

    config = try_to_load_from_cache(DEPTH_PRO_HF, "config.json")
    if isinstance(config, str) and any(Path(config).parent.glob("*.safetensors")):
        return TransformersDepth.load(DEPTH_PRO_HF, device, dtype), "cached weights"
    with torch.device(device):
        model = DepthProForDepthEstimation(depth_pro_hf_config())
    return TransformersDepth(model.to(dtype), DEPTH_PRO_HF), "random weights"


def _full_sharp(device: torch.device, checkpoint: Path | None) -> tuple[SharpStage, str]:
    cached = checkpoint or cached_checkpoint(SHARP_URL)
    if cached.is_file():
        return SharpStage.load(device, "float32", checkpoint=cached), "cached weights"
    from sharp.models import PredictorParams, create_predictor

    with torch.device(device):
        predictor = create_predictor(PredictorParams())
    return SharpStage(predictor.to(device)), "random weights"


def make_photos(folder: Path, count: int, source: Path | None,
                max_side: int | None = None) -> list[Path]:
    """The photos in `source`, else `count` variants of example.jpg (or of noise),
    shrunk to `max_side` pixels if given (the tiny models' smoke run)."""
    if source is not None:
        found = sorted(p for p in source.iterdir() if p.suffix.lower() in SUPPORTED_EXTENSIONS)
        return found[:count]
    if EXAMPLE.is_file():
        base = ImageOps.exif_transpose(Image.open(EXAMPLE)).convert("RGB")
    else:
        rng = np.random.default_rng(0)
        base = Image.fromarray(rng.integers(0, 256, (2268, 3024, 3), dtype=np.uint8))
    if max_side is not None:
        base.thumbnail((max_side, max_side))
    folder.mkdir(parents=True, exist_ok=True)
    photos = []
    for i in range(count):
        image = ImageOps.mirror(base) if i % 2 else base
        if i % 3 == 1:
            w, h = image.size
            image = image.crop((w // 20, h // 20, w - w // 20, h - h // 20))
        path = folder / f"photo_{i:03d}.jpg"
        image.save(path, quality=92)
        photos.append(path)
    return photos


# ---------------------------------------------------------------- measurements

@dataclass
class StageTimes:
    stages: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.stages.setdefault(name, []).append(seconds)

    def mean(self, name: str) -> float:
        return mean(self.stages[name]) if self.stages.get(name) else math.nan


def per_stage(models: Models, photos: list[Path], out: Path) -> StageTimes:
    """Each photo drop-to-PLY on its own, stage by stage (nothing overlapped)."""
    device = models.pipe.device
    times = StageTimes()
    for photo in photos:
        start = time.perf_counter()
        result = models.pipe.run(photo, DepthSettings())
        for stage in ("decode", "depth", "sharp", "unproject"):
            times.add(stage, result.timings[stage])
        write: list[float] = []
        with timed(device, write):
            write_ply_bytes(out / f"{photo.stem}.ply",
                            ply_bytes(result.gaussians, result.f_px, result.image_size))
        times.add("write", write[0])
        times.add("total", time.perf_counter() - start)
    return times


def bare_forwards(models: Models, photos: list[Path], repeat: int = 1) -> dict[str, float]:
    """The two models' forward passes alone, on inputs prepared beforehand."""
    device = models.pipe.device
    depth_s: list[float] = []
    sharp_s: list[float] = []
    for photo in photos[: max(1, min(3, len(photos)))]:
        image = load_image(photo)
        pixels = models.pipe.upload(image)
        x = normalized_square(pixels, models.depth.input_size, models.depth.dtype)
        rgb = models.sharp.resize_input(pixels)
        factor = torch.tensor([0.8], device=device)
        with torch.inference_mode():
            for _ in range(repeat):
                with timed(device, depth_s):
                    models.depth.model(pixel_values=x)
                with timed(device, sharp_s):
                    models.sharp.predictor(rgb, factor)
    return {"depth": median(depth_s), "sharp": median(sharp_s)}


def overlapped_batch(models: Models, photos: list[Path], out: Path) -> dict[str, float]:
    """Decode ahead in one thread, write behind in another; GPU work stays on this one.

    The decode thread also pins the pixels, so the upload is a non-blocking copy.

    GPU busy = time this thread spends in GPU stages (depth, SHARP, unprojection and the
    PLY conversion, each ending in a synchronise) over the wall time of the batch.
    """
    device = models.pipe.device
    decoded: queue.Queue[tuple[LoadedImage, torch.Tensor] | None] = queue.Queue(maxsize=2)
    to_write: queue.Queue[tuple[Path, tuple[bytes, np.ndarray, bytes]] | None] = \
        queue.Queue(maxsize=2)

    def decode() -> None:
        for photo in photos:
            image = load_image(photo)
            pixels = torch.from_numpy(image.rgb).permute(2, 0, 1)
            decoded.put((image, pixels.pin_memory() if device.type == "cuda" else pixels))
        decoded.put(None)

    def write() -> None:
        while (job := to_write.get()) is not None:
            write_ply_bytes(*job)

    threads = [threading.Thread(target=decode), threading.Thread(target=write)]
    gpu_s: list[float] = []
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    while (item := decoded.get()) is not None:
        image, pinned = item
        with timed(device, gpu_s):
            pixels = pinned.to(device, non_blocking=True)
            raw = models.pipe.estimate_depth(image, DepthSettings(), pixels)
            result = models.pipe.predict(image, DepthSettings(), raw, pixels)
            parts = ply_bytes(result.gaussians, result.f_px, result.image_size)
        to_write.put((out / f"batch_{image.path.stem}.ply", parts))
    to_write.put(None)
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return {"wall": wall, "per_photo": wall / len(photos), "busy": sum(gpu_s) / wall}


def retune(models: Models, photos: list[Path], out: Path) -> dict[str, float]:
    """Full run vs SHARP-only with the depth model's output cached (a retune)."""
    device = models.pipe.device
    full: list[float] = []
    tuned: list[float] = []
    for photo in photos[: max(1, min(3, len(photos)))]:
        with timed(device, full):
            result = models.pipe.run(photo, DepthSettings())
            write_ply_bytes(out / "full.ply", ply_bytes(result.gaussians, result.f_px,
                                                        result.image_size))
        image = load_image(photo)
        raw = models.pipe.estimate_depth(image, DepthSettings())
        with timed(device, tuned):
            image = load_image(photo)
            result = models.pipe.predict(image, DepthSettings(depth_scale=0.8), raw)
            write_ply_bytes(out / "tuned.ply", ply_bytes(result.gaussians, result.f_px,
                                                         result.image_size))
    return {"full": median(full), "retune": median(tuned), "speedup": median(full) / median(tuned)}


def _relative(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-item relative error of `a` against reference `b` over the last axis."""
    return (a - b).norm(dim=-1) / b.norm(dim=-1).clamp(min=1e-12)


def sharp_precisions(models: Models, photo: Path, repeat: int = 2) -> list[dict[str, object]]:
    """SHARP in fp32 and under bf16 / fp16 autocast on one input: speed, VRAM, drift."""
    device = models.pipe.device
    image = load_image(photo)
    raw = models.pipe.estimate_depth(image, DepthSettings())
    rows: list[dict[str, object]] = []
    reference: Gaussians | None = None
    for precision in ("float32", "bfloat16", "float16"):
        pipe = Pipeline(ModelSettings(device=str(device)),
                        sharp=SharpStage(models.sharp.predictor, precision),
                        depth_models={"depth-pro": models.depth})
        reset_peak(device)
        seconds: list[float] = []
        try:
            for _ in range(repeat):
                with timed(device, seconds):
                    g = pipe.predict(image, DepthSettings(), raw).gaussians
        except (RuntimeError, OutOfMemoryError) as exc:
            rows.append({"precision": precision, "error": str(exc).splitlines()[0]})
            continue
        row: dict[str, object] = {"precision": precision, "seconds": min(seconds),
                                  "peak_gb": vram_gb(device, peak=True)}
        if reference is None:
            reference = g
        else:
            means = _relative(g.mean_vectors, reference.mean_vectors)
            row["means"] = float(means.median())
            row["means_max"] = float(means.quantile(0.999))
            row["scales"] = float(_relative(g.singular_values, reference.singular_values).median())
            row["colours"] = float((g.colors - reference.colors).abs().max())
        rows.append(row)
    return rows


def depth_precisions(models: Models, photo: Path) -> list[dict[str, object]]:
    """Depth Pro at fp32 and fp16 (the same weights) on one input: speed, drift.

    Drift is that of depth (`1 / canonical inverse depth`) at a fixed focal length, and
    of the field of view the focal length would come from without EXIF.
    """
    device = models.pipe.device
    pixels = models.pipe.upload(load_image(photo))
    model = models.depth.model
    original = models.depth.dtype
    reference: RawDepth | None = None
    rows: list[dict[str, object]] = []
    try:
        for name, dtype in (("float32", torch.float32), ("float16", torch.float16)):
            model.to(dtype)
            seconds: list[float] = []
            try:
                models.depth.estimate(pixels)
                with timed(device, seconds):
                    raw = models.depth.estimate(pixels)
            except (RuntimeError, OutOfMemoryError) as exc:
                rows.append({"precision": name, "error": str(exc).splitlines()[0]})
                continue
            row: dict[str, object] = {"precision": name, "seconds": seconds[0]}
            if reference is None:
                reference = raw
            else:
                error = np.abs(reference.values.clip(1e-4) / raw.values.clip(1e-4) - 1.0)
                row["depth_median"] = float(np.median(error))
                row["depth_p999"] = float(np.quantile(error, 0.999))
                if raw.fov_deg is not None and reference.fov_deg is not None:
                    row["fov_deg"] = abs(raw.fov_deg - reference.fov_deg)
            rows.append(row)
    finally:
        model.to(original)
        reset_peak(device)
    return rows


# ---------------------------------------------------------------- report

def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _check(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(device: torch.device, models: Models, photos: int, vram_cap: float | None,
           memory: dict[str, float | None], stages: StageTimes, bare: dict[str, float],
           batch: dict[str, float], tune: dict[str, float],
           sharp_rows: list[dict[str, object]], depth_rows: list[dict[str, object]]) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (no CUDA)"
    lines = [
        f"## bench/gpu.py: {name}, torch {torch.__version__}",
        "",
        f"Models: {models.kind}. Photos: {photos}. VRAM cap: "
        + (f"{vram_cap:g} GB" if vram_cap else "none") + ".",
        "",
        "| stage | mean per photo |",
        "|---|---|",
    ]
    labels = (("decode", "decode"), ("depth", "depth (Depth Pro)"), ("sharp", "SHARP"),
              ("unproject", "unprojection"), ("write", "PLY write"),
              ("total", "total drop-to-PLY"))
    lines += [f"| {label} | {_ms(stages.mean(key))} |" for key, label in labels]
    forwards = bare["depth"] + bare["sharp"]
    overhead = stages.mean("total") / forwards
    batch_overhead = batch["per_photo"] / forwards
    peak = memory["peak"]
    lines += [
        f"| bare forwards (depth + SHARP) | {_ms(bare['depth'])} + {_ms(bare['sharp'])} |",
        f"| batch of {photos}, decode/write overlapped | {_ms(batch['per_photo'])} per photo |",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| load Depth Pro / SHARP | {_ms(models.load_s['depth'])} / "
        f"{_ms(models.load_s['sharp'])} | |",
        f"| VRAM, both resident, idle | {fmt_gb(memory['idle'])} | |",
        f"| VRAM, peak over one inference | {fmt_gb(peak)} | <= {TARGET_VRAM_GB:g} GB "
        + ("" if peak is None else _check(peak <= TARGET_VRAM_GB)) + " |",
        f"| VRAM, steady between photos | {fmt_gb(memory['steady'])} | |",
        f"| total / bare forwards, one photo | {overhead:.2f}x | |",
        f"| total / bare forwards, batch | {batch_overhead:.2f}x | <= {TARGET_OVERHEAD:.2f}x "
        f"{_check(batch_overhead <= TARGET_OVERHEAD)} |",
        f"| GPU busy over the batch | {batch['busy']:.1%} | >= {TARGET_BUSY:.0%} "
        f"{_check(batch['busy'] >= TARGET_BUSY)} |",
        f"| retune (cached depth) vs full | {_ms(tune['retune'])} vs {_ms(tune['full'])}: "
        f"{tune['speedup']:.2f}x | >= {TARGET_RETUNE:g}x "
        f"{_check(tune['speedup'] >= TARGET_RETUNE)} |",
        "",
        "| SHARP precision | time | peak VRAM | means drift (median / 99.9%) | scales drift "
        "| colour max diff |",
        "|---|---|---|---|---|---|",
    ]
    for row in sharp_rows:
        if "error" in row:
            lines.append(f"| {row['precision']} | failed: {row['error']} | | | | |")
            continue
        drift = (f"{row['means']:.2e} / {row['means_max']:.2e} | {row['scales']:.2e} | "
                 f"{row['colours']:.2e}") if "means" in row else "reference | | "
        peak_gb = row["peak_gb"]
        lines.append(f"| {row['precision']} | {_ms(float(row['seconds']))} | "  # type: ignore[arg-type]
                     f"{fmt_gb(peak_gb)} | {drift} |")  # type: ignore[arg-type]
    lines += ["", "| Depth Pro precision | time | depth drift (median / 99.9%) | FOV drift |",
              "|---|---|---|---|"]
    for row in depth_rows:
        if "error" in row:
            lines.append(f"| {row['precision']} | failed: {row['error']} | | |")
            continue
        drift = (f"{row['depth_median']:.2e} / {row['depth_p999']:.2e}"
                 if "depth_median" in row else "reference")
        fov = f"{row['fov_deg']:.3f} deg" if "fov_deg" in row else ""
        lines.append(f"| {row['precision']} | {_ms(float(row['seconds']))} | {drift} | "  # type: ignore[arg-type]
                     f"{fov} |")
    return "\n".join(lines)


def measure(device: torch.device, models: Models, photos: list[Path], out: Path,
            vram_cap: float | None) -> int:
    """Every measurement, in an order where each starts from a warm model."""
    reset_peak(device)
    memory: dict[str, float | None] = {"idle": vram_gb(device)}
    print(f"loaded: {models.kind}", flush=True)
    per_stage(models, photos[:1], out)
    reset_peak(device)
    stages = per_stage(models, photos, out)
    memory["peak"] = vram_gb(device, peak=True)
    memory["steady"] = vram_gb(device)
    print("per-stage done", flush=True)
    bare = bare_forwards(models, photos)
    batch = overlapped_batch(models, photos, out)
    tune = retune(models, photos, out)
    print("batch and retune done", flush=True)
    sharp_rows = sharp_precisions(models, photos[0])
    depth_rows = depth_precisions(models, photos[0])
    print()
    print(report(device, models, len(photos), vram_cap, memory, stages, bare, batch, tune,
                 sharp_rows, depth_rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=20, help="how many photos (default 20)")
    parser.add_argument("--folder", type=Path, default=None, help="use the photos in this folder")
    parser.add_argument("--vram-gb", type=float, default=None,
                        help="cap usable GPU memory to emulate a smaller card, e.g. 12")
    parser.add_argument("--sharp-checkpoint", type=Path, default=None)
    parser.add_argument("--tiny", action="store_true", help="tiny models even on CUDA")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    args = parser.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tiny = args.tiny or device.type != "cuda"
    if device.type != "cuda":
        print("No CUDA device: running the same code with the tiny test models "
              "(tests.support.tiny_models + tests.support.sharp_double); the numbers only "
              "show it works.")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        if args.vram_gb:
            total = torch.cuda.get_device_properties(device).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, args.vram_gb * GIB / total),
                                                       device)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        photos = make_photos(work / "photos", args.photos, args.folder,
                             TINY_PHOTO_SIDE if tiny else None)
        if not photos:
            print(f"no photos found in {args.folder}")
            return 2
        out = work / "out"
        out.mkdir()
        try:
            models = load_models(device, tiny, args.sharp_checkpoint, work)
            return measure(device, models, photos, out, args.vram_gb)
        except (OutOfMemoryError, torch.cuda.OutOfMemoryError) as exc:
            cap = f" under the {args.vram_gb:g} GB cap" if args.vram_gb else ""
            print(f"out of GPU memory{cap}: {exc}")
            return 3


if __name__ == "__main__":
    sys.exit(main())


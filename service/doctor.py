"""`sharp-watch doctor`: everything that can stop the first photo, one line each.

Every check returns OK, WARN (works, but slower or will download first) or FAIL (will
not work) with the fix in the same line, so a user can paste the output into an issue.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DISTRIBUTION = "sharp-watch"
GIB = 1024**3
MIN_VRAM_GIB = 8.0
MIN_FREE_DISK_GIB = 5.0


@dataclass(frozen=True)
class Check:
    level: str  # "OK" | "WARN" | "FAIL"
    name: str
    detail: str

    def line(self) -> str:
        return f"{self.level:<4} {self.name}: {self.detail}"


def size_text(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def folder_size(path: Path) -> int:
    """Bytes under `path`, following the HF cache's symlinks to their blobs."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def check_python() -> Check:
    return Check("OK", "Python", f"{platform.python_version()} ({sys.executable})")


def check_torch() -> Iterator[Check]:
    try:
        import torch
    except ImportError as exc:
        yield Check("FAIL", "torch", f"does not import ({exc}); pip install torch")
        return
    cuda = torch.version.cuda
    yield Check("OK", "torch", f"{torch.__version__}, built for CUDA {cuda or 'none (CPU only)'}")
    if not torch.cuda.is_available():
        fix = ("this torch build has no CUDA: reinstall from https://pytorch.org/get-started "
               "(e.g. pip install torch --index-url https://download.pytorch.org/whl/cu126)"
               if cuda is None else f"torch is built for CUDA {cuda} but sees no GPU: check "
               "that nvidia-smi lists one and the driver supports that CUDA version")
        yield Check("WARN", "GPU", f"none usable, photos run on the CPU (minutes each); {fix}")
        return
    index = torch.cuda.current_device()
    free, total = torch.cuda.mem_get_info(index)
    name = torch.cuda.get_device_name(index)
    level = "OK" if total / GIB >= MIN_VRAM_GIB else "WARN"
    advice = "" if level == "OK" else (f"; under {MIN_VRAM_GIB:.0f} GiB: set "
                                       "sharp_precision = \"float16\" in [models]")
    yield Check(level, "GPU", f"{name}, {size_text(free)} free of {size_text(total)} VRAM, "
                              f"CUDA runtime {cuda}{advice}")


def check_imports(config: Any) -> Iterator[Check]:
    factory = config.models.sharp_factory
    if factory:
        module = factory.partition(":")[0]
        yield _import_check("SHARP", module, f"the factory {factory!r} in [models] sharp_factory")
    else:
        yield _import_check("SHARP", "sharp.models", install_command("sharp"))
    yield _import_check("depth backend", "transformers",
                        "pip install transformers (Depth Pro through transformers)",
                        attribute="DepthProForDepthEstimation")
    needed = "depth-pro-apple" in config.defaults.sources
    try:
        importlib.import_module("depth_pro")
        yield Check("OK", "depth_pro (Apple's package)", "imports")
    except ImportError:
        level = "FAIL" if needed else "OK"
        yield Check(level, "depth_pro (Apple's package)",
                    "not installed" + ('; needed for depth_source = "depth-pro-apple": '
                                       + install_command("depth-pro-apple") if needed else
                                       " (optional, only for depth_source = depth-pro-apple)"))


def declared_requirements() -> list[str]:
    """sharp-watch's `Requires-Dist` lines as installed; none when run from a bare checkout."""
    try:
        return importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return []


def install_command(extra: str) -> str:
    """The pip command that adds what `extra` needs, with no Git: the pinned archive URL
    pyproject.toml gives it, read from the installed metadata so that the commit is written
    in one place; else the extra of the checkout (docs/upstream-contract.md)."""
    from packaging.requirements import InvalidRequirement, Requirement

    for line in declared_requirements():
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if (requirement.url and requirement.marker is not None
                and requirement.marker.evaluate({"extra": extra})):
            return f'pip install "{requirement.name} @ {requirement.url}"'
    return f'pip install -e ".[{extra}]" in the sharp-watch folder'



def _import_check(name: str, module: str, fix: str, attribute: str | None = None) -> Check:
    try:
        imported = importlib.import_module(module)
        if attribute is not None:
            getattr(imported, attribute)
    except Exception as exc:
        return Check("FAIL", name, f"{module} does not import ({exc}); {fix}")
    return Check("OK", name, f"{module} imports")


def check_weights(config: Any) -> Iterator[Check]:
    from pipeline.weights import DEPTH_PRO_URL, SHARP_URL, cached_checkpoint

    m = config.models
    if not m.sharp_factory:
        yield _file_check("SHARP weights", m.sharp_checkpoint
                          or cached_checkpoint(SHARP_URL, m.cache_dir),
                          explicit=m.sharp_checkpoint is not None, download="2.8 GB")
    if "depth-pro-apple" in config.defaults.sources or m.depth_pro_checkpoint:
        yield _file_check("depth_pro.pt weights", m.depth_pro_checkpoint
                          or cached_checkpoint(DEPTH_PRO_URL, m.cache_dir),
                          explicit=m.depth_pro_checkpoint is not None, download="1.9 GB")
    if Path(m.depth_model).is_dir():
        yield Check("OK", "depth model", f"local folder {m.depth_model} "
                                         f"({size_text(folder_size(Path(m.depth_model)))})")
        return
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(m.depth_model, cache_dir=m.cache_dir,
                                        allow_patterns=["*.json", "*.safetensors"],
                                        local_files_only=True))
    except Exception:
        yield Check("WARN", "depth model", f"{m.depth_model} not in the Hugging Face cache yet; "
                                           "the first run downloads it (a few GB)")
        return
    yield Check("OK", "depth model", f"{m.depth_model} cached in {folder} "
                                     f"({size_text(folder_size(folder))})")


def _file_check(name: str, path: Path, explicit: bool, download: str) -> Check:
    if Path(path).is_file():
        return Check("OK", name, f"{path} ({size_text(Path(path).stat().st_size)})")
    if explicit:
        return Check("FAIL", name, f"{path} does not exist; fix the path in the config")
    return Check("WARN", name, f"not cached yet ({path}); the first run downloads it "
                               f"(about {download})")


def check_folders(config: Any) -> Iterator[Check]:
    folders = {"inputs folder": config.folders.inputs, "outputs folder": config.folders.outputs,
               "state folder": config.daemon.state_dir, "log folder": config.service.log_dir}
    for name, folder in folders.items():
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-"):
                pass
        except OSError as exc:
            yield Check("FAIL", name, f"{folder} is not writable ({exc.strerror or exc}); "
                                      "choose another folder in the config")
            continue
        yield Check("OK", name, f"{folder} writable")
    try:
        free = shutil.disk_usage(config.folders.outputs).free
    except OSError as exc:
        yield Check("WARN", "free disk", f"unknown at {config.folders.outputs} "
                                         f"({exc.strerror or exc})")
        return
    level = "OK" if free / GIB >= MIN_FREE_DISK_GIB else "WARN"
    advice = "" if level == "OK" else "; each splat is about 70 MB, free some space"
    yield Check(level, "free disk", f"{size_text(free)} at {config.folders.outputs}{advice}")


def checks(config: Any, config_path: Path | None) -> Iterator[Check]:
    """All checks in the order a person would fix them."""
    yield Check("OK", "config", str(config_path) if config_path else
                "no config file, using built-in defaults")
    yield check_python()
    yield from check_torch()
    yield from check_imports(config)
    yield from check_weights(config)
    yield from check_folders(config)


def run(config: Any, config_path: Path | None, say: Any) -> int:
    """Print every check; exit 1 when any failed."""
    failed = False
    for check in checks(config, config_path):
        say(check.line())
        failed = failed or check.level == "FAIL"
    return 1 if failed else 0

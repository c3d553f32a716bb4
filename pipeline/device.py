"""Device and precision choices, and mapping device failures to our errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch

from .errors import ModelError, OutOfMemoryError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(name: str = "auto") -> torch.device:
    """`auto` is CUDA, else Apple MPS, else CPU; an explicit name must be usable."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ModelError(f"unknown device {name!r}; use auto, cuda, cuda:N, mps or cpu") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {name!r} asked for, but this torch build sees no CUDA GPU "
                         "(run `sharp-watch doctor`)")
    return device


def dtype_named(name: str) -> torch.dtype:
    return _DTYPES[name]


def depth_dtype(name: str, device: torch.device) -> torch.dtype:
    """Depth Pro runs in fp16 on CUDA by default (its authors' setting), fp32 elsewhere."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return dtype_named(name)


def autocast(device: torch.device, precision: str) -> AbstractContextManager[object]:
    """Autocast for reduced precision; fp32 runs with no autocast at all."""
    if precision == "float32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype_named(precision))


@contextmanager
def device_errors(stage: str) -> Iterator[None]:
    """Turn an out-of-memory inside a model call into `OutOfMemoryError` naming the stage."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as exc:
        raise OutOfMemoryError(f"GPU out of memory during {stage}") from exc
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower():
            raise OutOfMemoryError(f"out of memory during {stage}") from exc
        raise


def free_device_memory() -> None:
    """Give cached blocks back to the driver (after an OOM or an unload)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

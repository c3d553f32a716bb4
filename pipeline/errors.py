"""Errors the pipeline raises, split by who can fix them.

`InputError` is the user's to fix (a bad photo, depth map or setting) and names the
file; `ModelError` is about weights or the device. Both carry a message meant to be
shown to a person as is.
"""

from __future__ import annotations

from pathlib import Path


def install_hint(extra: str) -> str:
    """How to add an optional part: sharp-watch is installed from its folder, not from PyPI."""
    return (f'in the sharp-watch folder, run `python -m pip install -e ".[{extra}]"` in '
            "sharp-watch's environment")


class PipelineError(Exception):
    """Base class: a failure with a message a person can act on."""

    def __init__(self, message: str, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else None
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)
        self.reason = message


class InputError(PipelineError):
    """The input (photo, depth map, setting) is unusable; retrying will not help."""


class ModelError(PipelineError):
    """A model could not be loaded or run (weights, device, missing package)."""


class OutOfMemoryError(ModelError):
    """The device ran out of memory; the caller may free memory and retry once."""


class OutputError(PipelineError):
    """A result could not be written (disk full, no permission, folder gone)."""

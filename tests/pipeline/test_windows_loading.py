"""Photos and depth maps load the way Windows' Python lets them.

Windows has no `os.O_NONBLOCK`; `os.set_blocking` is missing before Python 3.12 and, from
3.12, fails on a disk file (CPython implements it with `SetNamedPipeHandleState`). The
landed code called it on every file, so every photo failed on Windows. Each case below
takes those attributes away or makes them fail as Windows does, in this process.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pipeline import InputError, load_image
from pipeline.depth.external import load_depth_npy
from tests.conftest import write_photo


def _pipe_only(fd: int, blocking: bool) -> None:
    raise OSError(22, "The parameter is incorrect")  # what a disk-file handle gets on 3.12+


@pytest.fixture(params=["3.11: no set_blocking", "3.12+: set_blocking fails on files"])
def windows_os(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delattr(os, "O_NONBLOCK", raising=False)
    if request.param.startswith("3.11"):
        monkeypatch.delattr(os, "set_blocking", raising=False)
    else:
        monkeypatch.setattr(os, "set_blocking", _pipe_only)
    return str(request.param)


def test_photo_loads_without_posix_only_file_calls(tmp_path: Path, windows_os: str) -> None:
    photo = write_photo(tmp_path / "cat.jpg", 64, 48)
    image = load_image(photo)
    assert (image.width, image.height) == (64, 48)
    assert image.rgb.dtype == np.uint8 and image.rgb.shape == (48, 64, 3)


def test_depth_map_loads_without_posix_only_file_calls(tmp_path: Path, windows_os: str) -> None:
    values = np.linspace(1.0, 9.0, 12 * 16, dtype=np.float32).reshape(12, 16)
    np.save(tmp_path / "cat.npy", values)
    assert np.array_equal(load_depth_npy(tmp_path / "cat.npy"), values)


def test_posix_still_refuses_a_fifo_named_like_a_photo(tmp_path: Path) -> None:
    """The guard the Windows fix must keep where FIFOs exist: no hang, a clear refusal."""
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs in this platform's file namespace")
    fifo = tmp_path / "trap.jpg"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        load_image(fifo)

"""Fixtures only the viewer's tests use.

- `viewer_app`: a started `viewer.server.ViewerApp` on `tmp_path/in` (photo `a.jpg`) and
  `tmp_path/out` (its result `a_1.ply`), launch pages in `tmp_path/state`, daemon status
  "paused"; `.token` is a live session token, `.opened` the folders it was asked to show,
  `.reruns` the photos it asked to rerun.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline import DepthSettings
from tests.conftest import write_photo
from tests.support.viewer_requests import viewer_session, write_result


@pytest.fixture
def viewer_app(tmp_path: Path) -> Iterator[Any]:
    from viewer.server import Place, ViewerApp

    inputs, outputs = tmp_path / "in", tmp_path / "out"
    photo = write_photo(inputs / "a.jpg")
    write_result(outputs, photo, "a_1")
    opened: list[Path] = []
    status: dict[str, Any] = {"state": "paused", "queue_length": 0}
    reruns: list[Path] = []
    viewer = ViewerApp(Place(inputs, outputs, DepthSettings()), lambda: status,
                       opened.append, rerun=reruns.append, launch_dir=tmp_path / "state")
    viewer.start()
    viewer.token = viewer_session(viewer)  # type: ignore[attr-defined]
    viewer.opened = opened  # type: ignore[attr-defined]
    viewer.reruns = reruns  # type: ignore[attr-defined]
    yield viewer
    viewer.close()

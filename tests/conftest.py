"""Fixtures shared by the tests of every layer (tests/pipeline, daemon, viewer, service,
project), and the plain helpers they all use. Helpers for one kind of test live in
tests/support/ (listed at the end); a layer's own fixtures may go in its conftest.py.

- `tiny_depth_dir` (session): a tiny random transformers Depth Pro saved once to a
  local folder; use it as `depth_model`.
- `tiny_pipeline` (session): one `pipeline.Pipeline` on CPU with that model and the SHARP
  double (`tests.support.sharp_double:build`), models loaded; pass it to `Daemon(config, pipe)`
  to skip loading and warm-up. Its SHARP double counts forwards in
  `tiny_pipeline.sharp.predictor.calls`.
- `make_daemon_config(**changes)`: a `daemon.Config` on `tmp_path/inputs`,
  `tmp_path/outputs` and `tmp_path/state`, tiny models, CPU, `stable_seconds=0.2`,
  and `[defaults] depth_source = "internal"` (SHARP's own depth: the fastest path; pass
  `defaults=DepthSettings()` to run the tiny Depth Pro too). Keyword arguments replace
  `[daemon]` keys (`stable_seconds`, `preview`...), or, as `defaults=DepthSettings(...)`
  / `folders=...` / `models=...` / `service=...`, whole sections.
- `daemon_config`: `make_daemon_config()` with no changes.
- `config_toml(config) -> Path`: the config written as a TOML file (for
  `python -m daemon --config FILE` subprocesses).
- `make_photo(path, width=64, height=48, seed=0) -> Path`: a small random JPEG/PNG
  (format from the suffix) written atomically into place (as a plain function:
  `write_photo`).
- `running_daemon(config=None, pipeline=tiny_pipeline)`: a started `Daemon`, stopped at
  the end of the test.
- `overlap` (parametrized False/True): on a CPU the worker decodes, runs and writes in
  turn; with True the GPU-style prefetch and writer threads run too
  (`daemon.worker.OVERLAP_ON_CPU`). Ask for it in tests that should cover both paths.
- `splat_transform` (session): the command line of PlayCanvas's splat-transform (npm,
  installed once into the user cache; skips without node/npm), `tests.support.splat_reader`.
- `to_ply(source) -> (N, 14) array`: an export converted back to PLY by splat-transform,
  its vertex columns (`tests.support.splat_reader.COLUMNS`).
- `spark_read(path) -> (N, 14) array` (module): the file read by the viewer's vendored
  Spark in headless Chromium, as PLY columns (`tests.support.web_readers`); skips without
  Chromium or playwright.
- `wait_for(predicate, timeout)` (plain function, `from tests.conftest import wait_for`).
- `load_tool(name) -> module`: the script `tools/<name>.py` imported as a module (plain
  function; `tools/` is not a package).
- `small_prediction()` and `small_report(files, photo)` (plain functions): a 64-Gaussian
  `pipeline.Prediction` of an 8x8 photo with SHARP's own depth, and its report
  (`daemon.results.Report`) naming `files`, for writing results without a model.
- `usual_umask`: the umask set to 022 for the test, so owner-only modes are our doing.
- `entries(folder)`: what is in a folder a daemon uses, less its hidden folder lock.
- `stop_process(process)`: SIGTERM a daemon subprocess and wait for it (killed after 30 s).
- `write_small_result(outputs, name, report, preview=True, mtime=None) -> Path` (plain
  function): a result the gallery lists, without a model (a stand-in PLY, a preview PNG
  and `report`); the PLY's mtime, the gallery's order, set to `mtime`.

tests/support/ (plain modules, imported as `tests.support.<name>`):
- `sharp_double`: the SHARP stand-in (`build`, the factory in test configs);
  `tiny_models`: tiny random Depth Pro / Depth Anything saved locally or into a hub
  cache; `fake_hub`: a Hugging Face Hub on 127.0.0.1; `viewer_browser`: headless
  Chromium and telling a drawn scene from a blank one.
- `daemon_runs`: `settle(daemon)`, `plys(outputs, stem)`, `reports(outputs)`,
  `events_of(daemon)`, `log_lines()`, `sharp_calls(pipe)`, for a daemon in this process.
- `running_program`: `status_of(state_dir)`, `raw(port, method, path, headers)` and
  `wait_or_fail(predicate, seconds, what, process)`, for `sharp-watch run` in a subprocess.
- `viewer_requests`: requests to a started viewer (`call`, `raw_status`, `send_raw`,
  `launch_key`, `viewer_session`) and results written without a model (`gaussians`,
  `write_result`); the `viewer_app` fixture is in tests/viewer/conftest.py.
- `files`: `save_sidecar(path, text)` (atomic, as editors save), `write_config(folder,
  text)`, `npy_bytes(array)`.
- `cluster`: `LocalCluster`, a real Dask scheduler and `sharp-watch cluster-worker`
  processes on loopback with tiny models (and the slow SHARP double), `free_port()`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from PIL import Image

from daemon import Config, Daemon, JobEvent
from daemon.config import DaemonConfig, FolderConfig, ModelConfig, ServiceConfig
from daemon.results import (
    PLY_SUFFIX,
    PREVIEW_SUFFIX,
    REPORT_SUFFIX,
    Models,
    Origin,
    Report,
    build_report,
    report_json,
)
from pipeline import DepthSettings, Pipeline
from pipeline.atomic import atomic_write
from tests.support.splat_reader import read_back, splat_transform_command
from tests.support.tiny_models import save_tiny_depth_pro
from tests.support.viewer_browser import browser, skip_without_chromium
from tests.support.web_readers import SPARK, SPARK_MODULES, reader_page, spark_columns

if TYPE_CHECKING:
    from pipeline import Prediction

SHARP_DOUBLE = "tests.support.sharp_double:build"


@pytest.fixture(scope="session")
def tiny_depth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_depth_pro(tmp_path_factory.mktemp("tiny-depth-pro") / "model")


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_depth_dir: Path) -> Pipeline:
    pipe = Pipeline(Config(models=_models(tiny_depth_dir)).model_settings())
    pipe.load()
    return pipe


def _models(depth_dir: Path) -> ModelConfig:
    return ModelConfig(device="cpu", depth_model=str(depth_dir), sharp_factory=SHARP_DOUBLE)


@pytest.fixture
def make_daemon_config(tmp_path: Path, tiny_depth_dir: Path) -> Callable[..., Config]:
    def make(**changes: Any) -> Config:
        sections = {k: changes.pop(k) for k in ("folders", "models", "defaults", "service")
                    if k in changes}
        daemon = DaemonConfig(stable_seconds=0.2, settle_report_seconds=30.0,
                              depth_cache_mb=64.0, state_dir=tmp_path / "state")
        return Config(
            folders=sections.get("folders", FolderConfig(tmp_path / "inputs",
                                                         tmp_path / "outputs")),
            models=sections.get("models", _models(tiny_depth_dir)),
            defaults=sections.get("defaults", DepthSettings(depth_source="internal")),
            daemon=dataclasses.replace(daemon, **changes),
            service=sections.get("service", ServiceConfig(notifications=False,
                                                          log_dir=tmp_path / "logs")),
        )
    return make


@pytest.fixture
def daemon_config(make_daemon_config: Callable[..., Config]) -> Config:
    return make_daemon_config()


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture
def config_toml(tmp_path: Path) -> Callable[[Config], Path]:
    def write(config: Config) -> Path:
        lines = []
        for section in ("folders", "models", "defaults", "daemon", "service"):
            lines.append(f"[{section}]")
            values = getattr(config, section)
            for f in dataclasses.fields(values):
                value = getattr(values, f.name)
                if value is not None:
                    lines.append(f"{f.name} = {_toml_value(value)}")
        path = tmp_path / "config.toml"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path
    return write


def write_photo(path: Path, width: int = 64, height: int = 48, seed: int = 0) -> Path:
    """A small random photo, written to a hidden temp name and renamed into place."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    Image.fromarray(pixels).save(tmp, format=fmt)
    os.replace(tmp, path)
    return path


@pytest.fixture
def make_photo() -> Callable[..., Path]:
    return write_photo


@pytest.fixture(params=[False, True], ids=["serial", "overlap"])
def overlap(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    import daemon.worker

    monkeypatch.setattr(daemon.worker, "OVERLAP_ON_CPU", request.param)
    return request.param


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The umask most systems start with (022), so owner-only modes are our doing."""
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def running_daemon(daemon_config: Config,
                   tiny_pipeline: Pipeline) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(config: Config | None = None, pipeline: Pipeline | None = None,
              events: list[JobEvent] | None = None, own_models: bool = False) -> Daemon:
        """`own_models`: the daemon builds its pipelines from its config (one per device of
        `[models] device`) instead of sharing the session's tiny one."""
        daemon = Daemon(config or daemon_config,
                        None if own_models else pipeline or tiny_pipeline)
        if events is not None:
            daemon.subscribe(events.append)
        daemon.start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop(timeout=10)


@pytest.fixture(scope="session")
def splat_transform() -> list[str]:
    return splat_transform_command()


@pytest.fixture
def to_ply(splat_transform: list[str], tmp_path: Path) -> Callable[[Path], np.ndarray]:
    return lambda source: read_back(splat_transform, source, tmp_path)


@pytest.fixture(scope="module")  # not longer: one Playwright at a time, and others use it
def spark_read() -> Iterator[Callable[[Path], np.ndarray]]:
    skip_without_chromium()
    files: dict[str, Path] = {}
    with browser() as chrome:
        page = reader_page(chrome, SPARK_MODULES, SPARK, files)

        def read(path: Path) -> np.ndarray:
            name = f"{len(files)}-{path.name}"  # the suffix tells Spark the format
            files[name] = path
            return spark_columns(page.evaluate("name => readSplats(name)", name))
        yield read


def wait_for(predicate: Callable[[], object], timeout: float = 30.0) -> bool:
    """Poll `predicate` until it is truthy or `timeout` passes (for file-system effects)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def load_tool(name: str) -> ModuleType:
    """The script `tools/<name>.py`, imported as module `name` (tools/ is not a package)."""
    path = Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def small_prediction() -> Prediction:
    import torch

    from pipeline import Gaussians, Prediction

    n = 64
    gaussians = Gaussians(mean_vectors=torch.full((1, n, 3), 0.5),
                          singular_values=torch.full((1, n, 3), 0.5),
                          quaternions=torch.full((1, n, 4), 0.5),
                          colors=torch.full((1, n, 3), 0.5), opacities=torch.full((1, n), 0.5))
    depth = np.linspace(1.0, 2.0, 64, dtype=np.float32).reshape(8, 8)
    return Prediction(gaussians=gaussians, f_px=100.0, focal_origin="default-30mm",
                      image_size=(8, 8), depth_source="internal", depth_format=None,
                      depth_model=None, depth_range_m=(1.0, 2.0), used_depth=depth,
                      internal_depth=np.stack([depth, depth * 2]))


def small_report(files: list[Path], photo: Path = Path("p.jpg")) -> Report:
    origin = Origin(photo, "0" * 64, "1" * 64, DepthSettings(depth_source="internal"))
    return build_report(origin, small_prediction(), models=Models(device="cpu"),
                        timings={"sharp": 2.0}, from_cache=False, files=files)


def entries(folder: Path) -> list[Path]:
    """The files and folders in `folder`, less the lock a running daemon holds in its inputs
    and outputs folders (`daemon.folder_lock.LOCK_NAME`)."""
    from daemon.folder_lock import LOCK_NAME

    return [path for path in folder.iterdir() if path.name != LOCK_NAME]


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Ask a daemon subprocess to stop (SIGTERM: a graceful stop) and wait for it; one that
    is still running after 30 s is killed, and the wait's timeout raised."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise


def write_small_result(outputs: Path, name: str, report: Report, preview: bool = True,
                       mtime: float | None = None) -> Path:
    """Result `name` in `outputs` as the writer leaves it, without a model: a stand-in PLY
    (the gallery and its index never read one), a depth preview PNG, then `report` (e.g.
    `small_report([], photo)`) naming them and its compare set's contact sheet, if any.
    The PLY's mtime, the gallery's order, is set to `mtime`. Returns the PLY."""
    outputs.mkdir(parents=True, exist_ok=True)
    ply = outputs / f"{name}{PLY_SUFFIX}"
    names = [ply.name, ply.with_suffix(REPORT_SUFFIX).name]
    if preview:
        names.append(write_photo(outputs / f"{name}{PREVIEW_SUFFIX}").name)
    if report.compare is not None and report.compare.contact_sheet:
        names.insert(0, report.compare.contact_sheet)
    ply.write_bytes(b"ply\n")
    if mtime is not None:
        os.utime(ply, (mtime, mtime))
    report = report._replace(files=tuple(names))  # last and whole, as the writer does
    atomic_write(ply.with_suffix(REPORT_SUFFIX), json.dumps(report_json(report)).encode(),
                 durable=False)
    return ply

"""A/B depth compare: named sources, Depth Anything on SHARP's grid, one focal, the daemon's
compare set (names, reports, depth cache), bad `compare` values and `sharp-watch compare`.

Depth Anything V2 and Depth Pro are tiny random transformers models run through the real
backend; Depth Anything sits in a Hugging Face cache folder under its real hub id, as a
download would leave it, so the named source resolves exactly as it does for a user.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from daemon.config import ConfigError, ModelConfig, parse_config
from daemon.jobs import job_key
from daemon.sidecar import SidecarError, apply_sidecar
from pipeline import DepthSettings, ModelSettings, Pipeline, RawDepth, load_image
from pipeline.compare import run_compare
from pipeline.depth.prepare import to_grid
from pipeline.depth.sources import DEPTH_SOURCES, MODEL_SOURCES, SOURCES
from pipeline.depth.transformers_backend import TransformersDepth
from pipeline.settings import DepthSettings as Settings
from tests.conftest import SHARP_DOUBLE, wait_for, write_photo
from tests.support.fake_hub import base_url, serve_repo
from tests.support.files import save_sidecar
from tests.support.tiny_models import install_in_hub_cache, save_tiny_depth_anything

OUTDOOR = "depth-anything-outdoor"
THREE = ("depth-pro", OUTDOOR, "internal")


@pytest.fixture(scope="session")
def tiny_depth_anything_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_depth_anything(tmp_path_factory.mktemp("tiny-depth-anything") / "model")


@pytest.fixture
def hub_cache(tmp_path: Path, tiny_depth_anything_dir: Path) -> Path:
    """A hub cache holding the tiny Depth Anything under both real hub ids."""
    cache = tmp_path / "hub"
    for name in ("depth-anything-indoor", OUTDOOR):
        hub_id = SOURCES[name].hub_id
        assert hub_id is not None
        install_in_hub_cache(tiny_depth_anything_dir, hub_id, cache)
    return cache


@pytest.fixture
def models(tiny_depth_dir: Path, hub_cache: Path) -> ModelConfig:
    return ModelConfig(device="cpu", depth_model=str(tiny_depth_dir), sharp_factory=SHARP_DOUBLE,
                       cache_dir=hub_cache)


class DepthCalls:
    """How often each transformers depth model was loaded and run, by model id."""

    def __init__(self) -> None:
        self.runs: dict[str, int] = {}
        self.loads: dict[str, int] = {}

    def total(self) -> int:
        return sum(self.runs.values())


@pytest.fixture
def depth_calls(monkeypatch: pytest.MonkeyPatch) -> DepthCalls:
    counts = DepthCalls()
    estimate, load = TransformersDepth.estimate, TransformersDepth.load.__func__

    def counting_estimate(self: TransformersDepth, rgb: torch.Tensor) -> RawDepth:
        counts.runs[self.model_id] = counts.runs.get(self.model_id, 0) + 1
        return estimate(self, rgb)

    def counting_load(cls: type[TransformersDepth], name: str, *args: Any,
                      **kwargs: Any) -> TransformersDepth:
        counts.loads[name] = counts.loads.get(name, 0) + 1
        return load(cls, name, *args, **kwargs)

    monkeypatch.setattr(TransformersDepth, "estimate", counting_estimate)
    monkeypatch.setattr(TransformersDepth, "load", classmethod(counting_load))
    return counts


def _hub(name: str) -> str:
    hub_id = SOURCES[name].hub_id
    assert hub_id is not None
    return hub_id


# --- the table of named sources ---------------------------------------------------------

def test_one_table_names_every_source_and_its_model(models: ModelConfig) -> None:
    assert DEPTH_SOURCES == ("depth-pro", "depth-pro-apple", "depth-anything-indoor", OUTDOOR,
                             "npy", "internal")
    assert DEPTH_SOURCES[:4] == MODEL_SOURCES
    assert _hub(OUTDOOR) == "depth-anything/Depth-Anything-V2-Metric-Outdoor-Large-hf"
    assert _hub("depth-anything-indoor") == (
        "depth-anything/Depth-Anything-V2-Metric-Indoor-Large-hf")
    pipe = Pipeline(models)
    ids = {s: pipe.depth_model_id(Settings(depth_source=s, external_depth=Path("x.npy")))
           for s in DEPTH_SOURCES}
    assert ids == {"depth-pro": models.depth_model, "depth-pro-apple": "apple/ml-depth-pro",
                   "depth-anything-indoor": _hub("depth-anything-indoor"),
                   OUTDOOR: _hub(OUTDOOR), "npy": None, "internal": None}
    # The named source's weights are found in the hub cache, so its output can be cached.
    key = pipe.depth_cache_key(Settings(depth_source=OUTDOOR))
    assert key is not None and key.startswith(_hub(OUTDOOR) + "|float32|")
    assert pipe.depth_cache_key(Settings(depth_source="internal")) is None


def test_a_named_source_downloads_once_with_progress(tiny_depth_anything_dir: Path,
                                                     tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hub_constants

    hub = serve_repo(_hub(OUTDOOR), tiny_depth_anything_dir)
    try:
        monkeypatch.setattr(hub_constants, "ENDPOINT", base_url(hub))
        monkeypatch.setattr(hub_constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            base_url(hub) + "/{repo_id}/resolve/{revision}/{filename}")
        progress: list[tuple[str, float]] = []
        pipe = Pipeline(ModelSettings(device="cpu", sharp_factory=SHARP_DOUBLE,
                                      cache_dir=tmp_path / "hub"),
                        progress=lambda what, done: progress.append((what, done)))
        model = pipe.depth_model(OUTDOOR)
        assert model.model_id == _hub(OUTDOOR)
        assert any(r.endswith("/model.safetensors") for r in hub.requests if r.startswith("GET"))
        assert progress[-1] == (_hub(OUTDOOR), 1.0)
        assert pipe.unload_depth(OUTDOOR) and not pipe.unload_depth(OUTDOOR)
        asked = len(hub.requests)
        pipe.depth_model(OUTDOOR)  # loaded again from the cache: nothing asked of the hub
        assert len(hub.requests) == asked
    finally:
        hub.shutdown()


# --- Depth Anything on SHARP's grid, and the focal ---------------------------------------

def test_depth_anything_is_metres_squashed_onto_sharps_grid(models: ModelConfig,
                                                            tmp_path: Path) -> None:
    pipe = Pipeline(models)
    image = load_image(write_photo(tmp_path / "wide.jpg", width=96, height=48))
    settings = Settings(depth_source=OUTDOOR)
    raw = pipe.estimate_depth(image, settings)
    assert raw is not None and raw.kind == "metric" and raw.fov_deg is None
    height, width = raw.values.shape
    assert height % 14 == 0 and width % 14 == 0 and abs(width / height - 2.0) < 0.05
    assert min(height, width) == 518  # its own grid: aspect kept, short side about 518
    result = pipe.predict(image, settings, raw)
    grid = result.used_depth.shape[-1]
    expected = to_grid(torch.from_numpy(raw.values), grid).numpy().squeeze()
    np.testing.assert_allclose(result.used_depth, expected, rtol=1e-6)  # metres as they were
    assert result.depth_source == OUTDOOR and result.depth_model == _hub(OUTDOOR)
    assert result.focal_origin == "default-30mm" and result.focal_estimated_by is None


def test_compare_gives_every_source_one_focal_borrowed_from_depth_pro(models: ModelConfig,
                                                                      tmp_path: Path) -> None:
    pipe = Pipeline(models)
    image = load_image(write_photo(tmp_path / "p.jpg"))
    real = Pipeline(models)

    def depth(settings: DepthSettings) -> tuple[RawDepth | None, bool]:
        raw = real.estimate_depth(image, settings)
        if settings.depth_source == "depth-pro":  # the tiny model's own fov is arbitrary
            assert raw is not None
            raw = RawDepth(raw.values, raw.kind, raw.model_id, fov_deg=60.0)
        return raw, False

    runs = run_compare(pipe, image, Settings(compare=THREE), depth=depth)
    assert [r.source for r in runs] == list(THREE)
    expected = 0.5 * image.width / np.tan(np.radians(30.0))
    for run in runs:
        assert run.prediction.f_px == pytest.approx(expected)
        assert run.prediction.focal_origin == "depth-model"
        assert run.prediction.focal_estimated_by == models.depth_model
    assert [r.prediction.depth_source for r in runs] == list(THREE)
    override = run_compare(pipe, image, Settings(compare=(OUTDOOR, "internal"), focal_mm=50.0))
    assert {r.prediction.focal_origin for r in override} == {"override"}


def test_compare_loads_each_model_once_and_keeps_only_the_kept_one(models: ModelConfig,
                                                                   tmp_path: Path,
                                                                   depth_calls: DepthCalls) -> None:
    pipe = Pipeline(models)
    image = load_image(write_photo(tmp_path / "p.jpg"))
    run_compare(pipe, image, Settings(compare=THREE), keep=("depth-pro",))
    assert depth_calls.runs == {models.depth_model: 1, _hub(OUTDOOR): 1}
    assert depth_calls.loads == {models.depth_model: 1, _hub(OUTDOOR): 1}
    assert pipe.loaded_depth_sources == ("depth-pro",)


# --- the daemon: one job, one set of files, the depth cache ------------------------------

def _set(outputs: Path, stem: str) -> list[str]:
    return sorted(p.name for p in outputs.iterdir() if p.name.startswith(stem + "_"))


def test_daemon_compare_writes_a_sorted_set_and_reruns_sharp_only(
        running_daemon: Callable[..., object], make_daemon_config: Callable[..., object],
        models: ModelConfig, depth_calls: DepthCalls) -> None:
    config = make_daemon_config(models=models)
    pipe = Pipeline(config.model_settings())
    inputs, outputs = config.inputs, config.outputs
    inputs.mkdir(parents=True)
    save_sidecar(inputs / "room.toml", f"compare = {json.dumps(list(THREE))}\n")
    write_photo(inputs / "room.jpg", width=80, height=48)
    events: list = []
    daemon = running_daemon(config, pipe, events=events)
    assert wait_for(lambda: len(events) == 1) and daemon.wait_until_idle(30)
    assert events[0].outcome == "done", events[0].error
    names = _set(outputs, "room")
    base = names[0].removesuffix("_compare.png")
    assert names == [f"{base}_compare.png",
                     *sorted(f"{base}_compare_{s}{x}" for s in THREE for x in (".json", ".ply"))]
    assert events[0].output == str(outputs / f"{base}_compare_depth-pro.ply")
    assert depth_calls.total() == 2  # Depth Pro and Depth Anything, once each
    reports = {s: json.loads((outputs / f"{base}_compare_{s}.json").read_text()) for s in THREE}
    for source, report in reports.items():
        assert report["depth"]["source"] == source
        assert report["compare"] == {"source": source, "sources": list(THREE),
                                     "contact_sheet": f"{base}_compare.png"}
        assert sorted(report["files"]) == names
        sizes = {name: (outputs / name).stat().st_size for name in names
                 if not name.endswith(".json")}
        assert report["file_bytes"] == sizes
        assert report["focal"]["origin"] in ("depth-model", "default-30mm")
        assert report["settings"]["compare"] == list(THREE)
    assert reports[OUTDOOR]["models"]["depth"] == _hub(OUTDOOR)
    assert reports[OUTDOOR]["depth"]["model"] == _hub(OUTDOOR)
    assert reports["internal"]["depth"]["model"] is None
    assert len({r["focal"]["f_px"] for r in reports.values()}) == 1
    assert Image.open(outputs / f"{base}_compare.png").width > 4 * 64

    save_sidecar(inputs / "room.toml",
                 f"compare = {json.dumps(list(THREE))}\ndepth_scale = 0.5\n")
    assert wait_for(lambda: len(events) == 2) and daemon.wait_until_idle(30)
    assert events[1].outcome == "done", events[1].error
    assert depth_calls.total() == 2  # both depths from the cache: SHARP ran, no depth model
    assert depth_calls.loads == {models.depth_model: 1, _hub(OUTDOOR): 1}
    second = [n for n in _set(outputs, "room") if n not in names]
    assert len(second) == 7
    again = json.loads((outputs / next(n for n in second if n.endswith(f"{OUTDOOR}.json")))
                       .read_text())
    assert again["depth"]["from_cache"] is True and "depth" not in again["timings_s"]
    assert again["depth"]["range_m"][1] == pytest.approx(
        0.5 * reports[OUTDOOR]["depth"]["range_m"][1], rel=1e-4)


def test_compare_names_fit_windows_and_never_reuse_a_name(tmp_path: Path) -> None:
    from daemon.naming import windows_name_problem
    from daemon.results import compare_names
    from pipeline.atomic import MAX_NAME_BYTES

    first = compare_names(tmp_path, "é" * 200, THREE, internal_depth=True)
    assert all(len(p.name.encode()) <= MAX_NAME_BYTES for p in first.all())
    assert len({p.name for p in first.all()}) == 1 + 2 * len(THREE) + 1
    (tmp_path / first.plys[OUTDOOR].name.upper()).write_bytes(b"")  # another case: taken
    second = compare_names(tmp_path, "é" * 200, THREE, internal_depth=False)
    assert second.sheet != first.sheet and second.internal_depth is None
    device = compare_names(tmp_path, "con.x", ("depth-pro", "internal"), internal_depth=False)
    assert all(windows_name_problem(p.name) is None for p in device.all())
    assert all(p.name.startswith("con_.x_") for p in device.all())


# --- bad compare values ------------------------------------------------------------------

@pytest.mark.parametrize("value, needles", [
    (["depth-pro", "depth-anything-outdor"],
     ["unknown depth source 'depth-anything-outdor'", "did you mean 'depth-anything-outdoor'"]),
    (["depth-pro"], ["at least two sources"]),
    (["internal", "internal"], ["internal more than once"]),
    (["npy", "internal"], ["needs external_depth"]),
    ("depth-pro", ["compare must be a list of depth source names"]),
    ([1, 2], ["compare must be a list of depth source names"]),
])
def test_bad_compare_in_a_sidecar_names_the_file_and_the_source(tmp_path: Path, value: object,
                                                                needles: list[str]) -> None:
    sidecar = tmp_path / "photo.toml"
    with pytest.raises(SidecarError) as info:
        apply_sidecar({"compare": value}, sidecar, tmp_path / "photo.jpg", DepthSettings(),
                      tmp_path)
    message = str(info.value)
    assert str(sidecar) in message
    for needle in needles:
        assert needle in message


def test_compare_in_config_defaults_is_checked_and_used(tmp_path: Path) -> None:
    where = str(tmp_path / "config.toml")
    with pytest.raises(ConfigError, match=r"config.toml: \[defaults\] compare: unknown depth "
                                          r"source 'midas'"):
        parse_config({"defaults": {"compare": ["depth-pro", "midas"]}}, where, tmp_path)
    config = parse_config({"defaults": {"compare": ["depth-pro", "internal"]}}, where, tmp_path)
    assert config.defaults.compare == ("depth-pro", "internal")
    assert config.defaults.sources == ("depth-pro", "internal")
    assert DepthSettings().compare == () and DepthSettings().sources == ("depth-pro",)


def test_job_key_follows_the_compare_list_and_is_unchanged_without_one() -> None:
    photo = "ab" * 32
    plain = DepthSettings()
    old_style = {k: v for k, v in plain.as_dict().items()
                 if k not in ("compare", "formats", "spz_version")}
    blob = json.dumps({"photo": photo, "settings": old_style}, sort_keys=True,
                      separators=(",", ":"))
    assert job_key(photo, plain, None) == hashlib.sha256(blob.encode()).hexdigest()
    keys = {job_key(photo, DepthSettings(compare=c), None)
            for c in ((), ("depth-pro", "internal"), ("internal", "depth-pro"),
                      ("depth-pro", OUTDOOR, "internal"))}
    assert len(keys) == 4


# --- sharp-watch compare -----------------------------------------------------------------

def _compare_cli(*argv: str) -> int:
    from service import compare

    parser = argparse.ArgumentParser()
    compare.add_parser(parser.add_subparsers())
    args = parser.parse_args(["compare", *argv])
    return int(args.func(args))


def test_compare_command_writes_the_same_set(models: ModelConfig, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    photo = write_photo(tmp_path / "desk.png", width=64, height=64)
    out = tmp_path / "out"
    common = ["--device", "cpu", "--depth-model", models.depth_model, "--sharp-factory",
              SHARP_DOUBLE, "--cache-dir", str(models.cache_dir), "-o", str(out)]
    assert _compare_cli(str(photo), "--sources", f"{OUTDOOR},internal", *common) == 0
    names = sorted(p.name for p in out.iterdir())
    base = names[0].removesuffix("_compare.png")
    assert names == [f"{base}_compare.png", f"{base}_compare_{OUTDOOR}.json",
                     f"{base}_compare_{OUTDOOR}.ply", f"{base}_compare_internal.json",
                     f"{base}_compare_internal.ply"]
    report = json.loads((out / f"{base}_compare_{OUTDOOR}.json").read_text())
    assert report["depth"]["model"] == _hub(OUTDOOR) and report["focal"]["origin"] == "default-30mm"
    printed = capsys.readouterr().out
    assert f"{OUTDOOR}: depth" in printed and "contact sheet ->" in printed
    assert _compare_cli(str(photo), "--sources", "depth-pro,depht-pro", *common) == 2
    assert "did you mean 'depth-pro'" in capsys.readouterr().err


def test_compare_command_takes_models_defaults_and_sources_from_the_config(
        models: ModelConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No model flag: the config's [models] (local depth model, SHARP factory, device) are
    used; its [defaults] compare is the set, and the photo's sidecar tunes it."""
    config = tmp_path / "config.toml"
    config.write_text(f"""
[folders]
outputs = "results"
[models]
device = "cpu"
depth_model = {models.depth_model!r}
sharp_factory = "{SHARP_DOUBLE}"
[defaults]
compare = ["depth-pro", "internal"]
depth_scale = 1.5
""", encoding="utf-8")
    photo = write_photo(tmp_path / "photos" / "desk.png", width=64, height=64)
    (photo.parent / "desk.toml").write_text("depth_offset = 0.25\n", encoding="utf-8")
    assert _compare_cli(str(photo), "--config", str(config)) == 0, capsys.readouterr().err
    out = tmp_path / "results"
    reports = {json.loads(p.read_text())["compare"]["source"]: json.loads(p.read_text())
               for p in out.glob("*.json")}
    assert sorted(reports) == ["depth-pro", "internal"]
    depth_pro = reports["depth-pro"]
    assert depth_pro["models"]["depth"] == models.depth_model
    assert depth_pro["models"]["device"] == "cpu"
    assert (depth_pro["settings"]["depth_scale"], depth_pro["settings"]["depth_offset"]) == (
        1.5, 0.25)


def test_compare_command_prints_names_escaped(models: ModelConfig, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    photo = write_photo(tmp_path / "\x1b[31mred.png", width=64, height=64)
    out = tmp_path / "out\x1b[2J"
    assert _compare_cli(str(photo), "--sources", "depth-pro,internal", "--device", "cpu",
                        "--depth-model", models.depth_model, "--sharp-factory", SHARP_DOUBLE,
                        "-o", str(out)) == 0
    printed = capsys.readouterr()
    assert "out\\x1b[2J" in printed.out and "contact sheet ->" in printed.out
    assert "\x1b" not in printed.out + printed.err


def test_compare_with_a_missing_depth_map_names_it_and_writes_nothing(
        models: ModelConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from service.cli import main

    photo = write_photo(tmp_path / "desk.png", width=64, height=64)
    missing, out = tmp_path / "missing.npy", tmp_path / "out"
    code = main(["compare", str(photo), "--sources", "depth-pro,npy", "--external-depth",
                 str(missing), "--device", "cpu", "--depth-model", models.depth_model,
                 "--sharp-factory", SHARP_DOUBLE, "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 1  # as `predict` for a photo that fails
    assert f"error: {missing}: external depth file not found" in err
    assert "Traceback" not in err and not out.exists()


def test_settings_keep_a_list_from_json_hashable(models: ModelSettings) -> None:
    settings = DepthSettings(compare=["depth-pro", "internal"])  # type: ignore[arg-type]
    assert settings.compare == ("depth-pro", "internal") and hash(settings)

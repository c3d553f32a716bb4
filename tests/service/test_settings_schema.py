"""Every setting declared once: the config, sidecar, flags and viewer all follow the
declarations, the layers combine one way (flags over sidecar over config), and job keys
of existing photos do not change."""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest

from daemon.config import SECTIONS, ConfigError, parse_config
from daemon.jobs import job_key
from daemon.sidecar import SidecarError, apply_sidecar, photo_settings
from pipeline import DepthSettings, ModelSettings
from pipeline.schema import Setting, keys, schema
from service import options
from viewer import tuning


def _all_keys() -> list[tuple[str, Setting]]:
    return [(section, key) for section, cls in SECTIONS.items() for key in schema(cls)]


def test_every_field_of_every_section_is_declared() -> None:
    for section, cls in SECTIONS.items():
        declared = [key.name for key in schema(cls)]
        assert declared == [f.name for f in dataclasses.fields(cls)], section
        for key in schema(cls):
            assert key.spec.help and "\n" not in key.spec.help, f"[{section}] {key.name}"


def test_job_keys_of_existing_photos_are_unchanged() -> None:
    """Pinned from before the settings were declared through the schema: a changed key
    would redo every photo already done."""
    assert job_key("ab" * 32, DepthSettings(), None) == (
        "5d258933d68869e6db9122f24476e4a8212331ac187cce37989884271dda6d4f")
    tuned = DepthSettings(depth_scale=0.8, depth_offset=-0.25, back_surface_factor=1.5,
                          depth_source="npy", external_depth=Path("/x/d.npy"),
                          depth_format="metric", focal_mm=35.0, save_internal_depth=True,
                          compare=("depth-pro", "internal"), formats=("ply", "spz"))
    assert job_key("cd" * 32, tuned, "ef" * 32) == (
        "937602fd7a5f41ceba70b9bb87cdc32451170a7de0da61efebba0a20b4e542a8")
    from_toml = parse_config({"defaults": {"depth_scale": 2, "depth_offset": 0}}).defaults
    assert job_key("ab" * 32, from_toml, None) == job_key(
        "ab" * 32, DepthSettings(depth_scale=2.0, depth_offset=0.0), None)


def _outside(key: Setting) -> list[Any]:
    """Values just outside the key's declared range."""
    spec, values = key.spec, []
    if spec.low is not None:
        values.append(spec.low if spec.low_open else spec.low - 1)
    if spec.high is not None:
        values.append(spec.high + 1)
    return values


RANGED = [(section, key, value) for section, key in _all_keys()
          if key.kind in ("int", "float") for value in _outside(key)]


@pytest.mark.parametrize(("section", "key", "value"), RANGED,
                         ids=[f"{s}.{k.name}={v}" for s, k, v in RANGED])
def test_every_declared_range_is_enforced_by_the_config(tmp_path: Path, section: str,
                                                        key: Setting, value: float) -> None:
    where = str(tmp_path / "config.toml")
    with pytest.raises(ConfigError) as info:
        parse_config({section: {key.name: value}}, where, tmp_path)
    message = str(info.value)
    assert message.startswith(f"{where}: [{section}] {key.name} must be")
    assert key.allowed() in message


def test_ranges_cover_the_keys_that_had_hand_written_checks() -> None:
    names = {key.name for _, key, _ in RANGED}
    assert {"depth_scale", "depth_offset", "back_surface_factor", "focal_mm", "stable_seconds",
            "settle_report_seconds", "unload_after_minutes", "depth_cache_mb", "max_pixels",
            "rescan_seconds"} <= names


@pytest.mark.parametrize(("section", "key"), [(s, k) for s, k in _all_keys() if k.spec.choices],
                         ids=lambda v: v if isinstance(v, str) else v.name)
def test_every_declared_choice_is_enforced_with_a_hint(tmp_path: Path, section: str,
                                                       key: Setting) -> None:
    typo = key.spec.choices[-1][:-1] + "x"
    value: Any = [typo] if key.kind == "names" else typo
    with pytest.raises(ConfigError) as info:
        parse_config({section: {key.name: value}}, "c.toml", tmp_path)
    assert f"did you mean {key.spec.choices[-1]!r}?" in str(info.value)


def test_config_and_sidecar_give_the_same_hint_for_a_typo(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as config:
        parse_config({"defaults": {"depth_scael": 1.0}}, "c.toml", tmp_path)
    with pytest.raises(SidecarError) as sidecar:
        apply_sidecar({"depth_scael": 1.0}, tmp_path / "p.toml", tmp_path / "p.jpg",
                      DepthSettings(), tmp_path)
    assert "; did you mean 'depth_scale'?" in str(config.value)
    assert "; did you mean 'depth_scale'?" in str(sidecar.value)


def test_log_level_is_a_choice_in_any_letter_case(tmp_path: Path) -> None:
    assert parse_config({"service": {"log_level": "debug"}}).service.log_level == "debug"
    with pytest.raises(ConfigError, match=r"log_level must be one of TRACE, .*did you mean "
                                          r"'INFO'\?"):
        parse_config({"service": {"log_level": "inf"}}, "c.toml", tmp_path)


def test_sections_check_their_values_when_made() -> None:
    from daemon.config import DaemonConfig

    with pytest.raises(ValueError, match=r"rescan_seconds must be a finite number > 0 "
                                         r"\(seconds\), got 0"):
        DaemonConfig(rescan_seconds=0)
    with pytest.raises(ValueError, match=r"max_pixels must be a whole number >= 1, got 2\.5"):
        DaemonConfig(max_pixels=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sharp_precision must be one of"):
        ModelSettings(sharp_precision="fp8")


# --- flags over sidecar over config ---------------------------------------------------------

def _parse(*argv: str, skip: tuple[str, ...] = ()) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    options.add_setting_options(parser, skip=skip)
    return parser.parse_args(list(argv))


def test_every_setting_has_a_flag_and_only_given_flags_count() -> None:
    args = _parse()
    for cls in (DepthSettings, ModelSettings):
        assert options.given(args, cls) == {}
        for key in schema(cls):
            assert hasattr(args, key.name), key.flag
    args = _parse("--depth-scale", "2", "--no-save-internal-depth", "--formats", "ply, spz",
                  "--sources", "depth-pro,internal", "--focal-mm", "26", "--external-depth",
                  "d.npy", "--device", "cpu", "--cache-dir", "c")
    assert options.given(args, DepthSettings) == {
        "depth_scale": 2.0, "save_internal_depth": False, "formats": ("ply", "spz"),
        "compare": ("depth-pro", "internal"), "focal_mm": 26.0,
        "external_depth": Path("d.npy")}
    assert options.given(args, ModelSettings) == {"device": "cpu", "cache_dir": Path("c")}
    with pytest.raises(SystemExit):
        _parse("--sources", "a,b", skip=("compare",))


def test_flags_over_sidecar_over_config(tmp_path: Path) -> None:
    (tmp_path / "p.toml").write_text("depth_scale = 3.0\nfocal_mm = 20\n", encoding="utf-8")
    (tmp_path / "p.jpg").write_bytes(b"")
    config = DepthSettings(depth_scale=2.0, depth_offset=0.3, focal_mm=40.0)
    settings = photo_settings(tmp_path / "p.jpg", config, tmp_path, {"focal_mm": 50.0})
    assert (settings.depth_scale, settings.depth_offset, settings.focal_mm) == (3.0, 0.3, 50.0)
    assert photo_settings(tmp_path / "q.jpg", config, tmp_path, {"depth_offset": 1.0}) == \
        config.replace(depth_offset=1.0)


def test_a_depth_map_named_by_a_flag_or_sidecar_means_npy(tmp_path: Path) -> None:
    (tmp_path / "d.npy").write_bytes(b"")
    (tmp_path / "p.jpg").write_bytes(b"")
    base = DepthSettings()
    assert photo_settings(tmp_path / "p.jpg", base, tmp_path,
                          {"external_depth": tmp_path / "d.npy"}).depth_source == "npy"
    assert photo_settings(tmp_path / "p.jpg", base, tmp_path,
                          {"external_depth": tmp_path / "d.npy",
                           "depth_source": "internal"}).depth_source == "internal"
    (tmp_path / "p.toml").write_text('external_depth = "d.npy"\n', encoding="utf-8")
    assert photo_settings(tmp_path / "p.jpg", base, tmp_path).depth_source == "npy"


def test_flags_that_do_not_fit_the_sidecar_name_it(tmp_path: Path) -> None:
    (tmp_path / "p.jpg").write_bytes(b"")
    (tmp_path / "p.toml").write_text("depth_source = \"npy\"\nexternal_depth = \"p.jpg\"\n",
                                     encoding="utf-8")
    with pytest.raises(SidecarError) as info:
        photo_settings(tmp_path / "p.jpg", DepthSettings(), tmp_path, {"external_depth": None})
    assert info.value.path == tmp_path / "p.toml"
    assert "command line" in str(info.value) and "needs external_depth" in str(info.value)


# --- the viewer's controls ----------------------------------------------------------------

def test_the_viewers_controls_are_the_declared_ones() -> None:
    controls = tuning.controls(DepthSettings(focal_mm=26.0))
    declared = {k.name: k for k in schema(DepthSettings) if k.spec.control is not None}
    assert [c["key"] for c in controls] == list(declared) == list(tuning.TUNABLE)
    for control in controls:
        key = declared[control["key"]]
        assert control["help"] == key.spec.help and control["label"] == key.spec.control.label
        if control["kind"] == "slider":
            assert (control["low"], control["high"], control["step"]) == (
                key.spec.control.low, key.spec.control.high, key.spec.control.step)
            assert key.spec.low is None or key.spec.low <= control["low"]
            assert key.spec.high is None or control["high"] <= key.spec.high
            assert control["unset"] is None or key.optional
        else:
            assert control["kind"] == "choice" and set(control["options"]) <= set(key.spec.choices)
    focal = next(c for c in controls if c["key"] == "focal_mm")
    assert focal["value"] == 26.0 and focal["unset"]
    assert math.isclose(next(c for c in controls if c["key"] == "depth_scale")["step"], 0.05)


def test_viewer_script_knows_no_setting_by_name() -> None:
    script = (Path(tuning.__file__).parent / "static" / "view.js").read_text(encoding="utf-8")
    for key in keys(DepthSettings):
        assert key not in script, key

"""config.toml: documented defaults, strict keys, clear errors naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

import daemon.config
from daemon import Config, ConfigError, load_config
from pipeline import DepthSettings, ModelSettings
from tests.support.files import write_config

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config.toml"


def test_repo_config_documents_exactly_the_defaults():
    loaded = load_config(REPO_CONFIG)
    defaults = Config()
    assert loaded.folders == defaults.folders
    assert loaded.models == defaults.models
    assert loaded.defaults == DepthSettings()
    assert loaded.daemon == defaults.daemon
    assert loaded.service == defaults.service


def test_every_key_is_documented_in_repo_config():
    import dataclasses

    text = REPO_CONFIG.read_text()
    for section in ("folders", "models", "defaults", "daemon", "service"):
        for f in dataclasses.fields(getattr(Config(), section)):
            assert f"{f.name} =" in text or f"# {f.name} =" in text, f"{section}.{f.name}"


def test_values_are_read_and_paths_resolved_against_the_config_folder(tmp_path):
    cfg = load_config(write_config(tmp_path, """
[folders]
inputs = "in"
outputs = "/abs/out"
recursive = true
[models]
device = "cpu"
sharp_factory = "tests.support.sharp_double:build"
[defaults]
depth_scale = 2
focal_mm = 26.0
[daemon]
stable_seconds = 0.5
max_pixels = 1000
"""))
    assert cfg.inputs == tmp_path / "in" and cfg.outputs == Path("/abs/out")
    assert cfg.folders.recursive is True
    assert cfg.defaults.depth_scale == 2.0 and cfg.defaults.focal_mm == 26.0
    assert cfg.daemon.stable_seconds == 0.5
    ms = cfg.model_settings()
    assert type(ms) is ModelSettings
    assert (ms.device, ms.sharp_factory, cfg.daemon.max_pixels) == ("cpu",
                                                                     "tests.support.sharp_double:build",
                                                                     1000)


@pytest.mark.parametrize("text, needles", [
    ("[daemon]\nstable_second = 1\n", ["unknown key 'stable_second'", "'stable_seconds'"]),
    ("[deamon]\n", ["unknown section [deamon]", "[daemon]"]),
    ("[folders]\nrecursive = \"yes\"\n", ["recursive", "true or false"]),
    ("[daemon]\nmax_pixels = 1.5\n", ["max_pixels", "whole number"]),
    ("[daemon]\nstable_seconds = -1\n", ["stable_seconds", ">= 0"]),
    ("[defaults]\ndepth_scale = 0\n", ["depth_scale"]),
    ("[defaults]\ndepth_source = \"depthpro\"\n", ["depth_source"]),
    ("[models]\nsharp_precision = \"fp8\"\n", ["sharp_precision"]),
    ("[service]\nlog_level = \"INF\"\n", ["log_level", "'INFO'"]),
    ("[daemon]\nstable_seconds = nan\n", ["finite"]),
    ("[daemon\n", ["not valid TOML"]),
    ("daemon = 3\n", ["[daemon] must be a table"]),
])
def test_bad_config_is_one_clear_error_naming_file_and_key(tmp_path, text, needles):
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message


def test_missing_explicit_config_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_no_user_config_means_all_defaults(tmp_path, monkeypatch):
    monkeypatch.setattr(daemon.config, "default_config_path", lambda: tmp_path / "absent.toml")
    assert load_config(None) == Config()
    write_config(tmp_path, "[daemon]\npreview = false\n")
    monkeypatch.setattr(daemon.config, "default_config_path", lambda: tmp_path / "config.toml")
    assert load_config(None).daemon.preview is False


def test_main_reports_bad_config_and_exits_2(tmp_path, capsys):
    from daemon.__main__ import main

    assert main(["--config", str(write_config(tmp_path, "[daemon]\nbogus = 1\n"))]) == 2
    assert "bogus" in capsys.readouterr().err

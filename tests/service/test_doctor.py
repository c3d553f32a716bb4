"""`sharp-watch doctor`: one OK/WARN/FAIL line per check, FAIL only for real blockers."""

from __future__ import annotations

import dataclasses
import re

from service import cli, doctor


def lines_by_name(checks) -> dict[str, doctor.Check]:
    return {check.name: check for check in checks}


def test_healthy_test_setup(daemon_config, tiny_depth_dir):
    found = lines_by_name(doctor.checks(daemon_config, None))
    assert found["config"].level == "OK"
    assert found["Python"].level == "OK"
    assert found["torch"].level == "OK" and "built for CUDA" in found["torch"].detail
    assert found["GPU"].level in ("OK", "WARN")
    assert found["SHARP"] == doctor.Check("OK", "SHARP", "tests.support.sharp_double imports")
    assert found["depth backend"] == doctor.Check("OK", "depth backend", "transformers imports")
    assert "SHARP weights" not in found, "a factory needs no checkpoint"
    size = doctor.folder_size(tiny_depth_dir)
    assert found["depth model"].detail == \
        f"local folder {tiny_depth_dir} ({doctor.size_text(size)})"
    for name in ("inputs folder", "outputs folder", "state folder", "log folder"):
        assert found[name].level == "OK", found[name]
    assert re.fullmatch(r"[\d.]+ (GiB|MiB|KiB|B) at .+", found["free disk"].detail.split(";")[0])
    assert daemon_config.folders.inputs.is_dir(), "doctor creates missing folders"


def test_blockers_fail_with_the_fix(daemon_config, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config = dataclasses.replace(
        daemon_config,
        folders=dataclasses.replace(daemon_config.folders, outputs=blocker / "outputs"),
        models=dataclasses.replace(daemon_config.models, sharp_factory=None,
                                   sharp_checkpoint=tmp_path / "missing.pt"),
    )
    failing = {c.name: c for c in doctor.checks(config, None) if c.level == "FAIL"}
    assert failing["SHARP weights"].detail == \
        f"{tmp_path / 'missing.pt'} does not exist; fix the path in the config"
    assert failing["outputs folder"].detail.startswith(f"{blocker / 'outputs'} is not writable")
    if "SHARP" in failing:
        assert failing["SHARP"].detail.endswith(doctor.install_command("sharp"))


def test_missing_weights_are_a_warning_not_a_failure(daemon_config, tmp_path):
    config = dataclasses.replace(daemon_config, models=dataclasses.replace(
        daemon_config.models, sharp_factory=None, cache_dir=tmp_path / "empty-cache",
        depth_model="apple/DepthPro-hf"))
    found = lines_by_name(doctor.checks(config, None))
    assert found["SHARP weights"].level == "WARN"
    assert "first run downloads it" in found["SHARP weights"].detail
    assert str(tmp_path / "empty-cache" / "sharp_2572gikvuh.pt") in found["SHARP weights"].detail
    assert found["depth model"].level == "WARN"
    cached = tmp_path / "empty-cache" / "sharp_2572gikvuh.pt"
    cached.parent.mkdir()
    cached.write_bytes(b"\0" * 3 * 1024 * 1024)
    found = lines_by_name(doctor.checks(config, None))
    assert found["SHARP weights"] == doctor.Check("OK", "SHARP weights", f"{cached} (3.0 MiB)")


def test_command_prints_every_line_and_exit_code(make_daemon_config, config_toml, capsys):
    toml = config_toml(make_daemon_config())
    code = cli.main(["doctor", "--config", str(toml)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"OK   config: {toml}"
    assert all(re.match(r"(OK  |WARN|FAIL) [\w ().'_]+: ", line) for line in lines[:-1]), lines
    assert code == (1 if any(line.startswith("FAIL") for line in lines) else 0)
    assert re.fullmatch(r"\([\d.]+ s\)", lines[-1])


def test_size_text():
    assert doctor.size_text(512) == "512 B"
    assert doctor.size_text(2.5 * 1024**3) == "2.5 GiB"
    assert doctor.size_text(3 * 1024**4) == "3072.0 GiB"


def test_a_default_compare_with_apple_depth_pro_needs_its_package_and_weights(daemon_config,
                                                                             tmp_path):
    config = dataclasses.replace(
        daemon_config,
        defaults=dataclasses.replace(daemon_config.defaults,
                                     compare=("depth-pro", "depth-pro-apple")),
        models=dataclasses.replace(daemon_config.models, cache_dir=tmp_path / "empty-cache"))
    found = lines_by_name(doctor.checks(config, None))
    assert found["depth_pro.pt weights"].level == "WARN"
    assert "first run downloads it" in found["depth_pro.pt weights"].detail
    apple = found["depth_pro (Apple's package)"]
    try:
        import depth_pro  # noqa: F401
    except ImportError:
        assert apple.level == "FAIL"
        assert apple.detail.endswith(doctor.install_command("depth-pro-apple"))
    else:
        assert apple.level == "OK"

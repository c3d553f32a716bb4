"""`sharp-watch predict` end to end on the real example photo, with tiny models."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pytest
from plyfile import PlyData

from service import predict
from tests.conftest import write_photo
from tests.support.files import EXAMPLE_PHOTO, write_config
from tests.support.tiny_models import save_tiny_depth_pro


@pytest.fixture(scope="module")
def depth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_depth_pro(tmp_path_factory.mktemp("models") / "tiny-depth-pro")


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    predict.add_parser(parser.add_subparsers())
    args = parser.parse_args(["predict", *argv])
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def _models(depth_dir: Path) -> list[str]:
    return ["--depth-model", str(depth_dir), "--sharp-factory", "tests.support.sharp_double:build",
            "--device", "cpu"]


def test_example_photo_gives_a_valid_ply_and_a_summary(tmp_path: Path, depth_dir: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "-i", str(EXAMPLE_PHOTO), "-o", str(tmp_path), *_models(depth_dir))
    assert code == 0
    plys = list(tmp_path.glob("example_*.ply"))
    assert len(plys) == 1
    ply = PlyData.read(str(plys[0]))
    assert ply["vertex"].count == 2 * 32 * 32
    assert list(ply["image_size"]["image_size"]) == [3024, 2268]
    assert np.isfinite(ply["vertex"]["z"]).all() and (ply["vertex"]["z"] > 0).all()
    assert "example.jpg: depth" in out and "(depth-pro)" in out
    assert "focal" in out and "sharp" in out and "write" in out


def test_batch_never_overwrites_and_reports_failures(tmp_path: Path, depth_dir: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    photos = tmp_path / "in"
    photos.mkdir()
    shutil.copy(EXAMPLE_PHOTO, photos / "a.jpg")
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    out_dir = tmp_path / "out"
    code, _, err = _run(capsys, "-i", str(photos), "-o", str(out_dir), *_models(depth_dir),
                        "--depth-source", "internal")
    assert code == 1
    assert "broken.jpg" in err and "not a readable image" in err
    code, _, _ = _run(capsys, "-i", str(photos / "a.jpg"), "-o", str(out_dir),
                      *_models(depth_dir), "--depth-source", "internal")
    assert len(list(out_dir.glob("a_*.ply"))) == 2


def test_external_depth_options_and_internal_depth_file(tmp_path: Path, depth_dir: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    depth = tmp_path / "d.npy"
    np.save(depth, np.full((300, 400), 2.0, dtype=np.float32))
    code, out, _ = _run(capsys, "-i", str(EXAMPLE_PHOTO), "-o", str(tmp_path / "o"),
                        *_models(depth_dir), "--external-depth", str(depth),
                        "--depth-format", "metric", "--depth-scale", "1.5",
                        "--depth-offset", "0.5", "--back-surface-factor", "1.2",
                        "--save-internal-depth", "--focal-mm", "35")
    assert code == 0, out
    assert "depth 3.50-3.50 m (npy/metric)" in out and "(override)" in out
    internal = list((tmp_path / "o").glob("example_*_internal_depth.npy"))
    assert len(internal) == 1 and np.load(internal[0]).shape == (2, 64, 64)
    ply = PlyData.read(str(next((tmp_path / "o").glob("example_*.ply"))))
    z = np.asarray(ply["vertex"]["z"])
    assert np.median(z[: len(z) // 2]) == pytest.approx(3.5, rel=0.05)
    assert np.median(z[len(z) // 2:]) == pytest.approx(3.5 * 1.2, rel=0.05)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--depth-scale", "0"], "depth_scale must be"),
        (["--back-surface-factor", "0.5"], "back_surface_factor must be"),
        (["--depth-source", "npy"], "needs external_depth"),
    ],
)
def test_bad_options_are_refused_before_any_work(tmp_path: Path, depth_dir: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 argv: list[str], message: str) -> None:
    code, _, err = _run(capsys, "-i", str(EXAMPLE_PHOTO), "-o", str(tmp_path), *_models(depth_dir),
                        *argv)
    assert code == 2 and message in err
    assert not list(tmp_path.glob("*.ply"))


def _reports(folder: Path) -> dict[str, dict]:
    import json

    return {Path(r["photo"]).name: r for r in
            (json.loads(p.read_text(encoding="utf-8")) for p in folder.glob("*.json"))}


def test_the_config_gives_models_and_defaults_under_sidecars_and_flags(
        tmp_path: Path, depth_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No model flag: the config's [models] (local depth model, SHARP factory, a device
    the flag replaces) are used, not downloads; settings are flags over the photo's
    sidecar over the config's [defaults]."""
    config = write_config(tmp_path, f"""
[models]
device = "cuda:7"
depth_model = {str(depth_dir)!r}
sharp_factory = "tests.support.sharp_double:build"
[defaults]
depth_scale = 1.5
depth_offset = 0.25
""")
    photos = tmp_path / "in"
    photos.mkdir()
    for name in ("a.jpg", "b.jpg"):
        write_photo(photos / name, width=64, height=48)
    (photos / "b.toml").write_text("depth_offset = 0.5\nfocal_mm = 50\n", encoding="utf-8")
    out = tmp_path / "out"
    code, _, err = _run(capsys, "-i", str(photos), "-o", str(out), "--config", str(config),
                        "--device", "cpu", "--focal-mm", "35")
    assert code == 0, err
    reports = _reports(out)
    for name, offset in (("a.jpg", 0.25), ("b.jpg", 0.5)):
        settings = reports[name]["settings"]
        assert (settings["depth_scale"], settings["depth_offset"], settings["focal_mm"]) == (
            1.5, offset, 35.0), name
        assert reports[name]["models"]["device"] == "cpu"
        assert reports[name]["models"]["depth"] == str(depth_dir)
        assert reports[name]["focal"]["origin"] == "override"


def test_a_bad_config_stops_predict_before_any_work(tmp_path: Path, depth_dir: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, "[defaults]\ndepth_scael = 2\n")
    code, _, err = _run(capsys, "-i", str(EXAMPLE_PHOTO), "-o", str(tmp_path / "o"), "--config",
                        str(config), *_models(depth_dir))
    assert code == 2 and "depth_scael" in err and "did you mean 'depth_scale'" in err
    assert not (tmp_path / "o").exists()


def test_photo_names_are_printed_escaped(tmp_path: Path, depth_dir: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A photo's name is the sender's: an escape sequence in it must not reach the
    terminal, whether the photo succeeds or fails."""
    photos = tmp_path / "in"
    write_photo(photos / "\x1b[31mred.jpg")
    (photos / "\x1b[2Jbad\u202egpj.jpg").write_bytes(b"not a jpeg")
    code, out, err = _run(capsys, "-i", str(photos), "-o", str(tmp_path / "out\x1b[0m"),
                          *_models(depth_dir), "--depth-source", "internal")
    assert code == 1
    assert "\\x1b[31mred.jpg: depth" in out and "out\\x1b[0m" in out
    assert "\\x1b[2Jbad\\u202egpj.jpg" in err and "not a readable image" in err
    assert "\x1b" not in out + err and "\u202e" not in out + err

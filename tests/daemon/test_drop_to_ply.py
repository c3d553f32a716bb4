"""Drop -> PLY with a real watchdog observer, tiny models and the SHARP double."""

from __future__ import annotations

import json
import os
import shutil
import time

from plyfile import PlyData

from pipeline import DepthSettings
from tests.conftest import entries, wait_for


def test_drop_gives_ply_report_and_preview(running_daemon, make_daemon_config, make_photo,
                                           overlap):
    daemon_config = make_daemon_config(defaults=DepthSettings())
    events = []
    daemon = running_daemon(daemon_config, events=events)
    make_photo(daemon_config.inputs / "cat.jpg")
    assert wait_for(lambda: events) and daemon.wait_until_idle(30)
    plys = sorted(daemon_config.outputs.glob("cat_*.ply"))
    assert len(plys) == 1
    assert PlyData.read(str(plys[0]))["vertex"].count == 2 * 32 * 32
    report = json.loads(plys[0].with_suffix(".json").read_text())
    assert report["depth"]["source"] == "depth-pro"
    assert report["depth"]["from_cache"] is False
    assert report["focal"]["origin"] in ("depth-model", "default-30mm")
    assert {"decode", "depth", "sharp"} <= set(report["timings_s"])
    assert (daemon_config.outputs / f"{plys[0].stem}_depth.png").is_file()
    assert [(e.outcome, e.output) for e in events] == [("done", str(plys[0]))]
    status = daemon.status()
    assert (status.state, status.done, status.failed, status.queue_length) == ("idle", 1, 0, 0)
    assert status.inputs == str(daemon_config.inputs)
    assert not [p for p in entries(daemon_config.outputs) if p.name.startswith(".")]


def test_slowly_written_file_is_read_once_after_it_is_complete(running_daemon, daemon_config,
                                                                make_photo, tmp_path):
    events = []
    daemon = running_daemon(events=events)
    source = make_photo(tmp_path / "src" / "slow.png", 200, 150)
    data = source.read_bytes()
    with open(daemon_config.inputs / "slow.png", "wb") as out:
        for i in range(0, len(data), len(data) // 8 + 1):
            out.write(data[i:i + len(data) // 8 + 1])
            out.flush()
            time.sleep(0.08)
    assert wait_for(lambda: events) and daemon.wait_until_idle(30)
    assert [e.outcome for e in events] == ["done"]
    assert len(list(daemon_config.outputs.glob("slow_*.ply"))) == 1


def test_burst_of_200_files_each_processed_exactly_once(running_daemon, make_daemon_config,
                                                        make_photo, tmp_path, tiny_pipeline,
                                                        overlap):
    config = make_daemon_config(preview=False)
    staging = tmp_path / "staging"
    for i in range(200):
        make_photo(staging / f"p{i:03d}.jpg", seed=i)
    events = []
    daemon = running_daemon(config, events=events)
    calls = tiny_pipeline.sharp.predictor.calls
    for path in staging.iterdir():
        os.replace(path, config.inputs / path.name)
    assert wait_for(lambda: len(events) >= 200, 90) and daemon.wait_until_idle(30)
    assert sorted(e.photo for e in events) == sorted(str(config.inputs / f"p{i:03d}.jpg")
                                                     for i in range(200))
    assert all(e.outcome == "done" for e in events)
    assert tiny_pipeline.sharp.predictor.calls - calls == 200
    stems = sorted(p.name.rsplit("_", 1)[0] for p in config.outputs.glob("*.ply"))
    assert stems == [f"p{i:03d}" for i in range(200)]


def test_renamed_or_copied_photo_is_not_rerun(running_daemon, daemon_config, make_photo):
    events = []
    daemon = running_daemon(events=events)
    photo = make_photo(daemon_config.inputs / "a.jpg")
    assert wait_for(lambda: events) and daemon.wait_until_idle(30)
    os.rename(photo, daemon_config.inputs / "renamed.jpg")
    shutil.copy(daemon_config.inputs / "renamed.jpg", daemon_config.inputs / "copy.jpg")
    assert daemon.wait_until_idle(30)
    time.sleep(0.5)
    assert len(events) == 1
    assert len(list(daemon_config.outputs.glob("*.ply"))) == 1


def test_ignored_names_are_never_read(running_daemon, daemon_config, make_photo):
    events = []
    daemon = running_daemon(events=events)
    for name in (".hidden.jpg", "x.jpg.part", "x.jpg.crdownload", "x.tmp", "~$x.jpg", "x.gif",
                 "notes.txt"):
        make_photo(daemon_config.inputs / "staging" / "p.jpg")
        os.replace(daemon_config.inputs / "staging" / "p.jpg", daemon_config.inputs / name)
    assert daemon.wait_until_idle(30)
    time.sleep(0.4)
    assert events == []
    assert daemon.journal.all() == []


def test_catch_up_at_start_and_done_photos_skipped_on_restart(running_daemon, daemon_config,
                                                              make_photo, tiny_pipeline):
    from daemon import Daemon

    make_photo(daemon_config.inputs / "before1.jpg", seed=1)
    make_photo(daemon_config.inputs / "before2.jpg", seed=2)
    first = Daemon(daemon_config, tiny_pipeline)
    first.start()
    assert wait_for(lambda: first.status().done == 2) and first.wait_until_idle(30)
    first.stop()
    make_photo(daemon_config.inputs / "while_off.jpg", seed=3)
    calls = tiny_pipeline.sharp.predictor.calls
    second = running_daemon()
    assert wait_for(lambda: second.status().done == 1) and second.wait_until_idle(30)
    assert tiny_pipeline.sharp.predictor.calls - calls == 1
    assert len(list(daemon_config.outputs.glob("*.ply"))) == 3


def test_pause_stops_work_and_resume_drains(running_daemon, daemon_config, make_photo, overlap):
    daemon = running_daemon()
    daemon.pause()
    assert daemon.status().state == "paused"
    for i in range(3):
        make_photo(daemon_config.inputs / f"q{i}.jpg", seed=i)
    assert wait_for(lambda: daemon.status().queue_length == 3)
    time.sleep(0.5)
    assert daemon.status().done == 0 and not list(daemon_config.outputs.glob("*.ply"))
    daemon.resume()
    assert wait_for(lambda: daemon.status().done == 3) and daemon.wait_until_idle(30)
    assert daemon.status().queue_length == 0
    assert len(list(daemon_config.outputs.glob("*.ply"))) == 3


def test_deleted_folders_are_recreated(running_daemon, daemon_config, make_photo):
    daemon = running_daemon()
    shutil.rmtree(daemon_config.inputs)
    shutil.rmtree(daemon_config.outputs)
    assert wait_for(lambda: daemon_config.inputs.is_dir(), 10)
    time.sleep(0.2)
    make_photo(daemon_config.inputs / "back.jpg")
    assert wait_for(lambda: daemon.status().done == 1, 30)
    assert len(list(daemon_config.outputs.glob("back_*.ply"))) == 1


def test_stop_is_graceful_and_releases_the_state_folder(daemon_config, tiny_pipeline):
    from daemon import Daemon, DaemonError

    first = Daemon(daemon_config, tiny_pipeline)
    first.start()
    second = Daemon(daemon_config, tiny_pipeline)
    try:
        second.start()
        raise AssertionError("two daemons on one state folder")
    except DaemonError as exc:
        assert "already" in str(exc)
    first.stop()
    assert first.status().state == "stopped"
    second.start()
    second.stop()


def test_inputs_folder_deleted_and_recreated_at_once_is_watched_again(running_daemon,
                                                                       daemon_config, make_photo):
    daemon = running_daemon()
    shutil.rmtree(daemon_config.inputs)
    daemon_config.inputs.mkdir()
    time.sleep(1.5)
    make_photo(daemon_config.inputs / "again.jpg")
    assert wait_for(lambda: daemon.status().done == 1, 30)


def test_subfolders_only_when_recursive(running_daemon, make_daemon_config, make_photo,
                                        tmp_path):
    from daemon.config import FolderConfig

    config = make_daemon_config(folders=FolderConfig(tmp_path / "inputs", tmp_path / "outputs",
                                                     recursive=True))
    daemon = running_daemon(config)
    make_photo(config.inputs / "trip" / "day1" / "beach.jpg")
    staging = tmp_path / "album"
    make_photo(staging / "inside.jpg", seed=4)
    os.rename(staging, config.inputs / "album")
    assert wait_for(lambda: daemon.status().done == 2, 30) and daemon.wait_until_idle(30)
    assert {p.name.rsplit("_", 1)[0] for p in config.outputs.glob("*.ply")} == {"beach", "inside"}


def test_subfolders_ignored_when_not_recursive(running_daemon, daemon_config, make_photo):
    daemon = running_daemon()
    make_photo(daemon_config.inputs / "sub" / "deep.jpg")
    make_photo(daemon_config.inputs / "top.jpg", seed=1)
    assert wait_for(lambda: daemon.status().done == 1) and daemon.wait_until_idle(30)
    assert [p.name.rsplit("_", 1)[0] for p in daemon_config.outputs.glob("*.ply")] == ["top"]


def test_file_that_never_settles_is_reported_then_processed(running_daemon, make_daemon_config,
                                                            make_photo, tmp_path):
    config = make_daemon_config(settle_report_seconds=0.5)
    daemon = running_daemon(config)
    data = make_photo(tmp_path / "src" / "grow.png", 160, 120).read_bytes()
    target = config.inputs / "grow.png"
    error_file = config.outputs / "grow.png.error.txt"
    with open(target, "wb") as out:
        for i in range(0, len(data), 512):
            out.write(data[i:i + 512])
            out.flush()
            if error_file.exists():
                break
            time.sleep(0.1)
        assert "still being written" in error_file.read_text()
        out.write(data[out.tell():])
    assert wait_for(lambda: daemon.status().done == 1, 30)
    assert not error_file.exists()


def test_idle_unload_frees_models_and_next_photo_reloads(running_daemon, make_daemon_config,
                                                         make_photo):
    from pipeline import Pipeline

    config = make_daemon_config(unload_after_minutes=0.01)
    pipe = Pipeline(config.model_settings())
    daemon = running_daemon(config, pipe)
    assert wait_for(lambda: pipe.loaded, 30)
    assert wait_for(lambda: not pipe.loaded, 30)
    make_photo(config.inputs / "wake.jpg")
    assert wait_for(lambda: daemon.status().done == 1, 30)


def test_status_reports_download_progress_and_no_vram_on_cpu(running_daemon, tiny_pipeline):
    daemon = running_daemon()
    tiny_pipeline.progress("sharp.pt", 0.25)
    status = daemon.status()
    assert (status.stage, status.download_progress) == ("downloading", 0.25)
    assert status.vram_used_mb is None
    tiny_pipeline.progress("sharp.pt", 1.0)
    assert daemon.status().download_progress is None
    assert set(status.as_dict()) >= {"state", "queue_length", "last_error", "inputs"}


def test_deleting_a_sidecar_goes_back_to_defaults(running_daemon, daemon_config, make_photo):
    events = []
    daemon = running_daemon(events=events)
    (daemon_config.inputs / "p.toml").write_text("depth_scale = 0.5\n")
    make_photo(daemon_config.inputs / "p.jpg")
    assert wait_for(lambda: len(events) == 1) and daemon.wait_until_idle(30)
    (daemon_config.inputs / "p.toml").unlink()
    assert wait_for(lambda: len(events) == 2) and daemon.wait_until_idle(30)
    reports = sorted(daemon_config.outputs.glob("p_*.json"), key=lambda p: p.stat().st_mtime_ns)
    assert json.loads(reports[-1].read_text())["settings"]["depth_scale"] == 1.0

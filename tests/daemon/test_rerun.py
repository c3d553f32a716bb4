"""`POST /rerun?photo=...`: the viewer's Apply queues its photo without the settle wait.

The viewer writes the sidecar in one atomic rename, so the daemon need not watch it stay
unchanged for `stable_seconds` first. These tests set that wait to a minute: a result
that arrives within the test's timeout can only have come through the rerun.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from daemon import control
from daemon.instance import Instance
from service.runner import control_actions
from tests.conftest import wait_for
from tests.support.daemon_runs import plys
from tests.support.running_program import raw

SLOW_SETTLE = 60.0


@pytest.fixture
def slow_settling(make_daemon_config):
    return make_daemon_config(stable_seconds=SLOW_SETTLE)


def test_rerun_queues_a_photo_and_its_new_sidecar_without_the_settle_wait(
        slow_settling, tiny_pipeline, make_photo) -> None:
    from daemon import Daemon

    config = slow_settling
    config.inputs.mkdir(parents=True)
    photo = make_photo(config.inputs / "cat.jpg")
    daemon = Daemon(config, tiny_pipeline)
    events: list = []
    daemon.subscribe(events.append)
    daemon.start()
    try:
        assert daemon.rerun(photo) == photo
        assert wait_for(lambda: len(events) == 1, 30), "the rerun did not queue the photo"
        tmp = config.inputs / ".cat.toml.tmp"
        tmp.write_text("depth_scale = 0.5\n", encoding="utf-8")
        tmp.replace(config.inputs / "cat.toml")
        daemon.rerun(str(photo))
        assert wait_for(lambda: len(events) == 2, 30), "the rerun did not use the new sidecar"
        assert [e.outcome for e in events] == ["done", "done"]
        reports = [json.loads(p.with_suffix(".json").read_text(encoding="utf-8"))
                   for p in plys(config.outputs, "cat")]
        assert [r["settings"]["depth_scale"] for r in reports] == [1.0, 0.5]
    finally:
        daemon.stop()
    assert len(plys(config.outputs, "cat")) == 2


def test_rerun_refuses_what_is_not_a_photo_of_the_inputs_folder(
        slow_settling, tiny_pipeline, make_photo, tmp_path: Path) -> None:
    from daemon import Daemon

    config = slow_settling
    config.inputs.mkdir(parents=True)
    outside = make_photo(tmp_path / "elsewhere" / "cat.jpg")
    (config.inputs / "notes.txt").write_text("hello", encoding="utf-8")
    daemon = Daemon(config, tiny_pipeline)
    with pytest.raises(ValueError, match="not running"):
        daemon.rerun(config.inputs / "cat.jpg")
    daemon.start()
    try:
        for bad, why in ((outside, "not in the inputs folder"),
                         (Path("cat.jpg"), "not in the inputs folder"),
                         (config.inputs / ".." / "elsewhere" / "cat.jpg",
                          "not in the inputs folder"),
                         (config.inputs / "notes.txt", "not a photo"),
                         (config.inputs / "missing.jpg", "not a photo")):
            with pytest.raises(ValueError, match=why):
                daemon.rerun(bad)
    finally:
        daemon.stop()
    assert not list(config.outputs.glob("*.ply"))


class _Daemon:
    """The part of `daemon.Daemon` the control actions call, recording reruns."""

    def __init__(self) -> None:
        self.reruns: list[str] = []

    def rerun(self, photo: str) -> Path:
        if not photo.endswith(".jpg"):
            raise ValueError(f"{photo} is not a photo sharp-watch can read")
        self.reruns.append(photo)
        return Path(photo)

    def status(self) -> Any:
        raise AssertionError("not called")


def _post(port: int, secret: str, path: str) -> tuple[int, dict]:
    return raw(port, "POST", path, {"Host": f"127.0.0.1:{port}",
                                    "Authorization": f"Bearer {secret}"})


def test_the_control_channel_passes_the_photo_and_answers_a_bad_one_with_400(
        tmp_path: Path) -> None:
    fake = _Daemon()
    instance = Instance(tmp_path)
    instance.acquire()
    server = control.ControlServer(instance.secret, control_actions(fake, threading.Event()))
    server.start()
    instance.publish(server.port)
    try:
        photo = str(tmp_path / "in" / "a photo & more.jpg")
        answer = control.request(tmp_path, "POST", "/rerun?photo=" +
                                 urllib.parse.quote(photo))
        assert answer == {"queued": photo} and fake.reruns == [photo]
        status, body = _post(server.port, instance.secret, "/rerun?photo=notes.txt")
        assert status == 400 and "notes.txt is not a photo" in body["error"]
        status, body = _post(server.port, instance.secret, "/rerun")
        assert status == 400 and "/rerun takes photo; got none" in body["error"]
        status, body = _post(server.port, instance.secret, "/pause?photo=x.jpg")
        assert status == 400
        assert _post(server.port, "wrong", "/rerun?photo=x.jpg")[0] == 401
        assert fake.reruns == [photo]
    finally:
        server.close()
        instance.release()

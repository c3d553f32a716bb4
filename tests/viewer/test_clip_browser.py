"""Make a clip and Share in headless Chromium (software WebGL, a tiny scene): the clip the
page renders frame by frame and encodes (WebCodecs) is saved beside the result, decodes,
has the frames and duration its length asks for, moves, and is not blank; Share, in the
viewer and on a gallery card, downloads the result's share page, which is then on disk
and listed with the card's other downloads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import wait_for
from tests.support.viewer_browser import (
    BACKGROUND,
    browser,
    drawn_fraction,
    skip_without_chromium,
)
from viewer.server import ViewerApp

av = pytest.importorskip("av", reason="PyAV is not installed (test extra)")
skip_without_chromium()

SECONDS = 3
FPS = 30
"""`clip.js`'s fixed frame rate."""


def _frames(path: Path) -> tuple[list[np.ndarray], float, str]:
    """Every frame of the video at `path` (RGB), its duration in seconds and its codec."""
    with av.open(str(path)) as video:
        stream = video.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in video.decode(stream)]
        duration = float(stream.duration * stream.time_base) if stream.duration else \
            float(video.duration / av.time_base)
        return frames, duration, stream.codec_context.name


def _note(page: Any, text: str, timeout: float = 120.0) -> str:
    assert wait_for(lambda: text in page.inner_text("#share-note"), timeout), \
        page.inner_text("#share-note")
    return str(page.inner_text("#share-note"))


def test_make_a_clip_and_share_in_chromium(viewer_app: ViewerApp, tmp_path: Path) -> None:
    outputs = viewer_app.place.outputs
    with browser() as chrome:
        page = chrome.new_page(viewport={"width": 700, "height": 360}, accept_downloads=True)
        page.goto(viewer_app.launch("/view?ply=a_1.ply").as_uri())
        assert wait_for(lambda: viewer_app.shown == "a_1.ply", 60), "the scene was not drawn"
        assert page.input_value("#clip-move") == "orbit", "orbit is the default move"
        moves = page.evaluate("""async () => {
            const { MOVES } = await import("/static/clip.js");
            const path = (move) => [...Array(24).keys()].map((i) => MOVES[move](i, 24, 2));
            return { dolly: path("dolly"), wiggle: path("wiggle"), orbit: path("orbit") };
        }""")
        forward = [o["forward"] for o in moves["dolly"]]
        assert forward[0] == 0 and forward[-1] == pytest.approx(0.5) and forward == sorted(forward)
        sides = [o["right"] for o in moves["wiggle"]]
        assert sides == [-0.04] * 4 + [0.04] * 4 + [-0.04] * 4 + [0.04] * 4 + [-0.04] * 4 + \
            [0.04] * 4, "two viewpoints, 4 frames each, in turn"
        assert max(abs(o["right"]) for o in moves["orbit"]) == pytest.approx(0.16, rel=0.01)
        page.select_option("#clip-seconds", str(SECONDS))
        page.click("#make-clip")
        saved = _note(page, "Saved a_1_orbit.mp4")
        assert f"{SECONDS * FPS} frames at {FPS} fps" in saved
        camera = page.evaluate("window.sharpWatchView.camera.position.toArray()")
        np.testing.assert_allclose(camera, [0, 0, 0], atol=1e-9,
                                   err_msg="the clip puts the user's camera back")
        assert page.locator("#takeaways a[data-file='a_1_orbit.mp4']").count() == 1

        with page.expect_download() as download:
            page.click("#share")
        assert download.value.suggested_filename == "a_1.html"
        got = tmp_path / "got.html"
        download.value.save_as(got)
        _note(page, "Downloaded a_1.html")
        assert got.read_bytes() == (outputs / "a_1.html").read_bytes()
        assert got.read_bytes().startswith(b"<!doctype html>")

        (outputs / "a_1.html").unlink()  # the card makes it again, as for an older result
        page.goto(f"http://127.0.0.1:{viewer_app.port}/")
        card = page.locator(".card[data-name='a_1.ply']")
        card.wait_for()
        assert card.locator(".takeaways a").all_inner_texts() == ["a_1_orbit.mp4"], \
            "a download deleted by hand is not offered"
        with page.expect_download() as download:
            card.locator("button.share").click()
        assert download.value.suggested_filename == "a_1.html"
        assert (outputs / "a_1.html").is_file()
        assert wait_for(lambda: card.locator(".takeaways a").all_inner_texts() ==
                        ["a_1_orbit.mp4", "a_1.html"], 20), "the card lists the page it made"
        with page.expect_download() as download:
            card.locator(".takeaways a", has_text="a_1_orbit.mp4").click()
        download.value.save_as(tmp_path / "clip.mp4")

    clip = outputs / "a_1_orbit.mp4"
    assert (tmp_path / "clip.mp4").read_bytes() == clip.read_bytes()
    frames, duration, codec = _frames(clip)
    assert codec == "h264", "an MP4 where the browser encodes H.264 (Debian's Chromium does)"
    assert len(frames) == SECONDS * FPS
    assert duration == pytest.approx(SECONDS, abs=1.5 / FPS)
    stack = np.stack(frames).astype(np.int16)
    assert stack.shape[1] % 2 == 0 and stack.shape[2] % 2 == 0
    drawn = [drawn_fraction(frame, BACKGROUND) for frame in frames]
    assert min(drawn) > 0.005, f"a blank frame in the clip: {min(drawn):.4f} drawn"
    steps = np.abs(np.diff(stack, axis=0)).mean(axis=(1, 2, 3))
    assert (steps > 0.001).mean() > 0.9, f"frames that do not move: {steps.round(3)}"
    moved = [(np.abs(stack[k] - stack[0]).max(axis=2) > 16).mean() for k in (22, 45, 67)]
    assert min(moved) > 0.001, f"the orbit moved nothing: {moved}"
    back = (np.abs(stack[-1] - stack[0]).max(axis=2) > 16).mean()
    assert back < min(moved) / 4, "an orbit ends where it began (the clip loops)"

"""The daemon's parts on their own: journal verdicts, depth cache LRU, readiness, names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from daemon.depth_cache import DepthCache
from daemon.jobs import job_key, settings_from_json, settings_to_json
from daemon.journal import Journal
from daemon.readiness import Settler
from daemon.watcher import ignored_name, is_watched
from pipeline import DepthSettings, RawDepth


def test_job_key_depends_on_content_settings_and_depth_content_only():
    s = DepthSettings()
    assert job_key("a", s, None) == job_key("a", DepthSettings(), None)
    assert job_key("a", s, None) != job_key("b", s, None)
    assert job_key("a", s, None) != job_key("a", s.replace(depth_scale=0.9), None)
    npy1 = DepthSettings(depth_source="npy", external_depth=Path("/x/one.npy"))
    npy2 = DepthSettings(depth_source="npy", external_depth=Path("/y/two.npy"))
    assert job_key("a", npy1, "h") == job_key("a", npy2, "h")
    assert job_key("a", npy1, "h") != job_key("a", npy1, "h2")
    assert settings_from_json(settings_to_json(npy1)) == npy1


def test_journal_verdicts_and_exactly_once_recovery(tmp_path):
    j = Journal(tmp_path / "j.sqlite3")
    settings = settings_to_json(DepthSettings())
    assert j.submit("k1", tmp_path / "a.jpg", "h1", settings) == "queued"
    assert j.submit("k1", tmp_path / "b.jpg", "h1", settings) == "pending"
    assert j.next_queued().photo == tmp_path / "b.jpg"  # a rename while queued follows the file
    assert j.claim("k1").attempts == 1
    assert j.claim("k1") is None
    assert j.submit("k1", tmp_path / "a.jpg", "h1", settings) == "pending"
    j.reserve_outputs("k1", ["/out/a.ply"])
    j.close()

    j = Journal(tmp_path / "j.sqlite3")
    stale, given_up = j.recover(max_attempts=3)
    assert (stale, given_up) == (["/out/a.ply"], [])
    assert j.counts()["queued"] == 1
    j.claim("k1")
    j.finish("k1", ["/out/a2.ply"], {"sharp": 1.0})
    assert j.submit("k1", tmp_path / "copy.jpg", "h1", settings) == "done"
    assert j.recover(3) == ([], [])

    assert j.submit("k2", tmp_path / "c.jpg", "h2", settings) == "queued"
    j.claim("k2")
    j.fail("k2", "corrupt", retryable=False)
    assert j.submit("k2", tmp_path / "c.jpg", "h2", settings, event_driven=False) == "failed"
    assert j.submit("k2", tmp_path / "c.jpg", "h2", settings, event_driven=True) == "queued"
    j.claim("k2")
    j.fail("k2", "disk full", retryable=True)
    assert j.submit("k2", tmp_path / "c.jpg", "h2", settings, event_driven=False) == "queued"


def test_job_that_keeps_killing_the_daemon_is_given_up(tmp_path):
    j = Journal(tmp_path / "j.sqlite3")
    j.submit("k", tmp_path / "bomb.jpg", "h", settings_to_json(DepthSettings()))
    for _ in range(3):
        j.claim("k")
        _, given_up = j.recover(max_attempts=3)
    assert [(job.key, error) for job, error in given_up] == [("k", j.get("k")["error"])]
    row = j.get("k")
    assert row["state"] == "failed" and "interrupted 3 times" in row["error"]


def _raw(seed: int, size: int = 64) -> RawDepth:
    values = np.random.default_rng(seed).random((size, size), dtype=np.float32) + 0.1
    return RawDepth(values=values, kind="canonical-inverse", model_id="m", fov_deg=50.0)


def test_depth_cache_round_trip_and_lru_cap(tmp_path):
    entry_mb = 64 * 64 * 4 / 2**20
    cache = DepthCache(tmp_path / "cache", cap_mb=entry_mb * 2.5)
    assert cache.get("a", "m") is None
    for i, name in enumerate("abc"):
        cache.put(name, _raw(i))
        if name == "b":
            assert cache.get("a", "m") is not None  # touch "a": "b" is now least recent
    got = cache.get("a", "m")
    assert got is not None and got.kind == "canonical-inverse" and got.fov_deg == 50.0
    np.testing.assert_array_equal(got.values, _raw(0).values)
    assert cache.get("b", "m") is None
    assert cache.get("c", "m") is not None
    assert cache.get("a", "other-model") is None
    assert cache.size_bytes() <= cache.cap_bytes


def test_damaged_cache_entry_is_a_miss_not_an_error(tmp_path):
    cache = DepthCache(tmp_path / "cache", cap_mb=10)
    cache.put("a", _raw(0))
    for npy in (tmp_path / "cache").glob("*.npy"):
        npy.write_bytes(b"\x93NUMPY garbage")
    assert cache.get("a", "m") is None
    assert not list((tmp_path / "cache").iterdir())


def test_disabled_cache_stores_nothing(tmp_path):
    cache = DepthCache(tmp_path / "cache", cap_mb=0)
    cache.put("a", _raw(0))
    assert cache.get("a", "m") is None and not (tmp_path / "cache").exists()


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_settler_waits_for_stable_size_and_reports_files_that_never_settle(tmp_path):
    clock = _Clock()
    settler = Settler(stable_seconds=1.0, report_after=5.0, clock=clock)
    path = tmp_path / "grow.jpg"
    path.write_bytes(b"a")
    settler.note(path)
    settler.note(path)
    assert len(settler) == 1
    reported = []
    for step in range(1, 12):
        clock.now = step * 0.5
        with open(path, "ab") as f:
            f.write(b"more")
        ready, stuck = settler.poll()
        assert ready == []
        reported += stuck
    assert [p for p, _ in reported] == [path]  # reported once, still pending
    assert settler.pending(path)
    clock.now += 0.5
    assert settler.poll() == ([], [])
    clock.now += 1.0
    assert settler.poll() == ([path], [])
    assert not settler.pending(path)


def test_settler_forgets_deleted_files(tmp_path):
    settler = Settler(0.0, 60.0)
    path = tmp_path / "gone.jpg"
    path.write_bytes(b"x")
    settler.note(path)
    path.unlink()
    assert settler.poll() == ([], []) and len(settler) == 0


@pytest.mark.parametrize("name, ignored", [
    (".hidden.jpg", True), ("a.jpg.part", True), ("a.crdownload", True), ("a.TMP", True),
    ("~$a.jpg", True), ("a.jpg~", True), ("a.jpg", False), ("A.HEIC", False),
])
def test_ignored_names(name, ignored):
    assert ignored_name(name) is ignored


@pytest.mark.parametrize("name, watched", [
    ("a.jpg", True), ("a.toml", True), ("a.npy", True), ("a.gif", False), ("a.txt", False),
    (".a.toml", False),
])
def test_watched_types(name, watched):
    assert is_watched(Path(name)) is watched


def test_long_stems_are_shortened_to_fit_and_stay_distinct():
    from daemon.outputs import MAX_STEM_BYTES, safe_stem

    assert safe_stem("photo") == "photo"
    a, b = safe_stem("é" * 120 + "a"), safe_stem("é" * 120 + "b")
    assert a != b
    assert max(len(a.encode()), len(b.encode())) <= MAX_STEM_BYTES


def test_preview_shows_both_depths_side_by_side_at_the_photo_aspect():
    from io import BytesIO

    from PIL import Image

    from daemon.outputs import PREVIEW_HEIGHT, preview_png

    used = np.linspace(1.0, 5.0, 64 * 64, dtype=np.float32).reshape(64, 64)
    internal = np.stack([used * 2, used * 3])
    image = Image.open(BytesIO(preview_png(used, internal, (400, 200))))
    assert image.size == (2 * 2 * PREVIEW_HEIGHT + 8, PREVIEW_HEIGHT)
    pixels = np.asarray(image.convert("RGB"), dtype=float)
    left, right = pixels[:, :2 * PREVIEW_HEIGHT], pixels[:, 2 * PREVIEW_HEIGHT + 8:]
    assert left.mean() > right.mean()  # injected depth is nearer: brighter on the shared scale
    single = Image.open(BytesIO(preview_png(used, None, (300, 300))))
    assert single.size == (PREVIEW_HEIGHT, PREVIEW_HEIGHT)

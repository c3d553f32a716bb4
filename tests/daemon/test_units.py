"""The daemon's parts on their own: journal verdicts, depth cache LRU, readiness, names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from daemon.depth_cache import DepthCache, _checksum
from daemon.jobs import job_key, settings_from_json, settings_to_json
from daemon.journal import Journal
from daemon.readiness import Settler
from daemon.watcher import ignored_name, is_watched
from pipeline import DepthSettings, RawDepth
from tests.support.files import npy_bytes


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
    stale, given_up = j.recover(max_crashes=3)
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
    j.fail("k2", "disk full", retryable=True)  # retried after its backoff or at a restart
    assert j.submit("k2", tmp_path / "c.jpg", "h2", settings, event_driven=False) == "failed"


def test_job_that_keeps_crashing_the_daemon_is_given_up(tmp_path):
    j = Journal(tmp_path / "j.sqlite3")
    j.submit("k", tmp_path / "bomb.jpg", "h", settings_to_json(DepthSettings()))
    for _ in range(3):
        j.claim("k")
        _, given_up = j.recover("Fatal Python error: Segmentation fault", max_crashes=3)
    assert [(job.key, error) for job, error in given_up] == [("k", j.get("k")["error"])]
    row = j.get("k")
    assert row["state"] == "failed" and "crashed 3 times" in row["error"]
    assert "Segmentation fault" in row["error"]


def _raw(seed: int, size: int = 64) -> RawDepth:
    values = np.random.default_rng(seed).random((size, size), dtype=np.float32) + 0.1
    return RawDepth(values=values, kind="canonical-inverse", model_id="m", fov_deg=50.0)


def test_depth_cache_round_trip_and_lru_cap(tmp_path):
    entry_mb = 64 * 64 * 4 / 2**20
    cache = DepthCache(tmp_path / "cache", cap_mb=entry_mb * 2.5)
    assert cache.get("a", "k") is None
    for i, name in enumerate("abc"):
        cache.put(name, "k", _raw(i))
        if name == "b":
            assert cache.get("a", "k") is not None  # touch "a": "b" is now least recent
    got = cache.get("a", "k")
    assert got is not None and got.kind == "canonical-inverse" and got.fov_deg == 50.0
    assert got.model_id == "m"
    np.testing.assert_array_equal(got.values, _raw(0).values)
    assert cache.get("b", "k") is None
    assert cache.get("c", "k") is not None
    assert cache.get("a", "other-key") is None
    assert cache.get("a", None) is None
    assert cache.size_bytes() <= cache.cap_bytes


def test_cache_without_a_key_stores_nothing(tmp_path):
    cache = DepthCache(tmp_path / "cache", cap_mb=10)
    cache.put("a", None, _raw(0))
    assert list((tmp_path / "cache").iterdir()) == []


def _npy_with_header(header: dict, body: bytes, version: bytes = b"\x01\x00") -> bytes:
    """A `.npy` whose header says whatever the test wants, followed by `body`."""
    text = repr(header).encode("latin1")
    prefix = b"\x93NUMPY" + version
    size = 2 if version == b"\x01\x00" else 4
    pad = (-(len(prefix) + size + len(text) + 1)) % 64
    text += b" " * pad + b"\n"
    return prefix + len(text).to_bytes(size, "little") + text + body


_GOOD = _raw(0).values
_HEADER = {"descr": "<f4", "fortran_order": False, "shape": (64, 64)}
_DAMAGED_NPY = {
    "zero length": b"",
    "magic only": b"\x93NUMPY",
    "garbage": b"\x93NUMPY garbage",
    "truncated body": npy_bytes(_GOOD)[:-100],
    "truncated header": npy_bytes(_GOOD)[:40],
    "trailing bytes": npy_bytes(_GOOD) + b"\0" * 16,
    "huge shape, tiny body": _npy_with_header({**_HEADER, "shape": (10**6, 10**6)}, b"\0" * 64),
    "negative shape": _npy_with_header({**_HEADER, "shape": (-64, -64)}, b"\0" * 64),
    "float64": npy_bytes(_GOOD.astype(np.float64)),
    "int32": npy_bytes(_GOOD.astype(np.int32)),
    "float16": npy_bytes(_GOOD.astype(np.float16)),
    "big endian": npy_bytes(_GOOD.astype(">f4")),
    "object (pickle)": npy_bytes(np.array([None] * 4096, dtype=object).reshape(64, 64),
                                 allow_pickle=True),
    "fortran order": npy_bytes(np.asfortranarray(_GOOD)),
    "three dims": npy_bytes(_GOOD.reshape(1, 64, 64)),
    "one dim": npy_bytes(_GOOD.ravel()),
    "other shape": npy_bytes(_GOOD.reshape(32, 128)),
    "NaN": npy_bytes(np.where(_GOOD > 0.5, np.nan, _GOOD).astype(np.float32)),
    "inf": npy_bytes(np.where(_GOOD > 0.5, np.inf, _GOOD).astype(np.float32)),
    "version 3 header": _npy_with_header(_HEADER, _GOOD.tobytes(), b"\x03\x00"),
    "header not a dict": _npy_with_header([1, 2], _GOOD.tobytes()),  # type: ignore[arg-type]
}


def _meta(**changes) -> bytes:
    """The JSON `put` writes for `_raw(0)` under ("a", "k"), with `changes` made after."""
    import json

    meta = {"key": "k", "model_id": "m", "kind": "canonical-inverse", "fov_deg": 50.0,
            "shape": [64, 64], "photo_sha256": "a"}
    meta["crc32"] = _checksum(_GOOD, meta)
    return json.dumps({**meta, **changes}).encode()


_DAMAGED_JSON = {
    "zero length": b"",
    "not json": b"{not json",
    "invalid utf-8": b'{"key": "\xff\xfe"}',
    "a list": b"[1, 2, 3]",
    "a string": b'"canonical-inverse"',
    "null": b"null",
    "deeply nested": b"[" * 3000 + b"]" * 3000,
    "too big": _meta(padding="x" * 10_000),
    "other key": _meta(key="other"),
    "other photo": _meta(photo_sha256="b"),
    "no kind": _meta(kind=None),
    "unknown kind": _meta(kind="inverse"),
    "kind as number": _meta(kind=1),
    "model id not text": _meta(model_id=["m"]),
    "fov as text": _meta(fov_deg="50"),
    "fov NaN": _meta(fov_deg=float("nan")),
    "fov inf": _meta(fov_deg=float("inf")),
    "fov bool": _meta(fov_deg=True),
    "shape as text": _meta(shape="64x64"),
    "shape floats": _meta(shape=[64.0, 64.0]),
    "shape bools": _meta(shape=[True, True]),
    "shape 1-d": _meta(shape=[4096]),
    "shape 3-d": _meta(shape=[1, 64, 64]),
    "shape other": _meta(shape=[32, 128]),
    "shape negative": _meta(shape=[-64, -64]),
    "shape huge": _meta(shape=[10**6, 10**6]),
}


def _damaged_cache(tmp_path: Path, npy: bytes | None, meta: bytes | None) -> DepthCache:
    """A cache holding one entry for ("a", "k") whose files are replaced as given."""
    cache = DepthCache(tmp_path / "cache", cap_mb=10)
    cache.put("a", "k", _raw(0))
    for suffix, data in ((".npy", npy), (".json", meta)):
        for path in (tmp_path / "cache").glob(f"*{suffix}"):
            if data is None:
                path.unlink()
            else:
                path.write_bytes(data)
    return cache


def test_depth_cache_entry_written_by_put_is_the_one_read_back(tmp_path):
    cache = _damaged_cache(tmp_path, npy_bytes(_GOOD), _meta())
    got = cache.get("a", "k")
    assert got is not None and cache.hits == 1
    np.testing.assert_array_equal(got.values, _GOOD)


@pytest.mark.parametrize("variant", sorted(_DAMAGED_NPY))
def test_damaged_cache_npy_is_a_miss_and_is_deleted(tmp_path, variant):
    import tracemalloc

    cache = _damaged_cache(tmp_path, _DAMAGED_NPY[variant], _meta())
    tracemalloc.start()
    try:
        assert cache.get("a", "k") is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, f"{variant}: reading it allocated {peak / 2**20:.0f} MiB"
    assert cache.misses == 1 and list((tmp_path / "cache").iterdir()) == []


def test_cache_header_declaring_a_huge_array_allocates_nothing(tmp_path):
    huge = _npy_with_header({**_HEADER, "shape": (10**6, 10**6)}, b"\0" * 64)
    cache = _damaged_cache(tmp_path, huge, _meta(shape=[10**6, 10**6]))
    assert cache.get("a", "k") is None and cache.misses == 1


@pytest.mark.parametrize("variant", sorted(_DAMAGED_JSON))
def test_damaged_cache_json_is_a_miss_and_is_deleted(tmp_path, variant):
    cache = _damaged_cache(tmp_path, npy_bytes(_GOOD), _DAMAGED_JSON[variant])
    assert cache.get("a", "k") is None
    assert cache.misses == 1 and list((tmp_path / "cache").iterdir()) == []


@pytest.mark.parametrize("missing", ["npy", "json"])
def test_cache_entry_with_one_file_missing_is_a_miss(tmp_path, missing):
    cache = _damaged_cache(tmp_path, None if missing == "npy" else npy_bytes(_GOOD),
                           None if missing == "json" else _meta())
    assert cache.get("a", "k") is None
    assert list((tmp_path / "cache").iterdir()) == []


def test_cache_entry_that_is_a_folder_is_a_miss(tmp_path):
    cache = _damaged_cache(tmp_path, npy_bytes(_GOOD), _meta())
    for npy in (tmp_path / "cache").glob("*.npy"):
        npy.unlink()
        npy.mkdir()
    assert cache.get("a", "k") is None and cache.misses == 1


def test_fuzzed_cache_entries_are_a_miss_or_exactly_what_was_stored(tmp_path):
    """Random truncations and byte flips of both files: never an exception, never a map of
    another shape, kind or content."""
    rng = np.random.default_rng(0)
    good_npy, good_meta = npy_bytes(_GOOD), _meta()
    outcomes = {"hit": 0, "miss": 0}
    for trial in range(300):
        npy, meta = bytearray(good_npy), bytearray(good_meta)
        target = npy if trial % 2 else meta
        if trial % 3 == 0:
            del target[int(rng.integers(0, len(target))):]
        else:
            for _ in range(int(rng.integers(1, 4))):
                # Flips land in the header and meta mostly: that is where a wrong map hides.
                at = int(rng.integers(0, min(len(target), 160)))
                target[at] = int(rng.integers(0, 256))
        cache = _damaged_cache(tmp_path / f"t{trial}", bytes(npy), bytes(meta))
        got = cache.get("a", "k")
        if got is None:
            outcomes["miss"] += 1
            continue
        outcomes["hit"] += 1
        assert (got.kind, got.model_id, got.fov_deg) == ("canonical-inverse", "m", 50.0)
        assert got.values.dtype == np.float32 and got.values.shape == (64, 64)
        np.testing.assert_array_equal(got.values, _GOOD)
    assert outcomes["miss"] > 200, outcomes


def test_disabled_cache_stores_nothing(tmp_path):
    cache = DepthCache(tmp_path / "cache", cap_mb=0)
    cache.put("a", "k", _raw(0))
    assert cache.get("a", "k") is None and not (tmp_path / "cache").exists()


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
    from daemon.results import MAX_STEM_BYTES, safe_stem

    assert safe_stem("photo") == "photo"
    a, b = safe_stem("é" * 120 + "a"), safe_stem("é" * 120 + "b")
    assert a != b
    assert max(len(a.encode()), len(b.encode())) <= MAX_STEM_BYTES


def test_preview_shows_both_depths_side_by_side_at_the_photo_aspect():
    from io import BytesIO

    from PIL import Image

    from daemon.outputs import PREVIEW_HEIGHT, preview_png
    from pipeline.preview import GAP, MARGIN

    used = np.linspace(1.0, 5.0, 64 * 64, dtype=np.float32).reshape(64, 64)
    internal = np.stack([used * 2, used * 3])
    image = Image.open(BytesIO(preview_png(used, internal, (400, 200))))
    assert image.width == 2 * 2 * PREVIEW_HEIGHT + GAP + 2 * MARGIN
    assert image.height > PREVIEW_HEIGHT  # labels above, the colour bar below
    top = MARGIN + 24  # under the labels
    pixels = np.asarray(image.convert("RGB"), dtype=float)[top:top + PREVIEW_HEIGHT]
    left = pixels[:, MARGIN:MARGIN + 2 * PREVIEW_HEIGHT]
    right = pixels[:, MARGIN + 2 * PREVIEW_HEIGHT + GAP:-MARGIN]
    assert left.mean() > right.mean()  # injected depth is nearer: brighter on the shared scale
    single = Image.open(BytesIO(preview_png(used, None, (300, 300))))
    assert single.width == PREVIEW_HEIGHT + 2 * MARGIN

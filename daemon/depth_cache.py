"""Depth model outputs kept on disk, so retuning a photo's sidecar runs SHARP only.

Depth Pro's raw output is canonical inverse depth, independent of the focal length
(the focal is applied later), so (photo content, `Pipeline.depth_cache_key`: model,
precision, weights) is the whole key. Each entry is a `.npy` plus a small JSON written
last as the commit mark; least recently used entries go once the total passes the size
cap. Anything wrong with an entry (truncated, a lying header, the wrong kind of map,
NaN, a checksum that does not match: entries are not fsynced, so a power cut can leave
zeros) makes it a miss and deletes it: a cache never fails a job. The folder and entries
are the user's only (0700 / 0600): a depth map shows what the photo showed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import threading
import zlib
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO, get_args

import numpy as np
from numpy.lib import format as npy_format

from pipeline import OutputError, RawDepth
from pipeline.atomic import atomic_write, private_folder, temp_files
from pipeline.depth.base import RawKind

MAX_META_BYTES = 4096
_KINDS: tuple[str, ...] = get_args(RawKind)
_DAMAGED = (OSError, ValueError, RecursionError)  # unreadable, bad JSON, JSON nested too deep


class DepthCache:
    """A size-capped LRU of `RawDepth` on disk; a cap of 0 turns it off."""

    def __init__(self, folder: Path, cap_mb: float) -> None:
        self.folder = folder
        self.cap_bytes = int(cap_mb * 1024 * 1024)
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        if self.enabled:
            private_folder(folder)
            for stale in temp_files(folder):
                stale.unlink(missing_ok=True)

    @property
    def enabled(self) -> bool:
        return self.cap_bytes > 0

    def _name(self, content_hash: str, key: str) -> str:
        return hashlib.sha256(f"{content_hash}\0{key}".encode()).hexdigest()

    def get(self, content_hash: str, key: str | None) -> RawDepth | None:
        """The entry for this photo content and `key`, or None (a miss) if absent or damaged.

        A `key` of None (depth whose weights cannot be identified) is never cached.
        """
        if not self.enabled or key is None:
            return None
        name = self._name(content_hash, key)
        meta_path, data_path = self.folder / f"{name}.json", self.folder / f"{name}.npy"
        with self._lock:
            try:
                raw = _read_entry(meta_path, data_path, content_hash, key)
            except _DAMAGED:
                raw = None
            if raw is None:
                self._remove(name)
                self.misses += 1
                return None
            for path in (meta_path, data_path):
                with contextlib.suppress(OSError):
                    os.utime(path)
            self.hits += 1
            return raw

    def put(self, content_hash: str, key: str | None, raw: RawDepth) -> None:
        """Store `raw`; a full disk only means no cache entry, never a failed job."""
        if not self.enabled or key is None:
            return
        name = self._name(content_hash, key)
        values = np.ascontiguousarray(raw.values, dtype=np.float32)
        meta: dict[str, Any] = {"key": key, "model_id": raw.model_id, "kind": raw.kind,
                                "fov_deg": raw.fov_deg, "shape": list(values.shape),
                                "photo_sha256": content_hash}
        meta["crc32"] = _checksum(values, meta)

        def save(out: BinaryIO) -> None:
            out.write(_npy_header(values.shape))
            out.write(values.data)
        with self._lock:
            try:
                # Not durable: after a power cut a damaged entry is only a miss.
                atomic_write(self.folder / f"{name}.npy", save, mode=0o600, durable=False)
                atomic_write(self.folder / f"{name}.json", json.dumps(meta).encode(),
                             mode=0o600, durable=False)
            except OutputError:
                self._remove(name)
                return
            self._evict()

    def _remove(self, name: str) -> None:
        for suffix in (".json", ".npy"):
            with contextlib.suppress(OSError):
                (self.folder / f"{name}{suffix}").unlink(missing_ok=True)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.glob("*.npy")) if self.enabled else 0

    def _evict(self) -> None:
        entries = []
        for data in self.folder.glob("*.npy"):
            try:
                st = data.stat()
            except OSError:
                continue
            entries.append((st.st_mtime_ns, st.st_size, data.stem))
        total = sum(size for _, size, _ in entries)
        for _, size, name in sorted(entries):
            if total <= self.cap_bytes:
                break
            self._remove(name)
            total -= size


def _read_entry(meta_path: Path, data_path: Path, content_hash: str,
                key: str) -> RawDepth | None:
    """The entry if every part of it is what `put` writes; None otherwise."""
    with open(meta_path, "rb") as f:
        text = f.read(MAX_META_BYTES + 1)
    if len(text) > MAX_META_BYTES:
        return None
    meta = json.loads(text)
    if not _valid_meta(meta, content_hash, key):
        return None
    values = _read_matrix(data_path, tuple(meta["shape"]))
    if (values is None or meta.get("crc32") != _checksum(values, meta)
            or not np.isfinite(values).all()):
        return None
    return RawDepth(values=values, kind=meta["kind"], model_id=meta["model_id"],
                    fov_deg=None if meta["fov_deg"] is None else float(meta["fov_deg"]))


def _checksum(values: np.ndarray, meta: dict[str, Any]) -> int:
    """CRC-32 of the values and every other field of `meta`."""
    fields = json.dumps({k: v for k, v in meta.items() if k != "crc32"}, sort_keys=True)
    return zlib.crc32(values.data, zlib.crc32(fields.encode()))


def _valid_meta(meta: Any, content_hash: str, key: str) -> bool:
    if not isinstance(meta, dict):
        return False
    shape, fov = meta.get("shape"), meta.get("fov_deg")
    return (meta.get("key") == key and meta.get("photo_sha256") == content_hash
            and isinstance(meta.get("model_id"), str) and meta.get("kind") in _KINDS
            and (fov is None or (_is_number(fov) and math.isfinite(fov)))
            and isinstance(shape, list) and len(shape) == 2
            and all(type(n) is int and n > 0 for n in shape))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """The `.npy` header of a C-order little-endian float32 array of `shape`."""
    buf = BytesIO()
    npy_format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False,
                                            "shape": shape})
    return buf.getvalue()


def _read_matrix(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The float32 matrix of exactly `shape` that `put` wrote, or None.

    The header must be byte for byte the one `put` writes (no parsing of what is on disk)
    and the file exactly as long as that shape needs, all before anything is allocated:
    a lying header cannot ask for terabytes.
    """
    header = _npy_header(shape)
    count = shape[0] * shape[1]
    with open(path, "rb") as f:
        if (f.read(len(header)) != header
                or os.fstat(f.fileno()).st_size != len(header) + 4 * count):
            return None
        values = np.fromfile(f, dtype="<f4", count=count)
    return values.reshape(shape) if values.size == count else None

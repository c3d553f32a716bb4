"""Depth model outputs kept on disk, so retuning a photo's sidecar runs SHARP only.

Depth Pro's raw output is canonical inverse depth, independent of the focal length
(the focal is applied later), so (photo content, depth model) is the whole key. Each
entry is a `.npy` (read with `allow_pickle=False`) plus a small JSON written last as
the commit mark; least recently used entries go once the total passes the size cap.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import numpy as np

from pipeline import RawDepth


class DepthCache:
    """A size-capped LRU of `RawDepth` on disk; a cap of 0 turns it off."""

    def __init__(self, folder: Path, cap_mb: float) -> None:
        self.folder = folder
        self.cap_bytes = int(cap_mb * 1024 * 1024)
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        if self.enabled:
            folder.mkdir(parents=True, exist_ok=True)
            for stale in folder.glob(".*.tmp"):
                stale.unlink(missing_ok=True)

    @property
    def enabled(self) -> bool:
        return self.cap_bytes > 0

    def _name(self, content_hash: str, model_id: str) -> str:
        return hashlib.sha256(f"{content_hash}\0{model_id}".encode()).hexdigest()

    def get(self, content_hash: str, model_id: str) -> RawDepth | None:
        if not self.enabled:
            return None
        name = self._name(content_hash, model_id)
        meta_path, data_path = self.folder / f"{name}.json", self.folder / f"{name}.npy"
        with self._lock:
            try:
                meta = json.loads(meta_path.read_text())
                values = np.load(data_path, allow_pickle=False)
                if (meta.get("model_id") != model_id or values.dtype != np.float32
                        or values.ndim != 2 or list(values.shape) != meta.get("shape")):
                    raise ValueError("cache entry does not match")
                raw = RawDepth(values=values, kind=meta["kind"], model_id=model_id,
                               fov_deg=meta.get("fov_deg"))
            except (OSError, ValueError, KeyError, TypeError):
                self._remove(name)
                self.misses += 1
                return None
            for path in (meta_path, data_path):
                os.utime(path)
            self.hits += 1
            return raw

    def put(self, content_hash: str, raw: RawDepth) -> None:
        """Store `raw`; a full disk only means no cache entry, never a failed job."""
        if not self.enabled:
            return
        name = self._name(content_hash, raw.model_id)
        values = np.ascontiguousarray(raw.values, dtype=np.float32)
        meta = {"model_id": raw.model_id, "kind": raw.kind, "fov_deg": raw.fov_deg,
                "shape": list(values.shape), "photo_sha256": content_hash}
        with self._lock:
            try:
                self._atomic(self.folder / f"{name}.npy", lambda f: np.save(f, values))
                self._atomic(self.folder / f"{name}.json",
                             lambda f: f.write(json.dumps(meta).encode()))
            except OSError:
                self._remove(name)
                return
            self._evict()

    def _atomic(self, path: Path, write) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                write(f)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def _remove(self, name: str) -> None:
        for suffix in (".json", ".npy"):
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

"""Fetching and loading official checkpoints: cached, resumable, never half-written.

Downloads go to `<name>.part` beside the final file and are renamed only once the
byte count matches (after an `fsync`, with `pipeline.atomic.replace`, which waits out an
antivirus scan of the new file), so an interrupted download resumes (HTTP Range) or
restarts, and the cache never holds a truncated checkpoint under its real name, not even
after a power cut. A file lock keeps two processes from downloading the same file at once.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from tqdm.auto import tqdm

from .atomic import describe_write_error, fsync_folder, replace
from .errors import ModelError

SHARP_URL = "https://ml-site.cdn-apple.com/models/sharp/sharp_2572gikvuh.pt"
DEPTH_PRO_URL = "https://ml-site.cdn-apple.com/models/depth-pro/depth_pro.pt"
_CHUNK = 1 << 20

Progress = Callable[[str, float], None]
"""Called with (what, fraction in [0, 1]) while models download."""


def checkpoint_dir(cache_dir: Path | None = None) -> Path:
    """Torch hub's checkpoint folder by default, so weights SHARP's own CLI fetched are reused."""
    return Path(cache_dir) if cache_dir else Path(torch.hub.get_dir()) / "checkpoints"


def cached_checkpoint(url: str, cache_dir: Path | None = None) -> Path:
    return checkpoint_dir(cache_dir) / url.rsplit("/", 1)[-1]


def fetch_checkpoint(url: str, cache_dir: Path | None = None,
                     progress: Progress | None = None) -> Path:
    """Return the cached file for `url`, downloading it first if needed."""
    target = cached_checkpoint(url, cache_dir)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not target.is_file():
            _download(url, target, progress)
    return target


def _download(url: str, target: Path, progress: Progress | None) -> None:
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as exc:
        if exc.code != 416:
            raise ModelError(f"download of {url} failed: HTTP {exc.code}") from exc
        part.unlink(missing_ok=True)
        return _download(url, target, progress)
    except (urllib.error.URLError, OSError) as exc:
        raise ModelError(f"cannot download {url} ({exc}); check the internet connection, or "
                         f"download it by hand and point the config at the file") from exc
    with response:
        resumed = response.status == 206
        if not resumed:
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length else None
        with open(part, "ab" if resumed else "wb") as out, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
            desc=f"Downloading {target.name}",
        ) as bar:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                have += len(chunk)
                bar.update(len(chunk))
                if progress and total:
                    progress(target.name, have / total)
            out.flush()
            os.fsync(out.fileno())
    if total is not None and part.stat().st_size != total:
        raise ModelError(f"download of {url} stopped at {part.stat().st_size} of {total} bytes; "
                         "run again to resume")
    try:
        replace(part, target)
    except OSError as exc:
        raise ModelError(f"{target}: the finished download cannot be moved into place "
                         f"({describe_write_error(exc, target, replacing=True)})") from exc
    fsync_folder(target.parent)
    return None


def load_state_dict(path: Path) -> dict[str, Any]:
    """`torch.load` with `weights_only=True`; a damaged file gets a message saying what to do."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"checkpoint {path} could not be read ({exc}); delete it and let "
                         "sharp-watch download it again") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"checkpoint {path} holds {type(state).__name__}, not a state dict")
    return state


HUB_PATTERNS = ["*.json", "*.safetensors"]
"""What a transformers depth model needs from its hub repository (no other formats)."""


def local_hub_snapshot(repo_id: str, cache_dir: Path | None = None) -> Path | None:
    """The downloaded snapshot folder of a hub model, or None; never downloads."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=True,
                                      allow_patterns=HUB_PATTERNS))
    except (LocalEntryNotFoundError, ValueError, OSError):
        return None


def weights_fingerprint(path: Path) -> str | None:
    """Where a checkpoint file or model folder is, and the size and time of its files, so a
    replaced checkpoint reads as different; None if it is not there."""
    path = Path(path).expanduser()
    try:
        files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
        stats = [(p.name, p.stat()) for p in files]
    except OSError:
        return None
    if not stats:
        return None
    return ";".join([str(path.resolve()),
                     *(f"{name}:{st.st_size}:{st.st_mtime_ns}" for name, st in stats)])

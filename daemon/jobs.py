"""What a job is: a photo's content plus the settings it runs with, as one stable key.

The key hashes content, not names, so a renamed or copied photo that was already done
is recognised and skipped, while new content or a changed sidecar (or a changed `.npy`
it points at) is new work.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import DepthSettings, InputError
from pipeline.image import open_regular_file
from pipeline.schema import schema

from .results import Origin, list_results

_CHUNK = 1 << 20
_LATER_KEYS: dict[str, Any] = {key.name: DepthSettings().as_dict()[key.name]
                               for key in schema(DepthSettings) if key.spec.later}
"""Settings added after the first release (declared `later`), with the value every older
job had: their default."""


def file_sha256(path: Path, within: Path | None = None) -> str:
    """Hex SHA-256 of a file's content, read in chunks.

    Opened like every input (`open_regular_file`): a FIFO cannot hang the caller, and with
    `within` a link leading out of that folder is refused (`InputError`) before one byte
    of what it points at is read.
    """
    digest = hashlib.sha256()
    with open_regular_file(path, within) as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def depth_file(settings: DepthSettings, photo: Path) -> Path | None:
    """The `.npy` this photo would read: the file itself, or `<stem>.npy` in a folder."""
    if "npy" not in settings.sources or settings.external_depth is None:
        return None
    external = Path(settings.external_depth)
    if external.is_dir():
        candidate = external / f"{photo.stem}.npy"
        return candidate if candidate.is_file() else None
    return external


def settings_to_json(settings: DepthSettings) -> str:
    return json.dumps(settings.as_dict(), sort_keys=True)


def settings_from_json(text: str) -> DepthSettings:
    data: dict[str, Any] = json.loads(text)
    if data.get("external_depth"):
        data["external_depth"] = Path(data["external_depth"])
    return DepthSettings(**data)


def job_key(photo_hash: str, settings: DepthSettings, depth_hash: str | None) -> str:
    """SHA-256 over content hash, canonical settings and the depth map's content hash.

    The depth map's path is replaced by its content hash, so moving a photo with its
    `.npy` keeps the key while editing the `.npy` changes it. Keys added later are left
    out at their defaults (an empty `compare`, `formats` of only the PLY), so photos done
    before those keys existed keep their keys (and are not redone).
    """
    canonical = settings.as_dict()
    canonical["external_depth"] = depth_hash
    for key, default in _LATER_KEYS.items():
        if canonical[key] == default:
            del canonical[key]
    blob = json.dumps({"photo": photo_hash, "settings": canonical}, sort_keys=True,
                      separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def failure_key(photo_hash: str, reason: str) -> str:
    """A key for a photo that failed before it had settings (a bad sidecar, say)."""
    return hashlib.sha256(f"{photo_hash}\0failed\0{reason}".encode()).hexdigest()


def origin_of(photo: Path, settings: DepthSettings) -> Origin:
    """`photo`'s content hash and job key with `settings`, as the daemon computes them, for
    a result made outside it (`sharp-watch predict`, `compare`): its report reads the same,
    and a rebuilt journal knows the photo is done. An unreadable photo or depth map is an
    `InputError` naming that file."""
    photo = photo.absolute()
    try:
        photo_hash = file_sha256(photo)
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror or exc})", photo) from exc
    npy = depth_file(settings, photo)
    depth_hash = None
    if npy is not None:
        try:
            depth_hash = file_sha256(npy)
        except FileNotFoundError as exc:
            raise InputError("external depth file not found", npy) from exc
        except OSError as exc:
            raise InputError(f"external depth file cannot be read ({exc.strerror or exc})",
                             npy) from exc
    return Origin(photo, photo_hash, job_key(photo_hash, settings, depth_hash), settings)


@dataclass(frozen=True)
class Job:
    """One row of the journal, as the worker sees it."""

    key: str
    photo: Path
    photo_hash: str
    settings: DepthSettings
    state: str
    attempts: int
    seq: int
    outputs: tuple[str, ...] = ()
    crashes: int = 0
    interruptions: int = 0

    @property
    def suspect(self) -> bool:
        """Running when the process ended: it runs alone, after the other photos."""
        return self.crashes > 0 or self.interruptions > 0


@dataclass(frozen=True)
class Finished:
    """A result found in the outputs folder: what its report says it was made from."""

    key: str
    photo: Path
    photo_hash: str
    settings_json: str
    outputs: tuple[str, ...]


def finished_results(folder: Path) -> list[Finished]:
    """The results whose report and PLY are both in `folder` (to rebuild a lost journal).

    A report that cannot be read (`daemon.results.read_report`), or whose key or settings
    are not a job's, is skipped.
    """
    found = []
    for result in list_results(folder):
        report = result.report
        if report is None or len(report.job) != 64:
            continue
        try:
            settings = settings_to_json(settings_from_json(json.dumps(report.settings)))
        except (ValueError, KeyError, TypeError):
            continue
        found.append(Finished(report.job, report.photo, report.photo_hash, settings,
                              tuple(str(folder / name) for name in report.files)))
    return found

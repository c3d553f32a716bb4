"""From "this path may be ready" to a job in the journal, in one place and one thread.

Noted paths wait in the `Settler` until complete. A ready photo is hashed, its sidecar
read, and its job submitted; a ready sidecar or `.npy` resubmits the photos that use
it. A photo whose sidecar is still settling waits for it, so a photo and sidecar
dropped together run once, with the sidecar. This thread also recreates a deleted
inputs folder and restarts the watcher on it.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from loguru import logger

from pipeline import SUPPORTED_EXTENSIONS

from .config import Config
from .jobs import depth_file, failure_key, file_sha256, job_key, settings_to_json
from .journal import Journal
from .readiness import Settler, file_signature
from .sidecar import SIDECAR_SUFFIX, SidecarError, read_sidecar, sidecar_path
from .watcher import DEPTH_SUFFIX, FolderWatcher, is_photo, scan

POLL_SECONDS = 0.05
CHECK_FOLDERS_SECONDS = 1.0


class Intake:
    """Owns the watcher and the settler; submits jobs to the journal."""

    def __init__(self, config: Config, journal: Journal, wake: Callable[[], None],
                 failed: Callable[[Path, str, str], None],
                 stuck: Callable[[Path, float], None]) -> None:
        self.config = config
        self.inputs = config.inputs
        self.journal = journal
        self.wake = wake
        self.failed = failed
        self.stuck = stuck
        self.settler = Settler(config.daemon.stable_seconds, config.daemon.settle_report_seconds)
        self.watcher = FolderWatcher(self.inputs, config.folders.recursive, self.note)
        self.busy = False
        self._catchup: set[Path] = set()
        self._dirs: list[Path] = []
        self._depth_users: dict[Path, set[Path]] = defaultdict(set)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sharp-intake", daemon=True)

    def start(self) -> None:
        self.inputs.mkdir(parents=True, exist_ok=True)
        self.watcher.start()
        self.catch_up()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.watcher.stop()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def note(self, path: Path, catchup: bool = False) -> None:
        """Called from watchdog's thread: remember the path, decide nothing."""
        with self._lock:
            if catchup:
                self._catchup.add(path)
            else:
                self._catchup.discard(path)
        if self.config.folders.recursive and path.is_dir():
            with self._lock:
                self._dirs.append(path)
            return
        if path.suffix.lower() == SIDECAR_SUFFIX and not path.exists():
            for photo in self._photos_with_stem(path):  # a deleted sidecar: back to defaults
                self.settler.note(photo)
            return
        self.settler.note(path)

    def catch_up(self) -> None:
        """Note every file already in the inputs folder; done results are skipped by key."""
        for path in scan(self.inputs, self.config.folders.recursive):
            self.note(path, catchup=True)

    @property
    def idle(self) -> bool:
        with self._lock:
            dirs = bool(self._dirs)
        return not self.busy and not dirs and len(self.settler) == 0

    def _loop(self) -> None:
        last_check = time.monotonic()
        while not self._stop.wait(POLL_SECONDS):
            try:
                self.busy = True
                if time.monotonic() - last_check >= CHECK_FOLDERS_SECONDS:
                    last_check = time.monotonic()
                    self._check_folder()
                self._step()
            except Exception:
                logger.exception("intake error; carrying on")
            finally:
                self.busy = False

    def _check_folder(self) -> None:
        if self.inputs.is_dir() and self.watcher.alive:
            return
        logger.warning("inputs folder {} was deleted or replaced; watching it again",
                       self.inputs)
        self.inputs.mkdir(parents=True, exist_ok=True)
        self.watcher.start()
        self.catch_up()

    def _step(self) -> None:
        with self._lock:
            dirs, self._dirs = self._dirs, []
        for folder in dirs:
            for path in scan(folder, True):
                self.note(path)
        ready, stuck = self.settler.poll()
        for path, seconds in stuck:
            self.stuck(path, seconds)
        photos: dict[Path, bool] = {}
        for path in ready:
            with self._lock:
                event_driven = path not in self._catchup
                self._catchup.discard(path)
            for photo in self._photos_for(path):
                photos[photo] = photos.get(photo, False) or event_driven
        for photo, event_driven in sorted(photos.items()):
            if not self.settler.pending(photo):
                self.submit(photo, event_driven)

    def _photos_for(self, path: Path) -> set[Path]:
        """The photos whose result depends on a file that just became ready."""
        suffix = path.suffix.lower()
        if suffix == SIDECAR_SUFFIX:
            return self._photos_with_stem(path)
        if suffix == DEPTH_SUFFIX:
            return self._photos_with_stem(path) | self._depth_users.get(path.resolve(), set())
        if is_photo(path) and not self.settler.pending(sidecar_path(path)):
            return {path}  # with a sidecar still settling, the sidecar submits the photo
        return set()

    def _photos_with_stem(self, path: Path) -> set[Path]:
        return {path.with_suffix(ext) for ext in _extensions_in(path.parent, path.stem)
                if is_photo(path.with_suffix(ext))}

    def content_hash(self, path: Path) -> str | None:
        """SHA-256 of the file, reusing the journal's copy while size and mtime match."""
        signature = file_signature(path)
        if signature is None:
            return None
        cached = self.journal.cached_hash(path, *signature)
        if cached is not None:
            return cached
        try:
            digest = file_sha256(path)
        except OSError:
            return None
        if file_signature(path) == signature:
            self.journal.store_hash(path, *signature, digest)
        return digest

    def submit(self, photo: Path, event_driven: bool) -> str | None:
        """Queue `photo` with its current settings; returns the journal's verdict."""
        photo_hash = self.content_hash(photo)
        if photo_hash is None:
            return None
        try:
            return self._submit(photo, photo_hash, event_driven)
        except SidecarError as exc:
            message = str(exc)
        except Exception as exc:
            logger.exception("could not queue {}", photo)
            message = f"{photo}: could not be queued ({exc!r})"
        key = failure_key(photo_hash, message)
        if self.journal.record_failure(key, photo, photo_hash, message) or event_driven:
            self.failed(photo, key, message)
        return "failed"

    def _submit(self, photo: Path, photo_hash: str, event_driven: bool) -> str:
        settings, _ = read_sidecar(photo, self.config.defaults, self.inputs)
        depth = depth_file(settings, photo)
        depth_hash = None
        if depth is not None:
            resolved = depth.resolve()
            from_sidecar = settings.external_depth != self.config.defaults.external_depth
            if from_sidecar and not resolved.is_relative_to(self.inputs.resolve()):
                raise SidecarError(f"depth map {depth} points outside the inputs folder",
                                   sidecar_path(photo))
            self._depth_users[resolved].add(photo)
            depth_hash = self.content_hash(depth)
        key = job_key(photo_hash, settings, depth_hash)
        verdict = self.journal.submit(key, photo, photo_hash, settings_to_json(settings),
                                      event_driven)
        if verdict == "queued":
            logger.debug("queued {}", photo)
            self.wake()
        return verdict


def _extensions_in(folder: Path, stem: str) -> list[str]:
    """The photo extensions (any case) present for `stem` in `folder`."""
    try:
        names = [p.name for p in folder.iterdir() if p.stem == stem]
    except OSError:
        return []
    return [Path(n).suffix for n in names if Path(n).suffix.lower() in SUPPORTED_EXTENSIONS]

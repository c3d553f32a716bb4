"""From "this path may be ready" to a job in the journal, in one place and one thread.

Noted paths wait in the `Settler` until complete. A ready photo is hashed, its sidecar
read, and its job submitted; a ready sidecar or `.npy` resubmits the photos that use
it. A photo whose sidecar is still settling waits for it, so a photo and sidecar
dropped together run once, with the sidecar. This thread also recreates a deleted
inputs folder and restarts the watcher on it, rescans the folder every
`rescan_seconds` for files whose events were lost (every `BURST_RESCAN_SECONDS` during a
burst of events, when watchers lose them, and after it until a rescan finds nothing new:
a copy goes on after the events stop), and re-queues retryable failures whose
backoff has passed.

A big drop is queued quickly: the photos ready at one step go to the journal many to a
transaction (`Journal.batch`), and one listing of a folder's sidecar names serves all of
its photos. A kill before a batch is committed loses nothing: the start-up scan finds
every photo again.

One photo never holds up the others: each is queued on its own (a name that is not
valid Unicode, a bug, fails only that photo), a file too large to be a photo within
`max_pixels` is refused before it is read, and a large one is hashed on a thread of its
own while smaller photos go ahead.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path

from loguru import logger
from PIL import Image

from pipeline import DepthSettings, InputError
from pipeline.image import open_regular_file

from .config import Config, inside
from .jobs import Job, depth_file, failure_key, file_sha256, job_key, settings_to_json
from .journal import Journal
from .readiness import Settler, Signature, file_signature
from .sidecar import SIDECAR_SUFFIX, SidecarError, depth_root, photo_settings, sidecar_path
from .status import Backoff, Problems, describe
from .watcher import DEPTH_SUFFIX, FolderWatcher, Listing, is_photo, scan

POLL_SECONDS = 0.05
CHECK_FOLDERS_SECONDS = 1.0
BACKGROUND_HASH_BYTES = 64 * 2**20  # larger files are hashed on their own thread
MAX_BYTES_PER_PIXEL = 8  # 16-bit RGBA stored uncompressed: the most a photo needs per pixel
HEADROOM_BYTES = 64 * 2**20  # metadata, embedded previews, colour profiles
BATCH_SECONDS = 0.25  # the longest one journal transaction of a big drop stays open
LISTING_SECONDS = 1.0  # a folder's sidecar names are listed again after this long
BURST_EVENTS = 1000  # about what Windows' 64 KiB change buffer holds before it overflows
BURST_RESCAN_SECONDS = 2.0  # during and after a burst, the folder is rescanned this often


class Intake:
    """Owns the watcher and the settler; submits jobs to the journal."""

    def __init__(self, config: Config, journal: Journal, wake: Callable[[], None],
                 failed: Callable[[Path, str, str], None],
                 stuck: Callable[[Path, float], None], problems: Problems | None = None,
                 renewed: Callable[[], None] = lambda: None) -> None:
        self.config = config
        self.renewed = renewed
        """Called after the inputs folder was made again and is watched anew (the daemon
        takes its folder lock in the new folder)."""
        self.inputs = config.inputs
        self.journal = journal
        self.wake = wake
        self.failed = failed
        self.stuck = stuck
        self.problems = problems or journal.problems
        self.settler = Settler(config.daemon.stable_seconds, config.daemon.settle_report_seconds)
        self.watcher = FolderWatcher(self.inputs, config.folders.recursive, self.note)
        self.busy = False
        # Our outputs folder is never read, even if a link or junction leads into it from a
        # watched sub-folder (unless the inputs themselves live inside it, which is fine).
        recursive = config.folders.recursive
        self._own = (config.outputs if recursive and not inside(config.inputs, config.outputs)
                     else None)
        self._catchup: set[Path] = set()
        self._dirs: list[Path] = []
        self._depth_users: dict[Path, set[Path]] = defaultdict(set)
        self._touched: dict[Path, int] = {}  # file events per path since its hash was stored
        self._seen: Listing = {}  # the last listing: a rescan notes only what differs from it
        self._rushed: set[Path] = set()  # photos to queue now, without waiting to settle
        self._sidecars: dict[Path, tuple[float, frozenset[str]]] = {}  # folder: when, names
        self._reports: list[tuple[Path, str, str]] | None = None  # failures awaiting a commit
        self._events = 0  # file events since the last rescan
        self._hashing: dict[Path, tuple[Future[str], Signature, int, bool]] = {}
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="sharp-hash")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sharp-intake", daemon=True)

    def start(self) -> None:
        self.inputs.mkdir(parents=True, exist_ok=True)
        self.watcher.start()
        self.rescan(catchup=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.watcher.stop()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._hasher.shutdown(wait=False, cancel_futures=True)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def note(self, path: Path, catchup: bool = False) -> None:
        """Called from watchdog's thread: remember the path, decide nothing."""
        if self._skip(path):
            return
        with self._lock:
            if catchup:
                self._catchup.add(path)
            else:
                self._catchup.discard(path)
                self._touched[path] = self._touched.get(path, 0) + 1
                self._events += 1
            if path.suffix.lower() == SIDECAR_SUFFIX:
                self._sidecars.pop(path.parent, None)
        if self.config.folders.recursive and path.is_dir():
            with self._lock:
                self._dirs.append(path)
            return
        if path.suffix.lower() == SIDECAR_SUFFIX and not path.exists():
            for photo in self._photos_with_stem(path):  # a deleted sidecar: back to defaults
                self.settler.note(photo)
            return
        self.settler.note(path)

    def rush(self, photo: Path) -> None:
        """Queue `photo` at the next step without the settle wait (any thread).

        For a sidecar written in one atomic rename by the viewer's Apply: it is complete
        when it appears, so waiting `stable_seconds` for it only delays the result. Its own
        file event still settles as usual and then finds the job queued or done.
        """
        with self._lock:
            self._rushed.add(photo)

    def rescan(self, catchup: bool = False) -> int:
        """Note the files that are new or changed since the last listing, and vanished
        sidecars; returns how many were noted.

        With `catchup` (at start, and when the folder comes back) every file is noted as
        a catch-up; done results are skipped by key and the hashes come from the journal.
        """
        listing = scan(self.inputs, self.config.folders.recursive, self._skip)
        if listing is None:
            return 0  # folder gone or offline: keep the last listing for when it is back
        previous, self._seen = self._seen, listing
        noted = 0
        for name, signature in listing.items():
            if catchup or (previous.get(name) != signature
                           and not self.settler.pending(Path(name))):
                self.note(Path(name), catchup=catchup)
                noted += 1
        for name in previous.keys() - listing.keys():
            if name.lower().endswith(SIDECAR_SUFFIX):
                self.note(Path(name))
                noted += 1
        return noted

    @property
    def idle(self) -> bool:
        with self._lock:
            dirs = bool(self._dirs)
        return not self.busy and not dirs and len(self.settler) == 0 and not self._hashing

    def _skip(self, path: Path) -> bool:
        return self._own is not None and inside(path, self._own)

    def _loop(self) -> None:
        backoff, folder_backoff = Backoff(), Backoff()
        next_check = next_scan = time.monotonic()
        bursting = False  # a burst's rescans go on until one finds nothing new
        while not self._stop.wait(POLL_SECONDS):
            self.busy = True
            try:
                if time.monotonic() >= next_check:
                    wait = self.problems.guarded("watcher", self._check_folder, folder_backoff)
                    next_check = time.monotonic() + (wait or CHECK_FOLDERS_SECONDS)
                    self._retry_failed()
                if self._events >= BURST_EVENTS:  # the watcher may be losing events
                    bursting = True
                    next_scan = min(next_scan, time.monotonic() + BURST_RESCAN_SECONDS)
                if time.monotonic() >= next_scan:
                    self._events = 0
                    with self.problems.busy("intake", f"listing {self.inputs}"):
                        found = self.rescan()
                    bursting = bursting and found > 0
                    next_scan = time.monotonic() + (
                        BURST_RESCAN_SECONDS if bursting else self.config.daemon.rescan_seconds)
                self._step()
            except Exception as exc:
                # A journal batch that failed is the same trouble `Journal` reports (and
                # clears) for this thread's other calls: one problem line, not two.
                topic = "journal" if isinstance(exc, sqlite3.Error) else ""
                self.problems.report("intake", describe(exc), exc, topic=topic)
                self._stop.wait(backoff.next())
            else:
                backoff.reset()
                self.problems.clear("intake")
            finally:
                self.busy = False

    def _check_folder(self) -> None:
        """Watch the inputs folder again if it was deleted, replaced or the watch died."""
        if self.inputs.is_dir() and self.watcher.alive:
            if self.watcher.take_trouble():
                logger.warning("watcher lost events in {}; rescanning it", self.inputs)
                self.rescan()
            return
        if self.inputs.exists() and not self.inputs.is_dir():
            raise NotADirectoryError(0, "the inputs folder was replaced by a file; waiting for "
                                        "it to be a folder again", str(self.inputs))
        if self.inputs.is_dir():
            logger.warning("watcher on {} stopped; watching it again", self.inputs)
        else:
            logger.warning("inputs folder {} was deleted; creating it again", self.inputs)
            self.inputs.mkdir(parents=True, exist_ok=True)
        self.watcher.start()
        self.renewed()
        self.rescan(catchup=True)

    def _retry_failed(self) -> None:
        count = self.journal.requeue_retryable()
        if count:
            logger.info("retrying {} photo(s) that failed for a reason that may have passed",
                        count)
            self.wake()

    def _step(self) -> None:
        with self._lock:
            dirs, self._dirs = self._dirs, []
        for folder in dirs:
            for name in scan(folder, True, self._skip) or {}:
                self.note(Path(name))
        ready, stuck = self.settler.poll()
        for path, seconds in stuck:
            self.stuck(path, seconds)
        photos: dict[Path, bool] = {}
        sizes: dict[Path, int] = {}
        for path in ready:
            with self._lock:
                event_driven = path not in self._catchup
                self._catchup.discard(path)
            signature = file_signature(path)
            if signature is not None:
                self._seen[str(path)] = signature[:2]
                sizes[path] = signature[0]
            for photo in self._photos_for(path):
                photos[photo] = photos.get(photo, False) or event_driven
        self._collect_hashes()
        with self._lock:
            rushed, self._rushed = self._rushed, set()
        by_size = sorted(photos, key=lambda p: sizes[p] if p in sizes else _size(p))
        work = [(photo, photos[photo]) for photo in by_size
                if not self.settler.pending(photo) and photo not in self._hashing
                and photo not in rushed]  # small photos first: a big one never blocks
        self._submit_all(work + [(photo, True) for photo in sorted(rushed - self._hashing.keys())])

    def _submit_all(self, work: list[tuple[Path, bool]]) -> None:
        """Submit (photo, event-driven) pairs, as many as `BATCH_SECONDS` allows to one
        journal transaction: a big drop would otherwise wait on one sync to disk per photo.

        Failures are reported once their batch is committed. When the journal fails, every
        photo not yet committed is noted again, to be submitted after the backoff.
        """
        start = 0
        while start < len(work):
            end = start
            reports: list[tuple[Path, str, str]] = []
            self._reports = reports
            try:
                deadline = time.monotonic() + BATCH_SECONDS
                with self.journal.batch():
                    while end < len(work) and (end == start or time.monotonic() < deadline):
                        photo, event_driven = work[end]
                        end += 1
                        self._each(photo, partial(self.submit, photo, event_driven))
            except sqlite3.Error:
                for photo, _ in work[start:]:
                    self.settler.note(photo)
                raise
            finally:
                self._reports = None
            for report in reports:
                self.failed(*report)
            start = end

    def _each(self, photo: Path, action: Callable[[], object]) -> None:
        """Run one photo's intake; its trouble fails only that photo, never the batch."""
        with self.problems.busy("intake", str(photo)):
            try:
                action()
            except sqlite3.Error:
                self.settler.note(photo)  # the journal gave up (stopping): try it again later
                raise
            except Exception as exc:
                logger.opt(exception=exc).error("could not queue {}", photo)
                self._report(photo, "", f"{photo}: could not be queued ({describe(exc)})")

    def _report(self, photo: Path, key: str, message: str) -> None:
        """Tell the daemon a photo failed: now, or once the open batch is committed."""
        if self._reports is None:
            self.failed(photo, key, message)
        else:
            self._reports.append((photo, key, message))

    def _photos_for(self, path: Path) -> set[Path]:
        """The photos whose result depends on a file that just became ready."""
        suffix = path.suffix.lower()
        if suffix == SIDECAR_SUFFIX:
            return self._photos_with_stem(path)
        if suffix == DEPTH_SUFFIX:
            return self._photos_with_stem(path) | self._depth_users.get(path.resolve(), set())
        if is_photo(path) and not self.settler.pending(self._sidecar(path)):
            return {path}  # with a sidecar still settling, the sidecar submits the photo
        return set()

    def _sidecar(self, photo: Path) -> Path:
        """`sidecar_path(photo)`, listing the folder only where a sidecar may exist."""
        return sidecar_path(photo) if self._may_have_sidecar(photo) else photo.with_suffix(
            SIDECAR_SUFFIX)

    def _may_have_sidecar(self, photo: Path) -> bool:
        """Whether the folder's last listing of sidecar names holds one for `photo`.

        One listing serves a whole drop (`sidecar_path` lists the folder for each photo:
        10,000 photos, 10,000 listings of 10,000 names). It is listed again after a sidecar
        event or `LISTING_SECONDS`; a sidecar new since then has its own event on the way,
        and that event submits the photo again.
        """
        folder, now = photo.parent, time.monotonic()
        with self._lock:
            listed = self._sidecars.get(folder)
        if listed is None or now - listed[0] > LISTING_SECONDS:
            try:
                with os.scandir(folder) as entries:
                    names = frozenset(e.name.casefold() for e in entries
                                      if e.name.lower().endswith(SIDECAR_SUFFIX))
            except OSError:
                return True  # the full lookup reports the trouble
            listed = (now, names)
            with self._lock:
                self._sidecars[folder] = listed
        return (photo.stem + SIDECAR_SUFFIX).casefold() in listed[1]

    def _photos_with_stem(self, path: Path) -> set[Path]:
        return {photo for photo in _same_stem(path.parent, path.stem) if is_photo(photo)}

    def content_hash(self, path: Path, within: Path | None) -> str | None:
        """SHA-256 of the file. The journal's copy is reused only while the file's signature
        is unchanged and no file event came for it since (new content can keep the old size
        and time); None if the file is gone. `InputError` if it is a link out of `within`
        or not a regular file."""
        signature = file_signature(path)
        if signature is None:
            return None
        with self._lock:
            touched = self._touched.get(path, 0)
        if not touched:
            cached = self.journal.cached_hash(path, signature)
            if cached is not None:
                return cached
        try:
            digest = file_sha256(path, within)
        except OSError:
            return None
        self._remember(path, signature, touched, digest)
        return digest

    def _remember(self, path: Path, signature: Signature, touched: int, digest: str) -> None:
        if file_signature(path) != signature:
            return
        self.journal.store_hash(path, signature, digest)
        with self._lock:
            if self._touched.get(path, 0) == touched:
                self._touched.pop(path, None)

    def submit(self, photo: Path, event_driven: bool) -> str | None:
        """Queue `photo` with its current settings; returns the journal's verdict
        (`hashing` while a large photo is hashed in the background)."""
        signature = file_signature(photo)
        if signature is None:
            return None
        refusal = oversized(photo, signature[0], self.config.daemon.max_pixels)
        if refusal is not None:
            return self._fail(photo, _identity(photo, signature), f"{photo}: {refusal}",
                              event_driven)
        with self._lock:
            touched = self._touched.get(photo, 0)
        if signature[0] > BACKGROUND_HASH_BYTES and (
                touched or self.journal.cached_hash(photo, signature) is None):
            logger.info("{}: {:.0f} MB; hashing it while smaller photos go ahead", photo,
                        signature[0] / 2**20)
            self._hashing[photo] = (self._hasher.submit(file_sha256, photo, self.inputs),
                                    signature, touched, event_driven)
            return "hashing"
        try:
            photo_hash = self.content_hash(photo, self.inputs)
        except InputError as exc:
            return self._fail(photo, _identity(photo, signature), str(exc), event_driven)
        if photo_hash is None:
            return None
        return self._queue(photo, photo_hash, event_driven)

    def _collect_hashes(self) -> None:
        """Queue the large photos whose background hash has finished."""
        for photo, (future, signature, touched, event_driven) in list(self._hashing.items()):
            if not future.done():
                continue
            del self._hashing[photo]
            try:
                digest = future.result()
            except OSError:
                continue  # vanished or unreadable; its next event or the rescan brings it back
            except InputError as exc:
                self._fail(photo, _identity(photo, signature), str(exc), event_driven)
                continue
            if file_signature(photo) != signature:
                self.settler.note(photo)  # changed while hashed: settle and hash it again
                continue
            self._each(photo, partial(self._queue_hashed, photo, signature, touched, digest,
                                      event_driven))

    def _queue_hashed(self, photo: Path, signature: Signature, touched: int, digest: str,
                      event_driven: bool) -> str:
        self._remember(photo, signature, touched, digest)
        return self._queue(photo, digest, event_driven)

    def _queue(self, photo: Path, photo_hash: str, event_driven: bool) -> str:
        try:
            settings, depth, depth_hash = self._settings(photo)
        except InputError as exc:  # the sidecar, or the depth map it names
            return self._fail(photo, photo_hash, str(exc), event_driven)
        if depth is not None:
            self._depth_users[depth.resolve()].add(photo)
        key = job_key(photo_hash, settings, depth_hash)
        verdict = self.journal.submit(key, photo, photo_hash, settings_to_json(settings),
                                      event_driven)
        if verdict == "queued":
            logger.debug("queued {}", photo)
            self.wake()
        return verdict

    def _fail(self, photo: Path, photo_hash: str, message: str, event_driven: bool) -> str:
        key = failure_key(photo_hash, message)
        if self.journal.record_failure(key, photo, photo_hash, message) or event_driven:
            self._report(photo, key, message)
        return "failed"

    def _settings(self, photo: Path) -> tuple[DepthSettings, Path | None, str | None]:
        """The photo's settings, its depth map and that map's content hash."""
        settings = self.config.defaults
        if self._may_have_sidecar(photo):
            settings = photo_settings(photo, self.config.defaults, self.inputs)
        depth = depth_file(settings, photo)
        if depth is None:
            return settings, None, None
        from_sidecar = settings.external_depth != self.config.defaults.external_depth
        if from_sidecar and not depth.resolve().is_relative_to(self.inputs.resolve()):
            raise SidecarError(f"depth map {depth} points outside the inputs folder",
                               sidecar_path(photo))
        return settings, depth, self.content_hash(depth, depth_root(settings.external_depth,
                                                                    self.inputs))

    def surviving_copy(self, job: Job) -> Path | None:
        """Another photo in the inputs with the job's content and settings (a copy, or the
        name the photo was renamed to), for a job whose own file vanished or changed."""
        for candidate in self.journal.paths_with_hash(job.photo_hash):
            if (candidate == job.photo or not is_photo(candidate) or self._skip(candidate)
                    or not inside(candidate, self.inputs)):
                continue
            try:
                if self.content_hash(candidate, self.inputs) != job.photo_hash:
                    continue
                settings, _, depth_hash = self._settings(candidate)
            except (InputError, OSError):
                continue
            if job_key(job.photo_hash, settings, depth_hash) == job.key:
                return candidate
        return None


def _identity(photo: Path, signature: Signature) -> str:
    """A journal key for a refusal decided before the content could be hashed."""
    return hashlib.sha256(repr((str(photo), signature)).encode(
        "utf-8", "surrogatepass")).hexdigest()


def oversized(path: Path, size: int, max_pixels: int) -> str | None:
    """Why `path` cannot be a photo within `max_pixels`, judged before reading it all.

    The byte size is checked first (nothing a photo that size could need), then, for a
    file too large to hash in passing, the pixel count its header declares (Pillow reads
    only the header). Anything the header check cannot tell is left to the decoder.
    """
    cap = max_pixels * MAX_BYTES_PER_PIXEL + HEADROOM_BYTES
    if size > cap:
        return (f"file is {size / 2**30:.1f} GiB, more than any photo within max_pixels "
                f"({max_pixels:,} pixels) can be ({cap / 2**30:.1f} GiB); not read")
    if size <= BACKGROUND_HASH_BYTES or not is_photo(path):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with open_regular_file(path) as raw, Image.open(raw) as image:
                width, height = image.size
    except Image.DecompressionBombError as exc:
        return f"image declares too many pixels ({exc}); not read"
    except Exception:  # not readable as an image: the decoder reports it properly
        return None
    if width * height > max_pixels:
        return (f"image is {width}x{height} = {width * height / 1e6:.0f} MP, over the limit "
                f"of {max_pixels / 1e6:.0f} MP (max_pixels); not read")
    return None


def _size(path: Path) -> int:
    signature = file_signature(path)
    return signature[0] if signature is not None else 0


def _same_stem(folder: Path, stem: str) -> list[Path]:
    """The files in `folder` whose stem is `stem` in any letter case, as sidecars match."""
    key = stem.casefold()
    try:
        return [p for p in folder.iterdir() if p.stem.casefold() == key]
    except OSError:
        return []

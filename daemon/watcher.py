"""Folder events in, "this path may be ready" out; nothing heavy happens on watchdog's thread.

The handler filters names (hidden, temporary, partial downloads, unsupported types) and
hands every remaining path to a callback. Readiness, hashing and job creation happen
elsewhere, in one place.

Events can be lost without an error (a burst overflowing Windows' ReadDirectoryChangesW
buffer or Linux's inotify queue; network drives and OneDrive deliver few), so the
intake also rescans: `scan` lists the folder once and returns (size, mtime) per file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from loguru import logger
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from pipeline import SUPPORTED_EXTENSIONS

from .sidecar import SIDECAR_SUFFIX

PARTIAL_SUFFIXES = frozenset({".part", ".crdownload", ".tmp", ".partial", ".download"})
DEPTH_SUFFIX = ".npy"
WATCHED_SUFFIXES = frozenset({*SUPPORTED_EXTENSIONS, SIDECAR_SUFFIX, DEPTH_SUFFIX})


def ignored_name(name: str) -> bool:
    """Hidden, temporary or partial-download names that must never be read."""
    lower = name.lower()
    return (lower.startswith((".", "~$", "~"))
            or any(lower.endswith(s) for s in PARTIAL_SUFFIXES)
            or lower.endswith("~"))


def is_photo(path: Path) -> bool:
    return not ignored_name(path.name) and path.suffix.lower() in SUPPORTED_EXTENSIONS


def is_watched(path: Path) -> bool:
    """Photos, sidecars and depth maps: anything whose change can change a result."""
    return watched_name(path.name)


def watched_name(name: str) -> bool:
    return not ignored_name(name) and os.path.splitext(name)[1].lower() in WATCHED_SUFFIXES


def _in_hidden_folder(path: Path, root: Path) -> bool:
    try:
        parts = path.relative_to(root).parts[:-1]
    except ValueError:
        return True
    return any(ignored_name(p) for p in parts)


Listing = dict[str, tuple[int, int]]  # path as text (cheaper than Path for 10,000 files)


def scan(root: Path, recursive: bool,
         skip: Callable[[Path], bool] = lambda _: False) -> Listing | None:
    """Every watched file under `root` with its (size, mtime in ns): one listing per folder.

    Hidden folders, folders for which `skip` is true (our own outputs folder inside the
    inputs), links to folders and folders already listed (a Windows junction or a bind
    mount leading back up) are not entered. None when `root` itself cannot be listed
    (gone, replaced by a file, offline), so a caller can keep what it saw last.
    """
    found: Listing = {}
    try:
        _scan_into(root, recursive, skip, found, set())
    except OSError:
        return None
    return found


def _scan_into(folder: Path, recursive: bool, skip: Callable[[Path], bool],
               found: Listing, listed: set[tuple[int, int]]) -> None:
    st = os.stat(folder)
    if (st.st_dev, st.st_ino) in listed:
        return
    listed.add((st.st_dev, st.st_ino))
    with os.scandir(folder) as entries:
        for entry in entries:
            if ignored_name(entry.name):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    if recursive and not skip(Path(entry.path)):
                        _scan_into(Path(entry.path), recursive, skip, found, listed)
                    continue
                if not watched_name(entry.name) or not entry.is_file():
                    continue
                st = entry.stat()
            except OSError:
                continue  # vanished or unreadable since the listing: the next scan sees it
            found[entry.path] = (st.st_size, st.st_mtime_ns)


class _Handler(FileSystemEventHandler):
    def __init__(self, root: Path, recursive: bool, note: Callable[[Path], None]) -> None:
        self.root = root
        self.recursive = recursive
        self.note = note
        self.lost = False
        self.trouble = False

    def dispatch(self, event: FileSystemEvent) -> None:
        """Handle one event; an error is remembered (the intake rescans), never raised into
        watchdog's thread, which would end it."""
        try:
            super().dispatch(event)
        except Exception:
            if not self.trouble:
                logger.exception("watcher error on {}; the folder will be rescanned",
                                 event.src_path)
            self.trouble = True

    def _maybe(self, raw: str | bytes) -> None:
        path = Path(os.fsdecode(raw))
        if not is_watched(path) or _in_hidden_folder(path, self.root):
            return
        if not self.recursive and path.parent != self.root:
            return
        self.note(path)

    def on_created(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._maybe(event.src_path)

    def on_modified(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._maybe(event.src_path)

    def on_closed(self, event: FileSystemEvent) -> None:
        self._maybe(event.src_path)

    def on_deleted(self, event: FileSystemEvent) -> None:
        path = Path(os.fsdecode(event.src_path))
        if path == self.root:
            self.lost = True  # the watch died with the folder; a recreated folder needs a new one
        elif not event.is_directory and path.suffix.lower() == SIDECAR_SUFFIX:
            self._maybe(event.src_path)

    def on_moved(self, event: FileSystemEvent) -> None:
        if Path(os.fsdecode(event.src_path)) == self.root:
            self.lost = True
        elif event.is_directory:
            self.note(Path(os.fsdecode(event.dest_path)))
        else:
            self._maybe(event.dest_path)


def folder_identity(folder: Path) -> tuple[int, int] | None:
    """(device, inode) of `folder`, None when it is not there: which folder a name means now."""
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class FolderWatcher:
    """A watchdog observer on the inputs folder; restartable after the folder is recreated."""

    def __init__(self, root: Path, recursive: bool, note: Callable[[Path], None]) -> None:
        self.root = root
        self.recursive = recursive
        self.note = note
        self._observer: BaseObserver | None = None
        self._handler: _Handler | None = None
        self._identity: tuple[int, int] | None = None

    def start(self) -> None:
        self.stop()
        self._identity = folder_identity(self.root)
        self._handler = _Handler(self.root, self.recursive, self.note)
        observer = Observer()
        observer.schedule(self._handler, str(self.root), recursive=self.recursive)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def take_trouble(self) -> bool:
        """Whether the handler hit an error since the last call (events may be lost)."""
        handler = self._handler
        if handler is None or not handler.trouble:
            return False
        handler.trouble = False
        return True

    @property
    def alive(self) -> bool:
        """Observer running on the folder it started on (not on a deleted or moved one).

        The folder at `root` is compared with the one watched: a file held open inside a
        deleted folder (the daemon's folder lock) keeps the kernel from reporting the
        deletion until it is closed, so a folder made again under the same name would
        otherwise go unwatched."""
        return (self._observer is not None and self._observer.is_alive()
                and self._handler is not None and not self._handler.lost
                and folder_identity(self.root) == self._identity)

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            if self._observer.is_alive():
                self._observer.join(timeout=5)
            self._observer = None

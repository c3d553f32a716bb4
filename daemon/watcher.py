"""Folder events in, "this path may be ready" out; nothing heavy happens on watchdog's thread.

The handler filters names (hidden, temporary, partial downloads, unsupported types) and
hands every remaining path to a callback. Readiness, hashing and job creation happen
elsewhere, in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

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
    return not ignored_name(path.name) and path.suffix.lower() in WATCHED_SUFFIXES


def _in_hidden_folder(path: Path, root: Path) -> bool:
    try:
        parts = path.relative_to(root).parts[:-1]
    except ValueError:
        return True
    return any(ignored_name(p) for p in parts)


def scan(root: Path, recursive: bool) -> Iterator[Path]:
    """Every watched file under `root` (for the start-up catch-up and folder recreation)."""
    if not root.is_dir():
        return
    pattern = "**/*" if recursive else "*"
    for path in sorted(root.glob(pattern)):
        if is_watched(path) and not _in_hidden_folder(path, root) and path.is_file():
            yield path


class _Handler(FileSystemEventHandler):
    def __init__(self, root: Path, recursive: bool, note: Callable[[Path], None]) -> None:
        self.root = root
        self.recursive = recursive
        self.note = note
        self.lost = False

    def _maybe(self, raw: str | bytes) -> None:
        path = Path(raw.decode() if isinstance(raw, bytes) else raw)
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
        path = Path(str(event.src_path))
        if path == self.root:
            self.lost = True  # the watch died with the folder; a recreated folder needs a new one
        elif not event.is_directory and path.suffix.lower() == SIDECAR_SUFFIX:
            self._maybe(event.src_path)

    def on_moved(self, event: FileSystemEvent) -> None:
        if Path(str(event.src_path)) == self.root:
            self.lost = True
        elif event.is_directory:
            self.note(Path(str(event.dest_path)))
        else:
            self._maybe(event.dest_path)


class FolderWatcher:
    """A watchdog observer on the inputs folder; restartable after the folder is recreated."""

    def __init__(self, root: Path, recursive: bool, note: Callable[[Path], None]) -> None:
        self.root = root
        self.recursive = recursive
        self.note = note
        self._observer: BaseObserver | None = None
        self._handler: _Handler | None = None

    def start(self) -> None:
        self.stop()
        self._handler = _Handler(self.root, self.recursive, self.note)
        observer = Observer()
        observer.schedule(self._handler, str(self.root), recursive=self.recursive)
        observer.daemon = True
        observer.start()
        self._observer = observer

    @property
    def alive(self) -> bool:
        """Observer running on the folder it started on (not on a deleted or moved one)."""
        return (self._observer is not None and self._observer.is_alive()
                and self._handler is not None and not self._handler.lost)

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            if self._observer.is_alive():
                self._observer.join(timeout=5)
            self._observer = None

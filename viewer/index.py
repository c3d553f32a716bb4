"""One index of the outputs folder, shared by the gallery, `/api/result` and the Apply watcher.

Reading every report on every gallery poll cost about 4.7 ms a result (14 s a poll at
3,000 results, with the page polling every 2 s). The index reads a report once, and
afterwards only what changed:

- The folder is listed with a signature per file (size, mtime, regular or not): PLYs,
  reports, error notes and pictures (previews, contact sheets) only. For a picture only
  whether it is there matters; a report is looked at (`stat`) when it is first read, so
  the first listing of 10,000 results costs 10,000 `stat` calls fewer (on Windows the
  listing itself carries sizes and times).
- watchdog names the files that changed; only those are looked at again. Events can be
  lost (a burst overflowing inotify's queue or Windows' ReadDirectoryChangesW buffer;
  network drives deliver few), so the whole folder is listed again every
  `RESCAN_SECONDS`, and, where no watch could be started, whenever the folder's own mtime
  changes (a file created, renamed or deleted in it).
- A report is read when its result is first asked for, newest first (the order is the
  PLYs' mtimes, known from the listing), so the gallery's first page of 10,000 results
  reads about a page of reports; then again only when its signature (or its PLY's)
  changes. A report that cannot be read (a FIFO, a link out of the folder, too big, not
  ours: `daemon.results.read_report`) makes its PLY one refused entry, not an error.
- `version` counts the changes, so a page that says which version it shows can be told
  "nothing changed" without anything being read.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

from loguru import logger
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from daemon.naming import NOTE_SUFFIX
from daemon.results import PLY_SUFFIX, REPORT_SUFFIX, preview_names, read_report
from daemon.watcher import folder_identity

from .results import Failure, Result, photo_from_note, read_failure

RESCAN_SECONDS = 60.0
"""The whole folder is listed again this often, for events that were lost..."""
RESCAN_SHARE = 0.005
"""...or less often, so that listing takes at most this share of the time (a listing
costs about 20 ms per 1,000 results on a 2-core Linux machine)."""
PICTURE_SUFFIX = ".png"
"""Depth previews and contact sheets: only whether they are there matters."""
INDEXED_SUFFIXES = (PLY_SUFFIX, REPORT_SUFFIX, NOTE_SUFFIX, PICTURE_SUFFIX)
IGNORED_EVENTS = frozenset({"opened", "closed_no_write"})
"""Reading a file (the viewer's own reads included) changes nothing."""
LINUX_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent, FileDeletedEvent, FileMovedEvent, FileClosedEvent,
    DirCreatedEvent, DirDeletedEvent, DirMovedEvent]
"""What inotify is asked for: a file written whole (closed after writing), made, renamed or
deleted. Not each `write()` (IN_MODIFY): the daemon writes a 66 MB PLY in dozens of
them, and handling an event apiece took the GIL from the writer often enough that its
rows took 0.36 s to write instead of 0.19 s, which Apply waits for. Not opens and reads
either. Elsewhere (Windows, macOS) there is no "closed" event, so every event is taken
and `IGNORED_EVENTS` dropped."""
NOT_LOOKED_AT = -1


class Signature(NamedTuple):
    """What tells a file changed without reading it."""

    size: int
    mtime_ns: int
    regular: bool

    @property
    def unseen(self) -> bool:
        """A report listed but not looked at yet (`NOT_LOOKED_AT`)."""
        return self.size < 0


class Key(NamedTuple):
    """A result's place in the order (newest first = largest key first)."""

    mtime_ns: int
    name: str

    def cursor(self) -> str:
        """The page's bookmark: results after it are older."""
        return f"{self.mtime_ns}:{self.name}"

    @classmethod
    def parse(cls, cursor: str) -> Key:
        """The key `cursor()` wrote; ValueError for anything else."""
        mtime, _, name = cursor.partition(":")
        if not (mtime.isascii() and mtime.isdigit() and name):
            raise ValueError(f"not a gallery cursor: {cursor!r}")
        return cls(int(mtime), name)


@dataclass(frozen=True)
class Page:
    """Results newest first; the cursor of the last one (None when there is none), and
    whether older ones follow it."""

    results: list[Result]
    last: str | None
    more: bool


def _indexed(name: str) -> bool:
    return name.endswith(INDEXED_SUFFIXES)


def _signature(name: str, st: os.stat_result) -> Signature:
    if name.endswith(PICTURE_SUFFIX):
        return Signature(0, 0, stat.S_ISREG(st.st_mode))
    return Signature(st.st_size, st.st_mtime_ns, stat.S_ISREG(st.st_mode))


def _entry_signature(entry: os.DirEntry[str], first: bool) -> Signature:
    """As `_signature`, without a `stat` call for a picture (the listing knows its type)
    nor, in the `first` listing, for a report (looked at when first read)."""
    if entry.name.endswith(PICTURE_SUFFIX):
        return Signature(0, 0, entry.is_file())
    if first and entry.name.endswith(REPORT_SUFFIX):
        return Signature(NOT_LOOKED_AT, NOT_LOOKED_AT, entry.is_file())
    return _signature(entry.name, entry.stat())


def _folder_mtime(folder: Path) -> int | None:
    try:
        return os.stat(folder).st_mtime_ns
    except OSError:
        return None


def _set_of(result: Result) -> str | None:
    """The contact sheet a compare set's results share (None outside a set)."""
    compare = result.report.compare if result.report is not None else None
    return compare.contact_sheet if compare is not None else None


class _Events(FileSystemEventHandler):
    """watchdog's thread: remember the names of the folder's files that changed, no more."""

    def __init__(self, index: ResultIndex) -> None:
        self.index = index
        self.lost = False
        """The folder itself was deleted or moved: the watch is gone with it."""

    def dispatch(self, event: FileSystemEvent) -> None:
        if event.event_type in IGNORED_EVENTS:
            return
        root = str(self.index.outputs)
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            path = os.fsdecode(raw)
            if path == root and event.event_type in ("deleted", "moved"):
                self.lost = True
            elif os.path.dirname(path) == root and _indexed(os.path.basename(path)):
                self.index.changed(os.path.basename(path))


class ResultIndex:
    """The outputs folder's results and error notes, kept up to date (see the module's
    docstring). Thread-safe: the HTTP threads and the Apply watcher share one."""

    def __init__(self, outputs: Path, rescan_seconds: float = RESCAN_SECONDS,
                 on_change: Callable[[], object] | None = None) -> None:
        self.outputs = outputs
        self.rescan_seconds = rescan_seconds
        self.on_change = on_change
        """Called (on watchdog's thread) after a file of the folder changed: the Apply
        watcher wakes at once instead of at its next look."""
        self.version = 0
        """Counts the changes seen; a page showing this version is up to date."""
        self.refused: set[str] = set()
        """PLYs whose report is there but could not be read (named in the log once)."""
        self._lock = threading.RLock()
        self._files: dict[str, Signature] = {}
        self._changed: set[str] = set()
        self._changed_lock = threading.Lock()
        self._rescan_at = 0.0
        self._folder_mtime: int | None = None
        self._order: list[Key] | None = None
        """Results' keys, oldest first (None: to be sorted again)."""
        self._notes: list[Key] | None = None
        self._results: dict[str, tuple[tuple[Signature, Signature | None], Result | None]] = {}
        """By PLY name: what was read, and the (PLY, report) signatures it was read at."""
        self._failures: dict[str, tuple[Signature | None, Failure | None]] = {}
        self._observer: BaseObserver | None = None
        self._events: _Events | None = None
        self._watched: tuple[int, int] | None = None
        """`folder_identity` of the folder the watch was started on."""
        self._watch_wanted = False

    # keeping up to date ----------------------------------------------------------------

    def start(self) -> None:
        """Watch the folder from now on (until `close`); without a watch, changes are found
        by listing the folder whenever its mtime moves (and every `rescan_seconds`)."""
        with self._lock:
            self._watch_wanted = True
            self._start_watch()

    def close(self) -> None:
        with self._lock:
            self._watch_wanted = False
            self._stop_watch()

    def changed(self, name: str) -> None:
        """Called from watchdog's thread: `name` in the folder changed."""
        with self._changed_lock:
            self._changed.add(name)
        if self.on_change is not None:
            self.on_change()

    def refresh(self) -> int:
        """Bring the index up to date; returns the version."""
        with self._lock:
            if self._stale():
                self._list_all()
            else:
                with self._changed_lock:
                    names, self._changed = self._changed, set()
                self._look_at(names)
            return self.version

    def _watching(self) -> bool:
        """Whether the watch still reports this folder's changes: alive, not lost, and on
        the folder the name means now (inotify, asked for `LINUX_EVENTS` only, says nothing
        when the watched folder itself is moved away)."""
        return (self._observer is not None and self._observer.is_alive()
                and self._events is not None and not self._events.lost
                and folder_identity(self.outputs) == self._watched)

    def _stale(self) -> bool:
        """Whether the whole folder must be listed again."""
        if time.monotonic() >= self._rescan_at:
            return True
        return not self._watching() and _folder_mtime(self.outputs) != self._folder_mtime

    def _start_watch(self) -> None:
        self._stop_watch()
        events = _Events(self)
        observer = Observer()
        try:
            observer.schedule(events, str(self.outputs), recursive=False,
                              event_filter=LINUX_EVENTS if sys.platform == "linux" else None)
            observer.daemon = True
            observer.start()
        except OSError as exc:  # no folder yet, or no watch left (inotify's limit)
            logger.debug(f"viewer: not watching {self.outputs} ({exc}); listing it instead")
            return
        self._observer, self._events = observer, events
        self._watched = folder_identity(self.outputs)

    def _stop_watch(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer = None

    def _list_all(self) -> None:
        """List the whole folder (the watch started first, so nothing falls between)."""
        if self._watch_wanted and not self._watching():
            self._start_watch()
        started = time.monotonic()
        self._folder_mtime = _folder_mtime(self.outputs)
        with self._changed_lock:
            self._changed = set()
        listing: dict[str, Signature] = {}
        first = not self._files
        try:
            with os.scandir(self.outputs) as entries:
                for entry in entries:
                    if _indexed(entry.name):
                        try:
                            listing[entry.name] = _entry_signature(entry, first)
                        except OSError:
                            continue  # gone since the listing: the next event says so
        except OSError:
            pass  # no folder (yet, or any more): no results
        took = time.monotonic() - started
        self._rescan_at = started + took + max(self.rescan_seconds, took / RESCAN_SHARE)
        if first:  # nothing known yet, nothing read: all of it is new
            self._files, self._order, self._notes = listing, None, None
            self.version += bool(listing)
            return
        changes: dict[str, Signature | None] = {
            name: sig for name, sig in listing.items() if self._files.get(name) != sig}
        changes.update((name, None) for name in self._files if name not in listing)
        self._apply(changes)

    def _look_at(self, names: set[str]) -> None:
        """Look again at `names` only (named by an event, or asked for)."""
        changes: dict[str, Signature | None] = {}
        for name in names:
            try:
                sig: Signature | None = _signature(name, os.stat(self.outputs / name))
            except (OSError, ValueError):  # ValueError: a name no file system takes
                sig = None
            if self._files.get(name) != sig:
                changes[name] = sig
        self._apply(changes)

    def _apply(self, changes: dict[str, Signature | None]) -> None:
        """Take `changes` in; the version moves unless all of them are first looks at
        reports not read yet (nothing shown can differ)."""
        seen = False
        for name, sig in changes.items():
            old = self._files.get(name)
            seen |= not (old is not None and old.unseen and sig is not None)
            if sig is None:
                self._files.pop(name, None)
                self._results.pop(name, None)
                self._failures.pop(name, None)
                self.refused.discard(name)
            else:
                self._files[name] = sig
            if name.endswith(PLY_SUFFIX):
                self._order = None
            elif name.endswith(NOTE_SUFFIX):
                self._notes = None
        if seen:
            self.version += 1

    # reading ---------------------------------------------------------------------------

    def _sorted(self, suffix: str) -> list[Key]:
        return sorted(Key(sig.mtime_ns, name) for name, sig in self._files.items()
                      if name.endswith(suffix) and sig.regular)

    def _result(self, name: str) -> Result | None:
        """The result whose PLY is `name`, its report read now unless read already."""
        ply = self._files.get(name)
        if ply is None or not ply.regular:
            return None
        report_name = name.removesuffix(PLY_SUFFIX) + REPORT_SUFFIX
        report_sig = self._files.get(report_name)
        if report_sig is not None and report_sig.unseen:
            self._look_at({report_name})  # before reading: a change after it is seen
            report_sig = self._files.get(report_name)
        signatures = (ply, report_sig)
        read = self._results.get(name)
        if read is None or read[0] != signatures:
            # No report yet: not refused, the writer adds the report last.
            report = (read_report(self.outputs / report_name, self.outputs)
                      if signatures[1] is not None else None)
            result = (Result(self.outputs / name, report, ply.mtime_ns / 1e9)
                      if report is not None and name in report.files else None)
            if result is None and signatures[1] is not None:
                if name not in self.refused:
                    logger.info(f"viewer: {name} is not shown: its report {report_name} "
                                "cannot be read or is not a sharp-watch report")
                self.refused.add(name)
            else:
                self.refused.discard(name)
            read = self._results[name] = (signatures, result)
        return read[1]

    def _walk(self, before: Key | None = None) -> Iterator[tuple[Key, Result]]:
        """Results newest first (older than `before`, when given). The lock is taken per
        result, so reading many reports never holds up a request for long."""
        with self._lock:
            if self._order is None:
                self._order = self._sorted(PLY_SUFFIX)
            order = self._order  # replaced, never changed in place: safe to walk
        for i in range(bisect_left(order, before) if before else len(order), 0, -1):
            key = order[i - 1]
            with self._lock:
                result = self._result(key.name)
            if result is not None:
                yield key, result

    def page(self, limit: int, after: str | None = None, through: str | None = None) -> Page:
        """`limit` results newest first, after the cursor `after` (a previous page's
        `last`), and on through the cursor `through` if that is further (a page showing
        results up to there gets all of them again, however many came since). A compare
        set is never split, so a page may hold a few more."""
        end = Key.parse(through) if through else None
        found: list[Result] = []
        last: Key | None = None
        for key, result in self._walk(Key.parse(after) if after else None):
            if (len(found) >= limit and (end is None or key < end)
                    and not (_set_of(result) and _set_of(result) == _set_of(found[-1]))):
                return Page(found, last.cursor() if last else None, True)
            found.append(result)
            last = key
        return Page(found, last.cursor() if last else None, False)

    def newest(self, count: int) -> list[Result]:
        return [result for _, result in islice(self._walk(), count)]

    def find(self, name: str) -> Result | None:
        """The result called `name`; only a plain PLY name is accepted. Its files are
        looked at now, so a result just written is found before its event arrives."""
        if (not name or "\x00" in name or Path(name).name != name
                or not name.endswith(PLY_SUFFIX)):
            return None
        with self._lock:
            self._look_at({name, name.removesuffix(PLY_SUFFIX) + REPORT_SUFFIX})
            return self._result(name)

    def latest_for(self, photo: Path, settings: dict[str, Any]) -> Result | None:
        """The newest result of `photo` made with exactly `settings`."""
        for _, result in self._walk():
            if (result.photo == photo and result.report is not None
                    and result.report.settings == settings):
                return result
        return None

    def preview(self, result: Result) -> Path | None:
        """The result's depth preview (or its compare set's contact sheet), from the
        listing: no file is looked at."""
        with self._lock:
            for name in preview_names(result.report) if result.report else ():
                sig = self._files.get(name)
                if sig is not None and sig.regular:
                    return self.outputs / name
        return None

    # failures --------------------------------------------------------------------------

    def _failure(self, key: Key) -> Failure | None:
        sig = self._files.get(key.name)
        read = self._failures.get(key.name)
        if read is None or read[0] != sig:
            failure = read_failure(self.outputs / key.name, self.outputs, key.mtime_ns / 1e9)
            read = self._failures[key.name] = (sig, failure)
        return read[1]

    def _note_order(self) -> list[Key]:
        if self._notes is None:
            self._notes = self._sorted(NOTE_SUFFIX)
        return self._notes

    def failures(self, limit: int) -> tuple[list[Failure], int]:
        """The `limit` newest error notes, and how many there are."""
        with self._lock:
            order = self._note_order()
            found = [f for f in (self._failure(key) for key in order[::-1][:limit]) if f]
            return found, len(order)

    def failure_for(self, photo_name: str, since: float) -> Failure | None:
        """The error note of a photo called `photo_name` written at `since` or later."""
        with self._lock:
            for key in reversed(self._note_order()):
                if key.mtime_ns / 1e9 < since:
                    break
                if Path(photo_from_note(key.name)).name == photo_name:
                    return self._failure(key)
        return None

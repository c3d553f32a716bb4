"""The job journal: one SQLite file (WAL, synchronous=FULL) that survives any crash.

Every job moves queued -> running -> done | failed, one committed transaction per
step; FULL makes a finished job survive a power cut, not only a crash. On start,
`recover` puts interrupted (`running`) jobs back in the queue and hands back the
outputs their last attempt had reserved, so the caller deletes them and the re-run
leaves exactly one result.

A photo is given up as "crashes the daemon" only on evidence. Each attempt records the
stage it reached (decode, depth, sharp, write), and `recover` is told whether the last
run ended with a fatal-error record (`daemon.crashes`): a segfault or abort writes one,
a kill or a power cut does not.
- An attempt that ended with a record crashed the process: `MAX_CRASHES` in a row at the
  same stage give the photo up.
- An attempt that ended without one was interrupted from outside (Task Manager, a
  power cut, a logoff, a crash elsewhere): that never gives a photo up by itself. Only
  `MAX_INTERRUPTIONS` in a row at a stage where a photo can take the process down
  (decode, depth, sharp; never while writing) do: the Linux out-of-memory killer ends a
  process without a record.
- Either way the photo becomes a suspect: it runs after every other queued photo, and
  alone (nothing decoded or written beside it), so the next crash is pinned on the right
  photo and never delays the others. A graceful stop counts for nothing.
A given-up photo runs again when its file is saved again.

A job can be held (`hold`): queued, but not run before a time. The worker holds a photo
whose decoder ran out of data while the file is unchanged (a copy that paused), instead
of failing it at once.

Trouble with the file itself (another program holding it locked, a full drive) is
retried with a backoff and reported in `Status.problems` instead of ending a thread;
an empty or damaged file is moved aside at start and the caller rebuilds the finished
jobs from the reports in the outputs folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from loguru import logger

from pipeline.atomic import private_file, private_folder

from .jobs import Finished, Job, settings_from_json
from .status import Backoff, Problems, describe, thread_role

T = TypeVar("T")
STATES = ("queued", "running", "done", "failed")
BUSY_TIMEOUT_S = 5.0  # one call waits this long for another program's lock, then we report it
MAX_CRASHES = 3  # fatal errors in a row at one stage
MAX_INTERRUPTIONS = 20  # ends without a trace in a row at one stage (the OOM killer's SIGKILL)
CRASH_STAGES = ("decode", "depth", "sharp")
_SUSPECT = "(crashes > 0 OR interruptions > 0)"
_CLEAN = ("crashes = 0, crash_stage = NULL, interruptions = 0, interruption_stage = NULL, "
          "hold_until = NULL")  # a new start for a job: submitted again, done or failed
# A held job (an earlier, cut-short content of this photo) is dropped when new content comes.
_DROP_HELD = ("DELETE FROM jobs WHERE photo = ? AND key != ? AND state = 'queued' "
              "AND hold_until IS NOT NULL")
RETRY_FIRST_S = 30.0  # a retryable failure (disk full, file locked, model trouble) runs again
RETRY_MAX_S = 3600.0  # after this long, doubling per failure up to an hour
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    photo TEXT NOT NULL,
    photo_hash TEXT NOT NULL,
    settings TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    retryable INTEGER NOT NULL DEFAULT 0,
    outputs TEXT NOT NULL DEFAULT '[]',
    timings TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state_seq ON jobs (state, seq);
CREATE INDEX IF NOT EXISTS jobs_seq ON jobs (seq);
DROP TABLE IF EXISTS hashes;
CREATE TABLE IF NOT EXISTS file_hashes (
    path TEXT PRIMARY KEY,
    signature TEXT NOT NULL,
    sha256 TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS file_hashes_sha256 ON file_hashes (sha256);
"""
# Columns added after the first release; a journal from then gets them at open.
_ADDED_COLUMNS = {"stage": "TEXT", "crashes": "INTEGER NOT NULL DEFAULT 0",
                  "crash_stage": "TEXT", "interruptions": "INTEGER NOT NULL DEFAULT 0",
                  "interruption_stage": "TEXT", "hold_until": "REAL"}
# A journal from before crashes needed evidence counted every interruption as a crash: its
# counts are interruptions, and the photos it gave up on for them are queued again.
_EVIDENCE_MIGRATION = """
UPDATE jobs SET state = 'queued', error = NULL, retryable = 0
    WHERE state = 'failed' AND crashes > 0;
UPDATE jobs SET interruptions = crashes, interruption_stage = crash_stage, crashes = 0,
    crash_stage = NULL WHERE crashes > 0;
"""


class Journal:
    """Thread-safe access to the jobs table; every method is one transaction.

    A call that finds the file locked by another program or the drive full waits and
    tries again (reported as a problem of the calling thread) until it succeeds or
    `abort` is set, so the jobs move on by themselves once the cause goes away.
    """

    def __init__(self, path: Path, problems: Problems | None = None) -> None:
        self.path = path
        self.problems = problems or Problems()
        self.abort = threading.Event()  # set at stop: a failing call raises instead of waiting
        self.damaged_copy: Path | None = None
        self.damage: str | None = None
        _private(path)
        try:
            self._db, self.fresh = _open(path)
        except sqlite3.DatabaseError as exc:
            if type(exc) is not sqlite3.DatabaseError:  # locked, full, I/O: not damage
                raise
            self.damage = str(exc)
            self.damaged_copy = _move_aside(path)
            _private(path)
            self._db, self.fresh = _open(path)
        self._lock = threading.RLock()
        self._batch: int | None = None  # the thread whose `batch` is open
        # Status reads counts on a connection of its own, so a call waiting out another
        # program's lock never holds up `status()`.
        self._reader = sqlite3.connect(str(path), check_same_thread=False, timeout=0.5)
        self._reader_lock = threading.Lock()
        self._counts = dict.fromkeys(STATES, 0)
        self._suspects: list[str] = []
        self._failed_here: set[str] = set()  # keys that failed retryably since this open

    def close(self) -> None:
        with self._lock, self._reader_lock:
            self._db.close()
            self._reader.close()

    def _once(self, action: Callable[[sqlite3.Connection], T], write: bool) -> T:
        with self._lock:
            if not write or self._batching():
                return action(self._db)
            with self._transaction():
                return action(self._db)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back
                    self._db.execute("ROLLBACK")
            raise

    def _batching(self) -> bool:
        return self._batch == threading.get_ident()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Make this thread's calls inside the block one transaction: one sync to disk for
        a whole drop of photos instead of one per call.

        Other threads wait for the block to end, so keep it short (the intake ends one
        every `BATCH_SECONDS`). Nothing inside is retried: on any error the whole block is
        rolled back and the error raised, and the caller submits its photos again (a kill
        inside the block loses nothing either: the start-up scan finds every photo).
        """
        with self._lock, self._transaction():
            self._batch = threading.get_ident()
            try:
                yield
            finally:
                self._batch = None

    def _run(self, action: Callable[[sqlite3.Connection], T], write: bool = True) -> T:
        """`action` in one transaction, retried while the file is locked or the drive full."""
        backoff = Backoff()
        role = thread_role()
        while True:
            try:
                result = self._once(action, write)
            except sqlite3.Error as exc:
                if not _transient(exc) or self.abort.is_set() or self._batching():
                    raise
                self.problems.report(role, describe(exc), topic="journal")
                if self.abort.wait(backoff.next()):
                    raise
                continue
            self.problems.clear(role, topic="journal")
            return result

    def submit(self, key: str, photo: Path, photo_hash: str, settings_json: str,
               event_driven: bool = True) -> str:
        """Queue a job unless the same key is done or pending; returns what happened.

        `queued` (new work), `pending` (already queued or running; the job now follows
        this name), `done` (skipped), `failed` (not retried on a catch-up scan). A failed
        key is queued again on a fresh file event (the user touched it), and on a catch-up
        scan if its failure was retryable (disk full, model trouble) and happened before
        this journal was opened (a restart retries it). One that failed since waits for
        `requeue_retryable`: a scan racing the failure must not skip its backoff.
        """
        now = time.time()

        def action(db: sqlite3.Connection) -> str:
            row = _row(db, key)
            if row is None:
                db.execute("INSERT INTO jobs (key, seq, photo, photo_hash, settings, state, "
                           "created, updated) VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 "
                           "FROM jobs), ?, ?, ?, 'queued', ?, ?)",
                           (key, _text(photo), photo_hash, settings_json, now, now))
                db.execute(_DROP_HELD, (_text(photo), key))
                return "queued"
            if row["state"] in ("queued", "running"):
                db.execute("UPDATE jobs SET photo = ? WHERE key = ?", (_text(photo), key))
                return "pending"
            if row["state"] == "done":
                return "done"
            if not event_driven and (not row["retryable"] or key in self._failed_here):
                return "failed"
            db.execute("UPDATE jobs SET state = 'queued', photo = ?, settings = ?, error = NULL, "
                       f"attempts = 0, {_CLEAN}, stage = NULL, outputs = '[]', updated = ?, "
                       "seq = (SELECT MAX(seq) + 1 FROM jobs) WHERE key = ?",
                       (_text(photo), settings_json, now, key))
            db.execute(_DROP_HELD, (_text(photo), key))
            return "queued"

        return self._run(action)

    def record_failure(self, key: str, photo: Path, photo_hash: str, error: str) -> bool:
        """A failure found before the job could be queued; False if already recorded."""
        now = time.time()

        def action(db: sqlite3.Connection) -> bool:
            row = _row(db, key)
            if row is not None and row["state"] == "failed" and row["error"] == error:
                return False
            db.execute("INSERT OR REPLACE INTO jobs (key, seq, photo, photo_hash, settings, "
                       "state, attempts, error, retryable, created, updated) VALUES (?, "
                       "(SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs), ?, ?, '{}', 'failed', 0, "
                       "?, 0, ?, ?)", (key, _text(photo), photo_hash, error, now, now))
            return True

        return self._run(action)

    def next_queued(self, after_seq: int = 0) -> Job | None:
        """The oldest queued job after `after_seq` that is not held, without claiming it;
        suspects (photos that were running when the process ended) only when no other
        job is queued."""
        query = ("SELECT * FROM jobs WHERE state = 'queued' AND seq > ? AND (hold_until IS "
                 "NULL OR hold_until <= ?) AND {} ORDER BY seq LIMIT 1")

        def action(db: sqlite3.Connection) -> sqlite3.Row | None:
            now = time.time()
            row: sqlite3.Row | None = db.execute(query.format(f"NOT {_SUSPECT}"),
                                                 (after_seq, now)).fetchone()
            return row or db.execute(query.format(_SUSPECT), (after_seq, now)).fetchone()

        row = self._run(action, write=False)
        return _job(row) if row is not None else None

    def claim(self, key: str) -> Job | None:
        """Mark a queued job running (one more attempt); None if it is no longer queued."""

        def action(db: sqlite3.Connection) -> sqlite3.Row | None:
            row = _row(db, key)
            if row is None or row["state"] != "queued":
                return None
            db.execute("UPDATE jobs SET state = 'running', attempts = attempts + 1, "
                       "stage = 'decode', updated = ? WHERE key = ?", (time.time(), key))
            return _row(db, key)

        claimed = self._run(action)
        return _job(claimed) if claimed is not None else None

    def set_stage(self, key: str, stage: str) -> None:
        """Record how far the running attempt got (the evidence `recover` weighs)."""
        self._run(lambda db: db.execute(
            "UPDATE jobs SET stage = ? WHERE key = ? AND state = 'running' "
            "AND stage IS NOT 'stopped'", (stage, key)))

    def reserve_outputs(self, key: str, outputs: list[str]) -> None:
        """Record the names an attempt is about to write, before writing them."""
        self._run(lambda db: db.execute(
            "UPDATE jobs SET outputs = ?, updated = ?, stage = CASE WHEN stage = 'stopped' "
            "THEN stage ELSE 'write' END WHERE key = ?", (json.dumps(outputs), time.time(), key)))

    def finish(self, key: str, outputs: list[str], timings: dict[str, float]) -> None:
        self._run(lambda db: db.execute(
            f"UPDATE jobs SET state = 'done', error = NULL, stage = NULL, {_CLEAN}, "
            "outputs = ?, timings = ?, updated = ? WHERE key = ?",
            (json.dumps(outputs), json.dumps(timings), time.time(), key)))

    def fail(self, key: str, error: str, retryable: bool) -> str | None:
        """Mark the job failed; returns the error it had before (not None: an automatic
        retry, which keeps its error while queued, failed again)."""

        def action(db: sqlite3.Connection) -> str | None:
            row = _row(db, key)
            db.execute("UPDATE jobs SET state = 'failed', error = ?, retryable = ?, stage = NULL, "
                       f"{_CLEAN}, outputs = '[]', updated = ? WHERE key = ?",
                       (error, int(retryable), time.time(), key))
            return row["error"] if row is not None else None

        previous = self._run(action)
        if retryable:
            self._failed_here.add(key)
        return previous

    def supersede(self, key: str, tried: Path, alternative: Path | None,
                  drop: bool = True) -> str:
        """The running job's photo `tried` vanished or changed: follow another name, or drop
        the job (with `drop`; else leave it as it is).

        `renamed`: another name was submitted meanwhile, the job runs again from it;
        `moved`: it runs again from `alternative` (a surviving copy); `dropped`; `stays`.
        """

        def action(db: sqlite3.Connection) -> str:
            row = _row(db, key)
            if row is None:
                return "dropped"
            requeue = ("UPDATE jobs SET state = 'queued', photo = ?, stage = NULL, "
                       "outputs = '[]' WHERE key = ?")
            if _path(row["photo"]) != tried:
                db.execute(requeue, (row["photo"], key))
                return "renamed"
            if alternative is not None:
                db.execute(requeue, (_text(alternative), key))
                return "moved"
            if not drop:
                return "stays"
            db.execute("DELETE FROM jobs WHERE key = ?", (key,))
            return "dropped"

        return self._run(action)

    def mark_stopping(self) -> None:
        """A graceful stop: an attempt it abandons must not count as a crash (one try only)."""
        try:
            self._once(lambda db: db.execute(
                "UPDATE jobs SET stage = 'stopped' WHERE state = 'running'"), write=True)
        except sqlite3.Error as exc:
            logger.warning("could not note the stop in the journal ({}); the current photo "
                           "counts as interrupted", describe(exc))

    def recover(self, crash: str | None = None, max_crashes: int = MAX_CRASHES,
                max_interruptions: int = MAX_INTERRUPTIONS
                ) -> tuple[list[str], list[tuple[Job, str]]]:
        """Requeue interrupted jobs; return their reserved outputs, and the jobs given up on
        with the reason.

        `crash` is the fatal error the last run ended with (its record's first line), None
        when it ended without one (a kill, a power cut) or stopped cleanly.
        """
        stale: list[str] = []
        given_up: list[tuple[Job, str]] = []

        def action(db: sqlite3.Connection) -> None:
            rows = db.execute("SELECT * FROM jobs WHERE state = 'running'").fetchall()
            for row in rows:
                stale.extend(json.loads(row["outputs"]))
                counts, error = _after_interruption(row, crash, max_crashes, max_interruptions)
                db.execute("UPDATE jobs SET state = 'queued', stage = NULL, outputs = '[]', "
                           "crashes = ?, crash_stage = ?, interruptions = ?, "
                           "interruption_stage = ? WHERE key = ?", (*counts, row["key"]))
                if error is not None:
                    db.execute("UPDATE jobs SET state = 'failed', error = ?, retryable = 0 "
                               "WHERE key = ?", (error, row["key"]))
                    given_up.append((_job(row), error))

        self._run(action)
        return stale, given_up

    def hold(self, key: str, until: float) -> bool:
        """Queue the running job again, not to run before `until` (wall-clock time); False
        (and nothing changed) if it has been held before."""

        def action(db: sqlite3.Connection) -> bool:
            row = _row(db, key)
            if row is None or row["hold_until"] is not None:
                return False
            db.execute("UPDATE jobs SET state = 'queued', stage = NULL, outputs = '[]', "
                       "hold_until = ? WHERE key = ?", (until, key))
            return True

        return self._run(action)

    def suspects(self) -> list[str]:
        """One line per photo that was running when the process ended: waiting to run alone,
        or given up on (its error says why). Read like `counts`: the last known lines while
        the file cannot be read."""
        try:
            with self._reader_lock:
                rows = self._reader.execute(
                    "SELECT photo, state, error, crashes, crash_stage, interruptions, "
                    f"interruption_stage FROM jobs WHERE {_SUSPECT} AND state != 'done' "
                    "ORDER BY seq").fetchall()
        except sqlite3.Error:
            return list(self._suspects)
        self._suspects = [error if state == "failed" else _suspicion(photo, *counts)
                          for photo, state, error, *counts in rows]
        return list(self._suspects)

    def requeue_retryable(self, now: float | None = None) -> int:
        """Queue again the retryable failures whose backoff has passed; how many.

        The wait doubles with each failed attempt since the photo was last submitted
        (`RETRY_FIRST_S`, twice that, ... up to `RETRY_MAX_S`); the error stays recorded
        (and its note in outputs) until the job succeeds.
        """
        now = time.time() if now is None else now

        def action(db: sqlite3.Connection) -> int:
            rows = db.execute("SELECT key, attempts, updated FROM jobs "
                              "WHERE state = 'failed' AND retryable = 1").fetchall()
            due = [row["key"] for row in rows if now - row["updated"] >= min(
                RETRY_FIRST_S * 2 ** max(row["attempts"] - 1, 0), RETRY_MAX_S)]
            for key in due:
                db.execute("UPDATE jobs SET state = 'queued', outputs = '[]', updated = ? "
                           "WHERE key = ?", (now, key))
            return len(due)

        return self._run(action)

    def seed_done(self, results: Iterable[Finished]) -> int:
        """Record results found in the outputs folder as done jobs (a rebuilt journal)."""
        now = time.time()

        def action(db: sqlite3.Connection) -> int:
            added = 0
            for r in results:
                added += db.execute(
                    "INSERT OR IGNORE INTO jobs (key, seq, photo, photo_hash, settings, state, "
                    "outputs, created, updated) VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 "
                    "FROM jobs), ?, ?, ?, 'done', ?, ?, ?)",
                    (r.key, _text(r.photo), r.photo_hash, r.settings_json,
                     json.dumps(list(r.outputs)), now, now)).rowcount
            return added

        return self._run(action)

    def get(self, key: str) -> dict[str, Any] | None:
        row = self._run(lambda db: _row(db, key), write=False)
        return dict(row) if row is not None else None

    def all(self) -> list[dict[str, Any]]:
        return self._run(lambda db: [dict(r) for r in db.execute(
            "SELECT * FROM jobs ORDER BY seq")], write=False)

    def counts(self) -> dict[str, int]:
        """Jobs per state; the last known counts while the file cannot be read."""
        try:
            with self._reader_lock:
                rows = self._reader.execute(
                    "SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        except sqlite3.Error:
            return dict(self._counts)
        out = dict.fromkeys(STATES, 0)
        out.update({state: n for state, n in rows})
        self._counts = out
        return dict(out)

    def cached_hash(self, path: Path, signature: tuple[int, ...]) -> str | None:
        """A content hash computed earlier for this exact file version, if any."""
        row = self._run(lambda db: db.execute(
            "SELECT signature, sha256 FROM file_hashes WHERE path = ?",
            (_text(path),)).fetchone(), write=False)
        return row[1] if row is not None and row[0] == _signature_text(signature) else None

    def store_hash(self, path: Path, signature: tuple[int, ...], sha256: str) -> None:
        self._run(lambda db: db.execute("INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?)",
                                        (_text(path), _signature_text(signature), sha256)))

    def paths_with_hash(self, sha256: str) -> list[Path]:
        """Every path whose content was last seen with this hash (copies of one photo)."""
        rows = self._run(lambda db: db.execute(
            "SELECT path FROM file_hashes WHERE sha256 = ?", (sha256,)).fetchall(), write=False)
        return [_path(row[0]) for row in rows]


def _private(path: Path) -> None:
    # Owner only: the journal lists every photo path and error. SQLite gives the
    # -wal and -shm files it creates the main file's mode; older ones are tightened.
    private_folder(path.parent)
    private_file(path)
    for suffix in ("-wal", "-shm"):
        private_file(path.with_name(path.name + suffix), create=False)


def _open(path: Path) -> tuple[sqlite3.Connection, bool]:
    """The connection, and whether the file held no journal yet (new, or empty)."""
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                         timeout=BUSY_TIMEOUT_S)
    try:
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        check = db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(f"database disk image is malformed ({check})")
        fresh = db.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' "
                           "AND name = 'jobs'").fetchone()[0] == 0
        db.executescript(_SCHEMA)
        present = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
        for column, kind in _ADDED_COLUMNS.items():
            if column not in present:
                db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
        if "interruptions" not in present and "crashes" in present:
            db.executescript(_EVIDENCE_MIGRATION)
        db.execute(f"CREATE INDEX IF NOT EXISTS jobs_suspects ON jobs (seq) WHERE {_SUSPECT}")
        db.execute("CREATE INDEX IF NOT EXISTS jobs_held ON jobs (photo) "
                   "WHERE hold_until IS NOT NULL")
    except BaseException:
        db.close()
        raise
    return db, fresh


def _move_aside(path: Path) -> Path:
    """Rename a damaged journal (and its -wal, -shm) to `<name>.damaged-<stamp>`."""
    target = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            os.replace(source, target.with_name(target.name + suffix))
    return target


def _transient(exc: sqlite3.Error) -> bool:
    """Locked, busy, full, I/O trouble or damage found at run time: worth retrying later."""
    return isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError


def _text(path: Path) -> str | bytes:
    """A path as SQLite can store it without loss: text, or its bytes when it is not valid
    Unicode (a Linux name in another encoding, a Windows name with a lone surrogate)."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(text)
    return text


def _path(value: str | bytes) -> Path:
    return Path(os.fsdecode(value))


def _signature_text(signature: tuple[int, ...]) -> str:
    return ":".join(map(str, signature))


def _row(db: sqlite3.Connection, key: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = db.execute("SELECT * FROM jobs WHERE key = ?", (key,)).fetchone()
    return row


def _job(row: sqlite3.Row) -> Job:
    return Job(key=row["key"], photo=_path(row["photo"]), photo_hash=row["photo_hash"],
               settings=settings_from_json(row["settings"]), state=row["state"],
               attempts=row["attempts"], seq=row["seq"],
               outputs=tuple(json.loads(row["outputs"])), crashes=row["crashes"],
               interruptions=row["interruptions"])


def _streak(count: int, at: str | None, stage: str) -> int:
    """The length of a run of interruptions at `stage` after one more."""
    return count + 1 if at == stage else 1


def _after_interruption(row: sqlite3.Row, crash: str | None, max_crashes: int,
                        max_interruptions: int
                        ) -> tuple[tuple[int, str | None, int, str | None], str | None]:
    """A job that was running when the process ended: its crash and interruption streaks
    (count, stage) with that attempt, and why it is given up on (None: it runs again)."""
    stage, photo = row["stage"], _path(row["photo"])
    crashes, crash_stage = row["crashes"], row["crash_stage"]
    count, count_stage = row["interruptions"], row["interruption_stage"]
    error = None
    if stage in ("stopped", None):
        pass  # a graceful stop (or a journal from before stages) counts for nothing
    elif crash is not None:
        crashes, crash_stage = _streak(crashes, crash_stage, stage), stage
        if crashes >= max_crashes:
            error = (f"{photo}: sharp-watch crashed {crashes} times in a row while this photo "
                     f"was at the {stage} stage ({crash}); giving up on it until the photo is "
                     "saved again")
    elif stage in CRASH_STAGES:
        count, count_stage = _streak(count, count_stage, stage), stage
        if count >= max_interruptions:
            error = (f"{photo}: sharp-watch ended without a trace {count} times in a row "
                     f"while this photo was at the {stage} stage, running alone (as when the "
                     "system runs out of memory and ends the process); giving up on it until "
                     "the photo is saved again")
    return (crashes, crash_stage, count, count_stage), error


def _suspicion(photo: str | bytes, crashes: int, crash_stage: str | None, interruptions: int,
               interruption_stage: str | None) -> str:
    parts = [f"{crashes} crash(es) at the {crash_stage} stage"] if crashes else []
    if interruptions:
        parts.append(f"{interruptions} end(s) without a trace at the {interruption_stage} stage")
    return (f"{_path(photo)}: sharp-watch ended while this photo ran ({', '.join(parts)}); "
            "it runs alone, after the other photos")

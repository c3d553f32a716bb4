"""The job journal: one SQLite file (WAL) that survives any crash.

Every job moves queued -> running -> done | failed, one committed transaction per
step. On start, `recover` puts interrupted (`running`) jobs back in the queue and hands
back the outputs their last attempt had reserved, so the caller deletes them and the
re-run leaves exactly one result. A job that keeps killing the process is failed after
`max_attempts` instead of looping forever.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .jobs import Job, settings_from_json

STATES = ("queued", "running", "done", "failed")
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
CREATE TABLE IF NOT EXISTS hashes (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL
);
"""


class Journal:
    """Thread-safe access to the jobs table; every method is one transaction."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                                   timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _row(self, db: sqlite3.Connection, key: str) -> sqlite3.Row | None:
        return db.execute("SELECT * FROM jobs WHERE key = ?", (key,)).fetchone()

    def submit(self, key: str, photo: Path, photo_hash: str, settings_json: str,
               event_driven: bool = True) -> str:
        """Queue a job unless the same key is done or pending; returns what happened.

        `queued` (new work), `pending` (already queued or running), `done` (skipped),
        `failed` (an input failure not retried on a catch-up scan). A failed key is
        queued again on a fresh file event (the user touched it) or if its failure was
        retryable (disk full, model trouble).
        """
        now = time.time()
        with self._tx() as db:
            row = self._row(db, key)
            if row is None:
                db.execute("INSERT INTO jobs (key, seq, photo, photo_hash, settings, state, "
                           "created, updated) VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 "
                           "FROM jobs), ?, ?, ?, 'queued', ?, ?)",
                           (key, str(photo), photo_hash, settings_json, now, now))
                return "queued"
            if row["state"] == "queued":
                db.execute("UPDATE jobs SET photo = ? WHERE key = ?", (str(photo), key))
                return "pending"
            if row["state"] == "running":
                return "pending"
            if row["state"] == "done":
                return "done"
            if not (event_driven or row["retryable"]):
                return "failed"
            db.execute("UPDATE jobs SET state = 'queued', photo = ?, settings = ?, error = NULL, "
                       "attempts = 0, outputs = '[]', updated = ?, "
                       "seq = (SELECT MAX(seq) + 1 FROM jobs) WHERE key = ?",
                       (str(photo), settings_json, now, key))
            return "queued"

    def record_failure(self, key: str, photo: Path, photo_hash: str, error: str) -> bool:
        """A failure found before the job could be queued; False if already recorded."""
        now = time.time()
        with self._tx() as db:
            row = self._row(db, key)
            if row is not None and row["state"] == "failed" and row["error"] == error:
                return False
            db.execute("INSERT OR REPLACE INTO jobs (key, seq, photo, photo_hash, settings, "
                       "state, attempts, error, retryable, created, updated) VALUES (?, "
                       "(SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs), ?, ?, '{}', 'failed', 0, "
                       "?, 0, ?, ?)", (key, str(photo), photo_hash, error, now, now))
            return True

    def next_queued(self, after_seq: int = 0) -> Job | None:
        """The oldest queued job after `after_seq`, without claiming it."""
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE state = 'queued' AND seq > ? "
                                   "ORDER BY seq LIMIT 1", (after_seq,)).fetchone()
        return _job(row) if row is not None else None

    def claim(self, key: str) -> Job | None:
        """Mark a queued job running (one more attempt); None if it is no longer queued."""
        with self._tx() as db:
            row = self._row(db, key)
            if row is None or row["state"] != "queued":
                return None
            db.execute("UPDATE jobs SET state = 'running', attempts = attempts + 1, "
                       "updated = ? WHERE key = ?", (time.time(), key))
            claimed = self._row(db, key)
        return _job(claimed) if claimed is not None else None

    def reserve_outputs(self, key: str, outputs: list[str]) -> None:
        """Record the names an attempt is about to write, before writing them."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET outputs = ?, updated = ? WHERE key = ?",
                       (json.dumps(outputs), time.time(), key))

    def finish(self, key: str, outputs: list[str], timings: dict[str, float]) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET state = 'done', error = NULL, outputs = ?, timings = ?, "
                       "updated = ? WHERE key = ?",
                       (json.dumps(outputs), json.dumps(timings), time.time(), key))

    def fail(self, key: str, error: str, retryable: bool) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET state = 'failed', error = ?, retryable = ?, "
                       "outputs = '[]', updated = ? WHERE key = ?",
                       (error, int(retryable), time.time(), key))

    def drop(self, key: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM jobs WHERE key = ?", (key,))

    def recover(self, max_attempts: int) -> tuple[list[str], list[tuple[Job, str]]]:
        """Requeue interrupted jobs; return their reserved outputs, and the jobs given up on
        with the reason."""
        stale: list[str] = []
        given_up: list[tuple[Job, str]] = []
        with self._tx() as db:
            rows = db.execute("SELECT * FROM jobs WHERE state = 'running'").fetchall()
            for row in rows:
                stale.extend(json.loads(row["outputs"]))
                if row["attempts"] >= max_attempts:
                    error = (f"{row['photo']}: processing was interrupted {row['attempts']} times "
                             "(the daemon was killed or crashed each time); giving up on it")
                    db.execute("UPDATE jobs SET state = 'failed', error = ?, retryable = 0, "
                               "outputs = '[]' WHERE key = ?", (error, row["key"]))
                    given_up.append((_job(row), error))
                else:
                    db.execute("UPDATE jobs SET state = 'queued', outputs = '[]' WHERE key = ?",
                               (row["key"],))
        return stale, given_up

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._row(self._db, key)
        return dict(row) if row is not None else None

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._db.execute("SELECT * FROM jobs ORDER BY seq")]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        out = dict.fromkeys(STATES, 0)
        out.update({state: n for state, n in rows})
        return out

    def cached_hash(self, path: Path, size: int, mtime_ns: int) -> str | None:
        """A content hash computed earlier for this exact file version, if any."""
        with self._lock:
            row = self._db.execute("SELECT size, mtime_ns, sha256 FROM hashes WHERE path = ?",
                                   (str(path),)).fetchone()
        if row is None or row[0] != size or row[1] != mtime_ns:
            return None
        return row[2]

    def store_hash(self, path: Path, size: int, mtime_ns: int, sha256: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?)",
                       (str(path), size, mtime_ns, sha256))


def _job(row: sqlite3.Row) -> Job:
    return Job(key=row["key"], photo=Path(row["photo"]), photo_hash=row["photo_hash"],
               settings=settings_from_json(row["settings"]), state=row["state"],
               attempts=row["attempts"], seq=row["seq"],
               outputs=tuple(json.loads(row["outputs"])))

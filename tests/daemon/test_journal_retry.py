"""A retryable failure (disk full, model trouble) waits out its backoff in the journal.

A catch-up scan racing the failure (the start-up scan, a folder that came back) must
not queue the photo again at once: that skipped `requeue_retryable`'s backoff and, the
error being cleared, told the user of the same failure twice. A file event (the user
touched the photo) and a restart still retry it at once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.jobs import settings_to_json
from daemon.journal import RETRY_FIRST_S, Journal
from pipeline import DepthSettings

SETTINGS = settings_to_json(DepthSettings())
ERROR = "full.jpg: No space left on device"


def _failed(tmp_path: Path, retryable: bool = True) -> Journal:
    """A journal whose one job `k` (photo full.jpg) failed on its first attempt."""
    journal = Journal(tmp_path / "j.sqlite3")
    assert journal.submit("k", tmp_path / "full.jpg", "h", SETTINGS) == "queued"
    assert journal.claim("k") is not None
    journal.fail("k", ERROR, retryable=retryable)
    return journal


def _resubmit(journal: Journal, tmp_path: Path, event_driven: bool) -> str:
    return journal.submit("k", tmp_path / "full.jpg", "h", SETTINGS, event_driven=event_driven)


def test_catch_up_submit_leaves_a_retryable_failure_to_its_backoff(tmp_path: Path) -> None:
    journal = _failed(tmp_path)
    assert _resubmit(journal, tmp_path, event_driven=False) == "failed"
    row = journal.get("k")
    assert row is not None
    assert (row["state"], row["error"], row["retryable"]) == ("failed", ERROR, 1)
    assert journal.next_queued() is None
    assert journal.counts()["queued"] == 0


def test_file_event_requeues_a_retryable_failure_at_once(tmp_path: Path) -> None:
    journal = _failed(tmp_path)
    assert _resubmit(journal, tmp_path, event_driven=True) == "queued"
    queued = journal.next_queued()
    assert queued is not None and queued.key == "k"


def test_retryable_failure_is_requeued_once_after_its_backoff(tmp_path: Path) -> None:
    journal = _failed(tmp_path)
    assert _resubmit(journal, tmp_path, event_driven=False) == "failed"
    row = journal.get("k")
    assert row is not None
    failed_at = row["updated"]
    assert journal.requeue_retryable(now=failed_at + RETRY_FIRST_S - 1) == 0
    assert journal.get("k")["state"] == "failed"  # type: ignore[index]
    assert journal.requeue_retryable(now=failed_at + RETRY_FIRST_S) == 1
    assert journal.requeue_retryable(now=failed_at + RETRY_FIRST_S + 1) == 0
    assert _resubmit(journal, tmp_path, event_driven=False) == "pending"
    assert journal.counts()["queued"] == 1
    assert journal.claim("k") is not None and journal.claim("k") is None
    # The retry keeps the error, so failing again is known as a repeat (no second event).
    assert journal.fail("k", ERROR, retryable=True) == ERROR


def test_a_restart_still_retries_a_retryable_failure_at_once(tmp_path: Path) -> None:
    _failed(tmp_path).close()
    journal = Journal(tmp_path / "j.sqlite3")
    assert _resubmit(journal, tmp_path, event_driven=False) == "queued"
    queued = journal.next_queued()
    assert queued is not None and (queued.key, queued.attempts) == ("k", 0)


@pytest.mark.parametrize("event_driven, verdict", [(False, "failed"), (True, "queued")])
def test_a_failure_that_is_not_retryable_is_retried_only_on_a_file_event(
        tmp_path: Path, event_driven: bool, verdict: str) -> None:
    journal = _failed(tmp_path, retryable=False)
    assert _resubmit(journal, tmp_path, event_driven) == verdict
    assert journal.get("k")["state"] == verdict  # type: ignore[index]
    assert journal.requeue_retryable(now=1e12) == 0

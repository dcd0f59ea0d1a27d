"""The fleet's watchdog looks at a task again only when its stream moved (issue 13): before,
every pass (one a second) folded every active task, twice (the outage rule, then the
scheduler), whatever had changed. Its reactions stay: a pending chunk that no worker
claims is dispatched again once the claim TTL has passed, stream moved or not; a task
whose stream moved is folded and scheduled again, and each chunk it submits has its work
item sent at once. Real PostgreSQL; no broker: the work items it sends are recorded, and
refused."""
from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from unittest import mock

import pytest

import consumers.fleet.roles
from entrypoints.settings import EngineSettings
from engine.domain.tasks import Result
from engine.service import Engine
from engine.store import open_database
from entrypoints import bootstrap

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
CLAIM_TTL_S = 10.0


class Clock:
    """The watchdog's monotonic clock (its re-dispatch timers), moved by the test."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def monotonic(self) -> float:
        return self.now_s


@pytest.fixture
def watchdog(pg_url):
    db = open_database(pg_url, migrate=True)
    settings = EngineSettings(_env_file=None, provider="instant", chunk_size=2, chunk_window=1,
                              claim_ttl=CLAIM_TTL_S)
    engine = Engine(db, settings, clock=lambda: T0)
    fleet = bootstrap.fleet(engine, {"watchdog"})
    clock = Clock()
    fake_time = mock.Mock(wraps=time)
    fake_time.monotonic = clock.monotonic
    folds: list[str] = []
    task = engine.task

    def counted(task_id: str):
        folds.append(task_id)
        return task(task_id)

    looked = consumers.fleet.roles._Looked()
    unclaimed_since: dict = {}
    sent: list[tuple[str, int]] = []  # the work items it sent (refused: there is no broker)

    def send(task_id: str, chunk_no: int) -> bool:
        sent.append((task_id, chunk_no))
        return False
    fleet._redispatch = send

    def look() -> set[str]:
        """One pass of the watchdog (a live worker beating); the tasks it folded."""
        folds.clear()
        db.fleet.beat("worker-here", "worker", "here", 2, T0, "ready")
        fleet._watch_once(T0 - timedelta(days=1), unclaimed_since, looked)
        return set(folds)

    with mock.patch.object(consumers.fleet.roles, "time", fake_time), \
            mock.patch.object(engine, "task", counted):
        try:
            yield engine, look, clock, sent
        finally:
            fleet.call.close()
            db.close()


def _bulk(engine: Engine, tmp_path) -> str:
    engine.open_account("acme")
    listing = tmp_path / "four.csv"
    listing.write_text("email\na@example.com\nb@example.com\nc@example.com\nd@example.com\n")
    return engine.create_bulk("acme", str(listing)).task_id


def test_a_task_whose_stream_did_not_move_is_not_folded_again_yet_its_lost_chunk_is_sent_again(
        watchdog, tmp_path, caplog):
    engine, look, clock, sent = watchdog
    task_id = _bulk(engine, tmp_path)
    engine.db.catch_up()
    assert look() == {task_id}  # first sight: folded, and scheduled (the window's one chunk)
    assert engine.task(task_id).chunks_submitted == 1
    assert sent == [(task_id, 0)]  # the chunk it submitted: its work item sent at once
    assert look() == {task_id}  # its stream moved (the chunk it submitted): folded once more
    with caplog.at_level(logging.INFO, logger="vec.fleet"):
        assert look() == set()  # nothing moved: not read, not folded
        assert "dispatching it again" not in caplog.text  # its timer runs, within the claim TTL
        assert look() == set()
        clock.now_s += CLAIM_TTL_S + 1
        look()  # the claim TTL passed: the chunk nobody claimed is sent again (refused: no broker)
    assert f"chunk 0 of {task_id} has no live worker: dispatching it again" in caplog.text
    assert sent == [(task_id, 0), (task_id, 0)]


def test_a_task_whose_stream_moved_is_folded_and_scheduled_again(watchdog, tmp_path):
    engine, look, clock, sent = watchdog
    task_id = _bulk(engine, tmp_path)
    engine.db.catch_up()
    look(), look()
    assert look() == set() and engine.task(task_id).chunks_submitted == 1
    # the chunk's results land (the settler of some worker) and no scheduler reacts: the
    # watchdog sees the stream moved, folds it and submits the next chunk
    engine.record_results(task_id, 0, [Result("a@example.com", "safe"), Result("b@example.com", "safe")])
    assert look() == {task_id}
    assert engine.task(task_id).chunks_submitted == 2
    assert sent == [(task_id, 0), (task_id, 1)]  # each chunk it submitted, its work item at once

"""The engine over the in-memory store (`open_database("memory://")`): the fast path the unit
tests and the simulator can take, with the same ports and read models as on disk."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from entrypoints.settings import EngineSettings
from engine.domain.accounts import WELCOME_CREDITS
from engine.domain.tasks import Result
from engine.service import Engine
from engine.store import open_database
from engine.store.memory import MemoryEventStore
from events import CreditsDebited, CreditsRefunded, ResultsRecorded, TaskCompleted, TaskCreated
from tests.staged import staged_chunk

T0 = datetime(2026, 6, 1, 10, 0, tzinfo=timezone.utc)


@pytest.fixture
def memory_db():
    database = open_database("memory://")
    yield database
    database.close()


def test_a_memory_store_is_new_and_empty_each_time(memory_db):
    assert isinstance(memory_db.events, MemoryEventStore)
    Engine(memory_db, EngineSettings(), lambda: T0).open_account("acme")
    other = open_database("memory://")
    try:
        assert memory_db.events.head() == 2 and other.events.head() == 0
    finally:
        other.close()


def test_a_single_task_runs_and_settles_in_memory(memory_db):
    engine = Engine(memory_db, EngineSettings(), lambda: T0)
    engine.open_account("acme")
    safe = engine.create_single("acme", "Ann@X.org")
    unknown = engine.create_single("acme", "bob@x.org")
    assert engine.account("acme").payg == WELCOME_CREDITS - 2
    assert memory_db.inputs.staged() == {safe: 1, unknown: 1}
    assert staged_chunk(memory_db, safe, 0, 1) == ["Ann@X.org"]

    answers = {safe: Result("Ann@X.org", "safe"), unknown: Result("bob@x.org", "unknown", "smtp_timeout")}
    for task_id, result in answers.items():
        engine.submit_chunk(task_id, 0, staged_chunk(memory_db, task_id, 0, 1), "smtp", "primary")
        engine.record_results(task_id, 0, [result])

    assert engine.task(safe).status == engine.task(unknown).status == "completed"
    assert engine.account("acme").payg == WELCOME_CREDITS - 1  # the unknown one was refunded
    log = [r.event for r in memory_db.events.read_all()]
    assert [type(e) for e in log if isinstance(e, (TaskCreated, CreditsDebited, CreditsRefunded))] == [
        TaskCreated, CreditsDebited, TaskCreated, CreditsDebited, CreditsRefunded]
    assert sum(isinstance(e, TaskCompleted) for e in log) == 2
    assert [e.addresses for e in log if isinstance(e, ResultsRecorded) and e.status == "unknown"] == [("bob@x.org",)]
    stored = " ".join(row.data for row in memory_db.events.log.rows)  # sealed at rest, as on disk
    assert "bob@x.org" not in stored and "Ann@X.org" not in stored

    memory_db.catch_up()  # the read models fold the in-memory log into in-memory SQLite
    assert memory_db.read.balances("acme")["payg"] == WELCOME_CREDITS - 1
    assert [r["address"] for r in memory_db.read.results(safe)] == ["Ann@X.org"]


def test_the_csv_export_of_values_is_the_csv_of_rows_byte_for_byte(memory_db, tmp_path):
    """`vec task results --format csv` renders lists of values (no dict per row); the API
    renders rows: both must write the same file, formula cells and flags included."""
    from projections.exports import RESULT_COLUMNS, csv_lines

    engine = Engine(memory_db, EngineSettings(chunk_size=10), lambda: T0)
    engine.open_account("acme")
    addresses = ["=cmd@x.org", "ann@x.org", "bob@x.org", "-1@y.org", "cat@x.org"]
    (tmp_path / "list.csv").write_text("\n".join(addresses) + "\n")
    task_id = engine.create_bulk("acme", str(tmp_path / "list.csv")).task_id
    engine.submit_chunk(task_id, 0, staged_chunk(memory_db, task_id, 0, 10), "smtp", "primary")
    engine.record_results(task_id, 0, [
        Result("=cmd@x.org", "safe", reply="250 ok", mx_host="mx.x.org", flags=("role", "mx_found")),
        Result("ann@x.org", "invalid", "user_unknown", reply="550 5.1.1 <ann@x.org>: unknown, \"quoted\""),
        Result("bob@x.org", "unknown", "greylisted", detail="+try later", reply="451 4.7.1"),
        Result("-1@y.org", "risky", "catch_all", flags=("catch_all", "free_email")),
    ])
    memory_db.catch_up()
    read = memory_db.read
    assert memory_db.projector.stopped() == {}
    for status, lines in ((None, 5), ("unknown", 2)):  # the header and the rows
        by_rows = "".join(csv_lines(read.results(task_id, status)))
        by_values = "".join(read.result_csv(task_id, RESULT_COLUMNS, status))
        assert by_values == by_rows and by_rows.count("\n") == lines
        assert "'+try later" in by_rows  # a formula-like cell, made safe
    every = "".join(read.result_csv(task_id, RESULT_COLUMNS))
    assert "'=cmd@x.org,safe," in every and "'-1@y.org,risky,catch_all" in every
    assert ",false,true,false,false,true\r\n" in every  # =cmd's flags: role and mx_found

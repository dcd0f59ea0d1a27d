"""Erasure: after a task's data is erased, none of its addresses can be read back from any file
of the store, while money and counts still audit clean.

Addresses never reach the store's files in plain text: they are sealed with the task's own
key (engine/keyring.py). So the proof is twofold, on the raw bytes of every file: no address
in plain text, ever; and after erasure, no copy of the task's key either (SQLite: the file
and its WAL, with secure_delete; PostgreSQL: every file of the database)."""
from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest

from events import ResultsRecorded
from consumers.providers import InstantProvider
from consumers.runtime import Runtime
from engine.audit import audit
from entrypoints.settings import EngineSettings
from engine.domain.errors import ResultsDeleted
from engine.service import Engine
from engine.store import open_database

ADDRESSES = [f"zq{i}xerasure{i * 7}@vault{i % 3}.example" for i in range(12)] + ["unknown9zq@vault0.example"]


def _run_bulk(db, tmp_path) -> tuple[Engine, str]:
    engine = Engine(db, EngineSettings(provider="instant", chunk_size=4, poll_interval=0.02, heartbeat_interval=0.1))
    engine.open_account("acme")
    path = tmp_path / "list.csv"
    path.write_text("email\n" + "\n".join(ADDRESSES) + "\n")
    task_id = engine.create_bulk("acme", path).task_id
    asyncio.run(Runtime(engine, InstantProvider(), only_task=task_id).run())
    db.catch_up()
    return engine, task_id


def _found(files: list[Path], needles: list[bytes]) -> list[tuple[str, str]]:
    hits = []
    for file in files:
        data = file.read_bytes()
        hits += [(file.name, needle[:40].decode(errors="replace")) for needle in needles if needle in data]
    return hits


def _prove_erasure(db, engine: Engine, task_id: str, files) -> None:
    plain = [a.encode() for a in ADDRESSES]
    key = db.keyring.store.get(task_id)
    assert key is not None and len(key) == 64
    assert _found(files(), plain) == [], "an address reached the store's files in plain text"
    assert _found(files(), [key]), "the proof cannot see the key where it is: it would prove nothing"
    before = audit(db)
    assert before.violations == []
    history = db.read.history("acme")
    task = db.read.task(task_id)

    engine.erase_task(task_id, "request")
    db.catch_up()

    assert _found(files(), [key] + plain) == [], "the task's key (or an address) survived its erasure"
    assert db.keyring.store.get(task_id) is None
    after = db.read.task(task_id)
    assert after["status"] == "deleted" and after["results_deleted_at"]
    assert {k: after[k] for k in ("total", "verified", "unknown", "consumed", "refunded", "debited")} == \
        {k: task[k] for k in ("total", "verified", "unknown", "consumed", "refunded", "debited")}
    assert list(db.read.results(task_id)) == []
    with pytest.raises(ResultsDeleted):  # asked for, they are gone, not an empty list
        list(engine.unprocessed(task_id))
    assert db.read.history("acme") == history  # the Credits History is untouched
    events = list(db.events.read_stream(f"task-{task_id}"))
    settled = [a for r in events if isinstance(r.event, ResultsRecorded) for a in r.event.addresses]
    assert len(settled) == len(ADDRESSES) and all(a.startswith("erased:") for a in settled)
    assert len(set(settled)) == len(ADDRESSES)  # one stable placeholder per address: folds still work
    fresh = Engine(open_database(db.url), engine.settings).task(task_id)
    assert (fresh.consumed, fresh.refunded, fresh.erased) == (len(ADDRESSES) - 1, 1, True)
    assert audit(db).violations == []


def test_an_erased_task_leaves_no_address_and_no_key_in_the_sqlite_files(tmp_path):
    db = open_database(f"sqlite:///{tmp_path}/vec.db")
    engine, task_id = _run_bulk(db, tmp_path)

    def files() -> list[Path]:
        return [p for p in tmp_path.iterdir() if p.name.startswith("vec.db")]

    try:
        _prove_erasure(db, engine, task_id, files)
    finally:
        db.close()


@pytest.mark.postgres
def test_an_erased_task_leaves_no_address_and_no_key_in_the_postgresql_files(pg_url, postgres_server, tmp_path):
    db = open_database(pg_url, migrate=True)
    engine, task_id = _run_bulk(db, tmp_path)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        oid = conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]
    base = Path(postgres_server.dir) / "base" / str(oid)

    def files() -> list[Path]:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")  # what the database holds is on disk, in its files
        return [p for p in base.iterdir() if p.is_file()]

    try:
        _prove_erasure(db, engine, task_id, files)
    finally:
        db.close()


def test_the_retention_sweep_erases_what_is_past_the_window(tmp_path):
    from datetime import timedelta

    db = open_database(f"sqlite:///{tmp_path}/vec.db")
    try:
        engine, task_id = _run_bulk(db, tmp_path)
        assert engine.account("acme").retention_days == 15
        engine.set_retention("acme", 3)
        finished = engine.clock()

        def sweep_at(moment):  # the engine's clock is the log's time: the audit checks the erasure by it
            engine.clock = lambda: moment
            return engine.erase_due()

        assert sweep_at(finished + timedelta(days=2, hours=23)) == []
        assert sweep_at(finished + timedelta(days=3, minutes=1)) == [task_id]
        db.catch_up()
        assert db.read.task(task_id)["status"] == "deleted"
        assert sweep_at(finished + timedelta(days=30)) == []  # once
        assert [r.event.reason for r in db.events.read_stream(f"task-{task_id}") if
                type(r.event).__name__ == "TaskDataErased"] == ["retention"]
        assert audit(db).violations == []
    finally:
        db.close()


def test_a_process_that_folded_a_task_before_another_erased_it_still_reads_it(tmp_path):
    """The API process holds a task's state folded with its addresses opened; the engine
    records results, and another process erases the task. What the API then reads of the
    stream comes back as placeholders: it must still fold the task (found by the simulator)."""
    from engine.domain.tasks import Result

    db = open_database(f"sqlite:///{tmp_path}/vec.db")
    other = open_database(db.url)
    try:
        api = Engine(db, EngineSettings(provider="instant", chunk_size=4))
        api.open_account("acme")
        path = tmp_path / "list.csv"
        path.write_text("email\n" + "\n".join(ADDRESSES[:4]) + "\n")
        task_id = api.create_bulk("acme", path).task_id
        runner = Engine(other, api.settings)
        runner.submit_chunk(task_id, 0, ADDRESSES[:4], "instant", "primary")
        assert api.task(task_id).pending[0]  # the API's state holds the chunk's addresses, opened
        runner.record_results(task_id, 0, [Result(a, "safe", tier="primary") for a in ADDRESSES[:4]])
        runner.erase_task(task_id, "request")  # (a retention erasure this early would break the audit's time rule)
        db.keyring.forget(task_id)  # the API's cached key expired (CACHE_TTL)
        state = api.task(task_id)
        assert (state.status, state.consumed, state.erased) == ("completed", 4, True)
        assert audit(db).violations == []
    finally:
        other.close()
        db.close()

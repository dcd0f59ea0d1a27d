"""Cached aggregates are exception-safe: a fold or an append that fails at any point never
leaves a cached state ahead of (or behind) its version. Failures are injected at every
event of a fold and at every statement of an append; after each, the engine's states must
equal a fresh fold of the log, and the next command must settle nothing twice.

Also run under `python -O` by scripts/test: nothing here may rest on `assert` in the code.
"""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from entrypoints.settings import EngineSettings
from engine.domain import accounts, tasks
from engine.domain.tasks import Result
from engine.service import Engine
from engine.store import open_database
from tests.staged import staged_chunk

T0 = datetime(2026, 6, 1, 10, 0, tzinfo=timezone.utc)
SETTINGS = EngineSettings(chunk_size=3, chunk_window=2)


class Injected(Exception):
    """The failure this test injects."""


def _fresh(db, task_id: str, account_id: str) -> tuple[tasks.TaskState, accounts.AccountState]:
    other = Engine(open_database(db.url), SETTINGS, lambda: T0)
    try:
        return other.task(task_id), other.account(account_id)
    finally:
        other.db.close()


def _bulk_with_history(db, tmp_path) -> tuple[Engine, str]:
    """A bulk of 9 addresses: two chunks submitted, some results (an Unknown among them)."""
    engine = Engine(db, SETTINGS, lambda: T0)
    engine.open_account("acme")
    path = tmp_path / "list.csv"
    path.write_text("\n".join(f"user{i}@example.com" for i in range(9)) + "\n")
    task_id = engine.create_bulk("acme", path).task_id
    for chunk_no in (0, 1):
        state = engine.task(task_id)
        engine.submit_chunk(task_id, chunk_no, staged_chunk(db, state.upload_id, chunk_no, 3, task_id), "p", "primary")
    engine.record_results(task_id, 0, [Result("user0@example.com", "safe"), Result("user1@example.com", "unknown",
                                                                                   "greylisted")])
    return engine, task_id


def _assert_consistent(engine: Engine, db, task_id: str) -> None:
    task, account = _fresh(db, task_id, "acme")
    assert engine.task(task_id) == task
    assert engine.account("acme") == account


@pytest.fixture
def fold_failure(monkeypatch):
    """fail_at(n): the n-th task fold raises after the real evolve changed the state (the
    worst moment: state mutated, version not yet moved)."""
    real = tasks.evolve
    calls = {"n": 0, "at": None}

    def evolve(state, event):
        calls["n"] += 1
        result = real(state, event)
        if calls["n"] == calls["at"]:
            raise Injected(f"fold failed at call {calls['n']}")
        return result

    monkeypatch.setattr(tasks, "evolve", evolve)

    def fail_at(n: int | None) -> None:
        calls["n"], calls["at"] = 0, n

    return fail_at


def test_a_cold_load_that_fails_at_any_event_leaves_nothing_behind(db, tmp_path, fold_failure):
    writer, task_id = _bulk_with_history(db, tmp_path)
    length = db.events.stream_version(f"task-{task_id}")
    for at in range(1, length + 1):
        engine = Engine(db, SETTINGS, lambda: T0)
        fold_failure(at)
        with pytest.raises(Injected):
            engine.task(task_id)
        fold_failure(None)
        _assert_consistent(engine, db, task_id)


def test_a_catch_up_that_fails_at_any_new_event_leaves_nothing_behind(db, tmp_path, fold_failure):
    engine, task_id = _bulk_with_history(db, tmp_path)
    other = Engine(open_database(db.url), SETTINGS, lambda: T0)
    other.record_results(task_id, 0, [Result("user2@example.com", "invalid", "user_unknown")])
    other.record_results(task_id, 1, [Result("user3@example.com", "unknown", "smtp_timeout"),
                                      Result("user4@example.com", "safe")])
    new_events = db.events.stream_version(f"task-{task_id}") - engine._cache[f"task-{task_id}"][1]
    assert new_events >= 3
    for at in range(1, new_events + 1):
        engine.task(task_id)  # warm again
        engine._cache[f"task-{task_id}"] = (_fresh_at(db, task_id, new_events), _version(db, task_id) - new_events)
        fold_failure(at)
        with pytest.raises(Injected):
            engine.task(task_id)
        fold_failure(None)
        _assert_consistent(engine, db, task_id)
    other.db.close()


def _version(db, task_id: str) -> int:
    return db.events.stream_version(f"task-{task_id}")


def _fresh_at(db, task_id: str, back: int) -> tasks.TaskState:
    """The task's state `back` events before its end (a cache that missed the last events)."""
    state = tasks.TaskState(task_id=task_id)
    for recorded in list(db.events.read_stream(f"task-{task_id}"))[:-back]:
        state = tasks.evolve(state, recorded.event)
    return state


def test_a_fold_of_own_events_that_fails_drops_the_cache_and_settles_nothing_twice(db, tmp_path, fold_failure):
    engine, task_id = _bulk_with_history(db, tmp_path)
    engine.task(task_id)
    fold_failure(1)  # the append commits; folding its first event into the cache fails
    with pytest.raises(Injected):
        engine.record_results(task_id, 1, [Result("user3@example.com", "safe")])
    fold_failure(None)
    _assert_consistent(engine, db, task_id)
    # The same result again (a retry): settled once, charged once.
    assert engine.record_results(task_id, 1, [Result("user3@example.com", "safe")]) == []
    assert engine.task(task_id).consumed == 2


class FaultyConnection:
    """A sqlite3 connection that raises at its n-th statement."""

    def __init__(self, conn, fail_at: int | None = None):
        self._conn, self.fail_at, self.calls = conn, fail_at, 0

    def _tick(self, sql: str) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise Injected(f"statement {self.calls} failed: {sql[:40]}")

    def execute(self, sql, *args):
        self._tick(sql)
        return self._conn.execute(sql, *args)

    def executemany(self, sql, *args):
        self._tick(sql)
        return self._conn.executemany(sql, *args)

    def __getattr__(self, name):
        return getattr(self._conn, name)


COMMANDS = {
    "results with an unknown": lambda e, t: e.record_results(
        t, 1, [Result("user3@example.com", "safe"), Result("user4@example.com", "unknown", "greylisted")]),
    "cancel": lambda e, t: e.cancel_task(t),
    "chunk failure": lambda e, t: e.fail_chunk(t, 1, "provider rejected the chunk"),
    "system failure": lambda e, t: e.fail_for_system(t, "outage"),
}


@pytest.mark.parametrize("name", COMMANDS)
def test_an_append_that_fails_at_any_statement_is_all_or_nothing(db, tmp_path, name):
    command = COMMANDS[name]
    engine, task_id = _bulk_with_history(db, tmp_path)
    real = db.events.conn
    probe = FaultyConnection(real)
    db.events.conn = probe
    engine.task(task_id)
    engine.account("acme")
    # Count the statements of one successful run on a copy of the store.
    copy_path = tmp_path / "copy.db"
    real.execute("VACUUM INTO ?", (str(copy_path),))
    copy = open_database(f"sqlite:///{copy_path}")
    counter = FaultyConnection(copy.events.conn)
    copy.events.conn = counter
    command(Engine(copy, SETTINGS, lambda: T0), task_id)
    statements = counter.calls
    copy.close()
    assert statements >= 4
    head = db.events.head()
    for at in range(1, statements + 1):
        probe.fail_at, probe.calls = at, 0
        try:
            command(engine, task_id)
        except Injected:
            pass
        probe.fail_at = None
        if db.events.head() != head:  # the fault hit after the commit: the command is done
            break
        assert not real.in_transaction, f"a failure at statement {at} left the transaction open"
        _assert_consistent(engine, db, task_id)
    _assert_consistent(engine, db, task_id)
    # Whatever happened, running the command to its end settles every address once.
    try:
        command(engine, task_id)
    except Exception:  # noqa: BLE001 - a finished task refuses a second cancel: fine
        pass
    _assert_consistent(engine, db, task_id)
    task, account = _fresh(db, task_id, "acme")
    assert task.consumed + task.refunded + task.unsettled == 9
    assert account.total + sum(account.outstanding.values()) == 200
    db.events.conn = real

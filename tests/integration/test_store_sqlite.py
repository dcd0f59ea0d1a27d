"""The event-store contract on the embedded SQLite backend, plus what only SQLite promises."""
from __future__ import annotations

import sqlite3
from datetime import timedelta, timezone

import pytest

from engine.store.sqlite import SqliteEventStore, connect
from tests.integration.store_contract import T0, EventStoreContract, grants, new


class TestSqliteEventStore(EventStoreContract):
    def make_store(self):
        return SqliteEventStore.open(self.workspace / "log" / "vec.db")

    def connect_again(self, store):
        return SqliteEventStore.open(self.workspace / "log" / "vec.db")


@pytest.fixture
def store(tmp_path):
    s = SqliteEventStore.open(tmp_path / "vec.db")
    yield s
    s.close()


def test_the_file_is_in_wal_mode(store):
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_log_survives_closing_and_reopening(tmp_path):
    first = SqliteEventStore.open(tmp_path / "vec.db")
    recorded = first.append(grants("s", 1, 2, 3), {"s": 0})
    first.close()
    again = SqliteEventStore.open(tmp_path / "vec.db")
    try:
        assert list(again.read_all()) == recorded
        assert again.stream_version("s") == 3
        assert [r.position for r in again.append(grants("s", 4), {"s": 3})] == [4]
    finally:
        again.close()


def test_a_refused_append_leaves_no_open_transaction(store):
    store.append(grants("s", 1), {"s": 0})
    with pytest.raises(Exception):
        store.append(grants("s", 2), {"s": 0})
    assert not store.conn.in_transaction


def test_stored_rows_hold_type_and_schema_version(store):
    store.append(grants("s", 7), {"s": 0})
    row = store.conn.execute("SELECT stream, version, type, schema_version, data FROM events").fetchone()
    assert row == ("s", 1, "CreditsGranted", 1,
                   '{"amount":7,"bucket":"payg","expires_at":null,"reason":"purchase"}')


def test_the_log_rejects_a_second_event_at_the_same_stream_version_even_behind_the_store(store):
    store.append(grants("s", 1), {"s": 0})
    with pytest.raises(sqlite3.IntegrityError):
        store.conn.execute("INSERT INTO events (event_id, stream, version, type, schema_version, data, occurred_at)"
                           " VALUES ('x', 's', 1, 'CreditsGranted', 1, '{}', '2026-01-01T00:00:00+00:00')")


def test_position_at_a_moment(store):
    for hours in range(3):
        store.append([new("s", at=T0 + timedelta(hours=hours))], {"s": hours})
    assert store.position_at(T0 - timedelta(seconds=1)) == 0
    assert store.position_at(T0) == 1
    assert store.position_at(T0 + timedelta(hours=1, minutes=5)) == 2
    assert store.position_at(T0 + timedelta(days=1)) == 3


def test_connect_creates_the_directory(tmp_path):
    conn = connect(tmp_path / "a" / "b" / "vec.db")
    try:
        assert (tmp_path / "a" / "b" / "vec.db").exists()
    finally:
        conn.close()


def test_position_at_a_moment_in_another_time_zone(store):
    for hours in range(3):
        store.append([new("s", at=T0 + timedelta(hours=hours))], {"s": hours})
    paris = timezone(timedelta(hours=2))
    assert store.position_at((T0 + timedelta(minutes=30)).astimezone(paris)) == 1
    assert store.position_at((T0 - timedelta(minutes=30)).astimezone(paris)) == 0
    new_york = timezone(timedelta(hours=-4))
    assert store.position_at((T0 + timedelta(hours=2, minutes=1)).astimezone(new_york)) == 3

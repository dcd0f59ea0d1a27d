"""The event-store contract on a real PostgreSQL server (a throw-away cluster started by the
test session), plus what only the PostgreSQL store promises."""
from __future__ import annotations

import pytest

from engine.store.base import SchemaMissing, StoreUnavailable
from engine.store.postgres import SCHEMA_VERSION, Pool, PostgresEventStore, migrate_log, require_schema
from tests.integration.store_contract import EventStoreContract, grants

pytestmark = pytest.mark.postgres


class TestPostgresEventStore(EventStoreContract):
    @pytest.fixture(autouse=True)
    def _database(self, pg_url):
        self.url = pg_url
        pool = Pool(pg_url)
        migrate_log(pool)
        pool.close()

    def make_store(self):
        return PostgresEventStore(Pool(self.url))

    def connect_again(self, store):
        return PostgresEventStore(Pool(self.url))


def test_a_store_without_schema_is_refused_clearly(pg_url):
    pool = Pool(pg_url)
    try:
        with pytest.raises(SchemaMissing, match="run `vec migrate`"):
            require_schema(pool)
        assert migrate_log(pool) == (0, SCHEMA_VERSION)
        assert migrate_log(pool) == (SCHEMA_VERSION, SCHEMA_VERSION)  # again: nothing to do
        require_schema(pool)
    finally:
        pool.close()


def test_an_unreachable_server_is_one_clear_error():
    with pytest.raises(StoreUnavailable, match="cannot reach PostgreSQL at 127.0.0.1:1/vec"):
        Pool("postgresql://postgres@127.0.0.1:1/vec?connect_timeout=2")


def test_the_head_row_hands_out_positions_in_commit_order(pg_url):
    pool = Pool(pg_url)
    migrate_log(pool)
    store = PostgresEventStore(pool)
    try:
        store.append(grants("a", 1, 2), {"a": 0})
        with pool.connection() as conn:
            assert conn.execute("SELECT position FROM log_head").fetchone()[0] == 2
            assert conn.execute("SELECT MAX(position) FROM events").fetchone()[0] == 2
    finally:
        store.close()

"""The ports' contracts (ports_contract.py) on a real PostgreSQL server (a throw-away
cluster started by the test session), on a migrated, empty database per test."""
from __future__ import annotations

import pytest

from engine.store.postgres import Pool, PostgresInputs, PostgresKeyStore, PostgresLease, PostgresSession, migrate_log
from tests.integration.outbox_contract import OutboxContract
from tests.integration.ports_contract import (
    EngineLeaseContract,
    FleetStoreContract,
    KeyStoreContract,
    ReadModelSessionContract,
    StagedInputsContract,
)

pytestmark = pytest.mark.postgres


class PostgresDatabase:
    @pytest.fixture(autouse=True)
    def _database(self, pg_url):
        self.url = pg_url

    def pool(self):
        pool = Pool(self.url)
        self.closing(pool.close)
        migrate_log(pool)
        return pool


class TestPostgresInputs(PostgresDatabase, StagedInputsContract):
    def make_inputs(self):
        return PostgresInputs(self.pool())


class TestPostgresLease(PostgresDatabase, EngineLeaseContract):
    def make_lease(self):
        return PostgresLease(self.pool())


class TestPostgresKeyStore(PostgresDatabase, KeyStoreContract):
    def make_keystore(self):
        return PostgresKeyStore(self.pool())


class TestPostgresReadModelSession(PostgresDatabase, ReadModelSessionContract):
    def make_session(self):
        return PostgresSession(self.pool())


class TestPostgresFleet(PostgresDatabase, FleetStoreContract):
    def make_database(self):
        from engine.store import open_database

        db = open_database(self.url, migrate=True)
        self.closing(db.close)
        return db


class TestPostgresOutbox(PostgresDatabase, OutboxContract):
    def make_session(self):
        return PostgresSession(self.pool())

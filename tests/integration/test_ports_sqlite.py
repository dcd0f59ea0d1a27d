"""The ports' contracts (ports_contract.py) on the embedded SQLite backend: each port on its
own connection to one store file, as open_database wires them."""
from __future__ import annotations

from engine.store.inputs import SqliteInputs
from engine.store.lease import Lease
from engine.store.sqlite import SqliteKeyStore, SqliteSession, connect
from tests.integration.outbox_contract import OutboxContract
from tests.integration.ports_contract import (
    EngineLeaseContract,
    KeyStoreContract,
    ReadModelSessionContract,
    StagedInputsContract,
)


class SqliteFile:
    def connection(self):
        conn = connect(self.workspace / "vec.db")
        self.closing(conn.close)
        return conn


class TestSqliteInputs(SqliteFile, StagedInputsContract):
    def make_inputs(self):
        return SqliteInputs(self.connection())


class TestSqliteLease(SqliteFile, EngineLeaseContract):
    def make_lease(self):
        return Lease(self.connection())


class TestSqliteKeyStore(SqliteFile, KeyStoreContract):
    def make_keystore(self):
        return SqliteKeyStore(self.connection())


class TestSqliteReadModelSession(SqliteFile, ReadModelSessionContract):
    def make_session(self):
        return SqliteSession(self.connection())


class TestSqliteOutbox(SqliteFile, OutboxContract):
    def make_session(self):
        return SqliteSession(self.connection())

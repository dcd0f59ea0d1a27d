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

    def test_a_run_holding_a_nul_is_stored_whole(self):
        """SQLite keeps a NUL inside a text (PostgreSQL refuses it); a run's JSON would end the
        text there, so such a run is written row by row."""
        session = self.session_with_table()
        texts = [f"before\x00after{n}" for n in range(100)]
        with session.transaction():
            session.upsert_runs(self.TABLE, [[("z", n, text, 1) for n, text in enumerate(texts)]])
        stored = [row[0] for row in session.execute("SELECT CAST(text AS BLOB) FROM rm_contract ORDER BY seq")]
        assert stored == [text.encode() for text in texts]


class TestSqliteOutbox(SqliteFile, OutboxContract):
    def make_session(self):
        return SqliteSession(self.connection())

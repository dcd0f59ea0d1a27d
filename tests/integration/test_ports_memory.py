"""The ports' contracts (ports_contract.py) on the in-memory adapters (engine/store/memory.py)."""
from __future__ import annotations

from engine.store.memory import MemoryInputs, MemoryKeyStore, MemoryLease
from engine.store.sqlite import SqliteSession, connect
from tests.integration.outbox_contract import OutboxContract
from tests.integration.ports_contract import (
    EngineLeaseContract,
    FleetStoreContract,
    KeyStoreContract,
    ReadModelSessionContract,
    StagedInputsContract,
)


class TestMemoryInputs(StagedInputsContract):
    def make_inputs(self):
        return MemoryInputs()


class TestMemoryLease(EngineLeaseContract):
    def make_lease(self):
        return MemoryLease()


class TestMemoryKeyStore(KeyStoreContract):
    def make_keystore(self):
        return MemoryKeyStore()


class TestMemoryReadModelSession(ReadModelSessionContract):
    """memory:// keeps its read models in an in-memory SQLite database (engine/store/__init__.py)."""

    def make_session(self):
        conn = connect(":memory:")
        self.closing(conn.close)
        return SqliteSession(conn)


class TestMemoryFleet(FleetStoreContract):
    def make_database(self):
        from engine.store import open_database
        from engine.store.memory import MemoryFleet

        db = open_database("memory://")
        self.closing(db.close)
        db.fleet = MemoryFleet(db.events.log)
        return db


class TestMemoryOutbox(OutboxContract):
    """memory:// keeps the outboxes with its read models, in an in-memory SQLite database."""

    def make_session(self):
        conn = connect(":memory:")
        self.closing(conn.close)
        return SqliteSession(conn)

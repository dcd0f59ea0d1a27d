"""The event-store contract on the in-memory log (engine/store/memory.py): every handle made
by `connect_again` shares one log, as connections share a database."""
from __future__ import annotations

from engine.store.memory import MemoryEventStore
from tests.integration.store_contract import EventStoreContract


class TestMemoryEventStore(EventStoreContract):
    def make_store(self):
        return MemoryEventStore()

    def connect_again(self, store):
        return store.connect_again()

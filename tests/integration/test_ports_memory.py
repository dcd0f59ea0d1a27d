"""Every port's contract on the in-memory adapters (engine/store/memory.py): the event store
(store_contract.py) and the others (ports_contract.py)."""
from __future__ import annotations

from engine.store.memory import MemoryEventStore, MemoryInputs, MemoryKeyStore, MemoryLease
from tests.integration.ports_contract import EngineLeaseContract, KeyStoreContract, StagedInputsContract
from tests.integration.store_contract import EventStoreContract


class TestMemoryEventStore(EventStoreContract):
    def make_store(self):
        return MemoryEventStore()

    def connect_again(self, store):
        return store.connect_again()


class TestMemoryInputs(StagedInputsContract):
    def make_inputs(self):
        return MemoryInputs()


class TestMemoryLease(EngineLeaseContract):
    def make_lease(self):
        return MemoryLease()


class TestMemoryKeyStore(KeyStoreContract):
    def make_keystore(self):
        return MemoryKeyStore()

"""Each task's personal data sealed with a key of its own: erasure in an immutable log.

Customer lists are personal data, and the service keeps per-address data for a limited time
(`data_retention_days`) or until the customer asks for erasure. The log is immutable and
must stay auditable, so addresses never enter it (or the read models, or the staged
uploads) in plain text: every personal field is sealed with the task's own data key, and
erasing a task destroys its key (crypto-shredding). The sealed texts stay where they are
and can no longer be opened; counts and money, which hold no personal data, still fold.

Sealing is AES-SIV (RFC 5297), deterministic: the same address of one task always seals to
the same text, so the deciders' "settle each address once", the read models' keys and the
audit's comparisons work on sealed values exactly as on plain ones. An erased task's sealed
values read back as stable placeholders ("erased:…"), one per address, so replays and audits
of counts and money still work after erasure.

Two other secrets of the store live beside the keys: the `pepper` of idempotency
fingerprints of single addresses (a keyed hash, not a guessable digest of an address).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal, Protocol, Sequence, overload

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from engine.domain.errors import InvariantViolation
from events import Event, NewEvent
from events.base import SEALED as SEALED, is_sealed

if TYPE_CHECKING:
    from projections.base import Table
    from projections.exports import BlockOpener

ERASED = "erased:"
CACHE = 1024  # keys kept in memory
CACHE_TTL = 60.0  # seconds a process keeps a key it read: another process's erasure reaches it by then
MEMO_ENTRIES = 4096  # per sealer: a chunk's addresses (or a sealing worker's batch), sealed once and reused
# sealed texts are URL-safe base64 without padding; binascii with a translation is twice as
# fast as base64.urlsafe_* (an export opens a million of them)
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_PADDING = ("", "===", "==", "=")  # by the unpadded length modulo 4 (1 is never valid: refused)


class KeyStore(Protocol):
    """Where a backend keeps the keys (a small table); `destroy` must leave no copy of the key
    in the store's files (SQLite: secure_delete and a truncated WAL; PostgreSQL: the keys
    table rewritten)."""

    def get(self, scope: str) -> bytes | None: ...

    def put(self, scope: str, key: bytes) -> bytes:
        """Stores the key unless the scope has one already; returns the scope's key."""

    def destroy(self, scope: str) -> None: ...


class Sealer:
    def __init__(self, key: bytes):
        self.key = key  # for a sealing worker (engine/sealing_pool.py), never shown
        self._aead = AESSIV(key)
        self._mac_key = hashlib.sha256(b"vec-mac/" + key).digest()
        # plain -> sealed, for the texts this process sealed or opened last: one address is
        # staged, submitted, settled and shown, and sealing is deterministic, so one AES-SIV
        # call serves them all. Bounded, and gone with the sealer (an erased key's too).
        self._memo: dict[str, str] = {}

    def seal(self, text: str) -> str:
        sealed = self._memo.get(text)
        if sealed is not None:
            return sealed
        if is_sealed(text):
            return text
        raw = self._aead.encrypt(text.encode(), None)
        sealed = SEALED + binascii.b2a_base64(raw, newline=False).translate(_TO_URLSAFE).rstrip(b"=").decode()
        self.remember_many((text,), (sealed,))
        return sealed

    def remember_many(self, plains: Sequence[str], sealed: Sequence[str]) -> None:
        """Plain texts and their sealed forms, sealed here or elsewhere (a chunk's staged
        addresses opened, a sealing worker's batch): `seal` then finds them."""
        if len(self._memo) + len(plains) > MEMO_ENTRIES:
            self._memo.clear()  # cheaper than an LRU, and a chunk refills it at once
        self._memo.update(zip(plains, sealed))

    def open(self, text: str) -> str:
        if text[:1] != SEALED:
            return text  # stored before sealing existed
        try:  # a text cut or altered in the store fails here as a wrong key would
            raw = binascii.a2b_base64((text[1:] + _PADDING[(len(text) - 1) % 4]).encode().translate(_FROM_URLSAFE))
            return self._aead.decrypt(raw, None).decode()
        except (InvalidTag, binascii.Error):
            raise InvariantViolation("a sealed value does not open with its task's key") from None

    def mac(self, text: str) -> str:
        """A keyed digest (for event ids): stable for the task, meaningless without its key."""
        return hmac.digest(self._mac_key, text.encode(), "sha256").hex()[:32]


def _has_personal(event: Event) -> bool:
    return any(getattr(event, name) for name in event.personal)


def placeholder(text: str) -> str:
    """What an erased task's sealed value reads as: stable and distinct per value."""
    if not text.startswith(SEALED):
        return text
    return ERASED + base64.b32encode(hashlib.sha256(text.encode()).digest()[:10]).decode().lower()


class Keyring:
    """The data keys of one store, cached; thread-safe."""

    def __init__(self, store: KeyStore):
        self.store = store
        self._cache: OrderedDict[str, tuple[Sealer, float]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def scope_of(stream: str) -> str | None:
        return stream[5:] if stream.startswith("task-") else None

    def _remember(self, scope: str, sealer: Sealer) -> Sealer:
        with self._lock:
            self._cache[scope] = (sealer, time.monotonic() + CACHE_TTL)
            self._cache.move_to_end(scope)
            while len(self._cache) > CACHE:
                self._cache.popitem(last=False)
        return sealer

    @overload
    def sealer(self, scope: str, create: Literal[True]) -> Sealer: ...

    @overload
    def sealer(self, scope: str, create: bool = False) -> Sealer | None: ...

    def sealer(self, scope: str, create: bool = False) -> Sealer | None:
        """The scope's sealer; None when it has no key (never had one, or erased). With
        `create`, a key is made (once, even when two processes race)."""
        with self._lock:
            cached = self._cache.get(scope)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        key = self.store.get(scope)
        if key is None and create:
            key = self.store.put(scope, os.urandom(64))
        return self._remember(scope, Sealer(key)) if key is not None else None

    def destroy(self, scope: str) -> None:
        self.store.destroy(scope)
        with self._lock:
            self._cache.pop(scope, None)

    def forget(self, scope: str) -> None:
        """Drops a cached key (another process may have destroyed it)."""
        with self._lock:
            self._cache.pop(scope, None)

    # --- what the store's codec uses ------------------------------------------------------

    def seal_for(self, stream: str, events: Iterable[Event] = ()) -> Callable[[str], str] | None:
        """The seal function for `events` appended to `stream`: None when none of them holds
        personal data; a task's key is made on first need (never for an erased task's
        non-personal events, such as its deletion)."""
        scope = self.scope_of(stream)
        if scope is None or not any(_has_personal(e) for e in events):
            return None
        return self.sealer(scope, create=True).seal

    def open_for(self, stream: str) -> Callable[[str], str] | None:
        scope = self.scope_of(stream)
        if scope is None:
            return None
        sealer = self.sealer(scope)
        return sealer.open if sealer is not None else placeholder

    # --- what the read models use --------------------------------------------------------

    def seal_row(self, table: Table, row: dict[str, Any]) -> dict[str, Any]:
        """A read-model row as stored: its personal columns sealed with its task's key."""
        sealer = self.sealer(row["task_id"])
        if sealer is None:  # no key (a task from before sealing, or erased): as it is
            return row
        return {**row, **{c: sealer.seal(row[c]) for c in table.personal if row.get(c)}}

    def open_row(self, task_id: str, row: dict[str, Any]) -> dict[str, Any]:
        return self.row_opener(task_id)(row)

    def value_opener(self, task_id: str) -> Callable[[str], str]:
        """Opens one sealed value of a task (plain values come back as they are): the key is
        looked up once for all of them."""
        sealer = self.sealer(task_id)
        return sealer.open if sealer is not None else placeholder

    def blocks_opener(self, task_id: str) -> BlockOpener:
        """Opens blocks of a task's values (an export of a million rows): a big one's by a
        worker, blocks ahead (engine/sealing_pool.py); an erased task's as placeholders."""
        from engine import sealing_pool  # it builds on this module's Sealer
        from projections.exports import open_in_process

        sealer = self.sealer(task_id)
        if sealer is None:
            return open_in_process(placeholder)
        return lambda blocks: sealing_pool.POOL.open_blocks(sealer, blocks)

    def row_opener(self, task_id: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
        """Opens the sealed values of a task's rows, in place."""
        opener = self.value_opener(task_id)

        def open_row(row: dict[str, Any]) -> dict[str, Any]:
            for name, value in row.items():
                if value.__class__ is str and value.startswith(SEALED):
                    row[name] = opener(value)
            return row
        return open_row

    def pepper(self) -> bytes:
        """The store-wide secret of keyed fingerprints."""
        return self.sealer("~pepper", create=True)._mac_key


def append_seals(keyring: Keyring | None, events: Sequence[NewEvent]) -> dict[str, Callable[[str], str] | None]:
    """Each stream's seal function for an append (None: nothing to seal). The event stores
    call it before their transaction opens: a key made here must never vanish in a rollback."""
    streams = {new.stream for new in events}
    if keyring is None:
        return dict.fromkeys(streams)
    return {stream: keyring.seal_for(stream, [n.event for n in events if n.stream == stream]) for stream in streams}

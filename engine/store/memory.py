"""The in-memory adapters of every store port (engine/store/base.py, engine/keyring.py):
pure Python, no I/O, for fast unit tests and the simulator.

They honour the same contracts as the SQLite and PostgreSQL adapters (tests/integration/
store_contract.py and ports_contract.py run on all three). The log keeps events in their
stored form (the codec's text, personal fields sealed), so erasure and upcasting behave as
on disk. One `MemoryLog` may be shared by several `MemoryEventStore` handles, as several
connections share one database: one writer at a time, and readers only ever see whole
committed appends (never one still open), without waiting for the writer.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from engine import chain
from engine.keyring import Keyring, append_seals
from engine.store.base import (
    ANY,
    ConcurrencyError,
    DuplicateEventError,
    EventTally,
    Idempotency,
    IdempotencyConflict,
    staged_row,
    units,
)
from engine.store.lease import LeaseHeld, LeaseInfo
from events import NewEvent, RecordedEvent, decode, encode


@dataclass(frozen=True)
class _Row:
    """An event as the log stores it: its payload is the codec's text."""

    position: int
    event_id: uuid.UUID
    stream: str
    version: int
    type_name: str
    schema_version: int
    data: str
    occurred_at: datetime  # UTC, as the other backends store it
    correlation_id: str | None
    causation_id: str | None
    actor: str | None
    chain: bytes  # engine/chain.py

    def stored(self) -> tuple[object, ...]:
        """The row as the other stores read it: their columns, its chain hash last."""
        return (self.position, self.event_id, self.stream, self.version, self.type_name, self.schema_version,
                self.data, self.occurred_at, self.correlation_id, self.causation_id, self.actor, self.chain)


@dataclass
class MemoryLog:
    """The shared state behind every handle on one in-memory log."""

    rows: list[_Row] = field(default_factory=list)  # row i has position i + 1
    by_stream: dict[str, list[_Row]] = field(default_factory=dict)  # each stream's rows, oldest first
    versions: dict[str, int] = field(default_factory=dict)
    event_ids: set[uuid.UUID] = field(default_factory=set)
    keys: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # key -> fingerprint, first, last
    # held for a whole append: one writer at a time, positions handed out in commit order
    write_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # held only to publish or copy committed state: readers never wait for an open append
    view_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class MemoryEventStore:
    before_commit: Callable[[], None] | None = None  # test seam: called with the append open, positions drawn

    def __init__(self, log: MemoryLog | None = None, keyring: Keyring | None = None):
        self.log = log if log is not None else MemoryLog()
        self.keyring = keyring  # seals personal fields on the way in, opens them on the way out

    def connect_again(self) -> MemoryEventStore:
        """Another handle on the same log (what a second connection is to a database)."""
        return MemoryEventStore(self.log, self.keyring)

    # --- writing ----------------------------------------------------------------------

    def append(
        self,
        events: Sequence[NewEvent],
        expected: Mapping[str, int | None],
        idempotency: Idempotency | None = None,
    ) -> list[RecordedEvent]:
        if not events:
            return []
        seals = append_seals(self.keyring, events)
        log = self.log
        with log.write_lock:
            if idempotency is not None and self._lookup(idempotency) is not None:
                raise ConcurrencyError(f"idempotency key {idempotency.key} was used meanwhile")
            versions = self._checked_versions(expected)
            rows = self._rows(events, versions, seals)
            if self.before_commit is not None:
                self.before_commit()
            with log.view_lock:
                log.rows.extend(rows)
                for row in rows:
                    log.by_stream.setdefault(row.stream, []).append(row)
                log.versions.update(versions)
                log.event_ids.update(row.event_id for row in rows)
                if idempotency is not None:
                    log.keys[idempotency.key] = (idempotency.fingerprint, rows[0].position, rows[-1].position)
        return [RecordedEvent(row.position, new.stream, row.version, new.event_id, row.occurred_at, new.event,
                              new.correlation_id, new.causation_id, new.actor) for new, row in zip(events, rows)]

    def _checked_versions(self, expected: Mapping[str, int | None]) -> dict[str, int]:
        versions: dict[str, int] = {}
        for stream, version in expected.items():
            actual = self.log.versions.get(stream, 0)
            if version is not ANY and actual != version:
                raise ConcurrencyError(f"{stream} is at version {actual}, expected {version}")
            versions[stream] = actual
        return versions

    def _rows(self, events: Sequence[NewEvent], versions: dict[str, int],
              seals: Mapping[str, Callable[[str], str] | None]) -> list[_Row]:
        """The rows of an append, numbered after the log's head (`versions` is advanced)."""
        first = len(self.log.rows) + 1
        ids = [new.event_id for new in events]
        if len(set(ids)) != len(ids) or self.log.event_ids.intersection(ids):
            raise DuplicateEventError("an event id of this append is already in the log")
        columns = []
        for new in events:
            if new.stream not in versions:
                raise ValueError(f"no expected version given for {new.stream}")
            versions[new.stream] += 1
            columns.append((new.event_id, new.stream, versions[new.stream], new.event.type_name(),
                            new.event.schema_version, encode(new.event, seals[new.stream]),
                            new.occurred_at.astimezone(timezone.utc), new.correlation_id, new.causation_id, new.actor))
        previous = self.log.rows[-1].chain if self.log.rows else chain.GENESIS
        return [_Row(first + i, *row, hashed)
                for i, (row, hashed) in enumerate(zip(columns, chain.links(previous, first, columns)))]

    def _lookup(self, idempotency: Idempotency) -> tuple[int, int] | None:
        with self.log.view_lock:
            found = self.log.keys.get(idempotency.key)
        if found is None:
            return None
        if found[0] != idempotency.fingerprint:
            raise IdempotencyConflict(
                f"idempotency key {idempotency.key!r} was already used for a different command")
        return found[1], found[2]

    def replayed(self, idempotency: Idempotency) -> list[RecordedEvent] | None:
        span = self._lookup(idempotency)
        if span is None:
            return None
        return list(self.read_all(after_position=span[0] - 1, until_position=span[1]))

    # --- reading ----------------------------------------------------------------------

    def _committed(self, after_position: int = 0, until_position: int | None = None) -> list[_Row]:
        with self.log.view_lock:
            return self.log.rows[max(after_position, 0):until_position]

    def _event(self, row: _Row, opened: bool = True) -> RecordedEvent:
        open_ = self.keyring.open_for(row.stream) if self.keyring and opened else None
        return RecordedEvent(row.position, row.stream, row.version, row.event_id, row.occurred_at,
                             decode(row.type_name, row.schema_version, row.data, open_),
                             row.correlation_id, row.causation_id, row.actor)

    def read_stream(self, stream: str, after_version: int = 0,
                    until_position: int | None = None) -> Iterator[RecordedEvent]:
        with self.log.view_lock:
            rows = self.log.by_stream.get(stream, [])[max(after_version, 0):]
        for row in rows:
            if until_position is None or row.position <= until_position:
                yield self._event(row)

    def read_all(self, after_position: int = 0, until_position: int | None = None,
                 batch: int = 2000, opened: bool = True) -> Iterator[RecordedEvent]:
        for row in self._committed(after_position, until_position):
            yield self._event(row, opened)

    def read_chain(self, after_position: int = 0, until_position: int | None = None,
                   batch: int = 5000) -> Iterator[tuple[object, ...]]:
        """The stored rows, undecoded, each with its chain hash last (engine/chain.py)."""
        for row in self._committed(after_position, until_position):
            yield row.stored()

    def read_headers(self, after_position: int = 0, limit: int = 10_000) -> list[tuple[int, str, str]]:
        rows = self._committed(after_position, after_position + limit)
        return [(row.position, row.stream, row.type_name) for row in rows]

    def holds(self, event_id: uuid.UUID) -> bool:
        with self.log.view_lock:
            return event_id in self.log.event_ids

    def stream_version(self, stream: str) -> int:
        with self.log.view_lock:
            return self.log.versions.get(stream, 0)

    def stream_versions(self, streams: Sequence[str]) -> dict[str, int]:
        with self.log.view_lock:
            return {stream: self.log.versions.get(stream, 0) for stream in streams}

    def head(self) -> int:
        with self.log.view_lock:
            return len(self.log.rows)

    def tally(self, after_position: int, until_position: int, types: Sequence[str]) -> list[EventTally]:
        """Counted from the stored payloads' JSON (as the databases' JSON functions read them)."""
        wanted, groups = set(types), dict[EventTally, list[int]]()
        for row in self._committed(after_position, until_position):
            if row.type_name in wanted:
                data = json.loads(row.data)
                labels = EventTally(row.type_name, data.get("status"), data.get("reason"), data.get("kind"),
                                    data.get("bucket"), bool(data.get("late")), 0, 0)
                group = groups.setdefault(labels, [0, 0])
                group[0] += 1
                group[1] += units(row.type_name, data)
        return [labels._replace(events=n, units=total) for labels, (n, total) in groups.items()]

    def position_at(self, moment: datetime) -> int:
        return max((row.position for row in self._committed() if row.occurred_at <= moment), default=0)

    def close(self) -> None:
        """Nothing to release: the log lives as long as a handle on it."""


class MemoryInputs:
    """Staged uploads: upload id -> (when staged, its unique addresses in first-seen order)."""

    def __init__(self) -> None:
        self._uploads: dict[str, tuple[datetime, list[str]]] = {}
        self._lock = threading.Lock()

    def stage(self, upload_id: str, addresses: Iterable[str], now: datetime,
              seal: Callable[[str], str] | None = None) -> int:
        """As the SQLite inputs: unique case-insensitively, first seen first; with `seal`,
        stored sealed and compared sealed. All or nothing: an upload id is staged once."""
        seal = seal or (lambda text: text)
        firsts: dict[str, str] = {}
        for address in addresses:
            firsts.setdefault(*staged_row(address, seal))
        with self._lock:
            if upload_id in self._uploads:
                raise ValueError(f"upload {upload_id} is staged already")
            self._uploads[upload_id] = (now, list(firsts.values()))
        return len(firsts)

    def chunk(self, upload_id: str, chunk_no: int, chunk_size: int,
              open_: Callable[[str], str] | None = None) -> list[str]:
        open_ = open_ or (lambda text: text)
        with self._lock:
            addresses = self._uploads.get(upload_id, (None, []))[1]
            window = addresses[chunk_no * chunk_size:(chunk_no + 1) * chunk_size]
        return [open_(address) for address in window]

    def staged(self) -> dict[str, int]:
        with self._lock:
            return {upload_id: len(addresses) for upload_id, (_, addresses) in self._uploads.items() if addresses}

    def discard(self, upload_id: str) -> None:
        with self._lock:
            self._uploads.pop(upload_id, None)

    def sweep(self, staged_before: datetime, keep: Iterable[str]) -> int:
        kept = set(keep)
        with self._lock:
            old = {upload_id for upload_id, (at, _) in self._uploads.items() if at < staged_before} - kept
            for upload_id in old:
                del self._uploads[upload_id]
        return len(old)


class MemoryLease:
    """The engine lease in memory; it records this process as the holder, as on disk."""

    def __init__(self) -> None:
        self._lease: LeaseInfo | None = None
        self._lock = threading.Lock()

    def current(self) -> LeaseInfo | None:
        return self._lease

    def acquire(self, holder: str, now: datetime, ttl: float) -> LeaseInfo | None:
        with self._lock:
            previous = self._lease
            if previous is not None and previous.holder != holder and previous.alive(now, ttl):
                raise LeaseHeld(previous)
            self._lease = LeaseInfo(holder, os.getpid(), socket.gethostname(), now)
        return previous

    def beat(self, holder: str, now: datetime) -> bool:
        with self._lock:
            lease = self._lease
            if lease is None or lease.holder != holder:
                return False
            self._lease = LeaseInfo(lease.holder, lease.pid, lease.host, now)
            return True

    def release(self, holder: str, now: datetime) -> None:
        """A clean stop: keeps the last heartbeat (the outage clock) but frees the lease."""
        with self._lock:
            lease = self._lease
            if lease is not None and lease.holder == holder:
                self._lease = LeaseInfo("", 0, lease.host, now)


STOPPED_TYPES = frozenset({"TaskCancelled", "TaskCompleted", "TaskFailed", "SystemFailure", "TaskDeleted"})


@dataclass
class _Claim:
    worker_id: str
    claimed_at: datetime
    heartbeat: datetime


class MemoryFleet:
    """The fleet's heartbeats and chunk claims (engine/store/base.py FleetStore) in dicts, as
    PostgresFleet keeps them in tables; `stopped_tasks` reads the shared log. Not attached
    by `memory://` (a fleet of processes cannot share a store in one process's memory, so
    the CLI keeps calling that store embedded): the simulator (tests/sim/fleet.py) attaches
    it to run the fleet's roles in one process."""

    def __init__(self, log: MemoryLog):
        self.log = log
        self._workers: dict[str, dict[str, Any]] = {}
        self._claims: dict[tuple[str, int], _Claim] = {}
        self._lock = threading.Lock()

    def beat(self, worker_id: str, roles: str, host: str, pid: int, now: datetime, state: str = "starting",
             leads: str = "") -> None:
        with self._lock:
            known = self._workers.get(worker_id)
            started_at = known["started_at"] if known else now
            self._workers[worker_id] = {"worker_id": worker_id, "host": host, "pid": pid, "roles": roles,
                                        "state": state, "leads": leads, "started_at": started_at, "heartbeat": now}

    def leave(self, worker_id: str) -> None:
        with self._lock:
            for key in [k for k, claim in self._claims.items() if claim.worker_id == worker_id]:
                del self._claims[key]

    def last_worker_beat(self) -> datetime | None:
        with self._lock:
            return max((w["heartbeat"] for w in self._workers.values() if "worker" in w["roles"]), default=None)

    def members(self, since: datetime) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(w) for _, w in sorted(self._workers.items()) if w["heartbeat"] >= since]

    def claim(self, task_id: str, chunk_no: int, worker_id: str, now: datetime, stale_before: datetime) -> bool:
        """Takes the chunk unless a live worker holds it; True if this worker holds it now."""
        with self._lock:
            held = self._claims.get((task_id, chunk_no))
            if held is not None and held.worker_id != worker_id and held.heartbeat >= stale_before:
                return False
            self._claims[(task_id, chunk_no)] = _Claim(worker_id, now, now)
            return True

    def renew(self, worker_id: str, now: datetime) -> None:
        with self._lock:
            for claim in self._claims.values():
                if claim.worker_id == worker_id:
                    claim.heartbeat = now

    def release(self, task_id: str, chunk_no: int, worker_id: str) -> None:
        with self._lock:
            held = self._claims.get((task_id, chunk_no))
            if held is not None and held.worker_id == worker_id:
                del self._claims[(task_id, chunk_no)]

    def live_claims(self, fresh_after: datetime) -> set[tuple[str, int]]:
        with self._lock:
            return {key for key, claim in self._claims.items() if claim.heartbeat >= fresh_after}

    def stopped_tasks(self, task_ids: list[str]) -> set[str]:
        """Which of these tasks stopped (cancelled, failed, completed, deleted), from the log."""
        with self.log.view_lock:
            return {t for t in task_ids if any(row.type_name in STOPPED_TYPES
                                               for row in self.log.by_stream.get(f"task-{t}", ()))}


class MemoryKeyStore:
    """The data keys (engine/keyring.py) in a dict: destroying one leaves no copy behind."""

    def __init__(self) -> None:
        self._keys: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def get(self, scope: str) -> bytes | None:
        with self._lock:
            return self._keys.get(scope)

    def put(self, scope: str, key: bytes) -> bytes:
        with self._lock:
            return self._keys.setdefault(scope, key)

    def destroy(self, scope: str) -> None:
        with self._lock:
            self._keys.pop(scope, None)

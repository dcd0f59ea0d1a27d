"""The event store contract every backend honours (tests/contract runs it on each)."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Protocol, Sequence

from events import NewEvent, RecordedEvent
from engine.domain.errors import InvariantViolation

if TYPE_CHECKING:
    from engine.store.lease import LeaseInfo
    from projections.sql import Rows


ANY = None  # an expected version meaning "wherever the stream is now" (appended after its last event)


class StoreError(Exception):
    pass


class StoreUnavailable(StoreError):
    """The database cannot be reached (down, refused, timed out): nothing was appended."""


class SchemaMissing(StoreError):
    """The store has no schema, or an older one: run `vec migrate`."""


class ConcurrencyError(StoreError):
    """A stream moved past the version the command was decided on."""


class DuplicateEventError(StoreError):
    """An event id is already in the log: the same fact was emitted twice."""


class CorruptEvent(InvariantViolation):
    """A stored event this code cannot read (malformed JSON, an unknown type or field, a
    sealed value that does not open): the log is broken at that position. Named with what
    an operator needs to find it; `vec audit` reports it and reads on past it."""

    def __init__(self, position: int, stream: str, version: int, type_name: str, why: str):
        super().__init__(f"the event at position {position} ({stream}@{version}, {type_name}) cannot be read: {why}")
        self.position, self.stream, self.version, self.type_name, self.why = position, stream, version, type_name, why


def corrupt(row: Sequence[Any], error: Exception) -> CorruptEvent:
    """The stored row (position, event_id, stream, version, type, ...) that failed to read
    with `error`, as a CorruptEvent."""
    position, _, stream, version, type_name = row[:5]
    return CorruptEvent(position, stream, version, type_name, f"{type(error).__name__}: {error}")


PAGE_BYTES = 4 << 20  # what one page of stored rows should weigh: a chunk's submission is tens of KB
FIRST_PAGE_ROWS = 64  # before the rows' weight is known


def payload_bytes(row: tuple[Any, ...]) -> int:
    """A stored event row's weight: its payload (`data`, 7th of the stores' columns); the
    rest of a row is small."""
    return len(row[6])


def paged(fetch: Callable[[int, int], Sequence[tuple[Any, ...]]], after_position: int, batch: int,
          weigh: Callable[[tuple[Any, ...]], int] | None = None) -> Iterator[tuple[Any, ...]]:
    """Stored rows (position first) past a position, `fetch(after, limit)` giving the next
    `limit` rows. With `weigh` (a row's bytes), a page holds about PAGE_BYTES: up to `batch`
    rows of results, a few dozen chunk submissions, so memory never follows the page size."""
    position, limit = after_position, batch if weigh is None else min(batch, FIRST_PAGE_ROWS)
    while True:
        rows = fetch(position, limit)
        yield from rows
        if len(rows) < limit:
            return
        position = rows[-1][0]
        if weigh is not None:
            size_bytes = sum(weigh(row) for row in rows)
            limit = max(1, min(batch, limit * PAGE_BYTES // max(size_bytes, 1)))


# --- tallies of the log: what metrics count, without decoding an event ------------------------

class EventTally(NamedTuple):
    """Events of one type with the same label fields (as stored), counted, with the units
    they move summed (`units`)."""

    type: str
    status: str | None
    reason: str | None
    kind: str | None
    bucket: str | None
    late: bool
    events: int  # how many
    units: int


def units(type_name: str, data: Mapping[str, Any]) -> int:
    """What one event moves, as a tally sums it: a debit's credits (monthly + payg), a failed
    chunk's or a batch of results' addresses, else its `amount` (0 when it has none)."""
    if type_name == "CreditsDebited":
        return int(data.get("monthly") or 0) + int(data.get("payg") or 0)
    if type_name in ("ChunkFailed", "ResultsRecorded"):
        addresses = data.get("addresses")
        return len(addresses) if isinstance(addresses, list) else 0
    return int(data.get("amount") or 0)


@dataclass(frozen=True)
class JsonSql:
    """A backend's SQL over a stored payload, each a template of `{f}` (the field's name):
    what `tally_rows` builds its query from."""

    text: str  # the field as text (NULL when absent)
    number: str  # as an integer (0 when absent)
    length: str  # the length of the array in it (0 when absent)
    flag: str  # 1 when true, else 0
    source: str  # FROM: the rows in (?, ?] of the types `{marks}`, as `type` and the payload the others read


def tally_rows(rows: Rows, sql: JsonSql, after_position: int, until_position: int,
               types: Sequence[str]) -> list[EventTally]:
    """EventStore.tally by one aggregate query: the payloads are read by the database's JSON
    functions, never decoded here."""
    if not types or until_position <= after_position:
        return []
    text, number = sql.text.format, sql.number.format
    query = (f"SELECT type, {text(f='status')}, {text(f='reason')}, {text(f='kind')}, {text(f='bucket')},"
             f" {sql.flag.format(f='late')}, COUNT(*),"
             f" SUM(CASE type WHEN 'CreditsDebited' THEN {number(f='monthly')} + {number(f='payg')}"
             f" WHEN 'ChunkFailed' THEN {sql.length.format(f='addresses')}"
             f" WHEN 'ResultsRecorded' THEN {sql.length.format(f='addresses')} ELSE {number(f='amount')} END)"
             f" FROM {sql.source.format(marks=', '.join('?' for _ in types))} GROUP BY 1, 2, 3, 4, 5, 6")
    return [EventTally(kind, status, reason, task_kind, bucket, bool(late), int(count), int(amount or 0))
            for kind, status, reason, task_kind, bucket, late, count, amount
            in rows(query, (after_position, until_position, *types))]


class IdempotencyConflict(StoreError):
    """An idempotency key was used before for a different command."""


@dataclass(frozen=True)
class Idempotency:
    key: str
    fingerprint: str  # digest of the command's content


class EventStore(Protocol):
    def append(
        self,
        events: Sequence[NewEvent],
        expected: Mapping[str, int | None],
        idempotency: Idempotency | None = None,
    ) -> list[RecordedEvent]:
        """Append atomically across streams. `expected[stream]` is the version the command saw
        (0 = stream must not exist), or ANY to append after whatever the stream holds. Every
        stream written must be in `expected`; a stream only checked may be too."""

    def replayed(self, idempotency: Idempotency) -> list[RecordedEvent] | None:
        """The events a command with this key appended, or None if the key is new.
        Raises IdempotencyConflict when the key was used with another fingerprint."""

    def read_stream(self, stream: str, after_version: int = 0,
                    until_position: int | None = None) -> Iterator[RecordedEvent]: ...

    def read_all(self, after_position: int = 0, until_position: int | None = None,
                 batch: int = 2000, opened: bool = True) -> Iterator[RecordedEvent]:
        """The log past a position. `opened=False` leaves personal fields sealed, as stored:
        the read models keep them sealed anyway (sealing is deterministic, and a sealed value
        seals to itself), so the projector spares an AES-SIV call each way per address."""

    def read_chain(self, after_position: int = 0, until_position: int | None = None,
                   batch: int = 5000) -> Iterator[tuple[Any, ...]]:
        """The stored rows past a position, undecoded (payloads as stored, sealed), in the
        stores' column order with each row's chain hash last: what engine/chain.py verifies."""

    def read_headers(self, after_position: int = 0, limit: int = 10_000) -> list[tuple[int, str, str]]:
        """(position, stream, type) past a position, oldest first: what a follower needs to
        know whom to wake, without decoding payloads."""

    def stream_version(self, stream: str) -> int: ...

    def stream_versions(self, streams: Sequence[str]) -> dict[str, int]:
        """Each stream's version (0 for a stream with no event), in one look: what a watcher
        of many streams (the fleet's watchdog) asks to know which of them moved."""

    def holds(self, event_id: uuid.UUID) -> bool:
        """Whether the log holds the event of this id (a fact with a deterministic id, looked
        up without reading its stream)."""

    def head(self) -> int:
        """The position of the last event (0 for an empty log)."""

    def tally(self, after_position: int, until_position: int, types: Sequence[str]) -> list[EventTally]:
        """The events of `types` in (after_position, until_position], counted by type and
        label fields (EventTally), without decoding them: what metrics fold the log with."""

    def position_at(self, moment: datetime) -> int:
        """The last position recorded at or before `moment` (0 if none)."""

    def close(self) -> None: ...


def staged_row(address: str, seal: Callable[[str], str]) -> tuple[str, str]:
    """(the key an upload's addresses are unique by, the address as stored): both sealed, the
    key lower-cased; one sealing when the address is lower-case already (most are)."""
    sealed = seal(address)
    lower = address.lower()
    return (sealed if lower == address else seal(lower)), sealed


class StagedInputs(Protocol):
    """The de-duplicated addresses of an upload, waiting to be chunked (not events: the log
    records what was charged and each chunk as it is submitted)."""

    def stage(self, upload_id: str, addresses: Iterable[str], now: datetime,
              seal: Callable[[str], str] | None = None) -> int:
        """Stores the unique addresses (case-insensitive), first seen first; returns how many.
        With `seal` (the task's sealer) they are stored, and compared, sealed."""

    def chunk(self, upload_id: str, chunk_no: int, chunk_size: int,
              open_: Callable[[str], str] | None = None) -> list[str]: ...

    def discard(self, upload_id: str) -> None: ...

    def staged(self) -> dict[str, int]:
        """upload id -> addresses staged under it (diagnostics, sweeps, tests)."""

    def sweep(self, staged_before: datetime, keep: Iterable[str]) -> int:
        """Drops uploads staged before a moment that no active task needs; returns how many."""


class FleetStore(Protocol):
    """What the distributed roles share beside the log (PostgreSQL only): who is alive (the
    fleet's outage clock) and which worker holds which chunk."""

    def beat(self, worker_id: str, roles: str, host: str, pid: int, now: datetime, state: str = "starting",
             leads: str = "") -> None: ...

    def leave(self, worker_id: str) -> None: ...

    def last_worker_beat(self) -> datetime | None: ...

    def members(self, since: datetime) -> list[dict[str, Any]]: ...

    def claim(self, task_id: str, chunk_no: int, worker_id: str, now: datetime, stale_before: datetime) -> bool: ...

    def renew(self, worker_id: str, now: datetime) -> None: ...

    def release(self, task_id: str, chunk_no: int, worker_id: str) -> None: ...

    def live_claims(self, fresh_after: datetime) -> set[tuple[str, int]]: ...

    def stopped_tasks(self, task_ids: list[str]) -> set[str]: ...


class EngineLease(Protocol):
    """Which process drives the work (embedded runtime), and its heartbeat: the outage clock."""

    def current(self) -> LeaseInfo | None: ...

    def acquire(self, holder: str, now: datetime, ttl: float) -> LeaseInfo | None:
        """Takes the lease; returns the previous holder's (the outage clock) or raises LeaseHeld."""

    def beat(self, holder: str, now: datetime) -> bool: ...

    def release(self, holder: str, now: datetime) -> None: ...

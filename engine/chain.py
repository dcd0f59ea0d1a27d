"""The log's hash chain: each stored event carries SHA-256 of its own canonical bytes and
the hash of the event before it, so that an event altered, deleted, inserted or moved in
the store no longer matches (docs/audit.md, rule `chain`).

Pure: no I/O. The stores call `links` inside their append, the migration to fill an older
log, and the audit (`verify`) to check it. What is hashed is the row exactly as stored:
the payload as the codec wrote it (personal fields sealed, so erasure, which destroys keys
and never touches an event, leaves the chain whole), and the metadata that matters.

The canonical bytes: the JSON array [TAG, position, event id (hex), stream, version, type,
schema version, data, occurred_at (UTC ISO 8601), correlation id, causation id, actor].
A stored row, as both stores read it (their `_COLUMNS` order):
  (position, event_id, stream, version, type, schema_version, data, occurred_at,
   correlation_id, causation_id, actor)
`event_id` may be a UUID or its 16 bytes, `occurred_at` a datetime or its UTC ISO text
(what the SQLite store keeps): both give the same bytes.
"""
from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator, Sequence

import orjson

GENESIS = bytes(32)  # the "previous hash" of position 1
TAG = "vec-chain-1"  # names this canonical form: a later one gets another tag

Row = Sequence[Any]


def _id_bytes(value: Any) -> bytes:
    if isinstance(value, uuid.UUID):
        return value.bytes
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"an event id of type {type(value).__name__}")  # a row no store wrote


def _utc_text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat()
    raise TypeError(f"an occurred_at of type {type(value).__name__}")


def links(previous: bytes, first_position: int, rows: Iterable[Row]) -> list[bytes]:
    """The chain hashes of rows appended at first_position, first_position + 1, ...; each
    row is a stored row without its position (10 columns). The one place the canonical
    form is written; inline, as it runs once per appended event on the append path."""
    hashes = []
    sha256, dumps = hashlib.sha256, orjson.dumps
    for position, (event_id, stream, version, type_name, schema_version, data, occurred_at, correlation_id,
                   causation_id, actor) in enumerate(rows, first_position):
        if type(event_id) is not bytes:
            event_id = _id_bytes(event_id)
        if type(occurred_at) is not str:
            occurred_at = _utc_text(occurred_at)
        previous = sha256(previous + dumps((TAG, position, event_id.hex(), stream, version, type_name, schema_version,
                                            data, occurred_at, correlation_id, causation_id, actor))).digest()
        hashes.append(previous)
    return hashes


def link(previous: bytes, row: Row) -> bytes:
    """The chain hash of a stored row (11 columns, position first) after `previous`."""
    return links(previous, row[0], (row[1:],))[0]


@dataclass(frozen=True)
class Break:
    position: int
    stream: str
    why: str

    def __str__(self) -> str:
        return f"the chain breaks at position {self.position} ({self.stream}): {self.why}"


def verify(rows: Iterable[Row], previous: bytes = GENESIS) -> Iterator[Break]:
    """Checks stored rows (11 columns and their stored hash last) in position order after a
    row whose hash is `previous`; yields each break. After a break it goes on from the
    stored hash, so each tampered place is named once, the first first."""
    for row in rows:
        stored, position, stream = row[-1], row[0], row[2]
        stored = bytes(stored) if stored is not None else None
        try:
            expected = link(previous, row[:-1])
        except (TypeError, ValueError, orjson.JSONEncodeError) as error:  # a column of a type no store writes
            yield Break(position, stream, f"a column cannot be hashed ({error})")
            previous = stored or GENESIS
            continue
        if stored is None:
            yield Break(position, stream, "no chain hash (an older log: run `vec migrate`)")
            previous = expected
        elif stored != expected:
            yield Break(position, stream, f"stored hash {stored.hex()[:16]}… is not the hash of this row after "
                                          f"the previous one ({expected.hex()[:16]}…)")
            previous = stored
        else:
            previous = stored

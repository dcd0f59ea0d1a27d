"""The shape every event shares, and the registry that maps type names to classes."""
from __future__ import annotations

import dataclasses
import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

# Namespace of deterministic event ids: a retry that re-emits an event derives the same id,
# so the store's unique index turns a duplicate append into a clear error, never a double.
EVENT_ID_NAMESPACE = uuid.UUID("6f1c1c0e-2b8e-4a47-9a35-1f7e0c1d7a55")

REGISTRY: dict[str, type["Event"]] = {}

# A personal field's value, sealed with its task's key (engine/keyring.py), starts with it;
# values stored before sealing existed do not.
SEALED = "§"
# the mark, then URL-safe base64 of at least an AES-SIV tag (16 bytes: 22 characters)
_SEALED_TEXT = re.compile(SEALED + r"[A-Za-z0-9_-]{22,}")


def is_sealed(text: str) -> bool:
    """Whether a text is a sealed value, not a plain one that starts like one: an address
    "§x@example.com" is valid and must be sealed all the same (it holds an "@", which
    URL-safe base64 never does)."""
    return text.startswith(SEALED) and _SEALED_TEXT.fullmatch(text) is not None  # most plain texts: one test


@dataclass(frozen=True)
class Event:
    """A fact. Subclasses are frozen dataclasses holding only the payload."""

    schema_version: ClassVar[int] = 1
    # Fields holding a customer's personal data (addresses, and texts that may quote them).
    # The store seals them with the task's own key, so destroying the key erases them
    # from an immutable log ("crypto-shredding"); see engine/keyring.py.
    personal: ClassVar[tuple[str, ...]] = ()
    # Fields derived from a credential (a key's secret digest): kept for the engine's checks,
    # shown to the admin only, never to an account's own readers of the log.
    secret: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def type_name(cls) -> str:
        return cls.__name__

    def payload(self) -> dict[str, Any]:
        return {name: _jsonable(getattr(self, name)) for name in field_names(type(self))}


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}  # per event class: its payload's fields, in order


def field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def register(cls: type[Event]) -> type[Event]:
    name = cls.type_name()
    if name in REGISTRY:
        raise TypeError(f"event type {name} registered twice")
    REGISTRY[name] = cls
    return cls


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int)):
        return value
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def deterministic_id(stream: str, key: str) -> uuid.UUID:
    """The id of the fact `key` in `stream`: the same fact always gets the same id.

    Keys are paths ("result/12/ann@x.org"). The id is laid out like a UUIDv8 for index
    locality, as UUIDv7 is for time: 4 bytes from the stream, 4 from the key's parent path
    ("result/12"), 8 from the whole key. The facts one command appends together (a chunk's
    results) then land side by side in the log's unique index instead of on hundreds of
    random pages."""
    parent = key.rpartition("/")[0]
    raw = bytearray(_prefix(stream, parent) + _digest(f"{EVENT_ID_NAMESPACE}/{stream}/{key}", 8))
    raw[6] = (raw[6] & 0x0F) | 0x80  # version 8: custom layout
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return uuid.UUID(bytes=bytes(raw))


_PREFIXES: dict[tuple[str, str], bytes] = {}  # (stream, parent) -> the id's first 8 bytes


def _prefix(stream: str, parent: str) -> bytes:
    """The first 8 bytes of an id: the same for every fact of one chunk, so computed once."""
    prefix = _PREFIXES.get((stream, parent))
    if prefix is None:
        if len(_PREFIXES) >= 4096:
            _PREFIXES.clear()
        prefix = _PREFIXES[(stream, parent)] = _digest(stream, 4) + _digest(f"{stream}/{parent}", 4)
    return prefix


def _digest(text: str, size: int) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=size).digest()


@dataclass(frozen=True)
class NewEvent:
    """An event on its way into a stream; the store gives it a version and a position."""

    stream: str
    event: Event
    event_id: uuid.UUID
    occurred_at: datetime
    correlation_id: str | None = None
    causation_id: str | None = None
    actor: str | None = None  # who issued the command: "apikey:ID", "cli:USER", "admin", "engine"


@dataclass(frozen=True)
class RecordedEvent:
    """An event as the log holds it."""

    position: int
    stream: str
    version: int
    event_id: uuid.UUID
    occurred_at: datetime
    event: Event
    correlation_id: str | None = None
    causation_id: str | None = None
    actor: str | None = None

    @property
    def type(self) -> str:
        return self.event.type_name()

    def metadata(self) -> dict[str, Any]:
        return {
            "event_id": str(self.event_id),
            "occurred_at": self.occurred_at.isoformat(),
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "actor": self.actor,
            "schema_version": self.event.schema_version,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "stream": self.stream,
            "version": self.version,
            "type": self.type,
            "data": self.event.payload(),
            "metadata": self.metadata(),
        }

"""The event store contract every backend honours (tests/contract runs it on each)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping, Protocol, Sequence

from events import NewEvent, RecordedEvent


ANY = None  # an expected version meaning "wherever the stream is now" (appended after its last event)


class StoreError(Exception):
    pass


class ConcurrencyError(StoreError):
    """A stream moved past the version the command was decided on."""


class DuplicateEventError(StoreError):
    """An event id is already in the log: the same fact was emitted twice."""


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
                 batch: int = 2000) -> Iterator[RecordedEvent]: ...

    def stream_version(self, stream: str) -> int: ...

    def head(self) -> int:
        """The position of the last event (0 for an empty log)."""

    def close(self) -> None: ...

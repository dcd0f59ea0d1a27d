"""JSON (de)serialisation of events, with upcasting of old shapes on the way in."""
from __future__ import annotations

from typing import Any, Callable

import orjson

import uuid
from datetime import datetime

from events.base import REGISTRY, Event, RecordedEvent, field_names
from events.upcasters import upcast


class UnknownEventType(Exception):
    pass


Transform = Callable[[str], str]


def encode(event: Event, seal: Transform | None = None) -> str:
    """Compact JSON with sorted keys: one canonical text per event. With `seal`, the event's
    personal fields are stored sealed (each string, or each string of a tuple)."""
    # orjson writes tuples, dicts and datetimes itself, exactly as Event.payload() would
    # turn them (a list, a dict, isoformat): no copy of the event field by field in Python
    payload = {name: getattr(event, name) for name in field_names(type(event))}
    if seal is not None:
        for name in event.personal:
            payload[name] = _each(payload[name], seal)
    return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode()


def decode(type_name: str, schema_version: int, data: str | dict[str, Any], open_: Transform | None = None) -> Event:
    """The event from its stored text, upcast to this code's shape; with `open_`, its sealed
    personal fields are opened (an erased task's come back as stable placeholders)."""
    cls = REGISTRY.get(type_name)
    if cls is None:
        raise UnknownEventType(type_name)
    payload = orjson.loads(data) if isinstance(data, str) else dict(data)
    payload = upcast(type_name, schema_version, cls.schema_version, payload)
    if open_ is not None:
        for name in cls.personal:
            if name in payload:
                payload[name] = _each(payload[name], open_)
    for name, value in payload.items():
        if isinstance(value, list):
            payload[name] = tuple(value)
    return cls(**payload)


class Decoder:
    """`decode` over a run of stored rows, handing back the event decoded last when a row
    repeats it (a batch's Unknowns: one refund after another, each the same text). Events
    are frozen, so one instance serves them all; one with personal fields is decoded every
    time (what it opens to depends on its stream's key)."""

    def __init__(self) -> None:
        self._last: tuple[str, int, str | dict[str, Any]] | None = None
        self._event: Event | None = None

    def __call__(self, type_name: str, schema_version: int, data: str | dict[str, Any],
                 open_: Transform | None = None) -> Event:
        if self._event is not None and self._last == (type_name, schema_version, data):
            return self._event
        event = decode(type_name, schema_version, data, open_)
        repeatable = not event.personal
        self._last, self._event = ((type_name, schema_version, data), event) if repeatable else (None, None)
        return event


def _each(value: str | list[str] | tuple[str, ...], transform: Transform) -> str | list[str]:
    if isinstance(value, str):
        return transform(value) if value else value
    return [transform(v) if v else v for v in value]  # an empty entry of a column holds nothing to seal


def to_wire(recorded: RecordedEvent) -> bytes:
    """A recorded event as a message on the wire (Kafka): the same JSON `vec events` prints."""
    return orjson.dumps(recorded.to_json())


def from_wire(value: bytes | str) -> RecordedEvent:
    """The inverse of to_wire: the event, upcast to this code's shape."""
    message = orjson.loads(value)
    meta = message["metadata"]
    return RecordedEvent(
        position=message["position"], stream=message["stream"], version=message["version"],
        event_id=uuid.UUID(meta["event_id"]), occurred_at=datetime.fromisoformat(meta["occurred_at"]),
        event=decode(message["type"], meta["schema_version"], message["data"]),
        correlation_id=meta.get("correlation_id"), causation_id=meta.get("causation_id"), actor=meta.get("actor"))

"""JSON (de)serialisation of events, with upcasting of old shapes on the way in."""
from __future__ import annotations

from typing import Any

import orjson

from events.base import REGISTRY, Event
from events.upcasters import upcast


class UnknownEventType(Exception):
    pass


def encode(event: Event) -> str:
    """Compact JSON with sorted keys: one canonical text per event."""
    return orjson.dumps(event.payload(), option=orjson.OPT_SORT_KEYS).decode()


def decode(type_name: str, schema_version: int, data: str | dict[str, Any]) -> Event:
    cls = REGISTRY.get(type_name)
    if cls is None:
        raise UnknownEventType(type_name)
    payload = orjson.loads(data) if isinstance(data, str) else dict(data)
    payload = upcast(type_name, schema_version, cls.schema_version, payload)
    for name, value in payload.items():
        if isinstance(value, list):
            payload[name] = tuple(value)
    return cls(**payload)

"""The published contract of the log: a JSON Schema (2020-12) per event type and schema
version, derived from the catalogue (the classes' fields and types) and the upcasters'
ADDED_FIELDS (what an older version lacked). Nothing here is written by hand per event.

Each schema describes one message as `vec events` prints it and the relay publishes it
(`RecordedEvent.to_json`): the envelope (position, stream, version, type, metadata) around
the event's `data`. Only keywords that mean the same in JSON Schema draft-07 are used, so
the AsyncAPI document (entrypoints/contract.py) can carry the same schemas.

`required` lists the fields without a default: an event stored before a defaulted field
existed is published without it (the relay does not rewrite stored JSON), and the engine's
own reader (`events.codec.decode`) fills the default in. Personal fields are sealed on the
wire (engine/keyring.py): opaque texts starting with "§", or "erased:…" once erased.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

from events.base import REGISTRY, Event
from events.upcasters import ADDED_FIELDS, UPCASTERS

DIALECT = "https://json-schema.org/draft/2020-12/schema"
Schema = dict[str, Any]


def schema_id(type_name: str, version: int) -> str:
    """The schema's `$id`, also the CloudEvents `dataschema` of such an event."""
    return f"urn:vec:event:{type_name}:v{version}"


def file_name(type_name: str, version: int) -> str:
    return f"{type_name}.v{version}.json"


def all_event_schemas() -> dict[str, Schema]:
    """{file name: schema} of every registered type at every schema version, 1 to current."""
    return {file_name(name, version): event_schema(cls, version)
            for name, cls in sorted(REGISTRY.items()) for version in range(1, cls.schema_version + 1)}


def event_schema(cls: type[Event], version: int) -> Schema:
    """The message schema of `cls` as its schema `version` wrote it."""
    name = cls.type_name()
    return {
        "$schema": DIALECT, "$id": schema_id(name, version), "title": f"{name} v{version}",
        "description": _description(cls, version),
        "type": "object", "additionalProperties": False,
        "required": ["position", "stream", "version", "type", "data", "metadata"],
        "properties": {
            "position": {"type": "integer", "minimum": 1,
                         "description": "the event's place in the whole log: gap-free, increasing; resume after it"},
            "stream": {"type": "string", "pattern": "^(account|task)-.+$",
                       "description": "account-ID or task-ID; also the Kafka key"},
            "version": {"type": "integer", "minimum": 1, "description": "the event's place in its stream"},
            "type": {"const": name},
            "data": payload_schema(cls, version),
            "metadata": _metadata_schema(version),
        },
    }


def payload_schema(cls: type[Event], version: int) -> Schema:
    """The schema of `cls`'s `data` at schema `version`: its fields minus those added later."""
    if version > cls.schema_version or version < 1:
        raise ValueError(f"{cls.type_name()} has no schema version {version}")
    later = _added_since(cls.type_name(), version, cls.schema_version)
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.name not in later]
    properties = {f.name: _personal(_type_schema(hints[f.name]), f.name in cls.personal) for f in fields}
    required = [f.name for f in fields
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    return {"type": "object", "additionalProperties": False, "required": required, "properties": properties}


def _added_since(type_name: str, version: int, current: int) -> set[str]:
    """Fields that upcasters add on the way from `version` to `current`."""
    added: set[str] = set()
    for step in range(version, current):
        if (type_name, step) not in ADDED_FIELDS:
            if (type_name, step) in UPCASTERS:
                raise NotImplementedError(f"the upcaster of {type_name} v{step} is not an addition: describe"
                                          " its old shape in events/jsonschema.py")
            raise LookupError(f"{type_name} v{step} has no upcaster")
        added.update(ADDED_FIELDS[(type_name, step)])
    return added


def _type_schema(hint: Any) -> Schema:
    """A field's type as JSON Schema; an unknown type is an error, never a guess."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is str:
        return {"type": "string"}
    if hint is bool:
        return {"type": "boolean"}
    if hint is int:
        return {"type": "integer"}
    if origin is Literal:
        return {"type": "string", "enum": list(args)}
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return {"anyOf": [_type_schema(inner), {"type": "null"}]}
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return {"type": "array", "items": _type_schema(args[0])}
    if origin is dict and args[0] is str:
        return {"type": "object", "additionalProperties": _type_schema(args[1])}
    raise TypeError(f"no JSON Schema for the field type {hint!r}: teach events/jsonschema.py")


def _personal(schema: Schema, personal: bool) -> Schema:
    if not personal:
        return schema
    return {**schema, "description": "personal data, sealed with the task's key: opaque text ('§…', or"
                                     " 'erased:…' once the task's data was erased)"}


def _metadata_schema(version: int) -> Schema:
    optional_text = {"anyOf": [{"type": "string"}, {"type": "null"}]}
    return {
        "type": "object", "additionalProperties": False,
        "required": ["event_id", "occurred_at", "schema_version"],
        "properties": {
            "event_id": {"type": "string", "format": "uuid",
                         "description": "unique; deterministic where a retry could re-emit it: de-duplicate by it"},
            "occurred_at": {"type": "string", "format": "date-time", "description": "ISO 8601, UTC"},
            "correlation_id": optional_text,
            "causation_id": optional_text,
            "actor": {**optional_text,
                      "description": "who issued the command: apikey:ID, cli:USER, admin, engine"},
            "schema_version": {"const": version},
        },
    }


def _description(cls: type[Event], version: int) -> str:
    doc = (cls.__doc__ or "").strip()
    if doc.startswith(f"{cls.__name__}("):  # dataclass's generated signature, not a description
        doc = ""
    news = "current" if version == cls.schema_version else f"read as v{cls.schema_version} by the engine's upcasters"
    head = f"{cls.__name__}, schema version {version} ({news})."
    return f"{head} {' '.join(doc.split())}" if doc else head

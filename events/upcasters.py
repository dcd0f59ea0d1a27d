"""Upcasters turn a stored old shape into the current one, one schema version at a time.

Stored events are never rewritten; they are upcast every time they are read.

Every change of shape so far added fields: each is declared once in ADDED_FIELDS with the
value an older event reads as. That one table makes the upcasters below and tells the
published contract (events/jsonschema.py) what each older schema version held. A change
that is not an addition needs an upcaster of its own (`upcaster`) and a description of the
old shape in events/jsonschema.py, which refuses to guess.
"""
from __future__ import annotations

from typing import Any, Callable

Payload = dict[str, Any]

# (type name, from schema version) -> {field: value an event of that version reads as}
ADDED_FIELDS: dict[tuple[str, int], Payload] = {
    ("TaskCreated", 1): {"source": "upload", "chunk_size": 1000},  # v1 tasks all came from uploads chunked by 1,000
    ("TaskCreated", 2): {"name": ""},
    ("CreditsDebited", 1): {"sha256": "", "at": ""},  # v1 debits knew no file digest: never an earlier upload
    ("AddressVerified", 1): {"reply": "", "mx_host": "", "flags": ()},  # v1 results kept no evidence
    ("ResultUnknown", 1): {"reply": "", "mx_host": "", "flags": ()},
}

# (type name, from schema version) -> function giving the payload of version + 1
UPCASTERS: dict[tuple[str, int], Callable[[Payload], Payload]] = {}


def upcaster(type_name: str, from_version: int) -> Callable[[Callable[[Payload], Payload]], Callable[[Payload], Payload]]:
    def register(fn: Callable[[Payload], Payload]) -> Callable[[Payload], Payload]:
        UPCASTERS[(type_name, from_version)] = fn
        return fn

    return register


def upcast(type_name: str, stored_version: int, current_version: int, payload: Payload) -> Payload:
    if stored_version > current_version:
        raise ValueError(f"{type_name} v{stored_version} is newer than this code (v{current_version})")
    for version in range(stored_version, current_version):
        payload = UPCASTERS[(type_name, version)](payload)
    return payload


def _adding(defaults: Payload) -> Callable[[Payload], Payload]:
    def add(payload: Payload) -> Payload:
        return {**defaults, **payload}  # a stored value wins over the default

    return add


for (_type_name, _from_version), _defaults in ADDED_FIELDS.items():
    upcaster(_type_name, _from_version)(_adding(_defaults))

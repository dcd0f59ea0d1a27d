"""Upcasters turn a stored old shape into the current one, one schema version at a time.

Stored events are never rewritten; they are upcast every time they are read.
"""
from __future__ import annotations

from typing import Any, Callable

Payload = dict[str, Any]

# (type name, from schema version) -> function giving the payload of version + 1
UPCASTERS: dict[tuple[str, int], Callable[[Payload], Payload]] = {}


def upcaster(type_name: str, from_version: int):
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


@upcaster("TaskCreated", 1)
def _task_created_v1_to_v2(payload: Payload) -> Payload:
    # v1 tasks all came from uploads chunked by 1,000.
    return {**payload, "source": payload.get("source", "upload"), "chunk_size": payload.get("chunk_size", 1000)}


@upcaster("TaskCreated", 2)
def _task_created_v2_to_v3(payload: Payload) -> Payload:
    return {"name": "", **payload}


@upcaster("CreditsDebited", 1)
def _credits_debited_v1_to_v2(payload: Payload) -> Payload:
    # v1 debits knew no file digest: they never count as an earlier upload of a file.
    return {"sha256": "", "at": "", **payload}


@upcaster("AddressVerified", 1)
@upcaster("ResultUnknown", 1)
def _result_v1_to_v2(payload: Payload) -> Payload:
    # v1 results kept no evidence: no reply, no host, no flags.
    return {"reply": "", "mx_host": "", "flags": [], **payload}

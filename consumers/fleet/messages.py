"""What the fleet's topics carry besides the log's events (pure: build and read messages)."""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Iterable

import orjson

from engine.relay_settings import KafkaSettings
from engine.domain.tasks import Result
from engine.relay import CE_TYPE_PREFIX


@dataclass(frozen=True)
class Topics:
    events: str
    chunks: str
    results: str

    @classmethod
    def of(cls, settings: KafkaSettings) -> "Topics":
        prefix = settings.kafka_topic_prefix
        return cls(f"{prefix}.events", f"{prefix}.chunks", f"{prefix}.results")


def chunk_work(task_id: str, chunk_no: int) -> tuple[bytes, bytes]:
    """(key, value) of a work item: a chunk to verify. Its partition is not the key's hash
    but `chunk_partition` (the senders pass it explicitly)."""
    return f"{task_id}/{chunk_no}".encode(), orjson.dumps({"task_id": task_id, "chunk_no": chunk_no})


def chunk_partition(task_id: str, chunk_no: int, partitions: Iterable[int]) -> int:
    """The partition of `PREFIX.chunks` that carries a chunk's work item: consecutive chunks
    of a task go to consecutive partitions, starting at one that depends on the task
    (crc32, the same in every process), so a task's chunks spread evenly over the
    partitions and so over the workers that own them. The hash of the key (Kafka's default,
    murmur2 of `task/chunk_no`) gave one of two workers 60 % of a bulk's chunks about half
    the time. Deterministic: a chunk dispatched again (the watchdog) lands on the same
    partition as long as the topic keeps its partitions. `partitions`: the topic's partition
    ids, as the producer's metadata knows them (the topic may have another count than
    `VEC_KAFKA_PARTITIONS` when something else created it)."""
    ids = sorted(partitions)
    if not ids:
        raise ValueError("the chunks topic has no partitions (yet)")
    return ids[(zlib.crc32(task_id.encode()) + chunk_no) % len(ids)]


def read_chunk_work(value: bytes) -> tuple[str, int]:
    message = orjson.loads(value)
    return message["task_id"], int(message["chunk_no"])


OUTCOME_KINDS = ("results", "fail_chunk", "fail_task")


@dataclass(frozen=True)
class Outcome:
    """What a worker found for a chunk: results, or a chunk or task failure. Keyed by task,
    so that one settler records everything of a task, in order."""

    kind: str  # results | fail_chunk | fail_task
    task_id: str
    chunk_no: int
    results: tuple[Result, ...] = ()
    error: str = ""

    def to_message(self) -> tuple[bytes, bytes]:
        return self.task_id.encode(), orjson.dumps({
            "kind": self.kind, "task_id": self.task_id, "chunk_no": self.chunk_no, "error": self.error,
            "results": [[r.address, r.status, r.reason, r.detail, r.tier, r.reply, r.mx_host, list(r.flags)]
                        for r in self.results]})

    @classmethod
    def from_message(cls, value: bytes) -> "Outcome":
        message = orjson.loads(value)
        if message["kind"] not in OUTCOME_KINDS:
            raise ValueError(f"unknown outcome {message['kind']!r}")
        results = tuple(Result(a, s, reason, detail, tier, reply, mx, tuple(flags))
                        for a, s, reason, detail, tier, reply, mx, flags in message["results"])
        return cls(message["kind"], message["task_id"], int(message["chunk_no"]), results, message["error"])


def relayed_stream_and_type(headers: object) -> tuple[str, str] | None:
    """The stream and type of a relayed event, from its CloudEvents headers (engine/relay.py
    `event_headers`: `ce_vecstream`, `ce_type` = "vec." + the type), or None when the message
    lacks them (one relayed by another producer). Consumed headers come as (key, value) pairs
    (aiokafka, faust); a mapping is accepted too."""
    if not headers:
        return None
    found = headers if isinstance(headers, dict) else dict(headers)  # type: ignore[call-overload]
    stream, ce_type = found.get("ce_vecstream"), found.get("ce_type")
    if stream is None or ce_type is None or not _text(ce_type).startswith(CE_TYPE_PREFIX):
        return None
    return _text(stream), _text(ce_type)[len(CE_TYPE_PREFIX):]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

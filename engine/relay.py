"""The relay: every event of the PostgreSQL log, published to Kafka (the outbox is the log).

The log itself is the outbox: its gap-free global `position` (engine/store/postgres.py)
says what exists, and one row, `relay_position(id = 1)`, says how far the relay got. A
relay reads `events` past that position in batches of `relay_batch`, publishes each event
to the topic `{kafka_topic_prefix}.events` and, only once the broker has acknowledged the
whole batch (`acks='all'`, idempotent producer), stores the batch's last position. So
delivery is at least once: a crash, a lost connection or a broker outage between the
publish and the store re-publishes that batch, never skips it.

A message: key = the stream name (UTF-8), so one stream stays on one partition and, with
the idempotent producer (one in-flight batch per partition), in log order; value = the
same JSON as `events.codec.to_wire(recorded)` (decode it with `from_wire`); headers
(UTF-8 text, `event_headers`): the CloudEvents Kafka binary-mode attributes (`ce_id`,
`ce_source`, `ce_type`, `ce_time`, `ce_dataschema`, the extensions `ce_vecposition`,
`ce_vecstream`, `ce_vecstreamversion`, and `content-type`), so any CloudEvents SDK reads a
message as an event whose data is that JSON; and, as before them, `event_id`, `type`,
`position`, `version`. The contract: docs/asyncapi.yaml and docs/events/ (scripts/contract).
Consumers must tolerate duplicates (the deterministic `event_id` = `ce_id`, or (stream,
version), identifies an event).
After a publish failure the relay re-sends the batch from the stored position, so a
message of the failed attempt that did land may be followed by the same events again.

The relay does not decode events: it reads the rows with its own SQL and splices the
stored canonical JSON into the message (`orjson.Fragment`). Only a row stored under an
older schema version of a known type goes through `decode` + `to_wire`, so consumers get
it upcast exactly as `to_wire` would give it.

Exactly one relay publishes. Each relay holds one dedicated PostgreSQL connection (not
from a pool) and tries `pg_try_advisory_lock(RELAY_LOCK)` on it: the winner is the
leader, the others are standbys that try again every `STANDBY_POLL` seconds. The leader
reads the log and stores its position on that same connection, so a relay that lost its
connection (and with it the session lock, which PostgreSQL frees when the session ends)
cannot store a position any more: it reconnects, contends again, and whoever wins goes on
from the stored position. A PostgreSQL restart is the same story for every relay.

A broker that is down or lost its topics (Tansu keeps them in memory): nothing is stored,
the producer is closed, and the relay retries with backoff (0.2 s doubling to 5 s),
re-creating missing topics (`ensure_topics`, `kafka_partitions` partitions) before a new
producer publishes. The leader keeps its lock meanwhile. One log line per change of state
(`vec.relay`), not per retry; kafka-python's own loggers (`kafka.*`) are chattier. Tansu
auto-creates a topic (4 partitions) on any metadata request, whatever the client asks: if
the producer's own metadata refresh after a broker restart wins the race, the topic comes
back with Tansu's count and the relay logs a warning (a real Kafka should run with
`auto.create.topics.enable=false`).

Errors that waiting does not cure (a bad Kafka setting, a refused authorisation, an event
larger than the broker takes, a missing schema, anything unexpected) stop the relay with
RelayCrashed, after it closed its producer and its connection. A stop takes effect within
`STOP_GRACE` of an unacknowledged batch, or after a connection attempt in progress
(`CONNECT_TIMEOUT`).

Usage (a role's main, or a test):

    stop = threading.Event()
    relay = Relay(url, KafkaSettings(kafka_bootstrap="127.0.0.1:9092"))
    relay.run(stop)          # blocks until stop is set; raises RelayCrashed on a bug

Ops: `relay.is_leader`, `relay.state`, `relay.published` (messages acknowledged by the
broker, re-sends included) and `relay.lag()` (log head minus stored position).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from itertools import count
from typing import TYPE_CHECKING, Any, Iterable

import orjson
import psycopg

from engine import tracing
from engine.relay_settings import KafkaSettings
from engine.store.postgres import log_head, relayed_rows, rows_of
from projections.sql import Rows
from events import RecordedEvent, decode
from events.base import REGISTRY
from events.codec import to_wire
from events.jsonschema import schema_id
from projections.sql import scalar

if TYPE_CHECKING:
    from kafka import KafkaProducer  # untyped (Any to mypy): named for the reader
    from kafka.admin import KafkaAdminClient
    from kafka.producer.future import FutureRecordMetadata

log = logging.getLogger("vec.relay")


RELAY_LOCK = 7315003  # pg_try_advisory_lock key of the relay leader (7315001: migrate, 7315002: lease)
STANDBY_POLL = 0.5  # seconds between a standby's tries for the lock
BACKOFF_FIRST, BACKOFF_MAX = 0.2, 5.0  # seconds; doubles per failed try, reset by a success
STOP_GRACE = 2.0  # seconds a batch in flight may still take to be acknowledged once stop is set
CONNECT_TIMEOUT = 5  # seconds, PostgreSQL and Kafka bootstrap

# The producer settings the relay publishes with (bench/bench_distributed.py's baseline
# sends with the very same). Idempotence implies one in-flight batch per partition in
# kafka-python, which keeps a partition's messages in send order across retries.
PRODUCER_SETTINGS: dict[str, Any] = dict(
    enable_idempotence=True,
    acks="all",
    linger_ms=5,
    batch_size=256 * 1024,
    max_in_flight_requests_per_connection=5,
    request_timeout_ms=10_000,
    delivery_timeout_ms=15_000,  # a batch not acknowledged by then fails: the relay re-sends it
    max_block_ms=5_000,  # send() waiting for metadata (a missing topic, a broker that is down)
    bootstrap_timeout_ms=CONNECT_TIMEOUT * 1000,
    allow_auto_create_topics=False,  # topics come from ensure_topics (Tansu auto-creates anyway)
    metrics_enabled=False,
)

_names = count(1)



def relay_position(rows: Rows) -> int:
    """How far the relay published the log (0 before it ever ran)."""
    found = rows("SELECT position FROM relay_position WHERE id = 1")
    return int(found[0][0]) if found else 0

class RelayCrashed(Exception):
    """The relay met an error it does not know how to survive (a bug, a missing schema, a
    bad setting). It closed what it opened and stopped: it never goes on half-alive."""


class _Stopping(Exception):
    """The caller's stop event was set while a batch was still unacknowledged."""


def topic_names(settings: KafkaSettings) -> dict[str, str]:
    """The engine's topics: {"events": "PREFIX.events", "chunks": ..., "results": ...}."""
    return {kind: f"{settings.kafka_topic_prefix}.{kind}" for kind in ("events", "chunks", "results")}


CE_SPECVERSION = "1.0"
CE_TYPE_PREFIX = "vec."  # ce_type is "vec." + the event's type name, e.g. vec.TaskCreated

# Every header of a message on PREFIX.events, as docs/asyncapi.yaml publishes it
# (entrypoints/contract.py); tests/unit/test_contract.py checks event_headers gives these.
EVENT_HEADERS = {
    "ce_specversion": "CloudEvents spec version: 1.0",
    "ce_id": "the event's id (metadata.event_id): de-duplicate by it",
    "ce_source": "urn:vec:PREFIX: the engine's log behind this topic prefix",
    "ce_type": "vec. + the event's type name (e.g. vec.TaskCreated)",
    "ce_time": "when it occurred (metadata.occurred_at), RFC 3339, UTC",
    "ce_dataschema": "the JSON Schema of the message (docs/events/TYPE.vN.json, its $id)",
    "ce_vecposition": "extension: the event's position in the whole log (decimal); resume after it",
    "ce_vecstream": "extension: the event's stream (account-ID or task-ID), also the key",
    "ce_vecstreamversion": "extension: the event's version in its stream (decimal)",
    "content-type": "the CloudEvents datacontenttype of the value: application/json",
    "event_id": "(older header) as ce_id",
    "type": "(older header) the event's type name",
    "position": "(older header) as ce_vecposition",
    "version": "(older header) as ce_vecstreamversion",
}


def event_source(settings: KafkaSettings) -> str:
    """The CloudEvents source of the events relayed for this topic prefix."""
    return f"urn:vec:{settings.kafka_topic_prefix}"


def event_headers(source: str, event_id: str, type_name: str, schema_version: int, stream: str, version: int,
                  position: int, occurred_at: datetime) -> list[tuple[str, bytes]]:
    """A relayed event's Kafka headers: CloudEvents binary mode (attributes as `ce_*`, the
    data's media type as `content-type`) and the older plain headers. Pure; UTF-8 values."""
    event_id_bytes, type_bytes = event_id.encode(), type_name.encode()
    position_bytes, version_bytes = str(position).encode(), str(version).encode()
    return [
        ("ce_specversion", _SPECVERSION), ("ce_id", event_id_bytes), ("ce_source", source.encode()),
        ("ce_type", _TYPE_PREFIX + type_bytes), ("ce_time", occurred_at.astimezone(timezone.utc).isoformat().encode()),
        ("ce_dataschema", schema_id(type_name, schema_version).encode()), ("ce_vecposition", position_bytes),
        ("ce_vecstream", stream.encode()), ("ce_vecstreamversion", version_bytes), ("content-type", _JSON),
        ("event_id", event_id_bytes), ("type", type_bytes), ("position", position_bytes), ("version", version_bytes),
    ]


_SPECVERSION, _TYPE_PREFIX, _JSON = CE_SPECVERSION.encode(), CE_TYPE_PREFIX.encode(), b"application/json"


def producer_settings(settings: KafkaSettings, client_id: str) -> dict[str, Any]:
    """KafkaProducer(**this): the relay's producer for `settings.kafka_bootstrap`."""
    return dict(PRODUCER_SETTINGS, bootstrap_servers=_servers(settings.kafka_bootstrap), client_id=client_id,
                partitioner=key_partitioner())


_PARTITIONER: list[Any] = []  # the one KeyHashPartitioner of this process (kafka imported lazily)


def key_partitioner() -> Any:
    """kafka-python's DefaultPartitioner (a keyed message goes to murmur2(key) % partitions, as
    with Java clients and aiokafka: the same stream, the same partition, whoever sends it), the
    hash of each key remembered: kafka-python computes murmur2 in pure Python for every message,
    a tenth of the relay's time, while a log has few streams compared to its events."""
    if not _PARTITIONER:
        import functools

        from kafka.partitioner import DefaultPartitioner
        from kafka.partitioner.default import murmur2

        hashed = functools.lru_cache(maxsize=1 << 14)(murmur2)

        class KeyHashPartitioner(DefaultPartitioner):  # type: ignore[misc]  # kafka-python is untyped
            def partition(self, topic: str, key: Any, serialized_key: bytes | None, value: Any,
                          serialized_value: Any, cluster: Any) -> int:
                partitions = cluster.partitions_for_topic(topic) if serialized_key is not None else None
                if not partitions:  # no key, or a topic not known yet: the default's own answer
                    return int(super().partition(topic, key, serialized_key, value, serialized_value, cluster))
                ids = sorted(partitions)
                return int(ids[(hashed(serialized_key) & 0x7FFFFFFF) % len(ids)])

        _PARTITIONER.append(KeyHashPartitioner())
    return _PARTITIONER[0]


def _servers(bootstrap: str | Iterable[str]) -> list[str]:
    if isinstance(bootstrap, str):
        return [part.strip() for part in bootstrap.split(",") if part.strip()]
    return list(bootstrap)


def _admin_client(bootstrap: str | Iterable[str], client_id: str, timeout: float) -> KafkaAdminClient:
    """A KafkaAdminClient, or a KafkaError. kafka-python 3.0's constructor starts its IO
    thread before it bootstraps and leaves it running when the bootstrap fails (a broker
    that is down): stop that thread here, or every retry would leak one."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient.__new__(KafkaAdminClient)
    try:
        admin.__init__(bootstrap_servers=_servers(bootstrap), client_id=client_id,
                       bootstrap_timeout_ms=int(timeout * 1000), request_timeout_ms=int(timeout * 1000))
    except BaseException:
        for part in ("_client", "_net"):
            closer = getattr(getattr(admin, part, None), "close" if part == "_client" else "stop", None)
            if closer is not None:
                try:
                    closer()
                except Exception:  # noqa: BLE001 - best effort on a half-built client
                    pass
        raise
    return admin


def ensure_topics(bootstrap: str | Iterable[str], names: Iterable[str], partitions: int,
                  replication_factor: int = -1, timeout: float = 10.0) -> dict[str, int]:
    """Creates those of `names` the broker lacks, with `partitions` partitions each
    (`replication_factor` -1: the broker's default); leaves existing topics alone, so it is
    idempotent and safe to race. Returns {name: partition count} of every name, existing
    ones included (a count other than `partitions` means someone else created the topic:
    an operator, or a broker that auto-creates topics on a metadata request, as Tansu does).
    Raises a kafka.errors.KafkaError when the broker cannot be reached or refuses."""
    from kafka.errors import for_code

    names = list(dict.fromkeys(names))
    admin = _admin_client(bootstrap, "vec-ensure-topics", timeout)
    try:
        existing = set(admin.list_topics())
        missing = [name for name in names if name not in existing]
        if missing:
            answer = admin.create_topics({name: {"num_partitions": partitions, "replication_factor": replication_factor}
                                          for name in missing}, raise_errors=False)
            for topic in answer["topics"]:
                if topic["error_code"] not in (0, 36):  # 36: TopicAlreadyExists (someone was quicker)
                    error = for_code(topic["error_code"])
                    raise error(f"cannot create topic {topic['name']}: {topic.get('error_message') or error.__name__}")
        counts = {}
        for topic in admin.describe_topics(names):
            if topic["error_code"]:
                raise for_code(topic["error_code"])(f"topic {topic['name']} is not there after creation")
            counts[topic["name"]] = len(topic["partitions"])
        return counts
    finally:
        admin.close()


def _close_producer(producer: KafkaProducer, timeout: float = 5.0) -> None:
    """Closes a KafkaProducer for good. Its close() flushes first and, when records are
    stuck (a broker that is down), raises with its sender thread still running: abort those
    records (force_close: their futures fail) and close again."""
    from kafka.errors import KafkaError

    try:
        producer.close(timeout=timeout)
        return
    except KafkaError:
        pass
    sender = getattr(producer, "_sender", None)
    if sender is not None:
        sender.force_close()
    try:
        producer.close(timeout=timeout)
    except KafkaError as error:  # should not happen once forced; say so rather than hang
        log.warning("kafka producer did not close cleanly: %s", error)


def _fatal_kafka_errors() -> tuple[type[Exception], ...]:
    """Kafka errors that waiting does not cure: a bad setting, a refused authorisation, an
    event larger than the broker takes, a bug of ours. The relay stops (RelayCrashed)."""
    from kafka import errors

    return (errors.KafkaConfigurationError, errors.IllegalStateError, errors.MessageSizeTooLargeError,
            errors.InvalidTopicError, errors.AuthorizationError, errors.UnsupportedVersionError)


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]


def _describe(url: str) -> str:
    from engine.store.postgres import describe

    return describe(url)


class Relay:
    """Publishes the PostgreSQL log to `{prefix}.events`; one leader among any number of
    relays on one database (see the module's doc). Not thread-safe: one `run` at a time;
    the ops properties may be read from any thread."""

    def __init__(self, url: str, settings: KafkaSettings, name: str | None = None):
        if not settings.kafka_bootstrap:
            raise ValueError("the relay needs kafka_bootstrap (VEC_KAFKA_BOOTSTRAP=HOST:PORT)")
        self.url = url
        self.settings = settings
        self.name = name or f"relay-{socket.gethostname()}-{os.getpid()}-{next(_names)}"
        self.topic = topic_names(settings)["events"]
        self.source = event_source(settings)
        self._conn: psycopg.Connection | None = None
        self._producer: KafkaProducer | None = None
        self._topic_ready = False
        self._leader = False
        self._state = "stopped"
        self._published = 0
        self._position: int | None = None  # the stored position, as the leader knows it
        self._backoff = BACKOFF_FIRST
        self._upcast = {name: cls.schema_version for name, cls in REGISTRY.items()}

    # --- ops ----------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """True while this relay holds the lock (it may be waiting for the broker)."""
        return self._leader

    @property
    def state(self) -> str:
        """starting | standby | leader | postgres-unavailable | broker-unavailable | stopped | crashed"""
        return self._state

    @property
    def published(self) -> int:
        """Messages this relay published and the broker acknowledged (re-sends included)."""
        return self._published

    def lag(self) -> int:
        """Events in the log past the stored relay position (any relay's), read now on a
        short connection of its own. Raises psycopg.OperationalError when unreachable."""
        with psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
            rows = rows_of(conn)
            return log_head(rows) - relay_position(rows)

    # --- the loop -----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Relays until `stop` is set, then closes its producer and connection and returns.
        Outages of PostgreSQL or the broker are waited out (with backoff); anything else
        stops the relay with RelayCrashed."""
        from kafka.errors import KafkaError

        self._set_state("starting", f"on {_describe(self.url)}, topic {self.topic}")
        try:
            while not stop.is_set():
                try:
                    self._turn(stop)
                except _Stopping:  # a batch still unacknowledged: abandon it (re-sent by the next leader)
                    self._drop_producer()
                    break
                except (psycopg.OperationalError, psycopg.InterfaceError) as error:
                    self._lost_postgres(error)
                    self._pause(stop)
                except KafkaError as error:
                    if isinstance(error, _fatal_kafka_errors()):
                        raise RelayCrashed(f"relay {self.name}: {type(error).__name__}: {_first_line(error)}"
                                           f" (stored position {self._position})") from error
                    self._lost_broker(error)
                    self._pause(stop)
        except RelayCrashed as error:
            self._set_state("crashed", str(error), level=logging.ERROR)
            raise
        except Exception as error:
            self._set_state("crashed", f"{type(error).__name__}: {_first_line(error)}", level=logging.ERROR)
            raise RelayCrashed(f"relay {self.name} crashed: {type(error).__name__}: {_first_line(error)}") from error
        finally:
            self._close()
            if self._state != "crashed":
                self._set_state("stopped", f"{self._published} messages published")

    def _turn(self, stop: threading.Event) -> None:
        """One step: connect, contend for the lock, or relay one batch."""
        conn = self._conn if self._conn is not None else self._connect()
        if not self._leader:
            if not scalar(conn.execute("SELECT pg_try_advisory_lock(%s)", (RELAY_LOCK,))):
                self._set_state("standby", "another relay holds the lock")
                stop.wait(STANDBY_POLL)
                return
            self._leader = True
            self._position = relay_position(rows_of(conn))
            self._set_state("leader", f"from position {self._position}")
        if not self._relay_batch(conn, stop):
            stop.wait(self.settings.relay_poll_interval)

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                               application_name=self.name[:63], keepalives=1, keepalives_idle=10,
                               keepalives_interval=5, keepalives_count=3)
        try:
            # the server drops a silent peer (and frees its lock) after ~25 s too
            conn.execute("SET TIME ZONE 'UTC'; SET tcp_keepalives_idle = 10;"
                         " SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3")
            if scalar(conn.execute("SELECT to_regclass('relay_position')")) is None:
                raise RelayCrashed(f"the store at {_describe(self.url)} has no relay_position table; run `vec migrate`")
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _relay_batch(self, conn: psycopg.Connection[tuple[Any, ...]], stop: threading.Event) -> bool:
        """Publishes the next batch and stores its position; False when there was none."""
        if self._position is None:
            raise RelayCrashed(f"relay {self.name}: a batch before it read the stored position (a bug)")
        rows = relayed_rows(conn, self._position, self.settings.relay_batch)
        if not rows:
            return False
        producer = self._ready_producer()
        send, topic, message = producer.send, self.topic, self._message
        futures = []
        fatal = _fatal_kafka_errors()
        for row in rows:
            key, value, headers = message(row)
            try:
                futures.append(send(topic, value=value, key=key, headers=headers))
            except fatal as error:  # e.g. an event larger than max_request_size: waiting will not help
                raise RelayCrashed(f"relay {self.name}: cannot publish the event at position {row[0]} ({row[2]}"
                                   f" v{row[3]}, {row[4]}): {type(error).__name__}: {_first_line(error)}") from error
        self._await(producer, futures, stop)
        last = rows[-1][0]
        # the connection that holds the lock: a relay that lost it cannot get here
        conn.execute("UPDATE relay_position SET position = GREATEST(position, %s) WHERE id = 1", (last,))
        self._position = last
        self._published += len(rows)
        self._backoff = BACKOFF_FIRST
        if self._state != "leader":
            self._set_state("leader", f"publishing again from position {rows[0][0]}")
        return True

    def _message(self, row: tuple[Any, ...]) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        position, event_id, stream, version, type_name, schema_version, data, occurred_at, actor, corr, cause = row
        current = self._upcast.get(type_name)
        published_version = schema_version
        if current is not None and schema_version < current:
            published_version = current
            value = to_wire(RecordedEvent(position, stream, version, uuid.UUID(event_id),
                                          occurred_at.astimezone(timezone.utc),
                                          decode(type_name, schema_version, data), corr, cause, actor))
        else:  # the stored canonical JSON as it is: what to_wire would give, without decoding
            value = orjson.dumps({
                "position": position, "stream": stream, "version": version, "type": type_name,
                "data": orjson.Fragment(data),
                "metadata": {"event_id": event_id, "occurred_at": occurred_at.astimezone(timezone.utc).isoformat(),
                             "correlation_id": corr, "causation_id": cause, "actor": actor,
                             "schema_version": schema_version}})
        headers = event_headers(self.source, event_id, type_name, published_version,
                                stream, version, position, occurred_at)
        headers += tracing.event_headers(type_name, corr, position)  # W3C traceparent ([] when off)
        return stream.encode(), value, headers

    def _ready_producer(self) -> KafkaProducer:
        if self._producer is None:
            from kafka import KafkaProducer

            if not self._topic_ready:
                partitions = self.settings.kafka_partitions
                counts = ensure_topics(self.settings.kafka_bootstrap, [self.topic], partitions,
                                       timeout=CONNECT_TIMEOUT)
                if counts[self.topic] != partitions:
                    log.warning("relay %s: topic %s has %d partitions, settings ask for %d (created elsewhere,"
                                " e.g. auto-created by the broker); publishing to it as it is",
                                self.name, self.topic, counts[self.topic], partitions)
                self._topic_ready = True
            self._producer = KafkaProducer(**producer_settings(self.settings, self.name))
        return self._producer

    def _await(self, producer: KafkaProducer, futures: list[FutureRecordMetadata], stop: threading.Event) -> None:
        """Returns once the broker acknowledged every future; raises the first failure, a
        KafkaTimeoutError past the delivery timeout, or _Stopping (stop set, STOP_GRACE over)."""
        from kafka.errors import KafkaTimeoutError

        deadline = time.monotonic() + PRODUCER_SETTINGS["delivery_timeout_ms"] / 1000 + 5
        stop_deadline = None
        while True:
            try:
                producer.flush(timeout=0.25)
                break
            except KafkaTimeoutError:
                now = time.monotonic()
                if stop.is_set():
                    stop_deadline = stop_deadline or now + STOP_GRACE
                    if now > stop_deadline:
                        raise _Stopping() from None
                if now > deadline:
                    raise KafkaTimeoutError("the broker acknowledged no batch in time") from None
        for future in futures:
            if future.failed():
                raise future.exception

    # --- failures -----------------------------------------------------------------------

    def _lost_postgres(self, error: BaseException) -> None:
        was_leader = self._leader
        self._drop_connection()
        self._set_state("postgres-unavailable", ("lost the lock: " if was_leader else "") + _first_line(error),
                        level=logging.WARNING)

    def _lost_broker(self, error: BaseException) -> None:
        self._drop_producer()
        self._topic_ready = False  # the broker may come back empty: check the topic first
        self._set_state("broker-unavailable", f"{type(error).__name__}: {_first_line(error)}; "
                        f"position stays at {self._position}", level=logging.WARNING)

    def _pause(self, stop: threading.Event) -> None:
        stop.wait(self._backoff)
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)

    def _drop_connection(self) -> None:
        conn, self._conn, self._leader, self._position = self._conn, None, False, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - a broken connection may complain on close
                pass

    def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            sender = getattr(producer, "_sender", None)
            if sender is not None:
                sender.force_close()  # records of a failed batch: abandoned, re-sent later
            _close_producer(producer)

    def _close(self) -> None:
        try:
            if self._producer is not None:
                producer, self._producer = self._producer, None
                _close_producer(producer)
        finally:
            self._drop_connection()  # ends the session: the lock goes with it

    def _set_state(self, state: str, detail: str = "", level: int = logging.INFO) -> None:
        if state == self._state:
            return
        self._state = state
        log.log(level, "relay %s: %s%s", self.name, state, f" ({detail})" if detail else "")

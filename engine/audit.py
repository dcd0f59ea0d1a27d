"""`vec audit`: replays the whole log and checks every money rule of shared/DESIGN.md.

Each violation is named with the stream and position where it shows, so an operator can
go straight to `vec events --stream`.
"""
from __future__ import annotations

import itertools
import sqlite3
import tempfile
from collections import defaultdict
from pathlib import Path
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from events import (
    AccountOpened,
    AddressVerified,
    ChunkSubmitted,
    CreditsDebited,
    CreditsGranted,
    CreditsRefunded,
    RecordedEvent,
    ResultUnknown,
    TaskCancelled,
)
from engine.domain import accounts, tasks
from engine.domain.errors import InvariantViolation
from engine.store.sqlite import SqliteSession, connect
from projections.read_models import BALANCES, HISTORY, all_projections

if TYPE_CHECKING:
    from engine.store import Database

Report = Callable[[str], None]  # says one violation
from projections.runner import ProjectionRunner


@dataclass
class AuditReport:
    events: int = 0
    accounts: int = 0
    tasks: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "events": self.events, "accounts": self.accounts, "tasks": self.tasks,
                "violations": self.violations}


def audit(db: Database) -> AuditReport:
    """Works on any store: the log is folded into a scratch SQLite file, the live read models
    are copied beside it, and the two are compared there in SQL (memory does not grow with
    the log). The log and the live read models are read in one snapshot: an engine that
    appends meanwhile cannot make the audit report false differences."""
    db.catch_up()
    with tempfile.TemporaryDirectory(prefix="vec-audit-") as scratch:
        fresh_conn = connect(str(Path(scratch) / "fresh.db"))
        try:
            with db.snapshot():
                fresh = ProjectionRunner(SqliteSession(fresh_conn), all_projections(), db.events.read_all,
                                         seal_row=db.projector.seal_row)  # sealed as the live rows are
                return _audit_snapshot(db, fresh, fresh_conn)
        finally:
            fresh_conn.close()


def _audit_snapshot(db: Database, fresh: ProjectionRunner, scratch: sqlite3.Connection) -> AuditReport:
    report = AuditReport()
    account_states: dict[str, accounts.AccountState] = {}
    task_states: dict[str, tasks.TaskState] = {}
    versions: dict[str, int] = defaultdict(int)
    debited: dict[str, int] = defaultdict(int)
    refunded: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    unknown_results: dict[str, int] = defaultdict(int)
    seen_ids: set[Any] = set()
    bad = report.violations.append
    live = db.projector.checkpoints()  # each live read model is compared at its own position
    live_at = live.get("credits", 0)
    balances_at_live: dict[str, tuple[int, int]] = {}

    for recorded in db.events.read_all():
        report.events += 1
        where = f"{recorded.stream}@{recorded.version} (position {recorded.position})"
        if recorded.position != report.events:
            bad(f"gap in the global order: expected position {report.events}, found {recorded.position}")
        versions[recorded.stream] += 1
        if recorded.version != versions[recorded.stream]:
            bad(f"stream versions not contiguous at {where}")
        if recorded.event_id in seen_ids:
            bad(f"event id {recorded.event_id} appears twice ({where})")
        seen_ids.add(recorded.event_id)
        try:
            if recorded.stream.startswith("account-"):
                _check_account_event(recorded, account_states, debited, refunded, where, bad)
            else:
                _check_task_event(recorded, task_states, unknown_results, where, bad)
        except InvariantViolation as error:
            bad(f"invariant broken at {where}: {error}")
        if recorded.position == live_at:
            balances_at_live = {s.removeprefix("account-"): (a.monthly, a.payg) for s, a in account_states.items()}

    report.accounts, report.tasks = len(account_states), len(task_states)
    for stopped in db.projector.stopped().values():
        bad(str(stopped))
    for task_id, state in task_states.items():
        _check_settlement(task_id, state, debited, refunded, unknown_results, bad)
    fresh.catch_up(until=max(live.values(), default=0), stop_at=live)
    _check_read_models(db, fresh, scratch, balances_at_live, bad)
    return report


def _check_account_event(recorded: RecordedEvent, states: dict[str, accounts.AccountState], debited: dict[str, int],
                         refunded: dict[str, dict[str, int]], where: str, bad: Report) -> None:
    stream = recorded.stream
    state = states.get(stream, accounts.AccountState())
    event = recorded.event
    if isinstance(event, CreditsGranted) and event.reason == "welcome":
        if (event.bucket, event.amount) != ("payg", 200) or recorded.version != 2:
            bad(f"welcome grant is not 200 PAYG right after opening at {where}")
    if not state.opened and not isinstance(event, AccountOpened):
        bad(f"{event.type_name()} before AccountOpened at {where}")
    if isinstance(event, CreditsDebited):
        debited[event.task_id] += event.monthly + event.payg
    if isinstance(event, CreditsRefunded):
        refunded[event.task_id][event.reason] += event.amount
    state = accounts.evolve(state, event)  # asserts: no negative bucket, no refund beyond debit
    if state.monthly < 0 or state.payg < 0:
        bad(f"negative balance at {where}")
    states[stream] = state


def _check_task_event(recorded: RecordedEvent, states: dict[str, tasks.TaskState], unknown_results: dict[str, int],
                      where: str, bad: Report) -> None:
    task_id = recorded.stream.removeprefix("task-")
    state = states.get(task_id) or tasks.TaskState(task_id=task_id)
    event = recorded.event
    if isinstance(event, ChunkSubmitted) and not state.active:
        bad(f"chunk {event.chunk_no} submitted after the task stopped ({state.status}) at {where}")
    if isinstance(event, (AddressVerified, ResultUnknown)):
        if event.late == state.active:
            bad(f"result for {event.address} marked late={event.late} while task {state.status} at {where}")
        if isinstance(event, ResultUnknown) and not event.late:
            unknown_results[task_id] += 1
    if isinstance(event, TaskCancelled) and state.kind == "single":
        bad(f"single task cancelled at {where}")
    states[task_id] = tasks.evolve(state, event)  # asserts: each address settles once


def _check_settlement(task_id: str, state: tasks.TaskState, debited: dict[str, int],
                      refunded: dict[str, dict[str, int]], unknown_results: dict[str, int], bad: Report) -> None:
    name = f"task {task_id}"
    if debited.get(task_id, 0) != state.address_count:
        bad(f"{name}: debited {debited.get(task_id, 0)} for {state.address_count} unique addresses")
    total_refunded = sum(refunded[task_id].values())
    if total_refunded != state.refunded:
        bad(f"{name}: account refunds {total_refunded} differ from the task's settled refunds {state.refunded}")
    if refunded[task_id].get("unknown", 0) != unknown_results.get(task_id, 0):
        bad(f"{name}: {unknown_results.get(task_id, 0)} Unknown results but "
            f"{refunded[task_id].get('unknown', 0)} Unknown refunds")
    if state.status in tasks.FINISHED and debited.get(task_id, 0) != state.consumed + total_refunded:
        bad(f"{name}: debited {debited.get(task_id, 0)} != consumed {state.consumed} + refunded {total_refunded}")
    if state.status == "completed" and state.unsettled:
        bad(f"{name}: completed with {state.unsettled} addresses unsettled")


def _check_read_models(db: Database, fresh: ProjectionRunner, scratch: sqlite3.Connection,
                       balances: dict[str, tuple[int, int]], bad: Report) -> None:
    """The live read models against a fold of the log into the scratch database, both at the
    live checkpoint: the live rows are copied beside the fresh ones and compared in SQL."""
    for table, spec in fresh.specs.items():
        columns = ", ".join(spec.columns)
        scratch.execute(f"CREATE TABLE live_{table} AS SELECT * FROM {table} WHERE 0")
        rows = db.projector.rows(table)
        while batch := list(itertools.islice(rows, 5000)):
            scratch.executemany(f"INSERT INTO live_{table} ({columns}) VALUES ({', '.join('?' * len(spec.columns))})",
                                batch)
        missing = scratch.execute(f"SELECT COUNT(*) FROM (SELECT {columns} FROM {table}"
                                  f" EXCEPT SELECT {columns} FROM live_{table})").fetchone()[0]
        extra = scratch.execute(f"SELECT COUNT(*) FROM (SELECT {columns} FROM live_{table}"
                                f" EXCEPT SELECT {columns} FROM {table})").fetchone()[0]
        if missing or extra:
            bad(f"read model {table} differs from a fresh fold of the log "
                f"({missing} rows missing or changed, {extra} rows extra)")
    folded = {r[0]: (r[1], r[2]) for r in scratch.execute(f"SELECT account_id, monthly, payg FROM {BALANCES.name}")}
    sums = dict(scratch.execute(f"SELECT account_id, SUM(amount) FROM {HISTORY.name} GROUP BY account_id"))
    for account_id, (monthly, payg) in balances.items():
        if folded.get(account_id) != (monthly, payg):
            bad(f"account {account_id}: balance read model differs from the log")
        if sums.get(account_id, 0) != monthly + payg:
            bad(f"account {account_id}: history rows sum to {sums.get(account_id, 0)}, balance is {monthly + payg}")

"""`vec audit`: replays the whole log and checks every money rule of shared/DESIGN.md.

Each violation is named with the stream and position where it shows, so an operator can
go straight to `vec events --stream`.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

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
from projections.base import InMemoryView
from projections.read_models import BALANCES, HISTORY, all_projections


@dataclass
class AuditReport:
    events: int = 0
    accounts: int = 0
    tasks: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_json(self) -> dict:
        return {"ok": self.ok, "events": self.events, "accounts": self.accounts, "tasks": self.tasks,
                "violations": self.violations}


def audit(db) -> AuditReport:
    db.catch_up()
    report = AuditReport()
    account_states: dict[str, accounts.AccountState] = {}
    task_states: dict[str, tasks.TaskState] = {}
    versions: dict[str, int] = defaultdict(int)
    debited: dict[str, int] = defaultdict(int)
    refunded: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    unknown_results: dict[str, int] = defaultdict(int)
    seen_ids: set = set()
    fresh = InMemoryView(all_projections())
    bad = report.violations.append

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
        fresh.apply(c for p in fresh.projections for c in p.evolve(fresh, recorded))
        try:
            if recorded.stream.startswith("account-"):
                _check_account_event(recorded, account_states, debited, refunded, where, bad)
            else:
                _check_task_event(recorded, task_states, unknown_results, where, bad)
        except AssertionError as error:
            bad(f"invariant broken at {where}: {error}")

    report.accounts, report.tasks = len(account_states), len(task_states)
    for task_id, state in task_states.items():
        _check_settlement(task_id, state, debited, refunded, unknown_results, bad)
    _check_read_models(db, fresh, account_states, bad)
    return report


def _check_account_event(recorded: RecordedEvent, states, debited, refunded, where, bad) -> None:
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


def _check_task_event(recorded: RecordedEvent, states, unknown_results, where, bad) -> None:
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


def _check_settlement(task_id, state: tasks.TaskState, debited, refunded, unknown_results, bad) -> None:
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


def _check_read_models(db, fresh: InMemoryView, account_states, bad) -> None:
    for table in fresh.specs:
        live = db.projector.sorted_rows(table)
        rebuilt = fresh.sorted_rows(table)
        if live != rebuilt:
            diff = len(set(live) ^ set(rebuilt))
            bad(f"read model {table} differs from a fresh fold of the log ({diff} rows differ)")
    balances = {r["account_id"]: r for r in fresh.tables[BALANCES.name].values()}
    sums: dict[str, int] = defaultdict(int)
    for row in fresh.tables[HISTORY.name].values():
        sums[row["account_id"]] += row["amount"]
    for stream, state in account_states.items():
        account_id = stream.removeprefix("account-")
        row = balances.get(account_id)
        if row is None or (row["monthly"], row["payg"]) != (state.monthly, state.payg):
            bad(f"account {account_id}: balance read model differs from the log")
        if sums[account_id] != state.total:
            bad(f"account {account_id}: history rows sum to {sums[account_id]}, balance is {state.total}")

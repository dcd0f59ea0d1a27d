"""The checks after a simulated run, beside `vec audit`: the money rules of shared/DESIGN.md
folded from the log by a model written apart from the engine (plain sums over the events,
none of the engine's deciders), then held against the read models and against what the
customers were told (tests/sim/customers.py).

Times are virtual seconds since the simulator's T0. A sweep (Monthly expiry, retention) is
due within BOUND_S of the moment it became due, if an engine ran all that time: `alive`
lists the (start, end) of every engine of the run.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Iterable

from engine.domain.limits import DEFAULT_RETENTION_DAYS
from engine.keyring import ERASED
from engine.policies import SWEEP_INTERVAL_S
from events import (
    AddressVerified,
    ChunkFailed,
    ChunkSubmitted,
    CreditsDebited,
    CreditsGranted,
    CreditsRefunded,
    MonthlyCreditsExpired,
    RecordedEvent,
    ResultUnknown,
    ResultsRecorded,
    RetentionSet,
    SystemFailure,
    TaskCancelled,
    TaskCompleted,
    TaskCreated,
    TaskDataErased,
    TaskDeleted,
    TaskFailed,
)
from projections.read_models import HISTORY, TASKS

if TYPE_CHECKING:
    from engine.service import Engine
    from engine.store import Database
    from tests.sim.customers import Customers

BOUND_S = SWEEP_INTERVAL_S + 5.0  # a sweep every 30 s, on a beat (1 s), on a read model (0.2 s behind)
DAY_S = 86400.0
FINISHED = {TaskCompleted: "completed", TaskCancelled: "cancelled", TaskFailed: "failed", SystemFailure: "failed"}


class Violation(AssertionError):
    pass


def due_by(due_s: float, alive: list[tuple[float, float]]) -> float | None:
    """When a sweep must have acted on what fell due at `due_s`: BOUND_S into the first engine
    that ran that long from then on (None: no engine ran long enough after it)."""
    for start, end in alive:
        begin = max(start, due_s)
        if begin + BOUND_S <= end:
            return begin + BOUND_S
    return None


@dataclass
class Purse:
    """One account as the money rules say it stands."""

    monthly: int = 0
    payg: int = 0
    expires_s: float | None = None  # the current Monthly period's end
    retention_days: int = DEFAULT_RETENTION_DAYS
    retention_set_s: float = 0.0
    granted: int = 0
    rows: int = 0  # Credits History rows its money events make
    renewing: int | None = None  # position of an early expiry: a new period's grant must follow it


@dataclass
class Facts:
    """One task as its log says it went."""

    account: str
    kind: str
    count: int
    upload_id: str
    status: str = "pending"
    monthly: int = 0  # debited from each bucket
    payg: int = 0
    refunded: int = 0
    consumed: int = 0
    unknown: int = 0
    failed: int = 0  # addresses of failed chunks
    late: int = 0
    submitted: int = 0  # addresses of submitted chunks
    finished_s: float | None = None
    deleted: bool = False
    erased: bool = False
    addresses: Counter[bool] = field(default_factory=Counter)  # read back as placeholders? -> how many


def _seconds(moment: datetime) -> float:
    from tests.sim.simulator import T0

    return (moment - T0).total_seconds()


class Ledger:
    """Folds the log in order, raising Violation where a rule breaks."""

    def __init__(self, alive: list[tuple[float, float]], coverage: Counter[str]):
        self.alive, self.coverage = alive, coverage
        self.purses: dict[str, Purse] = defaultdict(Purse)
        self.tasks: dict[str, Facts] = {}
        self.unknown_refunds: dict[int, str] = {}  # position of each Unknown refund -> its task

    def fold(self, log: Iterable[RecordedEvent]) -> int:
        n = 0
        for recorded in log:
            n += 1
            at_s = _seconds(recorded.occurred_at)
            where = f"{recorded.stream}@{recorded.version} (position {recorded.position}, t={at_s:.3f})"
            if recorded.stream.startswith("account-"):
                self._account(recorded, at_s, where)
            else:
                self._task(recorded, at_s, where)
        return n

    # --- accounts ---------------------------------------------------------------------

    def _account(self, recorded: RecordedEvent, at_s: float, where: str) -> None:
        account, event = recorded.stream.removeprefix("account-"), recorded.event
        purse = self.purses[account]
        self.expired_in_time(account, at_s)
        if purse.renewing is not None:
            if not (isinstance(event, CreditsGranted) and event.bucket == "monthly"
                    and recorded.position == purse.renewing + 1):
                raise Violation(f"Monthly credits expired before their period ended, and no new period followed "
                                f"(position {purse.renewing})")
            purse.renewing = None
        if isinstance(event, CreditsGranted):
            self._grant(purse, event, at_s, where)
        elif isinstance(event, CreditsDebited):
            self._debit(purse, event, at_s, where)
        elif isinstance(event, CreditsRefunded):
            self._refund(purse, event, recorded.position, where)
        elif isinstance(event, MonthlyCreditsExpired):
            self._expire(purse, event, recorded.position, at_s, where)
        elif isinstance(event, RetentionSet):
            purse.retention_days, purse.retention_set_s = event.days, at_s
        if purse.monthly < 0 or purse.payg < 0:
            raise Violation(f"balance negative (Monthly {purse.monthly}, PAYG {purse.payg}) at {where}")

    def _grant(self, purse: Purse, event: CreditsGranted, at_s: float, where: str) -> None:
        purse.granted += event.amount
        purse.rows += 1
        if event.bucket == "payg":
            purse.payg += event.amount
            return
        expires_s = _seconds(datetime.fromisoformat(event.expires_at or ""))
        if expires_s <= at_s:
            raise Violation(f"Monthly credits granted already expired at {where}")
        if purse.monthly > 0 and expires_s != purse.expires_s:
            raise Violation(f"a new Monthly period began with {purse.monthly} credits of the last one unexpired "
                            f"at {where}")
        self.coverage["Monthly top-ups" if purse.monthly > 0 else "Monthly periods begun"] += 1
        purse.monthly += event.amount
        purse.expires_s = expires_s

    def _debit(self, purse: Purse, event: CreditsDebited, at_s: float, where: str) -> None:
        if purse.monthly > 0 and purse.expires_s is not None and purse.expires_s <= at_s:
            raise Violation(f"{purse.monthly} Monthly credits spent after their period ended at {where}")
        amount = event.monthly + event.payg
        if event.monthly != min(purse.monthly, amount) or event.payg < 0:
            raise Violation(f"not Monthly first: {event.monthly} Monthly + {event.payg} PAYG taken with "
                            f"{purse.monthly} Monthly held, at {where}")
        task = self.tasks.get(event.task_id)
        if task is None or task.monthly + task.payg or amount != task.count:
            raise Violation(f"debit of {amount} for task {event.task_id} does not match its creation at {where}")
        task.monthly, task.payg = event.monthly, event.payg
        purse.monthly -= event.monthly
        purse.payg -= event.payg
        purse.rows += bool(event.monthly) + bool(event.payg)
        if event.monthly:
            self.coverage["debits from Monthly" + (" and PAYG" if event.payg else "")] += 1

    def _refund(self, purse: Purse, event: CreditsRefunded, position: int, where: str) -> None:
        task = self.tasks.get(event.task_id)
        if task is None or task.refunded + event.amount > task.monthly + task.payg:
            raise Violation(f"refund of {event.amount} beyond the debit of task {event.task_id} at {where}")
        task.refunded += event.amount
        purse.payg += event.amount  # rule 4: refunds land in PAYG, whichever bucket paid
        purse.rows += 1
        if event.reason == "unknown":
            if event.amount != 1:
                raise Violation(f"an Unknown refund of {event.amount} credits at {where}")
            self.unknown_refunds[position] = event.task_id
        if task.monthly:
            self.coverage[f"{event.reason} refunds to PAYG of a Monthly debit"] += 1

    def _expire(self, purse: Purse, event: MonthlyCreditsExpired, position: int, at_s: float, where: str) -> None:
        if event.amount <= 0 or event.amount != purse.monthly:
            raise Violation(f"{event.amount} Monthly credits expired, the leftover was {purse.monthly}, at {where}")
        if purse.expires_s is None or at_s < purse.expires_s:
            purse.renewing = position
            self.coverage["Monthly leftovers expired by a new period"] += 1
        else:
            self.coverage["Monthly leftovers expired at period end"] += 1
        purse.monthly = 0
        purse.rows += 1

    def expired_in_time(self, account: str, now_s: float) -> None:
        """A Monthly leftover still held at `now_s`, past its period's end by more than a sweep
        of an engine that ran meanwhile, breaks rule 1."""
        purse = self.purses[account]
        if purse.monthly <= 0 or purse.expires_s is None:
            return
        deadline = due_by(purse.expires_s, self.alive)
        if deadline is not None and now_s > deadline:
            raise Violation(f"{account} still held {purse.monthly} Monthly credits at t={now_s:.3f}; their period "
                            f"ended at t={purse.expires_s:.3f} and an engine ran until past t={deadline:.3f}")

    # --- tasks ------------------------------------------------------------------------

    def _task(self, recorded: RecordedEvent, at_s: float, where: str) -> None:
        task_id, event = recorded.stream.removeprefix("task-"), recorded.event
        if isinstance(event, TaskCreated):
            self.tasks[task_id] = Facts(event.account_id, event.kind, event.address_count,
                                        event.upload_id or task_id)
            return
        task = self.tasks[task_id]
        if isinstance(event, ChunkSubmitted):
            task.status = "processing"
            task.submitted += len(event.addresses)
            task.addresses.update(a.startswith(ERASED) for a in event.addresses)
        elif isinstance(event, ResultsRecorded):
            task.addresses.update(a.startswith(ERASED) for a in event.addresses)
            settled = len(event.addresses)
            if event.late:
                task.late += settled
            elif event.status == "unknown":
                task.unknown += settled
            else:
                task.consumed += settled
        elif isinstance(event, (AddressVerified, ResultUnknown)):
            task.addresses[event.address.startswith(ERASED)] += 1
            if event.late:
                task.late += 1
            elif isinstance(event, AddressVerified):
                task.consumed += 1
            else:
                task.unknown += 1
        elif isinstance(event, ChunkFailed):
            task.failed += len(event.addresses)
        elif type(event) in FINISHED:
            task.status, task.finished_s = FINISHED[type(event)], at_s
        elif isinstance(event, TaskDeleted):
            if task.finished_s is None:
                raise Violation(f"task deleted while {task.status} at {where}")
            task.deleted = True
        elif isinstance(event, TaskDataErased):
            self._erased(task, event, at_s, where)

    def _erased(self, task: Facts, event: TaskDataErased, at_s: float, where: str) -> None:
        if task.finished_s is None:
            raise Violation(f"task data erased while {task.status} at {where}")
        purse = self.purses[task.account]
        if event.reason == "retention" and task.finished_s + purse.retention_days * DAY_S > at_s:
            raise Violation(f"task data erased by retention ({purse.retention_days} days) before its time, "
                            f"finished at t={task.finished_s:.3f}, at {where}")
        task.erased = True
        self.coverage[f"erasures ({event.reason})"] += 1

    def retention_kept(self, task_id: str) -> None:
        """A finished task's data kept past its account's retention while an engine ran."""
        task = self.tasks[task_id]
        if task.finished_s is None or task.erased:
            return
        purse = self.purses[task.account]
        due_s = max(task.finished_s + purse.retention_days * DAY_S, purse.retention_set_s)
        deadline = due_by(due_s, self.alive)
        if deadline is not None:
            raise Violation(f"task {task_id} finished at t={task.finished_s:.3f}: its data outlived the "
                            f"{purse.retention_days}-day retention (an engine ran until past t={deadline:.3f})")


# --- the read models and the promises, against the ledger ----------------------------------

def check_accounts(db: "Database", ledger: Ledger, customers: "Customers", end_s: float) -> None:
    for account in customers.accounts:
        purse = ledger.purses[account]
        ledger.expired_in_time(account, end_s)
        if purse.renewing is not None:
            raise Violation(f"{account}: Monthly credits expired early with no new period after them")
        if purse.granted != customers.granted[account]:
            raise Violation(f"{account}: the log grants {purse.granted} credits, the customers were told "
                            f"{customers.granted[account]} (an idempotent retry granted twice, or one was lost)")
        balance = db.read.balances(account) or {}
        if (balance.get("monthly"), balance.get("payg")) != (purse.monthly, purse.payg):
            raise Violation(f"{account}: balances read Monthly {balance.get('monthly')} PAYG {balance.get('payg')}, "
                            f"the rules say {purse.monthly} and {purse.payg}")
        _check_history(db, ledger, account, purse)


def _check_history(db: "Database", ledger: Ledger, account: str, purse: Purse) -> None:
    """Rule 9 (rows sum to the balance, row by row), rule 4 (refunds in PAYG), rule 5 (a +1
    row per Unknown pointing at its task), and no row lost (erasure keeps them)."""
    rows = db.read.sql.execute(f"SELECT type, bucket, amount, balance_after, description, task_id, position"
                               f" FROM {HISTORY.name} WHERE account_id = ? ORDER BY seq", (account,)).fetchall()
    if len(rows) != purse.rows:
        raise Violation(f"{account}: {len(rows)} Credits History rows, its money events make {purse.rows}")
    running, buckets, per_task = 0, Counter(), Counter()
    for kind, bucket, amount, balance_after, description, task_id, position in rows:
        running += amount
        buckets[bucket] += amount
        per_task[task_id] += amount
        if balance_after != running:
            raise Violation(f"{account}: history row at position {position} says balance {balance_after}, "
                            f"the rows above it sum to {running}")
        if kind in ("refund", "cancel") and bucket != "payg":
            raise Violation(f"{account}: a refund row in the {bucket} bucket (position {position})")
        if position in ledger.unknown_refunds and (amount, bucket, description, task_id) != (
                1, "payg", "Credit refund: 1 credits", ledger.unknown_refunds[position]):
            raise Violation(f"{account}: the Unknown refund at position {position} shows as {description!r} "
                            f"({amount} {bucket}) for task {task_id}")
    if (buckets["monthly"], buckets["payg"]) != (purse.monthly, purse.payg):
        raise Violation(f"{account}: history rows sum to Monthly {buckets['monthly']} PAYG {buckets['payg']}, "
                        f"the balance is {purse.monthly} and {purse.payg}")
    for task_id, task in ledger.tasks.items():
        if task.account == account and per_task[task_id] != task.refunded - task.monthly - task.payg:
            raise Violation(f"task {task_id}: its Credits History rows sum to {per_task[task_id]}, "
                            f"its money to {task.refunded - task.monthly - task.payg}")


def check_tasks(db: "Database", engine: "Engine", ledger: Ledger, customers: "Customers") -> None:
    if set(ledger.tasks) != customers.created:
        raise Violation(f"the log holds {len(ledger.tasks)} tasks, the customers were given {len(customers.created)}"
                        f" (extra: {sorted(set(ledger.tasks) - customers.created)[:3]})")
    staged = db.inputs.staged()
    for task_id, task in ledger.tasks.items():
        name = f"task {task_id}"
        if task.monthly + task.payg != task.consumed + task.refunded and task.finished_s is not None:
            raise Violation(f"{name}: debited {task.monthly + task.payg} != consumed {task.consumed} + "
                            f"refunded {task.refunded}")
        _check_task_row(db, task_id, task)
        results = list(db.read.results(task_id))
        if task.erased:
            kept = [what for what, gone in (("results", results), ("staged inputs", task.upload_id in staged),
                                            ("data key", db.keyring.store.get(task_id) is not None),
                                            ("addresses in the log", task.addresses[False])) if gone]
            if kept:
                raise Violation(f"{name} was erased but its {', '.join(kept)} remain")
            continue
        if len(results) != task.consumed + task.unknown + task.failed or task.addresses[True]:
            raise Violation(f"{name}: {len(results)} results shown for {task.consumed + task.unknown + task.failed} "
                            f"settled, {task.addresses[True]} addresses erased in the log")
        ledger.retention_kept(task_id)
        if task.status == "failed":
            _check_unprocessed(engine, task_id, task)


def _check_task_row(db: "Database", task_id: str, task: Facts) -> None:
    """The task's row (counts and money stay after erasure), and whether the customer sees it."""
    cursor = db.read.sql.execute(f"SELECT status, deleted, verified, unknown, failed, refunded, consumed, debited,"
                                 f" late FROM {TASKS.name} WHERE task_id = ?", (task_id,))
    row = cursor.fetchone()
    want = ("deleted" if task.erased else task.status, int(task.deleted), task.consumed + task.unknown,
            task.unknown, task.failed, task.refunded, task.consumed, task.monthly + task.payg, task.late)
    if row is None or tuple(row) != want:
        raise Violation(f"task {task_id}: its row reads {row}, the log says {want}")
    if (db.read.task(task_id) is None) != task.deleted:
        raise Violation(f"task {task_id}: {'shown although deleted' if task.deleted else 'hidden, never deleted'}")


def _check_unprocessed(engine: "Engine", task_id: str, task: Facts) -> None:
    """A failed task's addresses that got no answer stay downloadable until it is erased."""
    unprocessed = sum(1 for _ in engine.unprocessed(task_id))
    if unprocessed != task.failed + task.count - task.submitted:
        raise Violation(f"task {task_id} failed: {unprocessed} unprocessed addresses listed, "
                        f"{task.failed} of failed chunks + {task.count - task.submitted} never submitted")

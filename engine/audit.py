"""`vec audit`: replays the whole log and checks every fact it states that carries money,
counts or time against the rest of the log (docs/audit.md lists each rule and why).

Each violation names its rule ("[refund-cause] ...") and the stream and position where it
shows, so an operator can go straight to `vec events --stream`. The audit streams the log
once: beside the per-account and per-task states it folds, it keeps only what a rule
needs of each task and account (a few numbers, and the refunds a task still owes, which
the same append settles), never the events themselves.
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import sqlite3
import tempfile
import types
import typing
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal

from events import (
    WELCOME_CREDITS,
    AccountOpened,
    ChunkFailed,
    ChunkSubmitted,
    CreditsDebited,
    CreditsGranted,
    CreditsRefunded,
    Event,
    MonthlyCreditsExpired,
    RecordedEvent,
    ResultsRecorded,
    SystemFailure,
    TaskCancelled,
    TaskCompleted,
    TaskCreated,
    TaskDataErased,
    TaskDeleted,
    TaskFailed,
    as_batch,
)
from engine import chain
from engine.domain import accounts, tasks
from engine.domain.errors import InvariantViolation
from engine.domain.limits import MAX_BALANCE
from engine.store.base import CorruptEvent
from engine.store.sqlite import SqliteSession, connect, transaction
from projections.base import Table
from projections.read_models import BALANCES, HISTORY, all_projections
from projections.runner import ProjectionRunner

if TYPE_CHECKING:
    from engine.keyring import Keyring
    from engine.store import Database

# The scratch file is thrown away with the audit: no journal, no syncing, no zeroed pages, no
# page map for vacuuming (the store's own connection settings are for a store, not for it).
SCRATCH_PRAGMAS = ("PRAGMA auto_vacuum=NONE", "PRAGMA journal_mode=OFF", "PRAGMA synchronous=OFF",
                   "PRAGMA secure_delete=OFF")

# The engine reads its clock to decide (an expiry, a debit) just before it stamps the events
# it appends: a fact may lag its decision by this much and still be on time.
CLOCK_SLACK = timedelta(seconds=5)
MAX_PER_RULE = 50  # violations listed per rule; the rest are counted (a broken log can break millions)

RULES: dict[str, str] = {  # rule -> what it holds; docs/audit.md tells the fact and the check in full
    "chain": "each event carries the SHA-256 of its stored row and of the previous event's hash (engine/chain.py): "
             "no event was altered, deleted, inserted or moved in the store",
    "audit-point": "the log still holds, at the last recorded audit point, the chain hash recorded there (the log "
                   "before it was not rewritten, chain and all)",
    "positions": "global positions run 1, 2, 3 ... with no gap and no repeat",
    "stream-versions": "each stream's versions run 1, 2, 3 ... in the order of positions",
    "event-ids": "no event id appears twice",
    "stream-kind": "an event lives in a stream of its kind (account-ID or task-ID)",
    "well-formed": "every event decodes and each field has its declared type (counts and amounts >= 0)",
    "account-opened": "an account stream starts with AccountOpened naming its own id, once",
    "welcome": "version 2 of every account is the welcome grant of 200 PAYG, and no other grant is a welcome",
    "grant": "a grant is above zero and keeps the balance within its bound; PAYG never expires",
    "monthly-period": "a Monthly grant expires later than it was granted; a new period starts after the "
                      "previous leftover expired",
    "monthly-expiry": "MonthlyCreditsExpired takes exactly the Monthly leftover, at or after its expiry (or to "
                      "open a new period at once); no debit spends Monthly credits past their expiry",
    "monthly-first": "a debit takes PAYG only once the Monthly bucket is empty",
    "balance": "no debit takes more than a bucket holds",
    "debit": "a debit names a task of the account created before it, once, for one credit per unique address",
    "refund-cause": "every refund follows the task event that frees those credits (same task, account, amount, "
                    "reason, causation id), and every such event is refunded",
    "refund-outstanding": "a refund is above zero and never exceeds what the task still has outstanding",
    "task-created": "a task stream starts with TaskCreated for an open account, once, within bounds",
    "chunk-submitted": "chunks are submitted in order while the task runs, each of its exact length, no address "
                       "twice",
    "result": "a result settles an address of a submitted chunk that has no result yet",
    "late-result": "a result is marked late exactly when it arrives after the task stopped (never charged "
                   "nor refunded)",
    "chunk-failed": "ChunkFailed, while the task runs, lists exactly the chunk's addresses still unsettled",
    "task-completed": "TaskCompleted comes while the task runs, once every address settled, with counts equal to "
                      "the results; a task whose every address settled has ended",
    "task-cancelled": "only a running bulk is cancelled, with unverified_count = its unsettled addresses",
    "task-failed": "TaskFailed follows failed chunks while the task runs (provider_error exactly when every chunk "
                   "failed), with unverified_count = its unsettled addresses",
    "system-failure": "SystemFailure comes while the task runs, with unverified_count = its unsettled addresses",
    "task-deleted": "only a finished task is deleted, once; only its erasure may follow",
    "task-erased": "a task's data is erased once, never while it runs; for retention, not before the account's "
                   "retention ran out since the task finished",
    "settlement": "each task is debited its address count; account refunds equal the task's settled refunds; "
                  "a finished task has debited = consumed + refunded",
    "invariant": "the deciders' own invariants hold while folding (the catch-all for what no rule above names)",
    "read-models": "the live read models equal a fresh fold of the log; history rows sum to the balance",
}

ACCOUNT_EVENTS = frozenset({"AccountOpened", "CreditsGranted", "CreditsDebited", "CreditsRefunded",
                            "MonthlyCreditsExpired", "RetentionSet", "ApiKeyIssued", "ApiKeyRevoked",
                            "NotificationsSet"})
TASK_EVENTS = frozenset({"TaskCreated", "ChunkSubmitted", "ResultsRecorded", "AddressVerified", "ResultUnknown",
                         "ChunkFailed",
                         "TaskCancelled", "TaskCompleted", "TaskFailed", "SystemFailure", "TaskDeleted",
                         "TaskDataErased"})
STREAM_KINDS = {"account-": ACCOUNT_EVENTS, "task-": TASK_EVENTS}


@dataclass
class AuditReport:
    events: int = 0
    accounts: int = 0
    tasks: int = 0
    violations: list[str] = field(default_factory=list)
    broken: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # rule -> violations
    found: int = 0  # violations of every rule, listed or only counted

    mode: str = "full"  # or "incremental" (`vec audit --since-last`), or why it fell back to full
    since: int = 0  # the position the audit started after (an incremental one: its audit point)
    head: int = 0  # the last position checked
    chain_head: str = ""  # the chain hash there (hex): worth keeping outside the store

    @property
    def ok(self) -> bool:
        return not self.violations

    def add(self, rule: str, message: str) -> None:
        if rule not in RULES:
            raise ValueError(f"no audit rule {rule!r}")
        self.broken[rule] += 1
        self.found += 1
        if self.broken[rule] <= MAX_PER_RULE:
            self.violations.append(f"[{rule}] {message}")

    def close(self) -> None:
        for rule, count in sorted(self.broken.items()):
            if count > MAX_PER_RULE:
                self.violations.append(f"[{rule}] ... and {count - MAX_PER_RULE} more")

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "events": self.events, "accounts": self.accounts, "tasks": self.tasks,
                "violations": self.violations, "broken_rules": dict(sorted(self.broken.items())),
                "mode": self.mode, "since": self.since, "head": self.head, "chain_head": self.chain_head}


def audit(db: Database, anchor: tuple[int, str] | None = None) -> AuditReport:
    """Works on any store: the log is folded into a scratch SQLite file, the live read models
    are copied beside it, and the two are compared there in SQL (memory does not grow with
    the log). The log and the live read models are read in one snapshot: an engine that
    appends meanwhile cannot make the audit report false differences. `anchor`: the
    (position, chain hash) of the last audit point, which the chain must still hold."""
    return full_audit(db, anchor)[0]


def full_audit(db: Database, anchor: tuple[int, str] | None = None) -> tuple[AuditReport, _Auditor]:
    """The report, and the auditor with the state it folded (what an audit point keeps)."""
    try:
        db.catch_up()
    except CorruptEvent:
        pass  # the read models stop before it; the walk below names it
    with tempfile.TemporaryDirectory(prefix="vec-audit-") as scratch:
        fresh_path = str(Path(scratch) / "fresh.db")
        fresh_conn = connect(fresh_path)
        for pragma in SCRATCH_PRAGMAS:
            fresh_conn.execute(pragma)
        try:
            with _fresh_beside_live(db, fresh_path) as compare_on, db.snapshot():
                fresh = ProjectionRunner(SqliteSession(fresh_conn), all_projections(), readable(sealed(db)),
                                         seal_row=db.projector.seal_row)  # sealed as the live rows are
                return _audit_snapshot(db, fresh, _Scratch(fresh_conn, compare_on), anchor)
        finally:
            fresh_conn.close()


@dataclass(frozen=True)
class _Scratch:
    """Where the fresh fold is (`conn`), and the live connection it is attached to (None
    where the live read models cannot attach it: PostgreSQL)."""
    conn: sqlite3.Connection
    attached_to: sqlite3.Connection | None


FRESH = "audit_fresh"  # the scratch file's name where it is attached to the live store


@contextlib.contextmanager
def _fresh_beside_live(db: Database, fresh_path: str) -> Iterator[sqlite3.Connection | None]:
    """On SQLite the scratch file is attached to the live read models' connection before the
    snapshot begins, so they are compared where they are (copying a million live rows into
    the scratch file was half the audit); elsewhere they are copied (None)."""
    live = db.projector.sql
    if not isinstance(live, SqliteSession):
        yield None
        return
    live.conn.execute(f"ATTACH DATABASE ? AS {FRESH}", (fresh_path,))
    try:
        yield live.conn
    finally:
        live.conn.execute(f"DETACH DATABASE {FRESH}")


def check_chain(db: Database, report: AuditReport, after: int = 0, previous: bytes = chain.GENESIS,
                anchor: tuple[int, str] | None = None) -> None:
    """The `chain` rule over the stored rows past `after` (whose hash is `previous`), and the
    `audit-point` rule at `anchor`; sets the report's head and chain head."""
    report.since, report.head, head_hash = after, after, previous

    def rows() -> Iterator[Any]:
        nonlocal head_hash
        for row in db.events.read_chain(after):
            report.head, head_hash = row[0], bytes(row[-1]) if row[-1] is not None else b""
            if anchor is not None and row[0] == anchor[0] and head_hash.hex() != anchor[1]:
                report.add("audit-point", f"position {row[0]} ({row[2]}) has the chain hash {head_hash.hex()[:16]}…, "
                                          f"not the {anchor[1][:16]}… recorded at the last audit point: the log "
                                          "before it was rewritten")
            yield row

    for broken in chain.verify(rows(), previous):
        report.add("chain", str(broken))
    if anchor is not None and report.head < anchor[0]:
        report.add("audit-point", f"the log ends at position {report.head}, before the last audit point "
                                  f"({anchor[0]})")
    report.chain_head = head_hash.hex()


ReadAll = Callable[..., Iterator[RecordedEvent]]


def sealed(db: Database) -> ReadAll:
    """The log with its personal fields left sealed, as the read models store them: sealing is
    deterministic, so every rule compares sealed values as well as opened ones."""
    return functools.partial(db.events.read_all, opened=False)


def audited_events(db: Database, auditor: "_Auditor", after_position: int = 0,
                   until_position: int | None = None) -> Iterator[RecordedEvent]:
    """The log as the audit walks it: sealed, each sealed value opened once to prove that it
    opens (`well-formed`), but a batch's addresses: each is its submission's, which opened
    (the `result` rule holds them to it)."""
    for recorded in readable(sealed(db), auditor.corrupt)(after_position, until_position):
        broken = _unopenable(db.keyring, recorded)
        if broken is None:
            yield recorded
        else:
            auditor.corrupt(broken)


def _unopenable(keyring: Keyring, recorded: RecordedEvent) -> CorruptEvent | None:
    event = recorded.event
    names = [n for n in event.personal if not (n == "addresses" and isinstance(event, ResultsRecorded))]
    open_ = keyring.open_for(recorded.stream) if names else None
    if open_ is None:
        return None
    try:
        for name in names:
            value = getattr(event, name)
            for text in (value,) if isinstance(value, str) else value:
                if text:
                    open_(text)
    except InvariantViolation as error:
        return CorruptEvent(recorded.position, recorded.stream, recorded.version, recorded.type,
                            f"{type(error).__name__}: {error}")
    return None


def readable(read_all: ReadAll, on_corrupt: Callable[[CorruptEvent], None] | None = None) -> ReadAll:
    """`read_all` that reads on past an event it cannot decode (handed to `on_corrupt`)."""

    def read(after_position: int = 0, until_position: int | None = None, batch: int = 2000) -> Iterator[RecordedEvent]:
        after = after_position
        while True:
            try:
                for recorded in read_all(after_position=after, until_position=until_position, batch=batch):
                    after = recorded.position
                    yield recorded
                return
            except CorruptEvent as error:
                if on_corrupt is not None:
                    on_corrupt(error)
                after = error.position

    return read


def _audit_snapshot(db: Database, fresh: ProjectionRunner, scratch: _Scratch,
                    anchor: tuple[int, str] | None) -> tuple[AuditReport, _Auditor]:
    report = AuditReport()
    auditor = _Auditor(report)
    check_chain(db, report, anchor=anchor)
    live = db.projector.checkpoints()  # each live read model is compared at its own position
    live_at = live.get("credits", 0)
    balances_at_live: dict[str, tuple[int, int]] = {}
    for recorded in audited_events(db, auditor, until_position=report.head):
        auditor.event(recorded)
        if recorded.position == live_at:
            balances_at_live = auditor.balances()
    auditor.finish()
    report.events, report.accounts, report.tasks = auditor.count, len(auditor.accounts), len(auditor.tasks)
    for stopped in db.projector.stopped().values():
        report.add("read-models", str(stopped))
    fresh.catch_up(until=max(live.values(), default=0), stop_at=live)
    _check_read_models(db, fresh, scratch, balances_at_live, report)
    report.close()
    return report, auditor


# --- what the audit keeps per account and per task -----------------------------------------

@dataclass(slots=True)
class _Account:
    state: accounts.AccountState = field(default_factory=accounts.AccountState)
    version: int = 0
    new_period_due: bool = False  # an early expiry of the leftover: a new period's grant must follow at once


@dataclass(slots=True)
class _Task:
    state: tasks.TaskState
    sha256: str = ""
    debited: int = 0
    refunded: int = 0  # by refunds on the account
    # (cause event id, amount, reason) of task events whose refund has not followed yet: the
    # same append settles them, so this is almost always None (no queue kept per task). A
    # queue: a batch of n Unknowns owes n refunds, taken from the front one by one
    owed: deque[tuple[str, int, str]] | None = None
    finished_at: datetime | None = None


Where = str


class _Auditor:
    def __init__(self, report: AuditReport):
        self.report = report
        self.add = report.add
        self.position = 0  # of the last event read
        self.count = 0  # events read, decodable or not
        self.versions: dict[str, int] = defaultdict(int)
        self.seen_ids: set[int] = set()  # 128-bit ints: a million ids in 70 MB, not 120 as UUIDs
        self.accounts: dict[str, _Account] = {}
        self.tasks: dict[str, _Task] = {}

    def balances(self) -> dict[str, tuple[int, int]]:
        return {a: (acc.state.monthly, acc.state.payg) for a, acc in self.accounts.items() if acc.state.opened}

    def account(self, account_id: str) -> _Account:
        acc = self.accounts.get(account_id)
        if acc is None:
            acc = self.accounts[account_id] = _Account()
        return acc

    def task(self, task_id: str) -> _Task:
        ledger = self.tasks.get(task_id)
        if ledger is None:
            ledger = self.tasks[task_id] = _Task(tasks.TaskState(task_id=task_id))
        return ledger

    def sequence(self, position: int, stream: str, version: int, event_id: uuid.UUID | None, type_name: str) -> Where:
        """The rules every event obeys, decodable or not; returns where it is, for messages."""
        where = f"{stream}@{version} (position {position}, {type_name})"
        self.count += 1
        if position != self.position + 1:
            self.add("positions", f"expected position {self.position + 1}, found {position} ({where})")
        self.position = position
        self.versions[stream] += 1
        if version != self.versions[stream]:
            self.add("stream-versions", f"expected version {self.versions[stream]} of {stream}, found {where}")
            self.versions[stream] = version
        if event_id is not None:
            if event_id.int in self.seen_ids:
                self.add("event-ids", f"event id {event_id} appears twice ({where})")
            self.seen_ids.add(event_id.int)
        return where

    def corrupt(self, error: CorruptEvent) -> None:
        where = self.sequence(error.position, error.stream, error.version, None, error.type_name)
        self.add("well-formed", f"cannot decode {where}: {error.why}")

    def event(self, recorded: RecordedEvent) -> None:
        where = self.sequence(recorded.position, recorded.stream, recorded.version, recorded.event_id, recorded.type)
        kind = next((prefix for prefix in STREAM_KINDS if recorded.stream.startswith(prefix)), None)
        if kind is None or recorded.type not in STREAM_KINDS[kind]:
            self.add("stream-kind", f"{recorded.type} does not belong in stream {recorded.stream} ({where})")
            return
        malformed = shape_error(recorded.event)
        if malformed:
            self.add("well-formed", f"impossible {where}: {malformed}")
            return
        before = self.report.found
        try:
            if kind == "account-":
                self.account_event(self.account(recorded.stream.removeprefix(kind)), recorded, where)
            else:
                self.task_event(self.task(recorded.stream.removeprefix(kind)), recorded, where)
        except Exception as error:  # noqa: BLE001 - a log the rules above did not foresee is still named
            if self.report.found == before:  # not already named by a rule
                why = str(error) if isinstance(error, InvariantViolation) else f"{type(error).__name__}: {error}"
                self.add("invariant", f"{where}: {why}")

    # --- the account stream ---------------------------------------------------------------

    def account_event(self, acc: _Account, recorded: RecordedEvent, where: Where) -> None:
        event, state, account_id = recorded.event, acc.state, recorded.stream.removeprefix("account-")
        acc.version = recorded.version
        if isinstance(event, AccountOpened):
            if state.opened or event.account_id != account_id:
                self.add("account-opened", f"AccountOpened for {event.account_id!r} at {where} "
                                           f"({'opened twice' if state.opened else 'names another account'})")
        elif not state.opened:
            self.add("account-opened", f"{event.type_name()} before AccountOpened at {where}")
        welcome = event if isinstance(event, CreditsGranted) and event.reason == "welcome" else None
        if (recorded.version == 2) != (welcome is not None) or (
                welcome is not None and (welcome.bucket, welcome.amount) != ("payg", WELCOME_CREDITS)):
            self.add("welcome", f"the welcome grant is 200 PAYG at version 2, once: found {event} at {where}")
        if acc.new_period_due:
            acc.new_period_due = False
            if not (isinstance(event, CreditsGranted) and event.bucket == "monthly"):
                self.add("monthly-expiry", f"Monthly credits expired before their expiry, and no new period "
                                           f"followed (next: {event.type_name()} at {where})")
        if isinstance(event, CreditsGranted):
            self.grant(state, event, recorded, where)
        elif isinstance(event, CreditsDebited):
            self.debit(state, event, recorded, where)
        elif isinstance(event, CreditsRefunded):
            self.refund(state, event, recorded, where)
        elif isinstance(event, MonthlyCreditsExpired):
            self.expiry(acc, event, recorded, where)
        acc.state = accounts.evolve(state, event)  # asserts the invariants the rules above did not name

    def grant(self, state: accounts.AccountState, event: CreditsGranted, recorded: RecordedEvent,
              where: Where) -> None:
        if not 0 < event.amount <= MAX_BALANCE - state.total:
            self.add("grant", f"grant of {event.amount} takes the balance {state.total} out of bounds at {where}")
        if event.bucket == "payg":
            if event.expires_at is not None:
                self.add("grant", f"PAYG credits granted with an expiry ({event.expires_at}) at {where}")
            return
        expires = _moment(event.expires_at)
        if expires is None or expires <= recorded.occurred_at - CLOCK_SLACK:
            self.add("monthly-period", f"Monthly grant expiring {event.expires_at!r}, granted "
                                       f"{recorded.occurred_at.isoformat()} at {where}")
        elif state.monthly > 0 and state.monthly_expires_at != expires:
            self.add("monthly-period", f"a new Monthly period (expiring {event.expires_at}) began with "
                                       f"{state.monthly} credits of the previous one not expired at {where}")

    def expiry(self, acc: _Account, event: MonthlyCreditsExpired, recorded: RecordedEvent, where: Where) -> None:
        state = acc.state
        if event.amount != state.monthly or event.amount <= 0:
            self.add("monthly-expiry", f"expiry of {event.amount} while the Monthly bucket holds {state.monthly} "
                                       f"at {where}")
        expires = state.monthly_expires_at
        if expires is None or recorded.occurred_at < expires:
            acc.new_period_due = True  # only a new period may expire the leftover early

    def debit(self, state: accounts.AccountState, event: CreditsDebited, recorded: RecordedEvent,
              where: Where) -> None:
        if event.monthly < 0 or event.payg < 0 or event.monthly > state.monthly or event.payg > state.payg:
            self.add("balance", f"debit of {event.monthly} Monthly + {event.payg} PAYG from a balance of "
                                f"{state.monthly} Monthly + {state.payg} PAYG at {where}")
        elif event.payg > 0 and event.monthly != state.monthly:
            self.add("monthly-first", f"debit took {event.payg} PAYG while {state.monthly - event.monthly} "
                                      f"Monthly credits were left at {where}")
        expires = state.monthly_expires_at
        if event.monthly > 0 and expires is not None and recorded.occurred_at - CLOCK_SLACK >= expires:
            self.add("monthly-expiry", f"debit spent {event.monthly} Monthly credits that expired "
                                       f"{expires.isoformat()} at {where}")
        self.debit_of_task(self.task(event.task_id), event, recorded, where)

    def debit_of_task(self, ledger: _Task, event: CreditsDebited, recorded: RecordedEvent, where: Where) -> None:
        task, amount = ledger.state, event.monthly + event.payg
        account_id = recorded.stream.removeprefix("account-")
        if task.status == "new" or task.account_id != account_id:
            self.add("debit", f"debit for task {event.task_id}, which {account_id} did not create before it, "
                              f"at {where}")
        elif ledger.debited:
            self.add("debit", f"task {event.task_id} debited twice, at {where}")
        elif amount != task.address_count:
            self.add("debit", f"debit of {amount} for task {event.task_id} of {task.address_count} unique "
                              f"addresses at {where}")
        elif event.sha256 and (event.sha256 != ledger.sha256 or not _near(_moment(event.at), recorded)):
            self.add("debit", f"debit's file digest or time ({event.at!r}) is not its task's at {where}")
        ledger.debited += amount

    def refund(self, state: accounts.AccountState, event: CreditsRefunded, recorded: RecordedEvent,
               where: Where) -> None:
        account_id = recorded.stream.removeprefix("account-")
        outstanding = state.outstanding.get(event.task_id, 0)
        if not 0 < event.amount <= outstanding:
            self.add("refund-outstanding", f"refund of {event.amount} for task {event.task_id} with {outstanding} "
                                           f"outstanding at {where}")
        ledger = self.task(event.task_id)
        ledger.refunded += event.amount
        owed = ledger.owed.popleft() if ledger.owed else None
        if not ledger.owed:
            ledger.owed = None
        if owed is None:
            self.add("refund-cause", f"task {event.task_id}: refund of {event.amount} ({event.reason}) that no "
                                     f"task event before it frees, at {where}")
        elif (event.amount, event.reason) != owed[1:] or ledger.state.account_id != account_id:
            self.add("refund-cause", f"task {event.task_id}: refund of {event.amount} ({event.reason}) to "
                                     f"{account_id} for a cause that frees {owed[1]} ({owed[2]}) of "
                                     f"{ledger.state.account_id}, at {where}")
        elif recorded.causation_id != owed[0]:
            self.add("refund-cause", f"task {event.task_id}: refund caused by {recorded.causation_id}, "
                                     f"not by the event that frees it ({owed[0]}), at {where}")

    # --- the task stream ------------------------------------------------------------------

    def task_event(self, ledger: _Task, recorded: RecordedEvent, where: Where) -> None:
        event, state = recorded.event, ledger.state
        if state.deleted and not isinstance(event, TaskDataErased):
            self.add("task-deleted", f"{event.type_name()} after the task was deleted, at {where}")
        if isinstance(event, TaskCreated):
            self.created(ledger, event, where)
        elif state.status == "new":
            self.add("task-created", f"{event.type_name()} before TaskCreated at {where}")
        elif isinstance(event, ChunkSubmitted):
            self.submitted(state, event, where)
        elif (batch := as_batch(event)) is not None:  # results, batched or one by one as older logs hold them
            self.results(state, batch, where)
            if batch.late == state.active:
                self.add("late-result", f"result marked late={batch.late} while the task is {state.status}, "
                                        f"at {where}")
        elif isinstance(event, ChunkFailed):
            pending = state.pending.get(event.chunk_no) or tasks.PendingChunk()
            if not state.active or not pending or set(event.addresses) != set(pending) \
                    or len(event.addresses) != len(pending):
                self.add("chunk-failed", f"chunk {event.chunk_no} failed with {len(event.addresses)} addresses "
                                         f"while {len(pending)} were unsettled (task {state.status}) at {where}")
        else:
            self.ending(ledger, recorded, where)
        was_active = state.active
        tasks.evolve(state, event)  # asserts the invariants the rules above did not name
        if was_active and not state.active:
            ledger.finished_at = recorded.occurred_at
        freed = tasks.refunds_for([event])
        if freed:
            cause_id = str(recorded.event_id)
            ledger.owed = ledger.owed if ledger.owed is not None else deque()
            ledger.owed.extend((cause_id, amount, reason) for _, amount, reason in freed)

    def results(self, state: tasks.TaskState, event: ResultsRecorded, where: Where) -> None:
        pending = state.pending.get(event.chunk_no) or tasks.PendingChunk()
        addresses = event.addresses
        if len(set(addresses)) != len(addresses):
            self.add("result", f"one event settles an address of chunk {event.chunk_no} twice, at {where}")
            return
        for address in addresses:
            if address not in pending:
                self.add("result", f"result for {address} (chunk {event.chunk_no}), which is settled or was "
                                   f"never submitted, at {where}")

    def created(self, ledger: _Task, event: TaskCreated, where: Where) -> None:
        owner = self.accounts.get(event.account_id)
        if ledger.state.status != "new":
            self.add("task-created", f"task created twice, at {where}")
        elif owner is None or not owner.state.opened:
            self.add("task-created", f"task created for {event.account_id!r}, not an open account, at {where}")
        elif event.kind == "single" and event.address_count != 1:
            self.add("task-created", f"single task of {event.address_count} addresses at {where}")
        ledger.sha256 = event.sha256

    def submitted(self, state: tasks.TaskState, event: ChunkSubmitted, where: Where) -> None:
        if not state.active:
            self.add("chunk-submitted", f"chunk {event.chunk_no} submitted after the task stopped ({state.status}) "
                                        f"at {where}")
        elif event.chunk_no != state.chunks_submitted or event.chunk_no >= state.total_chunks:
            self.add("chunk-submitted", f"chunk {event.chunk_no} out of order (next is {state.chunks_submitted} "
                                        f"of {state.total_chunks}) at {where}")
        elif len(event.addresses) != state.chunk_length(event.chunk_no) \
                or len(set(event.addresses)) != len(event.addresses):
            self.add("chunk-submitted", f"chunk {event.chunk_no} holds {len(event.addresses)} addresses "
                                        f"({len(set(event.addresses))} distinct), not "
                                        f"{state.chunk_length(event.chunk_no)}, at {where}")

    def ending(self, ledger: _Task, recorded: RecordedEvent, where: Where) -> None:
        """The events that end, delete or erase a task, and the counts they state."""
        event, state = recorded.event, ledger.state
        name = event.type_name()
        if isinstance(event, (TaskCompleted, TaskCancelled, TaskFailed, SystemFailure)) and not state.active:
            rule = {"TaskCompleted": "task-completed", "TaskCancelled": "task-cancelled",
                    "TaskFailed": "task-failed", "SystemFailure": "system-failure"}[name]
            self.add(rule, f"{name} while the task is {state.status}, at {where}")
        elif isinstance(event, TaskCompleted):
            if state.unsettled or event.counts != state.counts:
                self.add("task-completed", f"completed with counts {event.counts} while the results count "
                                           f"{state.counts} and {state.unsettled} are unsettled, at {where}")
        elif isinstance(event, (TaskCancelled, TaskFailed, SystemFailure)):
            self.unverified(state, event, name, where)
        elif isinstance(event, TaskDeleted) and (state.active or state.deleted):
            self.add("task-deleted", f"deleted while {state.status}{' (again)' if state.deleted else ''}, at {where}")
        elif isinstance(event, TaskDataErased):
            self.erased(ledger, event, recorded, where)

    def unverified(self, state: tasks.TaskState, event: TaskCancelled | TaskFailed | SystemFailure, name: str,
                   where: Where) -> None:
        rule = {"TaskCancelled": "task-cancelled", "TaskFailed": "task-failed", "SystemFailure": "system-failure"}[name]
        if event.unverified_count != state.unsettled:
            self.add(rule, f"{name} refunds {event.unverified_count} unverified addresses while {state.unsettled} "
                           f"are unsettled, at {where}")
        if isinstance(event, TaskCancelled) and state.kind == "single":
            self.add(rule, f"single task cancelled at {where}")
        if isinstance(event, TaskFailed) and (
                not state.failed_chunks or (event.reason == "provider_error") != (
                    state.failed_chunks == state.total_chunks)):
            self.add(rule, f"TaskFailed ({event.reason}) after {state.failed_chunks} of {state.total_chunks} "
                           f"chunks failed, at {where}")

    def erased(self, ledger: _Task, event: TaskDataErased, recorded: RecordedEvent, where: Where) -> None:
        state = ledger.state
        if state.active or state.erased:
            self.add("task-erased", f"erased while {state.status}{' (again)' if state.erased else ''}, at {where}")
            return
        owner = self.accounts.get(state.account_id or "")
        days = owner.state.retention_days if owner else 0
        if event.reason == "retention" and (
                ledger.finished_at is None or recorded.occurred_at - ledger.finished_at < timedelta(days=days)):
            self.add("task-erased", f"erased for retention {recorded.occurred_at.isoformat()}, before the "
                                    f"{days} days after it finished ({ledger.finished_at}) ran out, at {where}")

    # --- at the end of the log ------------------------------------------------------------

    def finish(self) -> None:
        for account_id, acc in self.accounts.items():
            if acc.new_period_due:
                self.add("monthly-expiry", f"account {account_id}: Monthly credits expired before their expiry, "
                                           "and no new period followed")
            if acc.state.opened and acc.version < 2:
                self.add("welcome", f"account {account_id} has no welcome grant")
        for task_id, ledger in self.tasks.items():
            self.settled(task_id, ledger)

    def settled(self, task_id: str, ledger: _Task) -> None:
        state, name = ledger.state, f"task {task_id}"
        if ledger.debited != state.address_count:
            self.add("settlement", f"{name}: debited {ledger.debited} for {state.address_count} unique addresses")
        if ledger.refunded != state.refunded:
            self.add("settlement", f"{name}: account refunds {ledger.refunded} differ from the task's settled "
                                   f"refunds {state.refunded}")
        if state.status in tasks.FINISHED and ledger.debited != state.consumed + ledger.refunded:
            self.add("settlement", f"{name}: debited {ledger.debited} != consumed {state.consumed} + refunded "
                                   f"{ledger.refunded}")
        if state.status == "completed" and state.unsettled:
            self.add("task-completed", f"{name}: completed with {state.unsettled} addresses unsettled")
        if state.active and state.address_count and not state.unsettled:
            self.add("task-completed", f"{name}: every address settled, yet the task is still {state.status}")
        for cause_id, amount, reason in ledger.owed or ():
            self.add("refund-cause", f"{name}: event {cause_id} frees {amount} ({reason}), never refunded")


def _moment(text: str | None) -> datetime | None:
    """An ISO 8601 time with its offset, or None (missing, malformed or naive)."""
    try:
        moment = datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
    return moment if moment is not None and moment.tzinfo is not None else None


def _near(moment: datetime | None, recorded: RecordedEvent) -> bool:
    """A time a command decided on, compared with the time its event was stamped."""
    return moment is not None and abs(recorded.occurred_at - moment) <= CLOCK_SLACK  # no overflow near 9999


# --- the shape of an event (the `well-formed` rule) -----------------------------------------

Conforms = Callable[[Any], bool]


def shape_error(event: Event) -> str | None:
    """Why a decoded event's fields do not have their declared types, or None."""
    for name, conforms in _checkers(type(event)):
        value = getattr(event, name)
        if not conforms(value):
            return f"field {name} = {value!r} is not of its declared type"
    if isinstance(event, ResultsRecorded):
        return _batch_shape_error(event)
    return None


def _batch_shape_error(event: ResultsRecorded) -> str | None:
    """A batch of results: at least one entry, its columns aligned, its reason its status's."""
    count = len(event.addresses)
    misaligned = [name for name in ("details", "texts", "replies", "mx_hosts", "flags")
                  if len(getattr(event, name)) not in (0, count)]
    if not count or misaligned:
        return f"a batch of {count} results with columns {misaligned} of other lengths"
    if event.status == "unknown" and event.reason not in tasks.UNKNOWN_REASONS:
        return f"a batch of unknown results with reason {event.reason!r}, which no Unknown has"
    if (event.details and event.status != "unknown") or (event.texts and (event.status == "unknown" or event.reason)):
        return f"a batch of {event.status} results with texts of another kind of result"
    return None


_CHECKERS: dict[type[Event], tuple[tuple[str, Conforms], ...]] = {}


def _checkers(cls: type[Event]) -> tuple[tuple[str, Conforms], ...]:
    checkers = _CHECKERS.get(cls)
    if checkers is None:
        hints = typing.get_type_hints(cls)
        checkers = _CHECKERS[cls] = tuple((f.name, _conforms(hints[f.name])) for f in fields(cls))
    return checkers


def _conforms(hint: Any) -> Conforms:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return lambda v: isinstance(v, bool)
    if hint is int:
        return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0
    if hint is str:
        return lambda v: isinstance(v, str)
    if origin is Literal:
        return lambda v: isinstance(v, str) and v in args
    if origin in (typing.Union, types.UnionType):
        options = [_conforms(a) for a in args if a is not type(None)]
        return lambda v: v is None or any(o(v) for o in options)
    if origin is tuple:
        item = _conforms(args[0])
        return lambda v: isinstance(v, tuple) and all(item(i) for i in v)
    if origin is dict:
        key, value = _conforms(args[0]), _conforms(args[1])
        return lambda v: isinstance(v, dict) and all(key(k) and value(i) for k, i in v.items())
    raise TypeError(f"the audit knows no field type {hint!r}: teach engine/audit.py")


# --- the read models ------------------------------------------------------------------------

def _copy_live(db: Database, scratch: sqlite3.Connection, table: str, spec: Table) -> None:
    """The live rows of `table` into `live_<table>` of the scratch file, unkeyed: appended as
    they come (a key kept up row by row was most of a PostgreSQL audit), the comparison looks
    each one up in the fresh table's key instead."""
    columns = ", ".join(spec.columns)
    typed = ", ".join(f"{c} {'INTEGER' if c in spec.ints else 'TEXT'}" for c in spec.columns)
    scratch.execute(f"CREATE TABLE live_{table} ({typed})")
    rows = db.projector.rows(table)
    with transaction(scratch):  # one commit, not one a row (the connection is in autocommit)
        while batch := list(itertools.islice(rows, 5000)):
            scratch.executemany(f"INSERT INTO live_{table} ({columns}) VALUES ({', '.join('?' * len(spec.columns))})",
                                batch)


def _differing_rows(scratch: sqlite3.Connection, fresh: str, live: str, spec: Table) -> tuple[int, int]:
    """(fresh rows the live table lacks or holds otherwise, live rows the fresh one does), as
    two EXCEPTs would count them: keys are unique on both sides, so one key join and two
    counts tell (the rows of a side the join did not match are that side's own)."""
    same_key = " AND ".join(f"l.{c} = f.{c}" for c in spec.key)
    differ = " OR ".join(f"l.{c} IS NOT f.{c}" for c in spec.columns if c not in spec.key) or "0"
    matched, changed = scratch.execute(f"SELECT COUNT(*), COALESCE(SUM(CASE WHEN {differ} THEN 1 ELSE 0 END), 0)"
                                       f" FROM {fresh} f JOIN {live} l ON {same_key}").fetchone()
    fresh_rows, live_rows = (scratch.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in (fresh, live))
    return fresh_rows - matched + changed, live_rows - matched + changed


def _check_read_models(db: Database, fresh: ProjectionRunner, scratch: _Scratch,
                       balances: dict[str, tuple[int, int]], report: AuditReport) -> None:
    """The live read models against a fold of the log into the scratch database, both at the
    live checkpoint, compared in SQL: in place where the scratch file is attached to the live
    store, else with the live rows copied beside the fresh ones."""
    for table, spec in fresh.specs.items():
        if scratch.attached_to is not None:
            missing, extra = _differing_rows(scratch.attached_to, f"{FRESH}.{table}", f"main.{table}", spec)
        else:
            _copy_live(db, scratch.conn, table, spec)
            missing, extra = _differing_rows(scratch.conn, table, f"live_{table}", spec)
        if missing or extra:
            report.add("read-models", f"read model {table} differs from a fresh fold of the log "
                                      f"({missing} rows missing or changed, {extra} rows extra)")
    folded = {r[0]: (r[1], r[2]) for r in scratch.conn.execute(f"SELECT account_id, monthly, payg FROM {BALANCES.name}")}
    sums = dict(scratch.conn.execute(f"SELECT account_id, SUM(amount) FROM {HISTORY.name} GROUP BY account_id"))
    for account_id, (monthly, payg) in balances.items():
        if folded.get(account_id) != (monthly, payg):
            report.add("read-models", f"account {account_id}: balance read model differs from the log")
        if sums.get(account_id, 0) != monthly + payg:
            report.add("read-models", f"account {account_id}: history rows sum to {sums.get(account_id, 0)}, "
                                      f"balance is {monthly + payg}")

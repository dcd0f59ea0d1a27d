"""The read models: task status and progress, balances and Credits History, results per task."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable, Literal, get_args

from events import (
    AccountOpened,
    ApiKeyIssued,
    ApiKeyRevoked,
    AddressVerified,
    ChunkFailed,
    ChunkSubmitted,
    CreditsDebited,
    CreditsGranted,
    CreditsRefunded,
    MonthlyCreditsExpired,
    NotificationsSet,
    RecordedEvent,
    ResultsRecorded,
    ResultUnknown,
    SystemFailure,
    TaskCancelled,
    TaskCompleted,
    TaskCreated,
    TaskDataErased,
    TaskDeleted,
    TaskFailed,
    as_batch,
)
from projections.base import Append, Change, DeleteWhere, Projection, Put, Table, View
from projections import taxonomy  # result taxonomy: the detailed result, score and flags of a row

TASKS = Table(
    "rm_tasks",
    ("task_id", "account_id", "kind", "status", "partial_failure", "total", "verified", "unknown", "failed",
     "refunded", "consumed", "debited", "late", "chunks_submitted", "chunks_total", "source", "sha256",
     "created_at", "finished_at", "deleted", "created_by", "results_deleted_at", "name"),
    ("task_id",),
    frozenset({"partial_failure", "total", "verified", "unknown", "failed", "refunded", "consumed", "debited",
               "late", "chunks_submitted", "chunks_total", "deleted"}),
    (("account_id", "created_at"), ("status", "created_at")),
)
BALANCES = Table("rm_balances", ("account_id", "monthly", "payg", "total", "monthly_expires_at", "rows"),
                 ("account_id",), frozenset({"monthly", "payg", "total", "rows"}),
                 (("monthly_expires_at",),))
HISTORY = Table(
    "rm_history",
    ("account_id", "seq", "occurred_at", "type", "bucket", "amount", "balance_after", "description", "task_id",
     "position", "actor"),
    ("account_id", "seq"),
    frozenset({"seq", "amount", "balance_after", "position"}),
    (("account_id", "type", "seq"),),
)
RESULTS = Table("rm_results", ("task_id", "address", "status", "reason", "detail", "tier", "reply", "mx_host",
                               "flags", "chunk_no", "position",
                               *taxonomy.COLUMNS),  # result taxonomy: projections/taxonomy.py
                # keyed in the order a task's results are appended and read (position, then the
                # address within one event): rows are written at the table's end, and an export
                # reads them in one pass (the decider settles each address once)
                ("task_id", "position", "address"), frozenset({"chunk_no", "position", "score", *taxonomy.FLAG_COLUMNS}),
                (), frozenset({"address", "detail", "reply"}))

API_KEYS = Table("rm_api_keys", ("key_id", "account_id", "scopes", "label", "created_at", "revoked_at"),
                 ("key_id",), frozenset(), (("account_id",),))

FAILED_CHUNK = "failed-chunk"  # the tier of a result row that is no answer: its chunk failed

HistoryType = Literal["welcome", "purchase", "subscription", "support", "debit", "refund", "cancel", "expiry"]
HISTORY_TYPES: tuple[str, ...] = get_args(HistoryType)
# refund reason -> Credits History type
REFUND_TYPE = {"unknown": "refund", "cancelled": "cancel", "system_failure": "refund",
               "partial_failure": "refund", "support": "support"}


def _task_id(stream: str) -> str:
    return stream.removeprefix("task-")


def _account_id(stream: str) -> str:
    return stream.removeprefix("account-")


class TasksProjection:
    name = "tasks"
    tables = (TASKS,)
    handles = frozenset({TaskCreated, CreditsDebited, CreditsRefunded, ChunkSubmitted, ResultsRecorded, AddressVerified,
                         ResultUnknown, ChunkFailed, TaskCancelled, TaskCompleted, TaskFailed, SystemFailure, TaskDeleted,
                         TaskDataErased})

    def evolve(self, view: View, recorded: RecordedEvent) -> Iterable[Change]:
        event = recorded.event
        if isinstance(event, TaskCreated):
            task_id = _task_id(recorded.stream)
            return [Put(TASKS.name, {
                "task_id": task_id, "account_id": event.account_id, "kind": event.kind, "status": "pending",
                "partial_failure": 0, "total": event.address_count, "verified": 0, "unknown": 0, "failed": 0,
                "refunded": 0, "consumed": 0, "debited": 0, "late": 0, "chunks_submitted": 0,
                "chunks_total": -(-event.address_count // event.chunk_size), "source": event.source,
                "sha256": event.sha256, "created_at": recorded.occurred_at.isoformat(), "finished_at": None,
                "deleted": 0, "created_by": recorded.actor, "results_deleted_at": None, "name": event.name,
            })]
        if isinstance(event, (CreditsDebited, CreditsRefunded)):
            task = view.get(TASKS.name, (event.task_id,))
            if task is None:
                return []
            if isinstance(event, CreditsDebited):
                task["debited"] += event.monthly + event.payg
            else:
                task["refunded"] += event.amount
            return [Put(TASKS.name, task)]
        if not recorded.stream.startswith("task-"):
            return []
        task = view.get(TASKS.name, (_task_id(recorded.stream),))
        if task is None:
            return []
        finished = recorded.occurred_at.isoformat()
        if isinstance(event, ChunkSubmitted):
            task["status"] = "processing"
            task["chunks_submitted"] += 1
        elif (batch := as_batch(event)) is not None:  # results, batched or one by one as older logs hold them
            settled = len(batch.addresses)
            if batch.late:
                task["late"] += settled
            else:
                task["verified"] += settled
                task["unknown" if batch.status == "unknown" else "consumed"] += settled
        elif isinstance(event, ChunkFailed):
            task["failed"] += len(event.addresses)
            task["partial_failure"] = 1
        elif isinstance(event, TaskCancelled):
            task["status"], task["finished_at"] = "cancelled", finished
        elif isinstance(event, TaskCompleted):
            task["status"], task["finished_at"] = "completed", finished
        elif isinstance(event, TaskFailed):
            task["status"], task["finished_at"], task["partial_failure"] = "failed", finished, 1
        elif isinstance(event, SystemFailure):
            task["status"], task["finished_at"] = "failed", finished
        elif isinstance(event, TaskDeleted):
            task["deleted"] = 1
        elif isinstance(event, TaskDataErased):
            # the product's "deleted" status: per-address data gone, counts kept
            task["status"], task["results_deleted_at"] = "deleted", recorded.occurred_at.isoformat()
        else:
            return []
        return [Put(TASKS.name, task)]


class CreditsProjection:
    """Balances per bucket and the Credits History, whose rows always sum to the balance."""

    name = "credits"
    tables = (BALANCES, HISTORY)
    handles = frozenset({AccountOpened, CreditsGranted, CreditsDebited, CreditsRefunded, MonthlyCreditsExpired})

    def evolve(self, view: View, recorded: RecordedEvent) -> Iterable[Change]:
        event = recorded.event
        if not recorded.stream.startswith("account-"):
            return []
        account_id = _account_id(recorded.stream)
        if isinstance(event, AccountOpened):
            return [Put(BALANCES.name, {"account_id": account_id, "monthly": 0, "payg": 0, "total": 0,
                                        "monthly_expires_at": None, "rows": 0})]
        balance = view.get(BALANCES.name, (account_id,))
        if balance is None:
            return []
        lines: list[tuple[str, str, int, str, str | None]] = []  # type, bucket, signed amount, text, task
        if isinstance(event, CreditsGranted):
            text = {"welcome": "Welcome bonus", "purchase": "Credits purchased",
                    "subscription": "Monthly subscription", "support": "Support credit"}[event.reason]
            lines.append((event.reason, event.bucket, event.amount, f"{text}: {event.amount} credits", None))
            if event.bucket == "monthly":
                balance["monthly_expires_at"] = event.expires_at
        elif isinstance(event, CreditsDebited):
            task = view.get(TASKS.name, (event.task_id,))  # created in the same append, just before
            named = f" for {task['name']}" if task and task.get("name") else ""
            for bucket, amount in (("monthly", event.monthly), ("payg", event.payg)):
                if amount:
                    lines.append(("debit", bucket, -amount, f"Credit debit: {amount} credits{named}", event.task_id))
        elif isinstance(event, CreditsRefunded):
            lines.append((REFUND_TYPE[event.reason], "payg", event.amount,
                          f"Credit refund: {event.amount} credits", event.task_id))
        elif isinstance(event, MonthlyCreditsExpired):
            lines.append(("expiry", "monthly", -event.amount, f"Monthly credits expired: {event.amount} credits",
                          None))
        if not lines:
            return []
        rows: list[tuple[Any, ...]] = []  # in HISTORY's column order: rows no fold reads back
        for kind, bucket, amount, text, task_id in lines:
            balance[bucket] += amount
            balance["total"] = balance["monthly"] + balance["payg"]
            balance["rows"] += 1
            rows.append((account_id, balance["rows"], recorded.occurred_at.isoformat(), kind, bucket, amount,
                         balance["total"], text, task_id, recorded.position, recorded.actor))
        return [Put(BALANCES.name, balance), Append(HISTORY.name, rows)]


class ResultsProjection:
    """Results a customer sees: late results and deleted tasks are not shown."""

    name = "results"
    tables = (RESULTS,)
    handles = frozenset({ResultsRecorded, AddressVerified, ResultUnknown, ChunkFailed, TaskDeleted, TaskDataErased})

    def evolve(self, view: View, recorded: RecordedEvent) -> Iterable[Change]:
        event = recorded.event
        task_id = _task_id(recorded.stream)
        batch = as_batch(event)
        if batch is not None:
            return [] if batch.late else _result_rows(task_id, recorded.position, batch)
        if isinstance(event, ChunkFailed):
            return [Put(RESULTS.name, {
                "task_id": task_id, "address": a, "status": "unknown", "reason": "provider_error",
                "detail": event.error, "tier": FAILED_CHUNK, "reply": "", "mx_host": "", "flags": "",
                "chunk_no": event.chunk_no, "position": recorded.position,
                **taxonomy.columns("unknown", "provider_error")}) for a in event.addresses]  # result taxonomy
        if isinstance(event, (TaskDeleted, TaskDataErased)):
            return [DeleteWhere(RESULTS.name, "task_id", task_id)]
        return []


def _result_rows(task_id: str, position: int, event: ResultsRecorded) -> list[Change]:
    """A batch's rows, as values in RESULTS' column order: what entries share is computed
    once (the taxonomy of each reason and flags), then one tuple an entry."""
    definitive = event.status != "unknown"  # its text shows as its reason, as AddressVerified's detail did
    known: dict[tuple[str, str], tuple[Any, ...]] = {}  # (reason, flags) -> their taxonomy columns
    rows: list[tuple[Any, ...]] = []
    for address, detail, text, reply, mx_host, flags in zip(
            event.addresses, event.column("details"), event.column("texts"), event.column("replies"),
            event.column("mx_hosts"), event.column("flags")):
        reason = event.reason or text if definitive else event.reason
        decided = known.get((reason, flags))
        if decided is None:  # result taxonomy, from the event alone
            columns = results_taxonomy(event.status, reason, flags)
            decided = known[(reason, flags)] = tuple(columns[c] for c in taxonomy.COLUMNS)
        rows.append((task_id, address, event.status, reason, detail, event.tier, reply, mx_host, flags,
                     event.chunk_no, position, *decided))
    return [Append(RESULTS.name, rows)]


def results_taxonomy(status: str, reason: str | None, flags: str) -> dict[str, Any]:
    """A results row's taxonomy columns from its status, reason and flags (as stored: comma-
    joined): what the projection writes, and what an export renders without reading them."""
    return taxonomy.columns(status, reason, tuple(flags.split(",")) if flags else ())


if RESULTS.columns != ("task_id", "address", "status", "reason", "detail", "tier", "reply", "mx_host", "flags",
                       "chunk_no", "position", *taxonomy.COLUMNS):
    raise TypeError("_result_rows builds RESULTS rows as values in another column order: teach it")


class ApiKeysProjection:
    """Which account a key belongs to (the key itself is checked on the account's stream)."""

    name = "api_keys"
    tables = (API_KEYS,)
    handles = frozenset({ApiKeyIssued, ApiKeyRevoked})

    def evolve(self, view: View, recorded: RecordedEvent) -> Iterable[Change]:
        event = recorded.event
        if isinstance(event, ApiKeyIssued):
            return [Put(API_KEYS.name, {"key_id": event.key_id, "account_id": _account_id(recorded.stream),
                                        "scopes": ",".join(event.scopes), "label": event.label,
                                        "created_at": recorded.occurred_at.isoformat(), "revoked_at": None})]
        if isinstance(event, ApiKeyRevoked):
            row = view.get(API_KEYS.name, (event.key_id,))
            if row is not None:
                row["revoked_at"] = recorded.occurred_at.isoformat()
                return [Put(API_KEYS.name, row)]
        return []


# --- each account's notification settings, as last set (consumers/notifications/mail.py) --------
NOTIFICATIONS = Table("rm_notifications", ("account_id", "email", "on_completion", "low_balance_threshold",
                                           "set_at", "set_by", "position"),
                      ("account_id",), frozenset({"on_completion", "low_balance_threshold", "position"}),
                      (("position",),))


class NotificationsProjection:
    """Where and when each account is told by e-mail (`vec notify show`); the consumer itself
    decides on the log, and starts no later than this read model's first settings."""

    name = "notifications"
    tables = (NOTIFICATIONS,)
    handles = frozenset({NotificationsSet})

    def evolve(self, view: View, recorded: RecordedEvent) -> Iterable[Change]:
        event = recorded.event
        if not isinstance(event, NotificationsSet):
            return []
        return [Put(NOTIFICATIONS.name, {
            "account_id": _account_id(recorded.stream), "email": event.email,
            "on_completion": int(event.on_completion), "low_balance_threshold": event.low_balance_threshold,
            "set_at": recorded.occurred_at.isoformat(), "set_by": recorded.actor, "position": recorded.position})]


# --- results per task and minute: the dashboard's charts over time ------------------------------
ACTIVITY = Table("rm_activity", ("task_id", "minute", "results", "unknown"), ("task_id", "minute"),
                 frozenset({"results", "unknown"}), (("minute",),))


def minute_of(recorded: RecordedEvent) -> str:
    """The UTC minute of an event, as `YYYY-MM-DDTHH:MM` (sorts as time). A chunk's results
    share one append time: the last answer is kept, so a rebuild formats each time once."""
    global _LAST_MINUTE
    at, last = recorded.occurred_at, _LAST_MINUTE  # one reference read: a consistent pair on any thread
    if at != last[0]:
        last = _LAST_MINUTE = (at, at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M"))
    return last[1]


_LAST_MINUTE: tuple[datetime | None, str] = (None, "")  # (occurred_at, its minute)


class ActivityProjection:
    """How many results (and how many of them Unknown) each task got in each minute: the
    overview's throughput and Unknown rate over time. Counts the rows the results read model
    shows (late results are not; a failed chunk's addresses are, as Unknown); counts only,
    so a task's erasure keeps them."""

    name = "activity"
    tables = (ACTIVITY,)
    handles = frozenset({ResultsRecorded, AddressVerified, ResultUnknown, ChunkFailed})

    def evolve(self, view: View, recorded: RecordedEvent) -> Iterable[Change]:
        event = recorded.event
        batch = as_batch(event)
        if batch is not None and not batch.late:
            results = len(batch.addresses)
            unknown = results if batch.status == "unknown" else 0
        elif isinstance(event, ChunkFailed):
            results = unknown = len(event.addresses)
        else:
            return []
        key = (_task_id(recorded.stream), minute_of(recorded))
        row = view.get(ACTIVITY.name, key) or {"task_id": key[0], "minute": key[1], "results": 0, "unknown": 0}
        row["results"] += results
        row["unknown"] += unknown
        return [Put(ACTIVITY.name, row)]


def all_projections() -> list[Projection]:
    return [TasksProjection(), CreditsProjection(), ResultsProjection(), ApiKeysProjection(),
            NotificationsProjection(),
            ActivityProjection()]

"""The engine's reactions to time passing, each decided once, as a pure function of what
the log says and the log's own time (the engine clock, UTC): never a process's monotonic
clock, so a restart grants no task a fresh window and two runners never disagree.

The embedded runtime (consumers/runtime.py) and the fleet's watchdog (consumers/fleet/
roles.py) are two runners of this one table: they gather the views below from the store,
call the decision, and carry out the commands (consumers/reactions.py). Neither holds a
policy of its own.

    trigger            reaction          decides                                 command
    -----------------  ----------------  --------------------------------------  ------------
    runner start       outage rule       engine down longer than the grace:     FailTask
                                          its processing tasks fail, refunded
    every beat (fleet) outage rule       no worker alive longer than the grace   FailTask
    every beat         stall bound       a task without a new event for          FailTask
                                          task_stall_timeout fails, refunded
    every sweep        monthly expiry    Monthly leftover past its period ends   ExpireMonthly
    every sweep        upload sweep      staged uploads no task reads (active,   SweepUploads
                                          or failed: its unprocessed addresses,
                                          until erased), older than
                                          STALE_UPLOAD_S, dropped
    every sweep        retention         finished tasks past their account's     EraseTask
                                          retention lose their per-address data

The reactions to single events (refund on Unknown, complete or fail a task, the stop
signal on cancel) are decided by the task decider itself (engine/domain/tasks.py), in the
same append as the event that causes them: they need no runner.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable, Mapping, Sequence

STALE_UPLOAD_S = 3600.0  # a staged upload whose create never happened is dropped after this
SWEEP_INTERVAL_S = 30.0  # how often the runners run the sweeps (they are idempotent)


@dataclass(frozen=True)
class FailTask:
    """Fail a task through SystemFailure (its unsettled addresses refunded)."""

    task_id: str
    reason: str
    cause: str  # stalled | engine_outage: the metric's label


@dataclass(frozen=True)
class ExpireMonthly:
    account_id: str


@dataclass(frozen=True)
class SweepUploads:
    staged_before: datetime
    keep: tuple[str, ...]  # upload ids that active tasks still read


@dataclass(frozen=True)
class EraseTask:
    task_id: str


Command = FailTask | ExpireMonthly | SweepUploads | EraseTask


def outage_rule(processing: Sequence[str], alive_at: datetime | None, now: datetime, grace_s: float,
                what: str) -> list[FailTask]:
    """Processing tasks fail once nothing was alive to run them for longer than the grace
    (`what` says what was down, for the reason); a shorter gap resumes them."""
    if alive_at is None or not processing or not outage_due(alive_at, now, grace_s):
        return []
    down_s = (now - alive_at).total_seconds()
    reason = f"engine_outage: {what} {down_s:.0f}s, grace {grace_s:g}s"
    return [FailTask(task_id, reason, "engine_outage") for task_id in processing]


def outage_due(alive_at: datetime | None, now: datetime, grace_s: float) -> bool:
    """Whether nothing was alive for longer than the grace: only then does the outage rule
    need the processing tasks (a runner need not fold every task to learn there is no outage)."""
    return alive_at is not None and (now - alive_at).total_seconds() > grace_s


def stall_bound(last_event_at: Mapping[str, datetime], now: datetime, stall_timeout_s: float) -> list[FailTask]:
    """An active task whose stream got no new event for longer than the bound fails."""
    failed = []
    for task_id, last in last_event_at.items():
        silent_s = (now - last).total_seconds()
        if silent_s > stall_timeout_s:
            failed.append(FailTask(task_id, f"stalled: no progress for {silent_s:.0f}s", "stalled"))
    return failed


def monthly_expiry(accounts_past_period: Iterable[str]) -> list[ExpireMonthly]:
    """Each account whose Monthly period ended with credits left (the decider expires the
    leftover once, however often this is asked)."""
    return [ExpireMonthly(account_id) for account_id in accounts_past_period]


def upload_sweep(now: datetime, upload_ids_in_use: Iterable[str]) -> SweepUploads:
    return SweepUploads(now - timedelta(seconds=STALE_UPLOAD_S), tuple(upload_ids_in_use))


def retention_due(finished: Iterable[tuple[str, datetime, int]], now: datetime) -> list[EraseTask]:
    """(task, finished at, its account's retention in days) -> the tasks whose data must go."""
    return [EraseTask(task_id) for task_id, finished_at, days in finished if finished_at + timedelta(days=days) <= now]

"""Carrying out the engine's timed reactions (engine/policies.py) for either runner: read
the view each decision needs from the store, decide, apply the commands through the
engine. The embedded runtime and the fleet's watchdog call these; neither decides."""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Iterable

from consumers.metrics import exporter as metrics
from engine import policies
from engine.policies import Command, EraseTask, ExpireMonthly, FailTask, SweepUploads
from engine.service import Engine

log = logging.getLogger("vec.reactions")


class Reactions:
    """The timed reactions of one runner, over its engine (and the engine's store)."""

    def __init__(self, engine: Engine):
        self.engine, self.db, self.settings = engine, engine.db, engine.settings

    def outage(self, alive_at: datetime | None, what: str) -> list[str]:
        """The outage rule over the processing tasks; returns the ids of those it failed."""
        now = self.engine.clock()
        if not policies.outage_due(alive_at, now, self.settings.outage_grace):
            return []  # no task state to fold (a fold per active task per look)
        processing = [t for t in self.db.read.active_task_ids() if self.engine.task(t).status == "processing"]
        commands = policies.outage_rule(processing, alive_at, now, self.settings.outage_grace, what)
        self.apply(commands)
        return [c.task_id for c in commands]

    def stall(self, task_ids: Iterable[str]) -> None:
        """The stall bound over these active tasks, on their last event's time in the log."""
        last_event_at = {task_id: last for task_id in task_ids if (last := self._last_event_at(task_id)) is not None}
        due = policies.stall_bound(last_event_at, self.engine.clock(), self.settings.task_stall_timeout)
        # the bound is decided per task: only a task it would fail is folded, to see that it is
        # still active (the read model's list may lag the log)
        self.apply([command for command in due if self.engine.task(command.task_id).active])

    def _last_event_at(self, task_id: str) -> datetime | None:
        stream = f"task-{task_id}"
        version = self.db.events.stream_version(stream)
        last = next(iter(self.db.events.read_stream(stream, after_version=version - 1)), None) if version else None
        return last.occurred_at if last is not None else None

    def sweep(self) -> None:
        """Monthly expiry, the upload sweep and retention."""
        now = self.engine.clock()
        in_use = [upload for t in self.db.read.tasks_reading_inputs() if (upload := self.engine.task(t).upload_id)]
        self.apply([*policies.monthly_expiry(self.db.read.expired_monthly_accounts(now)),
                    policies.upload_sweep(now, in_use)])
        self.engine.erase_due(now)  # decided by policies.retention_due (it needs each account's retention)

    def apply(self, commands: Iterable[Command]) -> None:
        for command in commands:
            self._apply(command)

    def _apply(self, command: Command) -> None:
        if isinstance(command, FailTask):
            log.warning("task %s failed: %s", command.task_id, command.reason,
                        extra=metrics.task_ids(self.engine, command.task_id))
            metrics.system_failure(command.cause)
            self.engine.fail_for_system(command.task_id, command.reason)
        elif isinstance(command, ExpireMonthly):
            self.engine.expire_monthly(command.account_id)
        elif isinstance(command, SweepUploads):
            self.db.inputs.sweep(command.staged_before, command.keep)
        elif isinstance(command, EraseTask):
            self.engine.erase_task(command.task_id, "retention")

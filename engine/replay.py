"""`vec replay`: the state of one account or task as it was at a position or a time."""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Iterable

from events import CreditsDebited, CreditsRefunded, RecordedEvent, TaskCreated, account_stream, task_stream
from engine.domain.errors import DomainError, InvalidCommand, InvariantViolation
from projections.base import InMemoryView
from projections.read_models import BALANCES, HISTORY, TASKS, all_projections

if TYPE_CHECKING:
    from engine.store import Database


def replay(db: Database, target: str, until: int | None, as_of: str | None) -> dict[str, Any]:
    if as_of is not None:
        try:
            moment = datetime.fromisoformat(as_of)
        except ValueError:
            raise InvalidCommand(f"--as-of {as_of!r} is not an ISO 8601 time") from None
        if moment.tzinfo is None:
            raise InvalidCommand("--as-of needs a time zone (e.g. 2026-11-29T12:00:00+00:00)")
        until = db.events.position_at(moment)
    view = InMemoryView(all_projections())
    if db.events.stream_version(account_stream(target)):
        _fold(view, db.events.read_stream(account_stream(target), until_position=until))
        balance = view.get(BALANCES.name, (target,)) or {}
        history = sorted((r for r in view.tables[HISTORY.name].values()), key=lambda r: r["seq"])
        return {"account": target, "position": until, "monthly": balance.get("monthly", 0),
                "payg": balance.get("payg", 0), "total": balance.get("total", 0), "history_rows": len(history),
                "last_row": history[-1]["description"] if history else None}
    if db.events.stream_version(task_stream(target)):
        task_events = list(db.events.read_stream(task_stream(target), until_position=until))
        if not task_events:
            return {"task_id": target, "position": until, "status": "not yet created"}
        created = task_events[0]
        if not isinstance(created.event, TaskCreated):
            raise InvariantViolation(f"{created.stream} starts with {created.type} at position {created.position}, "
                                     "not TaskCreated")
        account_id = created.event.account_id
        money = [r for r in db.events.read_stream(account_stream(account_id), until_position=until)
                 if isinstance(r.event, (CreditsDebited, CreditsRefunded)) and r.event.task_id == target]
        _fold(view, sorted(task_events + money, key=lambda r: r.position))
        row = view.get(TASKS.name, (target,))
        return {"position": until, **(row or {})}  # a folded TaskCreated always gives a row
    raise DomainError(f"no account or task named {target}")


def _fold(view: InMemoryView, events: Iterable[RecordedEvent]) -> None:
    """Folds the events one by one: one that cannot be folded is named (a store's reader
    already names one it cannot decode, as a CorruptEvent)."""
    for recorded in events:
        try:
            view.fold([recorded])
        except Exception as error:  # noqa: BLE001 - an impossible event: named, never a traceback
            raise InvariantViolation(f"{recorded.type} at position {recorded.position} ({recorded.stream}@"
                                     f"{recorded.version}) cannot be folded: {type(error).__name__}: {error}") from None

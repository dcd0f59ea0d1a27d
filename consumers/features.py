"""The log-driven features beside the engine's core, registered in one list. Each reads the
log from a checkpoint of its own and owns its tables, loops and metrics in its module; the
runners run every feature they are given: the embedded runtime in its task group, the
fleet's watchdog processes as one elected leader each (a PostgreSQL advisory lock)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable, ParamSpec, Protocol, TypeVar

from engine.config import CoreSettings, slice_of
from consumers.waiting import Stop
from engine.service import Engine

P = ParamSpec("P")
R = TypeVar("R")


class Loop(Protocol):
    async def run(self, stop: Stop) -> None: ...


class Call(Protocol):
    """How engine and store calls are made: inline on the loop's thread (the embedded
    runtime's SQLite connection), or on an engine thread of their own (the fleet)."""

    def __call__(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R]: ...


@dataclass(frozen=True)
class Feature:
    name: str
    leader_lock: int  # the advisory lock key its fleet leader holds
    build: Callable[[Engine, CoreSettings, Call | None], Loop]  # its loop, from its slice of the settings


def _webhooks(engine: Engine, settings: CoreSettings, call: Call | None) -> Loop:
    from consumers.webhooks.delivery import Webhooks  # signed POSTs on task ends
    from consumers.webhooks.settings import WebhookSettings

    own = slice_of(settings, WebhookSettings)
    return Webhooks(engine, own, call) if call else Webhooks(engine, own)


def _notifications(engine: Engine, settings: CoreSettings, call: Call | None) -> Loop:
    from consumers.notifications.mail import Notifications  # e-mails on task ends and low balances
    from consumers.notifications.settings import NotifySettings

    own = slice_of(settings, NotifySettings)
    return Notifications(engine, own, call) if call else Notifications(engine, own)


FEATURES: tuple[Feature, ...] = (
    Feature("webhooks", 7316004, _webhooks),
    Feature("notifications", 7316005, _notifications),
)

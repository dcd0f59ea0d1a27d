"""The loops' one way to pause (the runtime, the fleet's roles, the outbox loops)."""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Protocol


class Stop(Protocol):
    """What tells a loop to stop: an asyncio.Event, or the fleet's "stop or lost leadership"."""

    def is_set(self) -> bool: ...

    def wait(self) -> Awaitable[object]: ...


async def sleep_or(stop: Stop, seconds: float, *also: asyncio.Event | asyncio.Future[Any]) -> None:
    """Sleeps `seconds`, or less if `stop` or one of `also` (events, or tasks: never
    cancelled here) comes first."""
    waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait())]
    waiters += [asyncio.ensure_future(a.wait()) if isinstance(a, asyncio.Event) else a for a in also]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters[:1] + [w for w, a in zip(waiters[1:], also) if isinstance(a, asyncio.Event)]:
            waiter.cancel()

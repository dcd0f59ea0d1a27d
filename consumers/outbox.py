"""What the webhooks' and the e-mail notifications' stores share (consumers/webhooks/delivery.py,
consumers/notifications/mail.py): a log consumer's checkpoint, and an outbox whose every attempt
is recorded. At least once: an attempt a stopped sender left `sending` is marked
`interrupted` and its message made due again. In the store's SQL session (SQLite or
PostgreSQL, `?` placeholders)."""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, ClassVar, Generic, ParamSpec, Protocol, Self, TypeVar

from consumers.features import Call
from consumers.waiting import Stop, sleep_or
from engine.service import Engine, utcnow
from projections.base import Table
from projections.sql import SqlSession

P = ParamSpec("P")
R = TypeVar("R")
JobT = TypeVar("JobT")
JobT_contra = TypeVar("JobT_contra", contravariant=True)


def stamp(moment: datetime) -> str:
    """UTC, always with microseconds: one width, so that text order is time order."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class OutboxSchema:
    name: str  # the consumer's checkpoint name, and the namespace of its advisory locks
    tables: tuple[Table, ...]  # every table it creates
    checkpoint: str  # the checkpoint table
    outbox: str  # one row a message (status, attempts, next_attempt_at)
    attempts: str  # one row an attempt (outcome, and what went wrong in `error`)
    key: str  # the column that names a message in both
    error: str
    interrupted: str  # what an interrupted attempt says


class OutboxStore:
    SCHEMA: ClassVar[OutboxSchema]

    def __init__(self, sql: SqlSession, clock: Callable[[], datetime] = utcnow):
        self.sql, self.clock = sql, clock
        self._ready = False

    def ensure_schema(self) -> Self:
        if not self._ready:
            with self.sql.transaction():
                self.sql.lock(f"vec.{self.SCHEMA.name}.schema")
                for table in self.SCHEMA.tables:
                    self.sql.create_table(table)
            self._ready = True
        return self

    def _tuples(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """`Rows` (projections/sql.py) on this store's session: for the owners' query functions."""
        return list(self.sql.execute(query, params).fetchall())

    def _rows(self, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        cursor = self.sql.execute(query, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def checkpoint(self) -> int | None:
        row = self.sql.execute(f"SELECT position FROM {self.SCHEMA.checkpoint} WHERE name = ?",
                               (self.SCHEMA.name,)).fetchone()
        return row[0] if row else None

    def start_at(self, position: int) -> int:
        """The consumer's first checkpoint, `position`, unless one is stored already (a racing
        consumer's): the checkpoint in force."""
        with self.sql.transaction():
            self.sql.execute(f"INSERT INTO {self.SCHEMA.checkpoint} (name, position) VALUES (?, ?)"
                             " ON CONFLICT (name) DO NOTHING", (self.SCHEMA.name, position))
        stored = self.checkpoint()
        return position if stored is None else stored

    def recover(self) -> int:
        """At a sender's start (one runs at a time): attempts left `sending` by a sender that
        stopped are `interrupted`, and their messages due now. Returns how many."""
        s = self.SCHEMA
        now = stamp(self.clock())
        with self.sql.transaction():
            self.sql.lock(f"vec.{s.name}.sender")
            stuck = [r[0] for r in self.sql.execute(
                f"SELECT {s.key} FROM {s.attempts} WHERE outcome = 'sending'").fetchall()]
            for key in stuck:
                self._interrupted(key)
                self.sql.execute(f"UPDATE {s.outbox} SET next_attempt_at = ? WHERE {s.key} = ?"
                                 " AND status = 'pending'", (now, key))
        return len(stuck)

    def _interrupted(self, key: str) -> None:
        s = self.SCHEMA
        self.sql.execute(f"UPDATE {s.attempts} SET outcome = 'interrupted', {s.error} = ? WHERE {s.key} = ?"
                         " AND outcome = 'sending'", (s.interrupted, key))


# --- the consumer and the sender, supervised as one ---------------------------------------------

async def inline(fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """The embedded runtime's way: store calls on the loop's own thread (its SQLite connection)."""
    return fn(*args, **kwargs)


class Outbox(Protocol[JobT]):
    """The outbox port: an OutboxStore with its claims and records of `JobT`, what the loops
    drive (its contract: tests/integration/outbox_contract.py, on every SQL session)."""

    def ensure_schema(self) -> object: ...

    def checkpoint(self) -> int | None: ...

    def start_at(self, position: int) -> int: ...

    def recover(self) -> int: ...

    def claim_due(self, limit: int, hold: float) -> list[JobT]: ...

    def record(self, job: JobT, outcome: str, code: int | None, error: str | None, duration_ms: int,
               schedule: tuple[float, ...], max_attempts: int) -> str: ...


class OutboxConsumer(Protocol):
    def step(self, batch: int) -> int:
        """One batch of the log into the outbox: how many positions it moved past."""


class OutboxSender(Protocol[JobT_contra]):
    async def send(self, job: JobT_contra) -> tuple[str, int | None, str | None]:
        """(outcome, status code, error) of one attempt; never raises for the world's failures."""

    async def close(self) -> None: ...


class Attempt(Protocol):
    @property
    def attempt(self) -> int: ...


AttemptT = TypeVar("AttemptT", bound=Attempt)


class OutboxLoops(Generic[AttemptT]):
    """The consumer (the log -> the outbox) and the sender (the outbox -> the world). `run`
    returns when `stop` is set; an unexpected error stops it (and, supervised, the process)
    loudly. `call` runs the store's synchronous calls: inline in the embedded runtime, on a
    thread of their own in the fleet. A subclass names itself and gives its sender."""

    NAME: ClassVar[str]  # in logs: "webhooks"
    SUCCESS: ClassVar[str]  # the outcome that ends a message well
    JOB_KEY: ClassVar[str]  # the Job field that names its message

    def __init__(self, engine: Engine, call: Call, store: Outbox[AttemptT], consumer: OutboxConsumer, *,
                 batch: int, schedule: tuple[float, ...], poll_interval: float, concurrency: int, hold: float,
                 max_attempts: int):
        self.engine, self.db, self.call, self.store, self.consumer = engine, engine.db, call, store, consumer
        self.batch, self.schedule, self.poll_interval = batch, schedule, poll_interval
        self.concurrency, self.hold, self.max_attempts = concurrency, hold, max_attempts
        self.wake = asyncio.Event()  # new messages: look now
        self.log = logging.getLogger(f"vec.{self.NAME}")

    def sender(self) -> OutboxSender[AttemptT]:
        """What sends a job: `await send(job)` -> (outcome, code, error); `await close()`."""
        raise NotImplementedError

    def sending(self) -> bool:
        """False: messages wait in the outbox (nowhere to send them)."""
        return True

    async def run(self, stop: Stop) -> None:
        await self.call(self.store.ensure_schema)
        recovered = await self.call(self.store.recover)
        if recovered:
            self.log.warning("%s: %d attempts were cut short by a stop; sending them again", self.NAME, recovered)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._consume(stop))
                if self.sending():
                    group.create_task(self._send(stop))
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None

    async def _consume(self, stop: Stop) -> None:
        while not stop.is_set():
            try:
                moved = await self.call(self.consumer.step, self.batch)
            except self.db.transient_errors as error:
                self.log.warning("%s consumer: %s; trying again", self.NAME, error)
                moved = 0
            if moved:
                self.wake.set()
            if moved < self.batch:
                await sleep_or(stop, self.poll_interval)
            else:
                await asyncio.sleep(0)  # a long backlog must not starve the runtime's other loops

    async def _send(self, stop: Stop) -> None:
        sender = self.sender()
        flying: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                for done in [j for j in flying if j.done()]:
                    flying.discard(done)
                    done.result()  # an error of ours (not the network's) stops the loop, loudly
                room = self.concurrency - len(flying)
                jobs: list[AttemptT] = []
                self.wake.clear()
                if room > 0:
                    try:
                        jobs = await self.call(self.store.claim_due, room, self.hold)
                    except self.db.transient_errors as error:
                        self.log.warning("%s sender: %s; trying again", self.NAME, error)
                for job in jobs:
                    flying.add(asyncio.create_task(self._attempt(sender, job),
                                                   name=f"{self.NAME}-{getattr(job, self.JOB_KEY)}"))
                if len(jobs) < room or not jobs:
                    await sleep_or(stop, self.poll_interval, self.wake, *flying)
        finally:
            for flight in flying:
                flight.cancel()  # left `sending`: the next sender's recover() sends them again
            await asyncio.gather(*flying, return_exceptions=True)
            await sender.close()

    async def _attempt(self, sender: OutboxSender[AttemptT], job: AttemptT) -> None:
        started = time.monotonic()
        outcome, code, error = await sender.send(job)
        duration_ms = int((time.monotonic() - started) * 1000)
        key = getattr(job, self.JOB_KEY)
        while True:  # recorded right after the answer: a message that arrived is not sent again
            try:
                state = await self.call(self.store.record, job, outcome, code, error, duration_ms, self.schedule,
                                        self.max_attempts)
                break
            except self.db.transient_errors as failure:  # the store is away: the claim holds meanwhile
                self.log.warning("%s: recording %s: %s; trying again", self.NAME, key, failure)
                await asyncio.sleep(self.poll_interval)
        level = logging.INFO if outcome == self.SUCCESS else logging.WARNING
        self.log.log(level, "%s %s attempt %d: %s%s -> %s", self.NAME, key, job.attempt, outcome,
                f" ({error})" if error else "", state)

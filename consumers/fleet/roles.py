"""Running the fleet's roles in one process: `vec run` (every role) or
`vec run --role relay|worker|projector|watchdog` (repeatable).

Every process beats in `workers` (the fleet's outage clock). Roles that must run once in
the whole fleet (relay, projector, watchdog) contend for a PostgreSQL advisory lock and
stand by until they get it. Everything runs supervised in one task group: if a role fails,
the process stops with it and `run_roles` raises EngineCrashed (never half-alive).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Coroutine, Iterable, Protocol, Sequence

from consumers.metrics import exporter as metrics
from consumers.fleet.worker import EngineThread, FleetWorker, utcnow
from consumers.features import FEATURES, Feature
from consumers.reactions import Reactions
from consumers.runtime import EngineCrashed
from consumers.verification import Provider
from consumers.scheduling import submit_window
from consumers.waiting import sleep_or
from consumers.fleet.settings import FleetProcessSettings
from engine import tracing
from engine.policies import SWEEP_INTERVAL_S
from engine.service import ACTOR, Engine
from engine.store.base import FleetStore
from verifier.prober import HostSlots

if TYPE_CHECKING:
    from kafka import KafkaProducer  # untyped (Any to mypy): named for the reader

    from engine.relay import Relay

log = logging.getLogger("vec.fleet")

ROLES = ("relay", "worker", "projector", "watchdog")
LEADER_KEYS = {"projector": 7316002, "watchdog": 7316003}  # advisory lock keys of roles run once


class Leadership(Protocol):
    """A role's lock, held by one process of the fleet at a time (engine/store/postgres.py
    LeaderLock: an advisory lock on a connection of its own)."""

    def try_acquire(self) -> bool: ...

    def still_held(self) -> bool: ...

    def drop(self) -> None: ...


class SharedHostSlots(HostSlots, Protocol):
    """The per-MX sessions shared by the fleet, closed when the worker stops."""

    async def close(self) -> None: ...


@dataclass(frozen=True)
class FleetAdapters:
    """What the fleet's roles are built on, made by the composition root
    (entrypoints/bootstrap.py), never here: each role's leader lock, the relay, the worker's
    fleet-wide MX slots."""

    leader_lock: Callable[[int], Leadership]
    relay: Callable[[str], "Relay"]  # by the process's name
    host_slots: Callable[[], SharedHostSlots]


class Fleet:
    def __init__(self, engine: Engine, settings: FleetProcessSettings, roles: set[str],
                 provider_factory: Callable[[HostSlots], Provider] | None = None,
                 features: Sequence[Feature] = FEATURES, *, adapters: FleetAdapters):
        unknown = roles - set(ROLES)
        if unknown:
            raise ValueError(f"unknown role(s) {', '.join(sorted(unknown))}; choose from {', '.join(ROLES)}")
        if engine.db.fleet is None:
            raise ValueError("the fleet's roles need a PostgreSQL store (VEC_STORE=postgresql://...)")
        if "worker" in roles and provider_factory is None:
            raise ValueError("the worker role needs a provider (provider_factory)")
        if not settings.kafka_bootstrap and roles & {"relay", "worker"}:
            raise ValueError("the relay and worker roles need Kafka (VEC_KAFKA_BOOTSTRAP=HOST:PORT)")
        self.engine, self.settings, self.roles = engine, settings, roles
        self.features = features  # the log-driven features its watchdog processes elect a leader for
        self.provider_factory = provider_factory
        self.adapters = adapters
        self.db = engine.db
        self.fleet: FleetStore = engine.db.fleet
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.crashed: asyncio.Future[None] | None = None
        self.leading: set[str] = set()
        self.worker: FleetWorker | None = None
        self.relay: Relay | None = None
        self._producer: KafkaProducer | None = None  # the watchdog's, for chunks dispatched again
        # The engine's caches are not shared between threads: every engine call of this
        # process (worker, watchdog) runs on this one thread.
        self.call = EngineThread()
        self.reactions = Reactions(engine)  # the timed policies (engine/policies.py), run by the watchdog
        metrics.track_engine(engine)  # its commands and conflicts
        metrics.install(settings)  # the prober's metrics

    def crash(self, where: str, error: BaseException) -> None:
        error = _first_leaf(error)  # a task group's error says nothing: name what really failed
        log.error("%s failed: %s: %s; stopping this process", where, type(error).__name__, error)
        if self.crashed is not None and not self.crashed.done():
            self.crashed.set_exception(EngineCrashed(f"{where} failed: {type(error).__name__}: {error}"))
            self.crashed.exception()  # retrieved here: _watch_crash raises it

    async def run(self, stop: asyncio.Event) -> None:
        ACTOR.set("engine")
        crashed = self.crashed = asyncio.get_running_loop().create_future()
        if "relay" in self.roles or "worker" in self.roles:
            from engine.relay import ensure_topics
            from consumers.fleet.messages import Topics

            topics = Topics.of(self.settings)
            await asyncio.to_thread(ensure_topics, self.settings.kafka_bootstrap,
                                    [topics.events, topics.chunks, topics.results], self.settings.kafka_partitions)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._guard("heartbeat", self._heartbeat(stop), stop))
                group.create_task(self._watch_crash(stop, crashed))
                if "worker" in self.roles and self.provider_factory is not None:  # (checked at __init__)
                    slots = self.adapters.host_slots()
                    self.worker = FleetWorker(self.engine, self.provider_factory(slots), self.settings, self.worker_id,
                                              self.crash, self.call)
                    group.create_task(self._guard("worker", self.worker.run(stop, on_exit=slots.close), stop))
                if "relay" in self.roles:  # it elects its leader itself (engine/relay.py)
                    group.create_task(self._guard("relay", self._relay(stop), stop))
                for role, body in (("projector", self._projector), ("watchdog", self._watchdog)):
                    if role in self.roles:
                        lead = self._lead(role, LEADER_KEYS[role], body, stop)
                        group.create_task(self._guard(role, lead, stop))
                for feature in self.features if "watchdog" in self.roles else ():  # elected among watchdogs
                    lead = self._lead(feature.name, feature.leader_lock, self._feature(feature), stop)
                    group.create_task(self._guard(feature.name, lead, stop))
        except BaseExceptionGroup as crashed:
            cause = crashed.exceptions[0]
            raise cause if isinstance(cause, EngineCrashed) else EngineCrashed(str(cause)) from cause
        finally:
            self.call.close()

    async def _guard(self, name: str, loop: Awaitable[None], stop: asyncio.Event) -> None:
        try:
            await loop
        except (asyncio.CancelledError, EngineCrashed):
            raise
        except Exception as error:
            self.crash(name, error)
            stop.set()
            leaf = _first_leaf(error)
            raise EngineCrashed(f"the {name} failed: {type(leaf).__name__}: {leaf}") from error

    @staticmethod
    async def _watch_crash(stop: asyncio.Event, crashed: asyncio.Future[None]) -> None:
        waiter = asyncio.create_task(stop.wait())
        waiters: list[asyncio.Future[Any]] = [waiter, crashed]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if crashed.done():
            stop.set()
            error = crashed.exception()  # crash() only ever sets an exception
            if error is not None:
                raise error

    # --- every process: the heartbeat ---------------------------------------------------

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        host, roles = socket.gethostname(), ",".join(sorted(self.roles))
        failing = False
        while not stop.is_set():
            state = "ready" if self.worker is None or self.worker.ready else "starting"
            try:
                leads = ",".join(sorted(self.leading | ({"relay"} if self.relay and self.relay.is_leader else set())))
                await asyncio.to_thread(self.fleet.beat, self.worker_id, roles, host, os.getpid(), utcnow(), state,
                                        leads)
                if failing:
                    log.warning("heartbeat: the database is back")
                failing = False
            except self.db.transient_errors as error:  # PostgreSQL restarting: beat again once it is back
                if not failing:
                    log.warning("heartbeat: %s; retrying", error)
                failing = True
            await sleep_or(stop, self.settings.heartbeat_interval)

    # --- the roles that run once in the fleet -------------------------------------------

    async def _lead(self, role: str, lock_key: int, body: Callable[[_Until], Coroutine[Any, Any, None]],
                    stop: asyncio.Event) -> None:
        """Stand by until this process holds the role's lock, then run it until the lock is
        lost (its connection broke) or the process stops."""
        lock = self.adapters.leader_lock(lock_key)
        try:
            while not stop.is_set():
                if not await asyncio.to_thread(lock.try_acquire):
                    await sleep_or(stop, 0.5)
                    continue
                log.info("%s: this process leads", role)
                self.leading.add(role)
                lost = asyncio.Event()
                try:
                    async with asyncio.TaskGroup() as group:
                        group.create_task(self._keep_checking(lock, lost, stop))
                        group.create_task(body(_either(stop, lost)))
                except* self.db.transient_errors as gone:  # the database went away under the role's work
                    lost.set()
                    log.warning("%s: the database went away (%s); standing by", role, _first_leaf(gone))
                finally:
                    self.leading.discard(role)
                if lost.is_set():
                    log.warning("%s: lost the leadership (database connection); standing by", role)
                    await sleep_or(stop, 0.5)  # a restarting database: not a busy loop of reconnects
        finally:
            await asyncio.to_thread(lock.drop)

    @staticmethod
    async def _keep_checking(lock: Leadership, lost: asyncio.Event, stop: asyncio.Event) -> None:
        while not stop.is_set() and not lost.is_set():
            if not await asyncio.to_thread(lock.still_held):
                lost.set()
                return
            await sleep_or(stop, 1.0)

    async def _relay(self, stop: asyncio.Event) -> None:
        relay = self.relay = self.adapters.relay(self.worker_id)
        metrics.track_relay(relay)  # vec_relay_published_total
        halt = threading.Event()
        thread = asyncio.create_task(asyncio.to_thread(relay.run, halt))
        waiter = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait([thread, waiter], return_when=asyncio.FIRST_COMPLETED)
        finally:
            halt.set()
            waiter.cancel()
            await thread  # a relay that crashed raises RelayCrashed here

    async def _projector(self, until: _Until) -> None:
        call = EngineThread()
        try:
            while not until.is_set():
                try:
                    done = await call(self.db.projector.catch_up, None, 1)
                except self.db.transient_errors as error:
                    log.warning("projector: %s", error)
                    done = 0
                if done == 0:
                    await until.sleep(self.settings.poll_interval)
        finally:
            call.close()

    async def _watchdog(self, until: _Until) -> None:
        """The timed reactions of engine/policies.py (the outage rule on the workers'
        heartbeats, the stall bound, the sweeps) and reconciliation from the log."""
        call = self.call
        started_at = self.engine.clock()  # no worker ever beat: down since this watchdog looked
        unclaimed_since: dict[tuple[str, int], float] = {}
        looked = _Looked()
        next_sweep = 0.0
        try:
            while not until.is_set():
                try:
                    await call(self._watch_once, started_at, unclaimed_since, looked)
                    if time.monotonic() >= next_sweep:  # when to look is this process's business
                        await call(self.reactions.sweep)
                        next_sweep = time.monotonic() + SWEEP_INTERVAL_S
                except self.db.transient_errors as error:
                    log.warning("watchdog: %s", error)
                await until.sleep(self.settings.heartbeat_interval)
        finally:
            if self._producer is not None:
                await call(self._producer.close, 5)
                self._producer = None

    def _feature(self, feature: Feature) -> Callable[[_Until], Coroutine[Any, Any, None]]:
        """A feature's loop (consumers/features.py), run by its elected leader: an engine of its
        own, on a thread of its own (no engine cache is shared between threads)."""
        async def run(until: _Until) -> None:
            call = EngineThread()
            try:
                await feature.build(Engine(self.db, self.settings), self.settings, call).run(until)
            finally:
                call.close()

        return run

    def _watch_once(self, started_at: datetime, unclaimed_since: dict[tuple[str, int], float],
                    looked: "_Looked | None" = None) -> None:
        engine, settings, fleet = self.engine, self.settings, self.fleet
        looked = _Looked() if looked is None else looked
        self.db.catch_up()
        last_beat = fleet.last_worker_beat()
        if self.reactions.outage(last_beat or started_at, "no worker alive for"):
            return
        if (engine.clock() - (last_beat or started_at)).total_seconds() > settings.worker_ttl:
            return  # no worker to give work to: pending tasks stay pending, running ones wait for the grace
        active = self.db.read.active_task_ids()
        self.reactions.stall(active)
        live = fleet.live_claims(engine.clock() - timedelta(seconds=settings.claim_ttl))
        versions = self.db.events.stream_versions([f"task-{task_id}" for task_id in active])
        for task_id in active:
            version = versions[f"task-{task_id}"]
            pending = looked.pending(task_id, version)
            if pending is None:  # its stream moved since the last look (or it is new here): fold it
                state, submitted = submit_window(engine, task_id, settings.provider, "primary", settings.chunk_window)
                for chunk_no in submitted:  # whoever submits a chunk sends its work item (else: after the claim TTL)
                    self._redispatch(task_id, chunk_no)
                pending = looked.remember(task_id, version, tuple(state.pending) if state.active else ())
            self._reconcile(task_id, pending, live, unclaimed_since)
        looked.keep_only(active)
        for key in [k for k in unclaimed_since if k[0] not in active]:
            del unclaimed_since[key]

    def _reconcile(self, task_id: str, pending: Iterable[int], live: set[tuple[str, int]],
                   unclaimed_since: dict[tuple[str, int], float]) -> None:
        """A pending chunk with no live claim for longer than the claim TTL is sent again."""
        for chunk_no in pending:
            key = (task_id, chunk_no)
            if key in live:
                unclaimed_since.pop(key, None)
                continue
            first = unclaimed_since.setdefault(key, time.monotonic())
            if time.monotonic() - first > self.settings.claim_ttl:
                log.info("chunk %s of %s has no live worker: dispatching it again", chunk_no, task_id,
                         extra=metrics.task_ids(self.engine, task_id, chunk_no=chunk_no))
                if self._redispatch(task_id, chunk_no):
                    metrics.REDISPATCHED.inc()
                    unclaimed_since[key] = time.monotonic()
                # else: the broker failed it; tried again on the next pass

    def _redispatch(self, task_id: str, chunk_no: int) -> bool:
        """Sends a chunk's work item (again, or first for a chunk the watchdog submitted); False
        when the broker did not take it. A broker that restarted (or forgot its topics) is an
        outage to wait out, not a reason to stop the watchdog: the broken producer is dropped
        and a new one tries on the next pass."""
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        from consumers.fleet.messages import Topics, chunk_partition, chunk_work
        from engine.relay import CONNECT_TIMEOUT, ensure_topics, producer_settings

        if not self.settings.kafka_bootstrap:
            return False
        topic = Topics.of(self.settings).chunks
        key, value = chunk_work(task_id, chunk_no)
        try:
            if self._producer is None:
                # the topic first (a broker with memory storage forgets it on a restart): this
                # also fails fast, with no thread left behind, while the broker is down; then
                # the relay's producer settings (bounded waits, idempotent, acks=all)
                ensure_topics(self.settings.kafka_bootstrap, [topic], self.settings.kafka_partitions,
                              timeout=CONNECT_TIMEOUT)
                self._producer = KafkaProducer(**producer_settings(self.settings, "vec-watchdog"))
            # the partition the workers' dispatch chose (not the key's hash): the same chunk,
            # the same partition
            partition = chunk_partition(task_id, chunk_no, self._producer.partitions_for(topic) or ())
            # a span the chunk's verification continues (its context in the work item's headers)
            with tracing.span("vec.fleet.dispatch", task_id, kind="producer", chunk_no=chunk_no):
                self._producer.send(topic, key=key, value=value, partition=partition,
                                    headers=tracing.headers()).get(timeout=10)
            return True
        except (KafkaError, ValueError) as error:  # ValueError: the topic has no partitions (yet)
            log.warning("watchdog: could not dispatch chunk %s of %s again (%s: %s); trying again",
                        chunk_no, task_id, type(error).__name__, error,
                        extra=metrics.task_ids(None, task_id, chunk_no=chunk_no))
            producer, self._producer = self._producer, None
            if producer is not None:
                with contextlib.suppress(Exception):
                    producer.close(timeout=1)
            return False


class _Looked:
    """What the watchdog saw of each active task at its last fold: the stream's version then
    and its pending chunks. A task whose stream has not moved since has the same state (a
    state is a fold of its stream): scheduling it again would submit nothing, and its pending
    chunks are those known, so it is neither read nor folded again; only the claim-expiry
    timers of those chunks run on. A task whose stream moved is folded (incrementally: the
    engine caches the state) and scheduled, as before. The version is read before the fold,
    so a state is never remembered under a version older than what it folded: at worst a task
    is folded once more."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, tuple[int, ...]]] = {}

    def pending(self, task_id: str, version: int) -> tuple[int, ...] | None:
        """The task's pending chunks if its stream is still at `version`, else None."""
        seen = self._seen.get(task_id)
        return seen[1] if seen is not None and seen[0] == version else None

    def remember(self, task_id: str, version: int, pending: tuple[int, ...]) -> tuple[int, ...]:
        self._seen[task_id] = (version, pending)
        return pending

    def keep_only(self, task_ids: Iterable[str]) -> None:
        keep = set(task_ids)
        for task_id in [t for t in self._seen if t not in keep]:
            del self._seen[task_id]


def _first_leaf(error: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


class _Until:
    """Stop, or lost leadership: whichever comes first."""

    def __init__(self, *events: asyncio.Event):
        self.events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)

    async def wait(self) -> None:
        waiters = [asyncio.create_task(e.wait()) for e in self.events]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass


def _either(*events: asyncio.Event) -> _Until:
    return _Until(*events)

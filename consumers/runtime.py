"""The embedded engine: workers, chunk scheduler, stop signals, watchdog and projector,
as asyncio tasks in one process, reacting to the log.

- The follower tails the log: a new task gets a driver; any event of a task wakes its
  driver (that is how a cancel from another process becomes a stop signal).
- A task driver keeps up to `chunk_window` chunks in flight, submits the next chunk from
  the staged inputs, and runs a worker per in-flight chunk. On cancel or failure it
  cancels its workers; what they finished is recorded as late (logged, never charged).
- Workers call the provider, record results in batches (each Unknown refunded in the
  same transaction), retry rejected chunks with backoff and then fail them, and fail the
  task through SystemFailure when the provider stays unreachable past its deadline.
- The watchdog holds the engine lease, beats, and runs the timed reactions of
  engine/policies.py (the same table the fleet's watchdog runs): at start the outage rule
  (tasks processing when an outage longer than `outage_grace` began fail; shorter outages
  resume), every beat the stall bound, every 30 s monthly expiry, the upload sweep and
  retention.

Supervision: the heartbeat and the follower (which also runs the projector) run in one
task group. If either fails, the whole runtime stops and `run` raises EngineCrashed: a
runtime never goes on half-alive (say, driving tasks after its lease lapsed). A task
driver that keeps failing with an error of ours escalates instead of retrying forever:
after `driver_retries` tries a crashing chunk worker fails its chunk (ChunkFailed, with
its refund; past the threshold the task fails), and a scheduling step that keeps failing
fails the task through SystemFailure. Bound: no task stays processing without a new event
for longer than `task_stall_timeout`; past it the watchdog fails it the same way.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from typing import Awaitable, Callable, Sequence

from engine import tracing  # a span per chunk verified (engine/tracing.py)
from engine.domain.tasks import Result
from engine.service import ACTOR, Engine
from engine.store.lease import LeaseHeld, LeaseInfo
from consumers.metrics import exporter as metrics
from consumers.features import FEATURES, Feature
from consumers.providers import tier_of
from consumers.reactions import Reactions
from consumers.scheduling import schedule
from engine.policies import SWEEP_INTERVAL_S
from consumers.verification import OutageClock, Provider, unsettled, verify_chunk
from consumers.waiting import sleep_or
from projections.runner import BATCH

log = logging.getLogger("vec.runtime")

class EngineCrashed(Exception):
    """A long-running part of the runtime failed: the runtime stopped (loudly) with it."""


class LeaseLost(EngineCrashed):
    """Another process took the engine lease: this one stopped driving at once."""


class Runtime:
    def __init__(self, engine: Engine, provider: Provider, only_task: str | None = None,
                 features: Sequence[Feature] = FEATURES):
        self.engine = engine
        self.features = features  # the log-driven features it runs beside the engine
        self.db = engine.db
        self.settings = engine.settings
        self.provider = provider
        self.only_task = only_task
        # a CLI following one task (`vec verify`, `vec bulk --wait`) is a "follower": a whole
        # engine starting meanwhile waits for it instead of refusing to start
        self.holder = f"{'follower' if only_task else 'runtime'}-{uuid.uuid4().hex[:12]}"
        self.drivers: dict[str, asyncio.Task[None]] = {}
        self.wakeups: dict[str, asyncio.Event] = {}
        self.slots = asyncio.Semaphore(self.settings.workers)
        self.position = 0
        self.lease_lost = False
        self.outage = OutageClock(metrics.CHUNK_METRICS)  # the provider's own outage, for every chunk of this runtime
        self.poke = asyncio.Event()  # set by nudge(): look at the log now, not at the next poll
        self.reactions = Reactions(engine)  # the timed policies (engine/policies.py)
        metrics.track_engine(engine)  # its commands and conflicts
        metrics.install(self.settings)  # the prober's metrics

    # --- lifecycle --------------------------------------------------------------------

    def nudge(self) -> None:
        """Something was just appended in this process (the API created a task): look now."""
        self.poke.set()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Runs until `stop` is set (or, with `only_task`, until that task finishes).
        Raises EngineCrashed if the heartbeat or the follower fails."""
        token = ACTOR.set("engine")  # what the runtime appends is the engine's doing, whoever started it
        try:
            await self._run(stop or asyncio.Event())
        finally:
            ACTOR.reset(token)

    async def _run(self, stop: asyncio.Event) -> None:
        previous = await self._acquire_lease(stop)
        if previous is not None and not isinstance(previous, LeaseInfo):
            return  # _STOPPED: stopped before the lease was ever taken
        try:
            try:
                self.recover(previous)
            except Exception as error:
                raise EngineCrashed(f"recovery at start failed: {type(error).__name__}: {error}") from error
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._supervised("heartbeat", self._heartbeat(stop), stop))
                    group.create_task(self._supervised("follower", self._follow(stop), stop))
                    for feature in self.features if self.only_task is None else ():  # consumers/features.py
                        loop = feature.build(self.engine, self.settings, None).run(stop)
                        group.create_task(self._supervised(feature.name, loop, stop))
            except BaseExceptionGroup as crashed:
                cause = crashed.exceptions[0]
                raise cause if isinstance(cause, EngineCrashed) else EngineCrashed(str(cause)) from cause
            finally:
                await self._stop_drivers()
        finally:
            if not self.lease_lost:
                self._quietly(self.db.lease.release, self.holder, self.engine.clock())
            self._quietly(self.db.catch_up)

    async def _acquire_lease(self, stop: asyncio.Event) -> LeaseInfo | None | object:
        """The lease, or LeaseHeld if another engine runs here. A follower (a CLI driving one
        task) is waited for: it ends with its task, and this engine then takes over."""
        announced = False
        while True:
            try:
                return self.db.lease.acquire(self.holder, self.engine.clock(), self._lease_ttl())
            except LeaseHeld as held:
                if self.only_task is not None or not held.lease.holder.startswith("follower-"):
                    raise
                if not announced:
                    log.warning("a CLI (pid %s on %s) drives one task on this store; starting when it is done",
                                held.lease.pid, held.lease.host)
                    announced = True
            await sleep_or(stop, self.settings.poll_interval)
            if stop.is_set():
                return _STOPPED

    @staticmethod
    async def _supervised(name: str, loop: Awaitable[None], stop: asyncio.Event) -> None:
        """Runs one loop of the runtime; when it ends, for whatever reason, the others end too."""
        try:
            await loop
            stop.set()  # e.g. the follower of `only_task` saw its task finish
        except (asyncio.CancelledError, EngineCrashed):
            raise
        except Exception as error:
            log.error("the engine's %s failed: %s: %s; stopping the engine", name, type(error).__name__, error,
                      exc_info=log.isEnabledFor(logging.DEBUG))
            stop.set()
            raise EngineCrashed(f"the engine's {name} failed: {type(error).__name__}: {error}") from error

    @staticmethod
    def _quietly(action: Callable[..., object], *args: object) -> None:
        """Clean-up on the way out must not hide the error that stopped the engine."""
        try:
            action(*args)
        except Exception as error:  # noqa: BLE001
            log.warning("while stopping: %s", error)

    def _lease_ttl(self) -> float:
        # Generous: a busy moment must not look like death. A crash on this host is seen at
        # once anyway, by its PID (LeaseInfo.alive).
        return max(10 * self.settings.heartbeat_interval, 30.0)

    def recover(self, previous: LeaseInfo | None) -> None:
        """After an outage longer than the grace period, processing tasks fail; else they
        resume (the outage rule: engine/policies.py)."""
        self.db.catch_up()
        if previous is not None:
            self.reactions.outage(previous.heartbeat, "engine down")

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        next_sweep = 0.0
        while not stop.is_set():
            if not self.db.lease.beat(self.holder, self.engine.clock()):
                self.lease_lost = True
                raise LeaseLost("another process took the engine lease; this engine stopped driving tasks")
            self.on_beat(sweep=time.monotonic() >= next_sweep)
            if time.monotonic() >= next_sweep:  # when to look is this process's business; what to do is not
                next_sweep = time.monotonic() + SWEEP_INTERVAL_S
            await sleep_or(stop, self.settings.heartbeat_interval)

    def on_beat(self, sweep: bool) -> None:
        """The timed reactions of one beat: the stall bound over the tasks this runtime drives
        (all active ones; a follower: its task), and with `sweep` the sweeps."""
        self.reactions.stall([self.only_task] if self.only_task else self.db.read.active_task_ids())
        if sweep:
            self.reactions.sweep()

    # --- following the log ------------------------------------------------------------

    async def _follow(self, stop: asyncio.Event) -> None:
        # Start where the tasks read model stands, not at the log's head: a task created while
        # this engine starts may not be folded yet, and its TaskCreated must still be seen.
        self.position = self.db.projector.checkpoints().get("tasks", 0)
        for task_id in ([self.only_task] if self.only_task else self.db.read.active_task_ids()):
            self._ensure_driver(task_id)
        while not stop.is_set():
            for position, stream, type_name in self.db.events.read_headers(self.position):
                self.position = position
                if not stream.startswith("task-"):
                    continue
                task_id = stream[5:]
                if type_name == "TaskCreated" and self.only_task is None:
                    self._ensure_driver(task_id)
                elif task_id in self.wakeups:
                    self.wakeups[task_id].set()
            while self.db.projector.catch_up(max_batches=1, recent=self.engine.recent_events) >= BATCH:
                await asyncio.sleep(0)  # a long backlog must not starve the heartbeat
            if self.only_task and self.only_task not in self.drivers:
                return
            self.poke.clear()
            await sleep_or(stop, self.settings.poll_interval, self.poke)

    def _ensure_driver(self, task_id: str) -> None:
        if task_id in self.drivers:
            return
        self.wakeups[task_id] = asyncio.Event()
        log.info("driving task %s", task_id, extra=metrics.task_ids(self.engine, task_id))
        metrics.TASKS_DRIVEN.inc()
        self.drivers[task_id] = asyncio.create_task(self._drive(task_id), name=f"drive-{task_id}")
        self.drivers[task_id].add_done_callback(functools.partial(self._on_driver_done, task_id))

    def _on_driver_done(self, task_id: str, _task: asyncio.Task[None]) -> None:
        self._driver_done(task_id)

    def _driver_done(self, task_id: str) -> None:
        task = self.drivers.pop(task_id, None)
        self.wakeups.pop(task_id, None)
        metrics.TASKS_DRIVEN.dec()
        if task_id == self.only_task:
            self.poke.set()  # the follower's last catch-up now, not after its poll interval (`vec bulk --wait`)
        ids = metrics.task_ids(self.engine, task_id)
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.error("driver of task %s crashed", task_id, exc_info=task.exception(), extra=ids)
        else:
            log.info("task %s: %s", task_id, self.engine.task(task_id).status, extra=ids)

    async def _stop_drivers(self) -> None:
        drivers = list(self.drivers.values())
        for driver in drivers:
            driver.cancel()
        await asyncio.gather(*drivers, return_exceptions=True)

    # --- one task: the chunk scheduler and its workers --------------------------------

    async def _drive(self, task_id: str) -> None:
        jobs: dict[int, asyncio.Task[None]] = {}
        crashes: dict[int, int] = {}  # chunk -> worker crashes
        failures = 0  # scheduling steps failed in a row
        try:
            while True:
                try:
                    if not await self._drive_step(task_id, jobs, crashes):
                        return
                    failures = 0
                except Exception as error:
                    failures += 1
                    if self._transient(error) or failures <= self.settings.driver_retries:
                        log.warning("driving task %s (try %d): %s", task_id, failures, error,
                                    extra=metrics.task_ids(self.engine, task_id))
                        await asyncio.sleep(self._backoff(failures))
                        continue
                    log.error("driving task %s failed %d times: %s; failing the task", task_id, failures, error,
                              extra=metrics.task_ids(self.engine, task_id))
                    metrics.system_failure("engine_error")
                    self.engine.fail_for_system(task_id, f"engine_error: {type(error).__name__}: {error}"[:500])
        finally:
            await _cancel_all(jobs)

    def _transient(self, error: BaseException | None) -> bool:
        """The store being busy or away is retried without limit (the stall bound still holds)."""
        return isinstance(error, self.db.transient_errors)

    def _backoff(self, attempt: int) -> float:
        base_s = max(self.settings.retry_backoff, self.settings.poll_interval)
        return float(min(base_s * 2 ** max(attempt - 1, 0), 30.0))

    async def _drive_step(self, task_id: str, jobs: dict[int, asyncio.Task[None]], crashes: dict[int, int]) -> bool:
        """One round of scheduling; False once the task has stopped."""
        state = schedule(self.engine, task_id, self.provider.name, tier_of(self.provider), self.settings.chunk_window)
        if not state.active:
            await _cancel_all(jobs)  # the stop signal
            return False
        for chunk_no, addresses in state.in_flight().items():
            if chunk_no not in jobs:
                jobs[chunk_no] = asyncio.create_task(self._work(task_id, chunk_no, addresses))
        wake = self.wakeups[task_id]
        waiter = asyncio.create_task(wake.wait())
        await asyncio.wait([waiter, *jobs.values()], timeout=5.0, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        wake.clear()
        for chunk_no in [n for n, job in jobs.items() if job.done()]:
            job = jobs.pop(chunk_no)
            if job.cancelled() or job.exception() is None:
                continue
            error = job.exception()
            crashes[chunk_no] = crashes.get(chunk_no, 0) + 1
            if not self._transient(error) and crashes[chunk_no] > self.settings.driver_retries:
                log.error("worker of %s chunk %s failed %d times: %s; failing the chunk", task_id, chunk_no,
                          crashes[chunk_no], error, extra=metrics.task_ids(self.engine, task_id, chunk_no=chunk_no))
                self.engine.fail_chunk(task_id, chunk_no, f"engine_error: {type(error).__name__}: {error}"[:500])
            else:
                log.warning("worker of %s chunk %s failed (try %d): %s; retrying", task_id, chunk_no,
                            crashes[chunk_no], error, exc_info=log.isEnabledFor(logging.DEBUG),
                            extra=metrics.task_ids(self.engine, task_id, chunk_no=chunk_no))
                await asyncio.sleep(self._backoff(crashes[chunk_no]))
        return True

    async def _work(self, task_id: str, chunk_no: int, addresses: list[str]) -> None:
        with tracing.span("vec.verify_chunk", task_id, chunk_no=chunk_no, addresses=len(addresses)):
            await self._verify(task_id, chunk_no, addresses)

    async def _verify(self, task_id: str, chunk_no: int, addresses: list[str]) -> None:
        await verify_chunk(self.provider, self.settings, _EngineSink(self.engine, task_id, chunk_no, addresses),
                           self.outage, self.slots, f"chunk {chunk_no} of {task_id}")


class _EngineSink:
    """The embedded runtime's chunk sink: results go straight into the log."""

    def __init__(self, engine: Engine, task_id: str, chunk_no: int, addresses: list[str]):
        self.engine, self.task_id, self.chunk_no, self.addresses = engine, task_id, chunk_no, addresses

    async def pending(self) -> list[str]:
        return unsettled(self.addresses, self.engine.task(self.task_id).pending.get(self.chunk_no, {}))

    async def record(self, results: list[Result]) -> None:
        self.engine.record_results(self.task_id, self.chunk_no, results)

    async def fail_chunk(self, error: str) -> None:
        self.engine.fail_chunk(self.task_id, self.chunk_no, error)

    async def fail_task(self, reason: str) -> None:
        self.engine.fail_for_system(self.task_id, reason)


async def _cancel_all(jobs: dict[int, asyncio.Task[None]]) -> None:
    for job in jobs.values():
        job.cancel()
    await asyncio.gather(*jobs.values(), return_exceptions=True)
    jobs.clear()


_STOPPED = object()  # stopped before the lease was ever taken


def drive_until_finished(engine: Engine, provider: Provider, task_id: str) -> None:
    """Runs the engine in-process for one task (`vec verify`, `vec bulk --wait` with no engine)."""
    asyncio.run(Runtime(engine, provider, only_task=task_id).run())



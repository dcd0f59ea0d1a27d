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
- The watchdog holds the engine lease, beats, and at start fails the tasks that were
  processing when an outage longer than `outage_grace` began; shorter outages resume.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import timedelta

from engine.domain.tasks import Result
from engine.scheduler import chunks_to_submit
from engine.service import Engine
from engine.store.lease import LeaseInfo
from consumers.providers import to_result
from projections import queries
from projections.runner import BATCH
from verifier.provider import ProviderError, ProviderUnavailable

log = logging.getLogger("vec.runtime")

STALE_UPLOAD = timedelta(hours=1)


class Runtime:
    def __init__(self, engine: Engine, provider, only_task: str | None = None):
        self.engine = engine
        self.db = engine.db
        self.settings = engine.settings
        self.provider = provider
        self.only_task = only_task
        self.holder = f"runtime-{uuid.uuid4().hex[:12]}"
        self.drivers: dict[str, asyncio.Task] = {}
        self.wakeups: dict[str, asyncio.Event] = {}
        self.slots = asyncio.Semaphore(self.settings.workers)
        self.position = 0
        self.lease_lost = False

    # --- lifecycle --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Runs until `stop` is set (or, with `only_task`, until that task finishes)."""
        stop = stop or asyncio.Event()
        previous = self.db.lease.acquire(self.holder, self.engine.clock(), self._lease_ttl())
        try:
            self.recover(previous)
            beat = asyncio.create_task(self._heartbeat(stop))
            try:
                await self._follow(stop)
            finally:
                beat.cancel()
                await self._stop_drivers()
        finally:
            if not self.lease_lost:
                self.db.lease.release(self.holder, self.engine.clock())
            self.db.catch_up()

    def _lease_ttl(self) -> float:
        # Generous: a busy moment must not look like death. A crash on this host is seen at
        # once anyway, by its PID (LeaseInfo.alive).
        return max(10 * self.settings.heartbeat_interval, 30.0)

    def recover(self, previous: LeaseInfo | None) -> None:
        """After an outage longer than the grace period, processing tasks fail; else they resume."""
        self.db.catch_up()
        now = self.engine.clock()
        if previous is None:
            return
        down_for = (now - previous.heartbeat).total_seconds()
        if down_for <= self.settings.outage_grace:
            return
        reason = f"engine_outage: down {down_for:.0f}s, grace {self.settings.outage_grace:g}s"
        for task_id in queries.active_task_ids(self.db.conn):
            if self.engine.task(task_id).status == "processing":
                log.warning("task %s failed: %s", task_id, reason)
                self.engine.fail_for_system(task_id, reason)

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        next_sweep = 0.0
        while not stop.is_set():
            if not self.db.lease.beat(self.holder, self.engine.clock()):
                log.error("the engine lease was taken by another process; stopping")
                self.lease_lost = True
                stop.set()
                return
            if time.monotonic() >= next_sweep:
                self._expire_monthly()
                self._sweep_uploads()
                next_sweep = time.monotonic() + 30
            await _sleep_or(stop, self.settings.heartbeat_interval)

    def _sweep_uploads(self) -> None:
        """Staged uploads whose create never happened (a crash in between) or whose task
        stopped while no engine ran: dropped once older than STALE_UPLOAD."""
        keep = [self.engine.task(t).upload_id for t in queries.active_task_ids(self.db.conn)]
        self.db.inputs.sweep(self.engine.clock() - STALE_UPLOAD, keep)

    def _expire_monthly(self) -> None:
        for account_id in queries.expired_monthly_accounts(self.db.conn, self.engine.clock()):
            self.engine.expire_monthly(account_id)

    # --- following the log ------------------------------------------------------------

    async def _follow(self, stop: asyncio.Event) -> None:
        self.position = self.db.events.head()
        for task_id in ([self.only_task] if self.only_task else queries.active_task_ids(self.db.conn)):
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
            await _sleep_or(stop, self.settings.poll_interval)

    def _ensure_driver(self, task_id: str) -> None:
        if task_id in self.drivers:
            return
        self.wakeups[task_id] = asyncio.Event()
        log.info("driving task %s", task_id)
        self.drivers[task_id] = asyncio.create_task(self._drive(task_id), name=f"drive-{task_id}")
        self.drivers[task_id].add_done_callback(lambda _t, tid=task_id: self._driver_done(tid))

    def _driver_done(self, task_id: str) -> None:
        task = self.drivers.pop(task_id, None)
        self.wakeups.pop(task_id, None)
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.error("driver of task %s crashed", task_id, exc_info=task.exception())
        else:
            log.info("task %s: %s", task_id, self.engine.task(task_id).status)

    async def _stop_drivers(self) -> None:
        drivers = list(self.drivers.values())
        for driver in drivers:
            driver.cancel()
        await asyncio.gather(*drivers, return_exceptions=True)

    # --- one task: the chunk scheduler and its workers --------------------------------

    async def _drive(self, task_id: str) -> None:
        jobs: dict[int, asyncio.Task] = {}
        try:
            while True:
                try:
                    if not await self._drive_step(task_id, jobs):
                        return
                except Exception:  # a store hiccup must not orphan the task: log, back off, go on
                    log.exception("driving task %s", task_id)
                    await asyncio.sleep(max(self.settings.retry_backoff, self.settings.poll_interval))
        finally:
            await _cancel_all(jobs)

    async def _drive_step(self, task_id: str, jobs: dict[int, asyncio.Task]) -> bool:
        """One round of scheduling; False once the task has stopped."""
        state = self.engine.task(task_id)
        if not state.active:
            await _cancel_all(jobs)  # the stop signal
            self.db.inputs.discard(state.upload_id)
            return False
        submitting = chunks_to_submit(state, self.settings.chunk_window)
        for chunk_no in submitting:
            addresses = self.db.inputs.chunk(state.upload_id, chunk_no, state.chunk_size)
            self.engine.submit_chunk(task_id, chunk_no, addresses, self.provider.name,
                                     getattr(self.provider, "tier", "primary"))
            state = self.engine.task(task_id)
        for chunk_no, addresses in state.in_flight().items():
            if chunk_no not in jobs:
                jobs[chunk_no] = asyncio.create_task(self._work(task_id, chunk_no, addresses))
        if submitting and state.chunks_submitted == state.total_chunks:
            self.db.inputs.discard(state.upload_id)  # every address is in the log now
        wake = self.wakeups[task_id]
        waiter = asyncio.create_task(wake.wait())
        await asyncio.wait([waiter, *jobs.values()], timeout=5.0, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        wake.clear()
        for chunk_no in [n for n, job in jobs.items() if job.done()]:
            job = jobs.pop(chunk_no)
            if not job.cancelled() and job.exception() is not None:
                log.error("worker of %s chunk %s crashed; retrying", task_id, chunk_no,
                          exc_info=job.exception())
                await asyncio.sleep(self.settings.retry_backoff)
        return True

    async def _work(self, task_id: str, chunk_no: int, addresses: list[str]) -> None:
        buffer: list[Result] = []
        last_flush = time.monotonic()

        def flush() -> None:
            nonlocal last_flush
            if buffer:
                batch = buffer[:]
                buffer.clear()
                self.engine.record_results(task_id, chunk_no, batch)
            last_flush = time.monotonic()

        def on_result(answer) -> None:
            buffer.append(to_result(answer))
            if time.monotonic() - last_flush >= self.settings.results_flush_interval:
                try:
                    flush()
                except Exception:  # recorded again at the end of the chunk
                    log.exception("recording results of %s chunk %s", task_id, chunk_no)

        attempt, unreachable_since = 0, None
        while True:
            todo = self.engine.task(task_id).pending.get(chunk_no, {})
            todo = [a for a in addresses if a in todo]
            if not todo:
                return
            try:
                async with self.slots:
                    answers = await self.provider.verify(todo, on_result=on_result)
                buffer[:] = [to_result(a) for a in answers]
                answered = {r.address for r in buffer}
                buffer.extend(Result(a, "unknown", "provider_error", "the provider gave no answer", "")
                              for a in todo if a not in answered)
                flush()
                return
            except asyncio.CancelledError:
                flush()  # the task stopped: these are late results, logged and not charged
                raise
            except ProviderUnavailable as error:
                flush()
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since > self.settings.provider_deadline:
                    self.engine.fail_for_system(task_id, f"provider_unreachable: {error}")
                    return
            except ProviderError as error:
                flush()
                attempt += 1
                if attempt > self.settings.chunk_retries:
                    self.engine.fail_chunk(task_id, chunk_no, f"{type(error).__name__}: {error}"[:500])
                    return
            await asyncio.sleep(min(self.settings.retry_backoff * 2 ** max(attempt - 1, 0), 30.0))


async def _cancel_all(jobs: dict[int, asyncio.Task]) -> None:
    for job in jobs.values():
        job.cancel()
    await asyncio.gather(*jobs.values(), return_exceptions=True)
    jobs.clear()


async def _sleep_or(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        pass


def drive_until_finished(engine: Engine, provider, task_id: str) -> None:
    """Runs the engine in-process for one task (`vec verify`, `vec bulk --wait` with no engine)."""
    asyncio.run(Runtime(engine, provider, only_task=task_id).run())



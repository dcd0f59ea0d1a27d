"""The worker role: three faust agents in one consumer group.

- scheduler  reads `PREFIX.events` (keyed by stream, so one member sees all of a task's
             events, in order): a task's new events may free its chunk window, so its next
             chunks are submitted; each ChunkSubmitted becomes a work item on `PREFIX.chunks`.
- verifier   reads `PREFIX.chunks` (spread over every member: a task's consecutive chunks
             go to consecutive partitions, `chunk_partition`): claims each chunk in
             PostgreSQL as soon as it is read (one worker per chunk; a claim whose heartbeat
             stops is taken over), so a chunk waiting for one of the `VEC_WORKERS` slots has
             a live claim and the watchdog leaves it alone; a chunk this worker already holds
             (dispatched again) is skipped. It runs the shared verification loop and sends
             what it finds to `PREFIX.results`, keyed by task. A stop watcher reads the log
             every `stop_poll_interval`: a cancelled task's chunks are cancelled in every
             worker (what they finished meanwhile is recorded as late).
- settler    reads `PREFIX.results`: the member that owns a task's partition is the only
             writer of that task's results, and appends them in batches. Refunds land on the
             account at any version, so neither the task nor the account is contended.

Engine calls run on one thread of their own (the loop never waits on the database, and the
engine's caches are only ever touched there). Every handler is idempotent: a message seen
twice settles nothing twice (the task decider ignores an address already settled, and
deterministic event ids make a re-emitted fact a duplicate).
"""
from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any, AsyncIterator, Awaitable, Callable, ParamSpec, Sequence, TypeVar, cast

import faust
from faust.types import EventT, StreamT, TopicT

from consumers.metrics import exporter as metrics
from consumers.fleet.messages import Outcome, Topics, chunk_partition, chunk_work, read_chunk_work
from consumers.scheduling import schedule
from consumers.verification import OutageClock, Provider, unsettled, verify_chunk
from consumers.waiting import sleep_or
from engine import tracing  # spans, and their context in Kafka headers (engine/tracing.py)
from consumers.fleet.settings import FleetProcessSettings
from engine.domain.errors import DomainError
from engine.domain.tasks import Result
from engine.service import Engine
from engine.store.base import FleetStore
from events import AddressVerified, ChunkFailed, ChunkSubmitted, ResultUnknown, TaskCreated, from_wire

log = logging.getLogger("vec.worker")

# task events after which the chunk window may have room again
_RESCHEDULE = (TaskCreated, AddressVerified, ResultUnknown, ChunkFailed)

P = ParamSpec("P")
R = TypeVar("R")
Agent = Callable[[StreamT[Any]], Awaitable[None]]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class EngineThread:
    """Runs engine (and store) calls on one thread of their own."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="vec-engine")

    async def __call__(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.get_running_loop().run_in_executor(self.executor,
                                                                tracing.carry(partial(fn, *args, **kwargs)))

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


FETCH_MAX_WAIT_MS = 100


def _quick_fetches() -> None:
    """faust 0.15 builds its consumers with fetch_max_wait_ms=1500 and no setting to change
    it; a broker that holds an empty fetch that long (Tansu does, even when a message arrives
    meanwhile) then adds up to 1.5 s to every hop of a chunk. A fetch of at most 100 ms keeps
    the hops short at the price of more, cheap, empty fetches."""
    import aiokafka

    if getattr(aiokafka.AIOKafkaConsumer, "_vec_quick_fetches", False):
        return
    original = aiokafka.AIOKafkaConsumer

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["fetch_max_wait_ms"] = min(kwargs.get("fetch_max_wait_ms", FETCH_MAX_WAIT_MS), FETCH_MAX_WAIT_MS)
        original.__init__(self, *args, **kwargs)

    # a subclass made with type(): aiokafka has no type hints, and a class statement could not
    # name it as a base under the strict check
    aiokafka.AIOKafkaConsumer = type("QuickFetchConsumer", (original,),
                                     {"_vec_quick_fetches": True, "__init__": __init__})


def build_app(settings: FleetProcessSettings, app_id: str, datadir: str) -> faust.App:
    _quick_fetches()
    return faust.App(
        app_id, broker=f"kafka://{settings.kafka_bootstrap}", store="memory://", web_enabled=False, datadir=datadir,
        topic_partitions=settings.kafka_partitions, topic_allow_declare=False, topic_disable_leader=True,
        consumer_auto_offset_reset="earliest", broker_session_timeout=settings.kafka_session_timeout,
        broker_heartbeat_interval=max(1.0, settings.kafka_session_timeout / 3), broker_max_poll_interval=3600.0,
        producer_acks=-1, stream_wait_empty=False)


class WorkerCore:
    """The worker role's handlers, over any broker: the scheduler, the verifier and the
    settler read messages from `stream`s (async iterables of values; `take_events(n,
    within)` yields batches of events with `.value` and `.headers`), and a subclass says how
    work and outcomes are sent (`dispatch`, `send`). FleetWorker runs them as faust agents on
    Kafka; the simulator (tests/sim/fleet.py) on its simulated topics."""

    def __init__(self, engine: Engine, provider: Provider, settings: FleetProcessSettings, worker_id: str,
                 crash: Callable[[str, BaseException], None], call: EngineThread):
        if engine.db.fleet is None:
            raise ValueError("a fleet worker needs a PostgreSQL store (VEC_STORE=postgresql://...)")
        self.engine, self.provider, self.settings = engine, provider, settings
        self.db = engine.db
        self.fleet: FleetStore = engine.db.fleet
        self.worker_id, self.crash = worker_id, crash
        self.call = call  # the process's one engine thread (the watchdog shares it)
        self.topics = Topics.of(settings)
        self.outage = OutageClock(metrics.CHUNK_METRICS)
        self.slots = asyncio.Semaphore(settings.workers)
        self.working: dict[tuple[str, int], asyncio.Task[None]] = {}
        self.stopped_jobs: set[tuple[str, int]] = set()  # chunks cancelled by the stop signal
        self.ready = False  # in the consumer group, with partitions assigned

    async def dispatch(self, task_id: str, chunk_no: int) -> None:
        """Sends a chunk's work item to `PREFIX.chunks`, at its `chunk_partition`."""
        raise NotImplementedError

    async def send(self, outcome: Outcome) -> None:
        """Sends an outcome to `PREFIX.results`, keyed by task; returns once acknowledged."""
        raise NotImplementedError

    async def stop_jobs(self) -> None:
        """A worker that stops: its verifications cancelled (their claims released)."""
        for task in list(self.working.values()):
            task.cancel()
        await asyncio.gather(*self.working.values(), return_exceptions=True)

    async def leave(self) -> None:
        """A worker that stopped: whatever claim it still holds is given up."""
        await self.call(self.fleet.leave, self.worker_id)

    # --- scheduler --------------------------------------------------------------------

    async def _scheduler(self, stream: StreamT[Any]) -> None:
        async for events in _take_events(stream, 500, 0.05):
            due: dict[str, Any] = {}  # task -> the trace headers of its last event that asks for scheduling
            work: list[tuple[str, int, Any]] = []
            for event in events:
                recorded = from_wire(event.value)
                if not recorded.stream.startswith("task-"):
                    continue
                task_id = recorded.stream.removeprefix("task-")
                if isinstance(recorded.event, ChunkSubmitted):
                    work.append((task_id, recorded.event.chunk_no, event.headers))
                elif isinstance(recorded.event, _RESCHEDULE) and not getattr(recorded.event, "late", False):
                    due[task_id] = event.headers
            for task_id, carrier in due.items():
                with tracing.span("vec.fleet.schedule", task_id, carrier, kind="consumer"):
                    await self._retrying(f"scheduling {task_id}", self.call, self.schedule, task_id)
            for task_id, chunk_no, carrier in work:
                with tracing.span("vec.fleet.dispatch", task_id, carrier, kind="producer", chunk_no=chunk_no):
                    await self._retrying(f"dispatching chunk {chunk_no} of {task_id}", self.dispatch, task_id,
                                         chunk_no)

    def schedule(self, task_id: str) -> None:
        schedule(self.engine, task_id, self.settings.provider, "primary", self.settings.chunk_window)

    # --- verifier ---------------------------------------------------------------------

    async def _verifier(self, stream: StreamT[Any]) -> None:
        """Reads the work items and never waits for a verification: each chunk becomes a job
        at once (its claim is taken right away, then it waits for a slot). A chunk this
        worker already has a job for (the watchdog or the scheduler sent it again) is
        skipped: verifying it twice at once would probe every address twice."""
        async for value in stream:
            task_id, chunk_no = read_chunk_work(value)
            key = (task_id, chunk_no)
            if key in self.working:
                metrics.FLEET_CLAIMS.labels("duplicate").inc()
                log.info("chunk %s of %s: already verified here, ignoring the work item sent again", chunk_no,
                         task_id, extra=metrics.task_ids(None, task_id, chunk_no=chunk_no, worker_id=self.worker_id))
                continue
            # the dispatch's context, in the headers of the event being read (faust's current_event)
            event = stream.current_event if tracing.enabled() else None
            carrier = event.headers if event is not None else None
            self.working[key] = asyncio.create_task(self._job(key, carrier), name=f"vec-chunk-{task_id}-{chunk_no}")

    async def _job(self, key: tuple[str, int], carrier: Any = None) -> None:
        task_id, chunk_no = key
        try:
            sent: set[str] = set()  # delivered by this job: kept across its retries, never probed again
            with tracing.span("vec.fleet.verify_chunk", task_id, carrier, kind="consumer", chunk_no=chunk_no,
                              worker_id=self.worker_id):  # continues the dispatch's span
                await self._retrying(f"verifying chunk {chunk_no} of {task_id}", self._verify, task_id, chunk_no,
                                     sent)
        except asyncio.CancelledError:
            if key not in self.stopped_jobs:
                raise  # the worker itself is stopping
        except Exception as error:  # a bug: the process stops with it, loudly (as an agent's would)
            self.crash(f"verifying chunk {chunk_no} of {task_id}", error)
        finally:
            self.working.pop(key, None)
            self.stopped_jobs.discard(key)

    async def _verify(self, task_id: str, chunk_no: int, sent: set[str] | None = None) -> None:
        """Verifies a chunk this worker could claim; the claim is taken before waiting for one
        of the `VEC_WORKERS` slots (verify_chunk waits for it), so a chunk waiting here is
        seen as held by a live worker. A database outage meanwhile raises (the caller tries
        again); addresses whose results this job delivered (`sent`, kept across those tries)
        or the log settled are not probed again."""
        sent = set() if sent is None else sent
        now = utcnow()
        stale = now - timedelta(seconds=self.settings.claim_ttl)
        if not await asyncio.to_thread(self.fleet.claim, task_id, chunk_no, self.worker_id, now, stale):
            metrics.FLEET_CLAIMS.labels("taken").inc()
            return  # a live worker has it
        metrics.FLEET_CLAIMS.labels("won").inc()
        try:
            state = await self.call(self.engine.task, task_id)
            addresses = state.in_flight().get(chunk_no) if state.active else None
            log.info("chunk %s of %s: claimed, %d addresses to verify", chunk_no, task_id, len(addresses or ()),
                     extra=metrics.task_ids(None, task_id, account_id=state.account_id, chunk_no=chunk_no,
                                            worker_id=self.worker_id))
            if addresses:
                await verify_chunk(self.provider, self.settings, _TopicSink(self, task_id, chunk_no, addresses, sent),
                                   self.outage, self.slots, f"chunk {chunk_no} of {task_id}")
        finally:
            try:
                await asyncio.shield(asyncio.to_thread(self.fleet.release, task_id, chunk_no, self.worker_id))
            except self.db.transient_errors:
                pass  # the claim lapses by itself

    async def _watch_stops(self, stop: asyncio.Event) -> None:
        """The stop signal: a task that stopped (cancel, failure) has its chunks cancelled here."""
        while not stop.is_set():
            busy = sorted({task_id for task_id, _ in self.working})
            if busy:
                try:
                    stopped = await asyncio.to_thread(self.fleet.stopped_tasks, busy)
                except Exception as error:  # noqa: BLE001 - the database is away: try again
                    log.warning("stop watcher: %s", error)
                    stopped = set()
                for (task_id, chunk_no), job in list(self.working.items()):
                    if task_id in stopped:
                        log.info("task %s stopped: cancelling chunk %s", task_id, chunk_no,
                                 extra=metrics.task_ids(None, task_id, chunk_no=chunk_no, worker_id=self.worker_id))
                        self.stopped_jobs.add((task_id, chunk_no))
                        job.cancel()
            await sleep_or(stop, self.settings.stop_poll_interval)

    async def _renew_claims(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.fleet.renew, self.worker_id, utcnow())
            except Exception as error:  # noqa: BLE001 - a late renewal only risks a second verifier
                log.warning("renewing chunk claims: %s", error)
            await sleep_or(stop, self.settings.claim_ttl / 4)

    async def deliver(self, outcome: Outcome) -> None:
        """Sends an outcome to the settler through the results topic. A broker that keeps
        refusing it for longer than the claim TTL (seen after a broker restart: Tansu answered
        every send to one results partition with UnknownError for minutes) does not hold the
        task hostage: the outcome is recorded straight in the log of record, with the
        settler's own command (idempotent: an address settles once, whoever records it first;
        appends retry on version conflicts). What the worker found is never lost nor probed
        again."""
        from aiokafka.errors import KafkaError

        clock = asyncio.get_running_loop().time  # the loop's: virtual in the simulator
        bound_s = self.settings.claim_ttl
        started = clock()
        attempt = 0
        while True:
            left_s = bound_s - (clock() - started)
            try:
                await asyncio.wait_for(self.send(outcome), timeout=max(left_s, 0.1))
                return
            except (KafkaError, TimeoutError) as error:
                attempt += 1
                if clock() - started >= bound_s:
                    log.warning("the results topic refused %s of chunk %s of %s for %.1f s (%d tries, last: %s);"
                                " recording it straight in the log", outcome.kind, outcome.chunk_no, outcome.task_id,
                                clock() - started, attempt, type(error).__name__,
                                extra=metrics.task_ids(None, outcome.task_id, chunk_no=outcome.chunk_no,
                                                       worker_id=self.worker_id))
                    await self._retrying("settling directly", self.call, self._settle_one, outcome)
                    return
                await asyncio.sleep(min(0.1 * 2 ** attempt, 1.0, max(bound_s - (clock() - started), 0)))

    # --- settler ----------------------------------------------------------------------

    async def _settler(self, stream: StreamT[Any]) -> None:
        async for events in _take_events(stream, 2000, 0.05):
            outcomes = [Outcome.from_message(e.value) for e in events]
            carriers = [e.headers for e in events] if tracing.enabled() else None
            await self._retrying("settling", self.call, self.settle, outcomes, carriers)

    def settle(self, outcomes: list[Outcome], carriers: list[Any] | None = None) -> None:
        """Appends what the workers found, in message order, each chunk's results in one go.
        `carriers`: each outcome's message headers (traces: the verifier's span, continued)."""
        merged: list[tuple[Outcome, Any]] = []
        for outcome, carrier in zip(outcomes, carriers or [None] * len(outcomes)):
            last = merged[-1][0] if merged else None
            if (outcome.kind == "results" and last is not None and last.kind == "results"
                    and (last.task_id, last.chunk_no) == (outcome.task_id, outcome.chunk_no)):
                merged[-1] = (Outcome("results", last.task_id, last.chunk_no, last.results + outcome.results),
                              merged[-1][1])
            else:
                merged.append((outcome, carrier))
        for outcome, carrier in merged:
            with tracing.span("vec.fleet.settle", outcome.task_id, carrier, kind="consumer", outcome=outcome.kind,
                              chunk_no=outcome.chunk_no):
                self._settle_one(outcome)

    def _settle_one(self, outcome: Outcome) -> None:
        """Appends one outcome (a chunk's results, or a failure); a refusal is logged."""
        metrics.FLEET_SETTLED.labels(outcome.kind).inc()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("settling %s of chunk %s of %s", outcome.kind, outcome.chunk_no, outcome.task_id,
                      extra=metrics.task_ids(self.engine, outcome.task_id, chunk_no=outcome.chunk_no,
                                             worker_id=self.worker_id))
        try:
            if outcome.kind == "results":
                self.engine.record_results(outcome.task_id, outcome.chunk_no, outcome.results)
            elif outcome.kind == "fail_chunk":
                self.engine.fail_chunk(outcome.task_id, outcome.chunk_no, outcome.error)
            else:
                self.engine.fail_for_system(outcome.task_id, outcome.error)
        except DomainError as error:  # a task deleted meanwhile, say: nothing to settle
            log.warning("outcome for %s chunk %s refused: %s", outcome.task_id, outcome.chunk_no, error,
                        extra=metrics.task_ids(None, outcome.task_id, chunk_no=outcome.chunk_no,
                                               worker_id=self.worker_id))

    # --- plumbing ---------------------------------------------------------------------

    async def _retrying(self, what: str, call: Callable[P, Awaitable[R]], *args: P.args, **kwargs: P.kwargs) -> R:
        """Retries outages of the database or the broker without limit (a settler must not
        drop results); anything else is a bug and propagates."""
        from aiokafka.errors import KafkaError

        attempt = 0
        while True:
            try:
                return await call(*args, **kwargs)
            except (*self.db.transient_errors, KafkaError) as error:
                attempt += 1
                log.warning("%s (try %d): %s", what, attempt, error)
                await asyncio.sleep(min(0.2 * 2 ** attempt, 5.0))


class FleetWorker(WorkerCore):
    """The worker role on Kafka: WorkerCore's handlers as faust agents in one consumer group."""

    def __init__(self, engine: Engine, provider: Provider, settings: FleetProcessSettings, worker_id: str,
                 crash: Callable[[str, BaseException], None], call: EngineThread):
        super().__init__(engine, provider, settings, worker_id, crash, call)
        # faust keeps nothing we need on disk (no tables): its directory is a throw-away one
        self.datadir = tempfile.mkdtemp(prefix="vec-faust-")
        self.app = build_app(settings, f"{settings.kafka_topic_prefix}-fleet", self.datadir)
        # mode's SignalHandlerT (mypy_extensions VarArg/NamedArg) matches no function under mypy 2
        self.app.on_rebalance_complete.connect(self._rebalanced)  # type: ignore[arg-type]
        self.events_topic = self._raw_topic(self.topics.events)
        self.chunks_topic = self._raw_topic(self.topics.chunks)
        self.results_topic = self._raw_topic(self.topics.results)
        self.app.agent(self.events_topic, name="vec-scheduler")(self._supervised(self._scheduler))
        # one reader that never waits for a verification: every chunk it reads is claimed at
        # once and waits for one of the `VEC_WORKERS` slots (self.slots) with a live claim
        self.app.agent(self.chunks_topic, name="vec-verifier")(self._supervised(self._verifier))
        self.app.agent(self.results_topic, name="vec-settler")(self._supervised(self._settler))


    def _raw_topic(self, name: str) -> TopicT:
        return self.app.topic(name, key_serializer="raw", value_serializer="raw",
                              partitions=self.settings.kafka_partitions)

    def _supervised(self, agent: Agent) -> Agent:
        """An agent that fails takes the whole process down with it, loudly (never half-alive)."""
        async def run(stream: StreamT[Any]) -> None:
            try:
                await agent(stream)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.crash(f"agent {agent.__name__.strip('_')}", error)
                raise
        run.__name__ = agent.__name__
        return run

    async def _rebalanced(self, sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        self.ready = True

    # --- lifecycle --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, on_exit: Callable[[], Awaitable[None]] | None = None) -> None:
        await self.app.start()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._watch_stops(stop))
                group.create_task(self._renew_claims(stop))
                await stop.wait()
        finally:
            await self.stop_jobs()
            await self.app.stop()
            await self.leave()
            shutil.rmtree(self.datadir, ignore_errors=True)
            if on_exit is not None:
                await on_exit()

    async def dispatch(self, task_id: str, chunk_no: int) -> None:
        """Sends a chunk's work item to its partition, given explicitly (`chunk_partition`):
        Kafka's default, the hash of the key, split a bulk unevenly between the workers."""
        key, value = chunk_work(task_id, chunk_no)
        partition = chunk_partition(task_id, chunk_no, await self._chunk_partitions())
        await self.chunks_topic.send(key=key, value=value, partition=partition, headers=tracing.headers())

    async def _chunk_partitions(self) -> set[int]:
        """The chunks topic's partitions as the producer's metadata knows them (what its own
        partitioner would use; fetched when the topic is not known yet)."""
        producer = await self.app.maybe_start_producer()
        partitions: set[int] = await producer._ensure_producer().partitions_for(self.topics.chunks)
        return partitions

    async def send(self, outcome: Outcome) -> None:
        key, value = outcome.to_message()
        sent = await self.results_topic.send(key=key, value=value, headers=tracing.headers())  # and back
        await sent  # acknowledged: only then is it done


def _take_events(stream: StreamT[Any], max_: int, within_s: float) -> AsyncIterator[Sequence[EventT[Any]]]:
    """Up to `max_` events at a time (waiting at most `within_s` for more). faust hands its
    agents a faust.Stream, though it types them StreamT (which lacks take_events); the
    simulator (tests/sim/fleet.py) hands its own streams, with the same method."""
    take: Callable[..., AsyncIterator[Sequence[EventT[Any]]]] = cast(faust.Stream[Any], stream).take_events
    return take(max_, within=within_s)


class _TopicSink:
    """A fleet worker's chunk sink: outcomes go to the results topic; what is still pending
    is read from the log, minus what this worker already sent."""

    def __init__(self, worker: WorkerCore, task_id: str, chunk_no: int, addresses: list[str],
                 sent: set[str] | None = None):
        self.worker, self.task_id, self.chunk_no, self.addresses = worker, task_id, chunk_no, addresses
        self.sent: set[str] = set() if sent is None else sent  # the job's: it outlives a retry

    async def pending(self) -> list[str]:
        state = await self.worker.call(self.worker.engine.task, self.task_id)
        if not state.active:
            return []
        return [a for a in unsettled(self.addresses, state.pending.get(self.chunk_no, {})) if a not in self.sent]

    async def record(self, results: list[Result]) -> None:
        await self.worker.deliver(Outcome("results", self.task_id, self.chunk_no, tuple(results)))
        self.sent.update(r.address for r in results)

    async def fail_chunk(self, error: str) -> None:
        await self.worker.deliver(Outcome("fail_chunk", self.task_id, self.chunk_no, error=error))

    async def fail_task(self, reason: str) -> None:
        await self.worker.deliver(Outcome("fail_task", self.task_id, self.chunk_no, error=reason))

"""The worker role: a scheduler and two faust agents (one consumer group, PREFIX-fleet).

- scheduler  reads `PREFIX.events` (keyed by stream, so one member sees all of a task's
             events, in order) with a plain aiokafka consumer in a group of its own,
             PREFIX-fleet-scheduler (EventsReader: the log's every event through a faust
             agent cost half a worker's CPU), looking only at each event's stream and type
             headers: a new task's first window of chunks is submitted (TaskCreated). Whoever
             submits a chunk (this scheduler, a settler, the watchdog) sends its work item to
             `PREFIX.chunks` at once, not after a trip through the relay.
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
             writer of that task's results, and appends them in batches; the room they free
             in the task's window it fills itself (its next chunks submitted at once). Refunds
             land on the account at any version, so neither the task nor the account is
             contended.

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
from consumers.fleet.messages import (Outcome, Topics, chunk_partition, chunk_work, read_chunk_work,
                                      relayed_stream_and_type)
from consumers.scheduling import submit_window
from consumers.verification import OutageClock, Provider, unsettled, verify_chunk
from consumers.waiting import sleep_or
from engine import tracing  # spans, and their context in Kafka headers (engine/tracing.py)
from consumers.fleet.settings import FleetProcessSettings
from engine.domain.errors import DomainError
from engine.relay_settings import KafkaSettings
from engine.domain.tasks import Result
from engine.service import Engine
from engine.store.base import FleetStore
from events import TaskCreated, from_wire

log = logging.getLogger("vec.worker")

_CREATED = TaskCreated.type_name()


def _scheduling_of(event: Any) -> str | None:
    """The task whose first window a relayed event asks the scheduler to submit: that of a
    TaskCreated; None for anything else. Results and failed chunks free room in a window, but
    the settler that appended them schedules the task itself (`WorkerCore.settle`), and a
    submitted chunk's work item was sent by whoever submitted it (`WorkerCore.send_work`):
    not after a trip through the relay and back, and with no decoding of its addresses here.
    Read from the relay's headers (stream, type); a message without them is decoded in full."""
    seen = relayed_stream_and_type(event.headers)
    if seen is None:
        recorded = from_wire(event.value)
        seen = recorded.stream, recorded.type
    stream, type_name = seen
    if not stream.startswith("task-") or type_name != _CREATED:
        return None
    return stream.removeprefix("task-")


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


# A chunk crosses four fetches per turn of its window (events, chunks, results, events): at
# 100 ms a chunk took 0.35 s from submitted to settled (median, bench e2e), at 50 ms 0.24 s;
# an idle worker's empty fetches then cost it ~2.3 % of a core instead of ~1.2 % (25 ms: 3.7 %).
FETCH_MAX_WAIT_MS = 50
SETTLE_WAIT_S = 0.02  # the settler's batch: faust yields it every SETTLE_WAIT_S, full or not


def _quick_fetches() -> None:
    """faust 0.15 builds its consumers with fetch_max_wait_ms=1500 and no setting to change
    it; a broker that holds an empty fetch that long (Tansu does, even when a message arrives
    meanwhile) then adds up to 1.5 s to every hop of a chunk. A fetch of at most
    FETCH_MAX_WAIT_MS keeps the hops short at the price of more, cheap, empty fetches."""
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
            due: dict[str, Any] = {}  # task -> the trace headers of its TaskCreated
            for event in events:
                task_id = _scheduling_of(event)
                if task_id is not None:
                    due[task_id] = event.headers
            for task_id, carrier in due.items():
                with tracing.span("vec.fleet.schedule", task_id, carrier, kind="consumer"):
                    submitted = await self._retrying(f"scheduling {task_id}", self.call, self.schedule, task_id)
                    await self.send_work(submitted)

    def schedule(self, task_id: str) -> list[tuple[str, int]]:
        """Submits what the task's window has room for; returns the chunks it submitted."""
        _, submitted = submit_window(self.engine, task_id, self.settings.provider, "primary",
                                     self.settings.chunk_window)
        return [(task_id, chunk_no) for chunk_no in submitted]

    async def send_work(self, submitted: Sequence[tuple[str, int]], carrier: Any = None) -> None:
        """The work items of the chunks this process just submitted, each in a span under
        `carrier` (else the current span). A process that dies before sending them leaves
        chunks no worker claims: the watchdog sends those again after the claim TTL, as it
        does for a work item lost anywhere else."""
        for task_id, chunk_no in submitted:
            with tracing.span("vec.fleet.dispatch", task_id, carrier, kind="producer", chunk_no=chunk_no):
                await self._retrying(f"dispatching chunk {chunk_no} of {task_id}", self.dispatch, task_id, chunk_no)

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
                    for submitted, carrier in await self._retrying("settling directly", self.call, self.settle,
                                                                   [outcome]):
                        await self.send_work(submitted, carrier)
                    return
                await asyncio.sleep(min(0.1 * 2 ** attempt, 1.0, max(bound_s - (clock() - started), 0)))

    # --- settler ----------------------------------------------------------------------

    async def _settler(self, stream: StreamT[Any]) -> None:
        async for events in _take_events(stream, 2000, SETTLE_WAIT_S):
            outcomes = [Outcome.from_message(e.value) for e in events]
            carriers = [e.headers for e in events] if tracing.enabled() else None
            for submitted, carrier in await self._retrying("settling", self.call, self.settle, outcomes, carriers):
                await self.send_work(submitted, carrier)  # traced under the verification that made room

    def settle(self, outcomes: list[Outcome],
               carriers: list[Any] | None = None) -> list[tuple[list[tuple[str, int]], Any]]:
        """Appends what the workers found, in message order, each chunk's results in one go;
        returns the chunks it submitted after, by task, each with the headers of the task's
        last outcome (their work items are the caller's to send). `carriers`: each outcome's
        message headers (traces: the verifier's span, continued)."""
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
        return self._schedule_after(merged)

    def _schedule_after(self, outcomes: Sequence[tuple[Outcome, Any]]) -> list[tuple[list[tuple[str, int]], Any]]:
        """Results and failed chunks may free room in their task's window: the settler that
        appended them, the task's one writer, submits its next chunks at once. Before, the
        scheduler of whichever worker read the task's events did, after a trip through the
        relay (~0.1 s a chunk), appending to the stream the settler appends to: two writers of
        one task, each decided again after the other's append."""
        freeing = {o.task_id: carrier for o, carrier in outcomes if o.kind in ("results", "fail_chunk")}
        return [(self.schedule(task_id), carrier) for task_id, carrier in freeing.items()
                if self.engine.task(task_id).active]  # (a stopped task: nothing to submit, its inputs left as they were)

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
        self.chunks_topic = self._raw_topic(self.topics.chunks)
        self.results_topic = self._raw_topic(self.topics.results)
        # the scheduler reads the log's every event, so not as a faust agent: faust spends
        # ~60 µs of Python on each message it hands an agent (half a worker's CPU in a bulk),
        # a plain consumer's batch a few (see EventsReader)
        self.events = EventsReader(settings, f"{settings.kafka_topic_prefix}-fleet-scheduler", self._events_assigned,
                                   legacy_group=f"{settings.kafka_topic_prefix}-fleet")
        self._app_ready = False
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
        self._app_ready = True
        self.ready = self.events.assigned

    def _events_assigned(self) -> None:
        self.ready = self._app_ready

    # --- lifecycle --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, on_exit: Callable[[], Awaitable[None]] | None = None) -> None:
        await self.app.start()
        try:
            await self.events.start()
            async with asyncio.TaskGroup() as group:
                group.create_task(self._watch_stops(stop))
                group.create_task(self._renew_claims(stop))
                scheduler = group.create_task(self._scheduling())
                await stop.wait()
                scheduler.cancel()
        finally:
            await self.stop_jobs()
            await self.events.stop()
            await self.app.stop()
            await self.leave()
            shutil.rmtree(self.datadir, ignore_errors=True)
            if on_exit is not None:
                await on_exit()

    async def _scheduling(self) -> None:
        """The scheduler over the EventsReader (supervised as the agents are)."""
        await self._supervised(self._scheduler)(cast(StreamT[Any], self.events))

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


class EventsReader:
    """The scheduler's read of `PREFIX.events`: an aiokafka consumer in a group of its own
    (PREFIX-fleet-scheduler: one member per partition, so a task's events, keyed by stream, go
    to one worker, in order), offering the `take_events` that `_scheduler` reads. A batch is
    what one fetch brought (up to `max_` records, waiting up to `within_s` when there is
    none); its offsets are committed once the scheduler handled it and asked for the next, so
    a worker that dies has its last batch read again by the next owner (at least once: the
    scheduler is idempotent). Records are aiokafka's (`.value`, `.headers`), unwrapped by no
    framework. A partition this group never committed starts where the faust group that read
    the topic before (`legacy_group`, PREFIX-fleet) left it, when it did: an upgraded fleet
    neither reads the topic's whole history again nor skips what came meanwhile; otherwise at
    the earliest offset, as that group did."""

    def __init__(self, settings: KafkaSettings, group_id: str, on_assigned: Callable[[], None],
                 legacy_group: str | None = None):
        self.settings, self.group_id, self.on_assigned = settings, group_id, on_assigned
        self.legacy_group = legacy_group
        self.topic = Topics.of(settings).events
        self.bootstrap = [s.strip() for s in settings.kafka_bootstrap.split(",") if s.strip()]
        self.assigned = False  # once the group gave this member its share (maybe none)
        self.consumer: Any = None
        self._resume_at: dict[Any, int] = {}

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

        reader = self

        class Assigned(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
            async def on_partitions_revoked(self, revoked: Any) -> None:
                pass

            async def on_partitions_assigned(self, assigned: Any) -> None:
                reader._resume(assigned)  # (no await before the seeks: the fetcher would start first)
                reader.assigned = True
                reader.on_assigned()

        session_s = self.settings.kafka_session_timeout
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=self.group_id,
            client_id=self.group_id, enable_auto_commit=False, auto_offset_reset="earliest",
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS, session_timeout_ms=int(session_s * 1000),
            heartbeat_interval_ms=int(max(1.0, session_s / 3) * 1000), max_poll_interval_ms=3_600_000,
            request_timeout_ms=int(max(40.0, session_s + 5) * 1000))
        await self.consumer.start()
        self._resume_at = await self._legacy_offsets()  # (this group's own offsets: asked as it starts)
        self.consumer.subscribe([self.topic], listener=Assigned())

    async def stop(self) -> None:
        if self.consumer is not None:
            consumer, self.consumer = self.consumer, None
            await consumer.stop()

    async def _legacy_offsets(self) -> dict[Any, int]:
        """The legacy group's committed offset of each partition of the topic this group never
        committed (asked before joining: the assignment's listener must not wait, or the fetcher
        starts at the earliest offset meanwhile). Read by a consumer of that group that never
        subscribes (so never joins it). A broker that cannot tell: none (at least once: the
        scheduler is idempotent)."""
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.errors import KafkaError

        if self.legacy_group is None:
            return {}
        legacy = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=self.legacy_group,
                                  enable_auto_commit=False)
        found: dict[Any, int] = {}
        try:
            await legacy.start()
            await self.consumer.topics()  # the cluster's metadata, this topic's partitions with it
            for partition in sorted(self.consumer.partitions_for_topic(self.topic) or ()):
                tp = TopicPartition(self.topic, partition)
                theirs = await legacy.committed(tp)
                if theirs is not None and theirs >= 0 and await self.consumer.committed(tp) is None:
                    found[tp] = theirs
        except KafkaError as error:
            log.warning("scheduler: the offsets of %s are unknown (%s): reading from the earliest",
                        self.legacy_group, error)
        finally:
            await legacy.stop()
        return found

    def _resume(self, assigned: Any) -> None:
        """Seeks the assigned partitions the legacy group left and this one never committed."""
        for tp in assigned:
            offset = self._resume_at.pop(tp, None)
            if offset is not None:
                self.consumer.seek(tp, offset)

    async def take_events(self, max_: int, within: float) -> AsyncIterator[list[Any]]:
        from aiokafka.errors import CommitFailedError, KafkaError

        while True:
            fetched = await self.consumer.getmany(timeout_ms=int(within * 1000), max_records=max_)
            records = [record for part in fetched.values() for record in part]
            if not records:
                continue
            yield records
            try:  # handled: the group may forget them
                await self.consumer.commit()
            except (CommitFailedError, KafkaError) as error:  # a rebalance meanwhile: read again elsewhere
                log.info("scheduler: offsets not committed (%s): the batch may be read again", error)


def _take_events(stream: StreamT[Any], max_: int, within_s: float) -> AsyncIterator[Sequence[EventT[Any]]]:
    """Up to `max_` events at a time (waiting at most `within_s` for more). faust hands its
    agents a faust.Stream, though it types them StreamT (which lacks take_events); the
    scheduler gets an EventsReader, the simulator (tests/sim/fleet.py) its own streams, each
    with the same method."""
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

"""The simulator's fleet mode: the distributed runner's real code (consumers/fleet/: the
worker's scheduler, verifier and settler, its claims and stop watcher, the watchdog's
outage rule, stall bound, sweeps and re-dispatch) over the real engine and the in-memory
store (engine/store/memory.py, with its MemoryFleet for heartbeats and claims), on the
simulator's virtual clock (tests/sim/simulator.py). Only the broker is a fake: `Bus`, an
in-process cluster seeded from the run's seed that keeps Kafka's guarantees and no more.

- Per-partition order is kept; across partitions, deliveries interleave at random.
- At least once: a consumer's offsets are committed now and then, so a worker that crashes,
  or is paused past the session timeout, has what it read since its last commit delivered
  again to the member that gets its partitions. A send may fail before the broker took it
  (retried) or after (retried: a duplicate). The relay republishes what it sent since it
  last saved its position when it crashes.
- Workers are killed (kill -9: nothing of their clean-up runs) at any await point and
  restarted, stopped cleanly, or paused (SIGSTOP) past their claims' TTL, past the session
  timeout or past the outage grace, then woken: what they still hold runs on, after the
  watchdog gave their chunks to another. All workers may be down past the grace; the
  watchdog and the relay crash too.

A process is a set of asyncio tasks sharing a context (`CURRENT`); every I/O it makes (an
engine or store call, a send, a read from the bus, a heartbeat) passes its gate, which
holds while it is paused and forever once it is killed. Engine and store calls run inline
(the real ones run on a thread: here a thread would let the virtual clock run on).

    python -m tests.sim.simulator --mode fleet --seeds 1000
    python -m tests.sim.simulator --mode fleet --seed 1234 -v
"""
from __future__ import annotations

import asyncio
import contextvars
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager
from unittest import mock

from aiokafka.errors import KafkaError

from consumers.fleet.messages import Topics, chunk_partition, chunk_work
from consumers.fleet.roles import Fleet, FleetAdapters, _either
from consumers.fleet.worker import WorkerCore
from events.codec import to_wire
from tests.sim.checks import Violation
from tests.sim.simulator import Sim, SimProvider

CURRENT: contextvars.ContextVar["Proc | None"] = contextvars.ContextVar("vec_sim_process", default=None)


async def gate() -> None:
    """Where a process's I/O waits while it is paused, and forever once it is killed."""
    proc = CURRENT.get()
    while proc is not None and (proc.paused or proc.dead):
        if proc.dead:
            await asyncio.get_running_loop().create_future()  # never: a dead process does nothing more
        await proc.resumed.wait()


async def inline(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """asyncio.to_thread and EngineThread, run inline behind the process's gate."""
    await gate()
    return fn(*args, **kwargs)


def relayed_headers(recorded: Any) -> list[tuple[str, bytes]]:
    """The headers the real relay gives an event (the scheduler reads its stream and type there)."""
    from engine.relay import event_headers

    return event_headers("vec-sim", str(recorded.event_id), recorded.type, recorded.event.schema_version,
                         recorded.stream, recorded.version, recorded.position, recorded.occurred_at)


class InlineCall:
    async def __call__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await inline(fn, *args, **kwargs)

    def close(self) -> None:
        pass


# --- the simulated broker ---------------------------------------------------------------

@dataclass
class Message:
    key: bytes
    value: bytes
    headers: Any = None


@dataclass
class Member:
    """One worker process's consumer in the group."""

    name: str
    last_seen: float
    position: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset to deliver
    processed: dict[tuple[str, int], int] = field(default_factory=dict)  # acked: read, handled
    streams: list["Stream"] = field(default_factory=list)


class Bus:
    """Topics of `partitions` partitions and one consumer group, on the virtual clock."""

    def __init__(self, sim: "FleetSim", topics: Topics, partitions: int, session_s: float):
        self.sim, self.rng, self.clock = sim, sim.rng, sim.clock
        self.names, self.partitions, self.session_s = topics, partitions, session_s
        self.logs: dict[tuple[str, int], list[Message]] = {
            (t, p): [] for t in (topics.events, topics.chunks, topics.results) for p in range(partitions)}
        self.committed: dict[tuple[str, int], int] = dict.fromkeys(self.logs, 0)
        self.owner: dict[tuple[str, int], str] = {}
        self.read_until: dict[tuple[str, int], int] = {}  # how far its owners read each partition
        self.members: dict[str, Member] = {}
        self.changed = asyncio.Event()
        self.faults = {"send failed": 0, "ack lost (duplicate)": 0, "redelivered": 0, "rebalances": 0}

    def partition_of(self, key: bytes) -> int:
        return zlib.crc32(key) % self.partitions

    async def send(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> None:
        """A producer's send, acknowledged on return. It may fail before the broker took the
        message, or after (the ack lost: the caller's retry makes a duplicate)."""
        await asyncio.sleep(self.rng.expovariate(1 / 0.01))
        await gate()
        roll = self.rng.random()
        if roll < 0.02:
            self.faults["send failed"] += 1
            raise KafkaError("simulated: the broker did not take the message")
        self.append(topic, key, value, partition)
        if roll < 0.04:
            self.faults["ack lost (duplicate)"] += 1
            raise KafkaError("simulated: the acknowledgement was lost")

    def append(self, topic: str, key: bytes, value: bytes, partition: int | None = None, headers: Any = None) -> None:
        self.logs[(topic, self.partition_of(key) if partition is None else partition)].append(
            Message(key, value, headers))
        self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    # --- the group ----------------------------------------------------------------------

    def join(self, name: str) -> Member:
        member = self.members[name] = Member(name, self.clock.now)
        self.rebalance()
        return member

    def leave(self, name: str) -> None:
        if self.members.pop(name, None) is not None:
            self.rebalance()

    def evict_silent(self) -> None:
        """Members silent longer than the session timeout lose their partitions."""
        gone = [n for n, m in sorted(self.members.items()) if self.clock.now - m.last_seen > self.session_s]
        for name in gone:
            self.sim.say(f"bus: {name} silent past the session timeout, evicted")
            del self.members[name]
        if gone:
            self.rebalance()

    def rebalance(self) -> None:
        """Spreads every partition over the members; one that changes hands is read again from
        its last committed offset (what the last owner read since is delivered again)."""
        self.faults["rebalances"] += 1
        names = sorted(self.members)
        shift = self.rng.randrange(max(len(names), 1))
        for i, tp in enumerate(sorted(self.logs)):
            new = names[(i + shift) % len(names)] if names else None
            old = self.owner.get(tp)
            if new is None:
                self.owner.pop(tp, None)
            elif new != old:
                self.owner[tp] = new
                member = self.members[new]
                member.position[tp] = member.processed[tp] = self.committed[tp]
                self.faults["redelivered"] += max(self.read_until.get(tp, 0) - self.committed[tp], 0)
                self.read_until[tp] = self.committed[tp]
        self._wake()

    def commit(self, member: Member) -> None:
        """Commits what the member handled, on the partitions it still owns (a member that
        lost a partition cannot commit it: generation fencing)."""
        member.last_seen = self.clock.now
        for tp, offset in member.processed.items():
            if self.owner.get(tp) == member.name and offset > self.committed[tp]:
                self.committed[tp] = offset

    def owned(self, member: Member, topic: str) -> list[tuple[str, int]]:
        return [tp for tp in sorted(self.logs) if tp[0] == topic and self.owner.get(tp) == member.name]


class Stream:
    """What an agent reads: its member's partitions of one topic, in order per partition.
    A message counts as handled (acked) when the agent asks for the next ones."""

    def __init__(self, bus: Bus, member: Member, topic: str):
        self.bus, self.member, self.topic = bus, member, topic
        self.delivered: list[tuple[tuple[str, int], int]] = []
        self.current_event: Message | None = None

    def _ack(self) -> None:
        for tp, offset in self.delivered:
            self.member.processed[tp] = max(self.member.processed.get(tp, 0), offset + 1)
        self.delivered = []

    async def _next(self, most: int) -> list[Message]:
        bus, member = self.bus, self.member
        while True:
            await gate()
            self._ack()
            ready = [tp for tp in bus.owned(member, self.topic) if member.position[tp] < len(bus.logs[tp])]
            if ready:
                return self._take(ready, most)
            await bus.changed.wait()  # a message, or a rebalance (no wait_for: it may swallow a cancel)

    def _take(self, ready: list[tuple[str, int]], most: int) -> list[Message]:
        """Up to `most` messages, partitions interleaved at random, each in its order."""
        bus, member, batch = self.bus, self.member, []
        limit = bus.rng.randint(1, most)
        while ready and len(batch) < limit:
            tp = bus.rng.choice(ready)
            offset = member.position[tp]
            batch.append(bus.logs[tp][offset])
            self.delivered.append((tp, offset))
            member.position[tp] = offset + 1
            bus.read_until[tp] = max(bus.read_until.get(tp, 0), offset + 1)
            if member.position[tp] >= len(bus.logs[tp]):
                ready.remove(tp)
        self.current_event = batch[-1]
        return batch

    async def take_events(self, most: int, within: float):
        while True:
            yield await self._next(most)

    def __aiter__(self):
        return self._values()

    async def _values(self):
        while True:
            for message in await self._next(1):
                yield message.value


# --- the processes ----------------------------------------------------------------------

class Proc:
    """A simulated process: its tasks share a context in which CURRENT is itself."""

    def __init__(self, name: str):
        self.name = name
        self.paused = self.dead = False
        self.resumed = asyncio.Event()
        self.resumed.set()
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task] = []
        self.context = contextvars.copy_context()
        self.context.run(CURRENT.set, self)
        self.fleet: SimFleet | None = None
        self.member: Member | None = None
        self.alive_index: int | None = None  # a watchdog's entry in FleetSim.alive (it runs the sweeps)

    def spawn(self, coro) -> None:
        self.tasks.append(asyncio.get_running_loop().create_task(coro, context=self.context))

    def pause(self) -> None:
        self.paused = True
        self.resumed.clear()

    def wake(self) -> None:
        self.paused = False
        self.resumed.set()

    def kill(self) -> None:
        """kill -9: whatever it was doing stops at its next await; nothing of its clean-up
        reaches the store or the bus (its gate holds forever)."""
        self.dead = True
        self.resumed.set()
        worker = self.fleet.worker if self.fleet is not None else None
        for task in self.tasks + (list(worker.working.values()) if worker is not None else []):
            task.cancel()


def _never_built(*args: object) -> Any:
    """What Fleet.run would build (a provider, leader locks, the relay, MX slots): the
    simulator drives the roles' handlers itself and never calls run."""
    raise AssertionError("the simulator builds what its processes use itself")


class SimFleet(Fleet):
    """The fleet's roles of one process, with the simulated bus in place of Kafka."""

    def __init__(self, sim: "FleetSim", proc: Proc, roles: set[str]):
        # the worker role's provider is given to SimWorker itself (start_worker): Fleet.run,
        # which would build one from this factory, never runs here
        super().__init__(sim.engine(), sim.base_settings, roles, provider_factory=_never_built, features=(),
                         adapters=FleetAdapters(_never_built, _never_built, _never_built))
        self.call.close()
        self.call = InlineCall()
        self.sim, self.proc, self.worker_id = sim, proc, proc.name

    def crash(self, where: str, error: BaseException) -> None:
        """A role that fails stops a real process: in the simulator it is a finding."""
        if not self.proc.dead:
            self.sim.failures.append(f"{self.proc.name}: {where} failed: {type(error).__name__}: {error}")

    def _redispatch(self, task_id: str, chunk_no: int) -> bool:
        bus = self.sim.bus
        if bus.rng.random() < 0.05:
            return False  # the broker refused it: the watchdog tries again on its next pass
        self.sim.say(f"{self.proc.name}: chunk {chunk_no} of {task_id[:8]} dispatched by the watchdog")
        self.sim.story.coverage["chunks re-dispatched by the watchdog"] += 1
        key, value = chunk_work(task_id, chunk_no)
        bus.append(bus.names.chunks, key, value, chunk_partition(task_id, chunk_no, range(bus.partitions)))
        return True


class SimWorker(WorkerCore):
    """The worker role's real handlers, sending to the simulated bus."""

    def __init__(self, fleet: SimFleet, provider):
        super().__init__(fleet.engine, provider, fleet.settings, fleet.worker_id, fleet.crash, fleet.call)
        self.bus = fleet.sim.bus

    async def dispatch(self, task_id: str, chunk_no: int) -> None:
        key, value = chunk_work(task_id, chunk_no)
        await self.bus.send(self.topics.chunks, key, value, chunk_partition(task_id, chunk_no,
                                                                            range(self.bus.partitions)))

    async def send(self, outcome) -> None:
        key, value = outcome.to_message()
        await self.bus.send(self.topics.results, key, value)


# --- one run ----------------------------------------------------------------------------

class FleetSim(Sim):
    def __init__(self, seed: int, workdir, verbose: bool = False):
        super().__init__(seed, workdir, verbose)
        self.url = "memory://"
        self.failures: list[str] = []  # roles that failed by themselves: each a violation
        self.procs: dict[str, Proc] = {}
        self.incarnations = 0
        self.relay_position = 0  # what the relay saved (relay_position in PostgreSQL)

    def settings(self):
        """As the embedded mode's, with the fleet's own: partitions, claim TTL, session timeout.
        Half the runs have no stall bound to speak of (8 h, past the drain's 4 h): the fleet
        must finish every task itself (a chunk lost and never dispatched again is then a
        task still active at the end); the other half keep it as the last resort."""
        rng = self.rng
        self.claim_ttl = rng.choice((2.0, 5.0, 10.0))
        self.session_s = rng.choice((3.0, 10.0, 30.0))
        settings = super().settings()
        stall_s = rng.choice((settings.task_stall_timeout, 8 * 3600.0))
        self.say(f"fleet: grace {self.grace:g}s, claim TTL {self.claim_ttl:g}s, session {self.session_s:g}s, "
                 f"stall bound {stall_s:g}s")
        return settings.model_copy(update=dict(
            store=self.url, kafka_bootstrap="sim:9092", kafka_partitions=rng.choice((1, 2, 3, 4)),
            claim_ttl=self.claim_ttl, worker_ttl=10.0, kafka_session_timeout=self.session_s,
            stop_poll_interval=rng.choice((0.25, 1.0)), task_stall_timeout=stall_s))

    def engine(self):
        from engine.service import Engine

        return Engine(self.db, self.base_settings, self.clock.utc)

    def patches(self) -> list[ContextManager[object]]:
        import consumers.fleet.roles
        import consumers.fleet.worker

        fake_time = mock.Mock(wraps=__import__("time"))
        fake_time.monotonic = self.clock.monotonic
        return [*super().patches(), mock.patch.object(asyncio, "to_thread", inline),
                mock.patch.object(consumers.fleet.roles, "time", fake_time),
                mock.patch.object(consumers.fleet.roles, "utcnow", self.clock.utc),
                mock.patch.object(consumers.fleet.worker, "utcnow", self.clock.utc)]

    def check(self) -> None:
        if self.failures:
            raise Violation("a role failed by itself: " + "; ".join(self.failures[:3]))
        from events import SystemFailure

        self.db.catch_up()
        self.check_on(self.db)
        for recorded in self.db.events.read_all():
            if isinstance(recorded.event, SystemFailure):
                self.story.coverage[f"tasks failed: {re.match(r'[a-z_]*', recorded.event.reason).group()}"] += 1

    def run(self):
        from engine.store import open_database
        from engine.store.memory import MemoryFleet

        self.db = open_database(self.url)
        self.db.fleet = MemoryFleet(self.db.events.log)
        try:
            return super().run()
        finally:
            self.db.close()

    # --- processes ------------------------------------------------------------------------

    def spawn(self, role: str, slot: str) -> Proc:
        self.incarnations += 1
        proc = self.procs[slot] = Proc(f"{slot}.{self.incarnations}")
        if role == "relay":
            proc.spawn(self.relay(proc))
        elif role == "watchdog":
            fleet = proc.fleet = SimFleet(self, proc, {"watchdog"})
            proc.alive_index = len(self.alive)
            self.alive.append((self.clock.now, self.clock.now))
            proc.spawn(fleet._heartbeat(proc.stop))
            proc.spawn(fleet._watchdog(_either(proc.stop)))
        else:
            self.start_worker(proc)
        self.say(f"start {proc.name}")
        return proc

    def start_worker(self, proc: Proc) -> None:
        fleet = proc.fleet = SimFleet(self, proc, {"worker"})
        worker = fleet.worker = SimWorker(fleet, SimProvider(self.rng, self.clock))
        member = proc.member = self.bus.join(proc.name)
        worker.ready = True
        topics = self.bus.names
        for agent, topic in ((worker._scheduler, topics.events), (worker._verifier, topics.chunks),
                             (worker._settler, topics.results)):
            stream = Stream(self.bus, member, topic)
            member.streams.append(stream)
            proc.spawn(self.supervised(proc, agent.__name__, agent(stream)))
        proc.spawn(self.supervised(proc, "heartbeat", fleet._heartbeat(proc.stop)))
        proc.spawn(self.supervised(proc, "stop watcher", worker._watch_stops(proc.stop)))
        proc.spawn(self.supervised(proc, "claims", worker._renew_claims(proc.stop)))
        proc.spawn(self.consumer_loop(proc, member))

    async def supervised(self, proc: Proc, name: str, loop) -> None:
        try:
            await loop
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - a real process would exit: a finding
            if not proc.dead:
                self.failures.append(f"{proc.name}: {name} failed: {type(error).__name__}: {error}")

    async def consumer_loop(self, proc: Proc, member: Member) -> None:
        """The consumer's background work: beats to the group, commits now and then."""
        commit_every_s = self.rng.choice((0.5, 2.0, 5.0))
        next_commit = self.clock.now + commit_every_s
        while not proc.stop.is_set():
            await gate()
            member.last_seen = self.clock.now
            if member.name not in self.bus.members:  # evicted while it was away: it joins again
                self.say(f"{proc.name} rejoins the group")
                self.bus.members[member.name] = member
                self.bus.rebalance()
            if self.clock.now >= next_commit:
                self.bus.commit(member)
                next_commit = self.clock.now + commit_every_s
            await asyncio.sleep(1.0)

    async def relay(self, proc: Proc) -> None:
        """The log -> the events topic, keyed by stream; the position is saved after each
        batch, so a relay killed in between publishes the batch again."""
        while not proc.stop.is_set():
            await gate()
            position = self.relay_position
            batch = list(self.db.events.read_all(position, until_position=position + self.rng.randint(1, 50)))
            for recorded in batch:
                await asyncio.sleep(self.rng.expovariate(1 / 0.005))
                await gate()
                self.bus.append(self.bus.names.events, recorded.stream.encode(), to_wire(recorded),
                                headers=relayed_headers(recorded))
            if batch:
                await gate()
                self.relay_position = batch[-1].position
            else:
                await asyncio.sleep(self.base_settings.poll_interval)

    def kill(self, slot: str) -> None:
        proc = self.procs[slot]
        if proc.dead:
            return
        proc.kill()
        self.ran_until_now_of(proc)
        self.story.crashes += 1
        self.say(f"kill -9 {proc.name}")

    def ran_until_now_of(self, proc: Proc) -> None:
        if proc.alive_index is not None:
            self.alive[proc.alive_index] = (self.alive[proc.alive_index][0], self.clock.now)

    async def stop_cleanly(self, slot: str) -> None:
        proc = self.procs[slot]
        if proc.dead:
            return
        proc.wake()
        proc.stop.set()
        worker = proc.fleet.worker if proc.fleet is not None else None
        for task in proc.tasks:
            task.cancel()
        await asyncio.gather(*proc.tasks, return_exceptions=True)
        if worker is not None:
            await worker.stop_jobs()
            self.bus.commit(proc.member)
            self.bus.leave(proc.name)
            await worker.leave()
        self.ran_until_now_of(proc)
        proc.dead = True
        self.say(f"clean stop of {proc.name}")

    # --- the life of the fleet ------------------------------------------------------------

    async def life(self) -> None:
        from tests.sim.customers import Customers

        rng = self.rng
        self.bus = Bus(self, Topics.of(self.base_settings), self.base_settings.kafka_partitions, self.session_s)
        self.workers = [f"worker{i}" for i in range(rng.randint(1, 3))]
        customers = self.customers = Customers(self)
        for _ in range(rng.randint(1, 3)):
            customers.open_account()
        for _ in range(rng.randint(1, 3)):
            customers.new_bulk()
        self.spawn("relay", "relay")
        self.spawn("watchdog", "watchdog")
        for slot in self.workers:
            self.spawn("worker", slot)
        evictions = asyncio.get_running_loop().create_task(self.evictions())
        for _ in range(rng.randint(6, 20)):
            await asyncio.sleep(rng.expovariate(1 / 6))
            self.fault_or_customer()
        await self.drain()
        evictions.cancel()
        await self.last_night()
        for name, n in self.bus.faults.items():
            self.story.coverage[f"bus: {name}"] += n

    async def evictions(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.bus.evict_silent()

    FAULTS = {"customer": 5, "kill worker": 1.0, "pause worker": 2.5, "stop worker": 0.5, "kill watchdog": 0.5,
              "kill relay": 0.5, "workers down past the grace": 0.3}

    def fault_or_customer(self) -> None:
        rng = self.rng
        what = rng.choices(list(self.FAULTS), list(self.FAULTS.values()))[0]
        slot = rng.choice(self.workers)
        if what == "customer":
            self.customers.poke()
        elif what == "kill worker":
            self.kill(slot)
            self.later(rng.choice((0.5, 5.0, self.claim_ttl * 2)), "worker", slot)
        elif what == "pause worker":
            asyncio.get_running_loop().create_task(self.pause_a_busy_worker())
        elif what == "stop worker":
            asyncio.get_running_loop().create_task(self.restart_cleanly(slot))
        elif what in ("kill watchdog", "kill relay"):
            role = what.split()[1]
            self.kill(role)
            self.later(rng.choice((0.5, 5.0, 60.0)), role, role)
        else:
            down_s = self.grace + rng.choice((5.0, 60.0))
            for each in self.workers:
                self.kill(each)
                self.later(down_s, "worker", each)
            self.story.restarts_past_grace += 1
            self.say(f"every worker down for {down_s:g}s (grace {self.grace:g}s)")

    def later(self, delay_s: float, role: str, slot: str) -> None:
        async def restart() -> None:
            await asyncio.sleep(delay_s)
            if self.procs[slot].dead:
                self.spawn(role, slot)
        asyncio.get_running_loop().create_task(restart())

    async def pause_a_busy_worker(self) -> None:
        """Pauses a worker while it verifies (within a minute), else any."""
        for _ in range(120):
            busy = [w for w in self.workers if not self.procs[w].dead and self.procs[w].fleet.worker.working]
            if busy:
                return self.pause(self.rng.choice(busy))
            await asyncio.sleep(0.5)
        self.pause(self.rng.choice(self.workers))

    def pause(self, slot: str) -> None:
        """SIGSTOP, then SIGCONT: past the claims' TTL (another worker takes its chunks over),
        past the session timeout, or past the outage grace."""
        proc = self.procs[slot]
        if proc.dead or proc.paused:
            return
        # its chunks go to another once their claims lapse and, the watchdog's work items
        # landing on its own partitions, once the group evicted it: past both, often
        both_s = self.session_s + 3 * self.claim_ttl + 5
        pause_s = self.rng.choice((self.claim_ttl * 1.5, self.session_s + 2, both_s, both_s * 2, self.grace + 5))
        proc.pause()
        self.story.coverage["workers paused past their claims"] += pause_s > self.claim_ttl
        self.say(f"SIGSTOP {proc.name} for {pause_s:g}s")

        async def wake() -> None:
            await asyncio.sleep(pause_s)
            if not proc.dead:
                proc.wake()
                taken = self.taken_over(proc)
                self.story.coverage["paused workers woken after their claim was taken over"] += bool(taken)
                self.say(f"SIGCONT {proc.name}" + (f" (its chunks {taken} were taken over)" if taken else ""))
        asyncio.get_running_loop().create_task(wake())

    def taken_over(self, proc: Proc) -> list[str]:
        """The chunks a worker is still verifying that another worker claimed meanwhile, or
        even settled (what it sends now is a duplicate)."""
        worker = proc.fleet.worker if proc.fleet is not None else None
        claims, engine = self.db.fleet._claims, self.customers.engine  # MemoryFleet's: who holds which chunk
        return [f"{task_id[:8]}/{chunk_no}" for task_id, chunk_no in (worker.working if worker else {})
                if ((held := claims.get((task_id, chunk_no))) is not None and held.worker_id != proc.name)
                or (held is None and chunk_no not in engine.task(task_id).pending)]

    async def restart_cleanly(self, slot: str) -> None:
        await self.stop_cleanly(slot)
        await asyncio.sleep(self.rng.choice((0.5, 5.0)))
        if self.procs[slot].dead:
            self.spawn("worker", slot)

    async def drain(self) -> None:
        """Every role up and awake until every task has finished (the stall bound
        guarantees it)."""
        await asyncio.sleep(self.grace + 70)  # the restarts and wake-ups due meanwhile happen
        for slot, proc in list(self.procs.items()):
            if proc.dead:
                self.spawn("relay" if slot == "relay" else "watchdog" if slot == "watchdog" else "worker", slot)
            else:
                proc.wake()
        customers, limit = self.customers, self.clock.now + 4 * 3600
        while any(customers.engine.task(t).active for t in customers.tasks):
            if self.failures:
                raise Violation("a role failed by itself: " + "; ".join(self.failures[:3]))
            if self.clock.now > limit:
                raise Violation("tasks still active four virtual hours after the last restart")
            await asyncio.sleep(5)
        for slot in sorted(self.procs):
            await self.stop_cleanly(slot)

    async def sweeps(self) -> None:
        """The watchdog runs two sweeps."""
        from engine.policies import SWEEP_INTERVAL_S

        self.spawn("watchdog", "watchdog")
        await asyncio.sleep(2 * SWEEP_INTERVAL_S + 5)
        await self.stop_cleanly("watchdog")

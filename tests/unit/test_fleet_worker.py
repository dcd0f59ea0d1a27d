"""The fleet worker's dispatch and verifier agent with fakes (no broker, no PostgreSQL):
which partition a chunk's work item goes to (dispatch and the watchdog's re-dispatch), a
work item for a chunk this worker already verifies, and the claim taken before the chunk
waits for a `VEC_WORKERS` slot. The same end to end: tests/e2e/test_fleet.py."""
from __future__ import annotations

import asyncio
import zlib
from collections import Counter
from types import SimpleNamespace

import pytest

from consumers.fleet.messages import Topics, chunk_partition, chunk_work, read_chunk_work
from consumers.fleet.roles import Fleet
from consumers.fleet.worker import FleetWorker
from consumers.verification import OutageClock
from entrypoints.settings import EngineSettings
from engine.domain.tasks import Result

pytestmark = pytest.mark.timeout(30)

TASKS = ["tsk_01J9Z8X7W6V5T4S3R2Q1P0N9M8", "8d4f1c2e-6b7a-4e3f-9a1b-2c3d4e5f6a7b", "t", "acme-spring-list"]


# --- the partition of a chunk ---------------------------------------------------------

@pytest.mark.parametrize("task_id", TASKS)
def test_consecutive_chunks_of_a_task_spread_evenly_over_the_partitions(task_id):
    shares = Counter(chunk_partition(task_id, n, range(8)) for n in range(50))
    assert sorted(shares) == list(range(8))
    assert set(shares.values()) <= {6, 7}  # 50 = 6 x 8 + 2
    # two workers owning 4 partitions each, however the group assigned them: 25/25 or 26/24
    for mine in ({0, 2, 4, 6}, {0, 1, 2, 3}, {1, 2, 5, 6}):
        first = sum(count for partition, count in shares.items() if partition in mine)
        assert abs(first - (50 - first)) <= 2, (mine, first)
    # any 8 consecutive chunks (a window of 8 in flight) are on 8 different partitions
    assert all(len({chunk_partition(task_id, n + k, range(8)) for k in range(8)}) == 8 for n in range(42))


def test_the_partition_is_the_same_in_every_process_and_follows_the_topics_partitions():
    # crc32 of the task id, not Python's hash() (which differs per process)
    assert chunk_partition("t", 0, range(8)) == zlib.crc32(b"t") % 8
    assert chunk_partition("t", 5, range(8)) == (zlib.crc32(b"t") + 5) % 8
    # the topic's partition ids as the broker has them (a topic created with another count)
    assert {chunk_partition(t, n, {3, 1, 0, 2}) for t in TASKS for n in range(4)} <= {0, 1, 2, 3}
    assert chunk_partition("t", 3, [7]) == 7
    with pytest.raises(ValueError):
        chunk_partition("t", 0, set())


class FakeTopic:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    async def send(self, **kwargs):
        self.sent.append(kwargs)


def test_dispatch_gives_the_producer_the_partition_explicitly():
    topic = FakeTopic()

    async def partitions():
        return {0, 1, 2, 3, 4, 5, 6, 7}
    worker = SimpleNamespace(chunks_topic=topic, _chunk_partitions=partitions)
    task_id = TASKS[0]

    async def main():
        for n in range(50):
            await FleetWorker.dispatch(worker, task_id, n)
    asyncio.run(main())
    assert [s.get("partition") for s in topic.sent] == [chunk_partition(task_id, n, range(8)) for n in range(50)]
    assert [read_chunk_work(s["value"]) for s in topic.sent] == [(task_id, n) for n in range(50)]
    per_worker = Counter(s["partition"] % 2 for s in topic.sent)  # partitions {0,2,4,6} / {1,3,5,7}
    assert per_worker[0] == per_worker[1] == 25


class FakeKafkaProducer:
    def __init__(self, partitions: set[int]) -> None:
        self.partitions, self.sent = partitions, []

    def partitions_for(self, topic):
        return self.partitions

    def send(self, topic, key=None, value=None, partition=None, headers=None):
        self.sent.append((topic, key, value, partition))
        self.headers = getattr(self, "headers", []) + [headers]
        return SimpleNamespace(get=lambda timeout=None: None)


def test_the_watchdog_dispatches_a_chunk_again_to_the_same_partition():
    settings = EngineSettings(_env_file=None, kafka_bootstrap="127.0.0.1:1", kafka_topic_prefix="p")
    producer = FakeKafkaProducer(set(range(8)))
    watchdog = SimpleNamespace(settings=settings, _producer=producer)
    task_id = TASKS[1]
    for n in (0, 1, 7, 13):
        Fleet._redispatch(watchdog, task_id, n)
    assert [(topic, partition) for topic, _, _, partition in producer.sent] == \
        [(Topics.of(settings).chunks, chunk_partition(task_id, n, range(8))) for n in (0, 1, 7, 13)]
    assert [(key, value) for _, key, value, _ in producer.sent] == [chunk_work(task_id, n) for n in (0, 1, 7, 13)]
    assert producer.headers == [[]] * 4  # a trace's context when tracing is on (none here)


class FailingKafkaProducer(FakeKafkaProducer):
    """A producer the broker no longer knows (it restarted with memory storage): every send
    fails, as kafka-python's idempotent producer does after UnknownProducerIdError."""

    closed = False

    def send(self, topic, key=None, value=None, partition=None, headers=None):
        from kafka.errors import UnknownError

        def get(timeout=None):
            raise UnknownError()
        return SimpleNamespace(get=get)

    def close(self, timeout=None):
        self.closed = True


def test_a_broker_that_fails_the_redispatch_does_not_stop_the_watchdog():
    """Before: the KafkaError escaped _watch_once, the watchdog's TaskGroup failed and the
    whole control process (relay, projector, watchdog) stopped after a broker restart."""
    settings = EngineSettings(_env_file=None, kafka_bootstrap="127.0.0.1:1", kafka_topic_prefix="p")
    broken = FailingKafkaProducer(set(range(8)))
    watchdog = SimpleNamespace(settings=settings, _producer=broken)
    assert Fleet._redispatch(watchdog, TASKS[0], 3) is False
    assert broken.closed and watchdog._producer is None  # the next pass makes a new producer
    # no broker at all (nothing listens on 127.0.0.1:1): the same, no exception
    assert Fleet._redispatch(watchdog, TASKS[0], 3) is False and watchdog._producer is None
    # and once the broker answers again, the chunk goes out
    watchdog._producer = FakeKafkaProducer(set(range(8)))
    assert Fleet._redispatch(watchdog, TASKS[0], 3) is True
    assert [p for *_, p in watchdog._producer.sent] == [chunk_partition(TASKS[0], 3, range(8))]


# --- the verifier agent -----------------------------------------------------------------

class FakeFleet:
    def __init__(self) -> None:
        self.claims: list[tuple[str, int, str]] = []
        self.released: list[tuple[str, int, str]] = []

    def claim(self, task_id, chunk_no, worker_id, now, stale_before) -> bool:
        self.claims.append((task_id, chunk_no, worker_id))
        return True

    def release(self, task_id, chunk_no, worker_id) -> None:
        self.released.append((task_id, chunk_no, worker_id))


class FakeProvider:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def verify(self, addresses, on_result=None):
        self.calls.append(list(addresses))
        await asyncio.sleep(0.05)
        return [Result(a, "safe", "", "", "smtp", "250 ok", "mx.test", ()) for a in addresses]


def fake_worker(chunks: dict[int, list[str]], slots: int) -> FleetWorker:
    """A FleetWorker without faust, PostgreSQL or a broker: what `_verifier` and `_verify`
    touch, faked."""
    worker = object.__new__(FleetWorker)
    state = SimpleNamespace(active=True, account_id="acme",
                            pending={n: dict.fromkeys(a) for n, a in chunks.items()})
    state.in_flight = lambda: {n: list(p) for n, p in state.pending.items()}
    worker.engine = SimpleNamespace(task=lambda task_id: state)
    worker.settings = EngineSettings(_env_file=None, results_flush_interval=0.05, claim_ttl=3)
    worker.fleet = FakeFleet()
    worker.db = SimpleNamespace(transient_errors=(ConnectionError,))
    worker.provider = FakeProvider()
    worker.worker_id = "w1"
    worker.crashes = []
    worker.crash = lambda where, error: worker.crashes.append((where, error))

    async def call(fn, *args):
        return fn(*args)
    worker.call = call
    worker.outage = OutageClock()
    worker.slots = asyncio.Semaphore(slots)
    worker.working, worker.stopped_jobs = {}, set()
    worker.sent = []

    def settle(outcome):  # the settler, a moment later (another hop through the broker)
        for r in outcome.results:
            state.pending.get(outcome.chunk_no, {}).pop(r.address, None)
        if not state.pending.get(outcome.chunk_no, True):
            del state.pending[outcome.chunk_no]

    async def send(outcome):
        worker.sent.append(outcome)
        asyncio.get_running_loop().call_later(0.3, settle, outcome)
    worker.send = send
    return worker


async def items(*values: bytes, then: asyncio.Event | None = None):
    for value in values:
        yield value
    if then is not None:
        await then.wait()


def test_a_chunk_sent_again_while_this_worker_verifies_it_is_not_verified_twice():
    chunks = {0: ["a@x.test", "b@x.test"], 1: ["c@x.test"]}
    worker = fake_worker(chunks, slots=1)

    async def main():
        _, work0 = chunk_work("t", 0)
        _, work1 = chunk_work("t", 1)
        # chunk 0 twice in a row (dispatched again by the watchdog), chunk 1, chunk 0 again
        await FleetWorker._verifier(worker, items(work0, work0, work1, work0))
        await asyncio.gather(*worker.working.values())
    asyncio.run(main())
    assert sorted(a for call in worker.provider.calls for a in call) == ["a@x.test", "b@x.test", "c@x.test"]
    assert sorted(c[:2] for c in worker.fleet.claims) == [("t", 0), ("t", 1)]
    assert worker.working == {} and not worker.crashes


def test_every_chunk_read_is_claimed_at_once_and_waits_for_a_slot_with_its_claim():
    """VEC_WORKERS 1, four chunks read: all four are claimed before the first is verified
    (a waiting chunk has a live claim: the watchdog leaves it alone); one is verified at
    a time."""
    chunks = {n: [f"u{n}-{i}@x.test" for i in range(3)] for n in range(4)}
    worker = fake_worker(chunks, slots=1)
    in_verify = {"now": 0, "max": 0}
    original = worker.provider.verify

    async def verify(addresses, on_result=None):
        in_verify["now"] += 1
        in_verify["max"] = max(in_verify["max"], in_verify["now"])
        try:
            return await original(addresses, on_result)
        finally:
            in_verify["now"] -= 1
    worker.provider.verify = verify

    async def main():
        done = asyncio.Event()
        reading = asyncio.create_task(FleetWorker._verifier(worker, items(*(chunk_work("t", n)[1] for n in range(4)),
                                                                         then=done)))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if len(worker.fleet.claims) == 4:
                break
        claimed_while_verified = len(worker.provider.calls)
        while worker.working:
            await asyncio.gather(*worker.working.values())
        done.set()
        await reading
        return claimed_while_verified
    claimed_while_verified = asyncio.run(main())
    assert sorted(c[1] for c in worker.fleet.claims) == [0, 1, 2, 3]
    assert claimed_while_verified <= 1  # all four claimed while the first (at most) was being verified
    assert in_verify["max"] == 1  # VEC_WORKERS still bounds the verifications
    assert sorted(a for call in worker.provider.calls for a in call) == sorted(a for c in chunks.values() for a in c)
    assert sorted(r[1] for r in worker.fleet.released) == [0, 1, 2, 3]


# --- a broker that refuses the results ----------------------------------------------------

def refusing_worker(chunks: dict[int, list[str]], refusals: int | None) -> tuple[FleetWorker, dict]:
    """fake_worker whose results topic refuses the first `refusals` sends (None: every one)
    with the broker's UnknownError, as Tansu did for minutes after a broker restart; what is
    recorded straight in the log (the engine's record_results) is counted apart."""
    from aiokafka.errors import UnknownError

    worker = fake_worker(chunks, slots=2)
    worker.settings = EngineSettings(_env_file=None, results_flush_interval=0.05, claim_ttl=1)
    state = worker.engine.task("t")
    seen = {"refused": 0, "direct": [], "scheduled": [], "dispatched": []}
    through_topic = worker.send

    async def send(outcome):
        if refusals is None or seen["refused"] < refusals:
            seen["refused"] += 1
            raise UnknownError()
        await through_topic(outcome)

    def record_results(task_id, chunk_no, results):
        seen["direct"].extend(r.address for r in results)
        for r in results:
            state.pending.get(chunk_no, {}).pop(r.address, None)
        if not state.pending.get(chunk_no, True):
            del state.pending[chunk_no]
    def schedule(task_id):  # what settling asks next: the task's next chunks (chunk 9, say)
        seen["scheduled"].append(task_id)
        return [(task_id, 9)]

    async def dispatch(task_id, chunk_no):
        seen["dispatched"].append((task_id, chunk_no))
    worker.send = send
    worker.engine.record_results = record_results
    worker.schedule, worker.dispatch = schedule, dispatch
    return worker, seen


def run_chunks(worker: FleetWorker, chunk_nos: list[int], deadline_s: float = 20.0) -> bool:
    """Reads the chunks' work items and waits (up to a generous deadline) until the log has
    every result; True when it did."""
    state = worker.engine.task("t")

    async def main() -> bool:
        await FleetWorker._verifier(worker, items(*(chunk_work("t", n)[1] for n in chunk_nos)))
        loop = asyncio.get_running_loop()
        give_up = loop.time() + deadline_s
        while state.pending and loop.time() < give_up:
            await asyncio.sleep(0.05)
        settled = not state.pending
        for job in worker.working.values():
            job.cancel()
        await asyncio.gather(*worker.working.values(), return_exceptions=True)
        return settled
    return asyncio.run(main())


def test_results_the_broker_keeps_refusing_are_recorded_straight_in_the_log_and_never_probed_again():
    """The fault campaign's one violation (a worker killed after a pause, following a broker
    restart): the restarted worker's every send to the results topic failed for over 90 s.
    Before: each failure re-ran the chunk (claim, probe every address again, send again) and
    the task got no event at all. Now: past the claim TTL, the results are recorded in the
    log of record with the settler's own command."""
    chunks = {0: ["a@x.test", "b@x.test"], 1: ["c@x.test"]}
    worker, seen = refusing_worker(chunks, refusals=None)
    assert run_chunks(worker, [0, 1]), "the results never reached the log"
    assert seen["refused"] >= 2  # the broker did refuse them (the path under test was taken)
    assert sorted(seen["direct"]) == ["a@x.test", "b@x.test", "c@x.test"]
    assert set(seen["scheduled"]) == {"t"}  # and the task's window moves on, as after the settler
    assert set(seen["dispatched"]) == {("t", 9)}  # the chunks it submitted get their work items
    assert worker.sent == []  # nothing went through the topic
    probed = [a for call in worker.provider.calls for a in call]
    assert sorted(probed) == ["a@x.test", "b@x.test", "c@x.test"]  # each address probed once
    assert not worker.crashes


def test_results_refused_for_a_moment_are_sent_again_not_probed_again():
    """A broker restart: the first sends fail, then the broker takes them. Before: each
    failed send re-ran the chunk and probed its unsent addresses again (duplicate RCPTs at
    the mail server); now the same results are sent again."""
    chunks = {0: ["a@x.test", "b@x.test", "c@x.test"]}
    worker, seen = refusing_worker(chunks, refusals=2)
    assert run_chunks(worker, [0]), "the results never reached the log"
    assert seen["refused"] == 2  # refused twice, then taken
    assert seen["direct"] == []  # within the claim TTL: through the topic, as usual
    assert sorted(a for o in worker.sent for a in (r.address for r in o.results)) == ["a@x.test", "b@x.test",
                                                                                       "c@x.test"]
    assert sorted(a for call in worker.provider.calls for a in call) == ["a@x.test", "b@x.test", "c@x.test"]
    assert not worker.crashes


# --- whoever submits a chunk sends its work item ------------------------------------------

class Batches:
    """A stream as the settler and the scheduler read it: `take_events` yields the batches."""

    def __init__(self, *batches):
        self.batches = batches

    async def take_events(self, max_, within):
        for batch in self.batches:
            yield batch


def submitting_worker() -> tuple[FleetWorker, list]:
    """fake_worker whose settling and scheduling submit chunks 4 and 5 of task t."""
    worker = fake_worker({}, slots=1)
    dispatched: list[tuple[str, int]] = []

    async def dispatch(task_id, chunk_no):
        dispatched.append((task_id, chunk_no))
    worker.dispatch = dispatch
    worker.settle = lambda outcomes, carriers=None: [([("t", 4), ("t", 5)], None)]
    worker.schedule = lambda task_id: [(task_id, 4), (task_id, 5)]
    return worker, dispatched


def test_the_settler_sends_the_work_items_of_the_chunks_its_settling_submitted():
    """Not after a trip through the relay and the scheduler (~0.1 s a chunk): at once."""
    from consumers.fleet.messages import Outcome

    worker, dispatched = submitting_worker()
    results = Outcome("results", "t", 0, (Result("a@x.test", "safe", "", "", "smtp"),))
    message = SimpleNamespace(value=results.to_message()[1], headers=None)
    asyncio.run(FleetWorker._settler(worker, Batches([message])))
    assert dispatched == [("t", 4), ("t", 5)]


def test_the_scheduler_submits_a_new_tasks_first_window_and_sends_its_work_items():
    from events import ChunkSubmitted, TaskCreated

    worker, dispatched = submitting_worker()
    created = _relayed(TaskCreated("acme", "bulk", 3, "file:a.csv", "ab" * 32, 2), "task-t")
    submitted = _relayed(ChunkSubmitted(7, ("a@x.org",), "smtp", "primary"), "task-t", version=2)
    asyncio.run(FleetWorker._scheduler(worker, Batches([created, submitted])))
    assert dispatched == [("t", 4), ("t", 5)]  # its window; the relayed ChunkSubmitted sends nothing


# --- what the scheduler reads of a relayed event -----------------------------------------

def _relayed(event, stream: str, version: int = 1, headers: bool = True):
    """A relayed event's message as the scheduler gets it: the relay's value and headers."""
    import uuid
    from datetime import datetime, timezone

    from engine.relay import event_headers
    from events import RecordedEvent
    from events.codec import to_wire

    at = datetime(2026, 12, 1, tzinfo=timezone.utc)
    recorded = RecordedEvent(7, stream, version, uuid.uuid4(), at, event, "corr", None, "engine")
    wire = event_headers("vec-test", str(recorded.event_id), recorded.type, event.schema_version, stream, version,
                         7, at) if headers else None
    return SimpleNamespace(value=to_wire(recorded), headers=wire)


@pytest.mark.parametrize("headers", [True, False], ids=["from the headers", "decoded (no headers)"])
def test_the_scheduler_learns_what_an_event_asks_from_its_stream_and_type(headers):
    from consumers.fleet.worker import _scheduling_of
    from events import (AccountOpened, AddressVerified, ChunkFailed, ChunkSubmitted, ResultUnknown, TaskCompleted,
                        TaskCreated)

    def asks(event, stream="task-t1"):
        return _scheduling_of(_relayed(event, stream, headers=headers))

    assert asks(TaskCreated("acme", "bulk", 3, "file:a.csv", "ab" * 32, 2)) == "t1"  # its first window
    # whoever submitted a chunk sent its work item (WorkerCore.send_work): nothing to do here
    assert asks(ChunkSubmitted(3, ("a@x.org",), "smtp", "primary")) is None
    # results free room, but the settler that appended them schedules the task (WorkerCore.settle)
    assert asks(AddressVerified("a@x.org", "safe", "", 3, "primary")) is None
    assert asks(ResultUnknown("a@x.org", "greylisted", "", 3, "primary")) is None
    assert asks(ChunkFailed(3, "provider_error")) is None
    assert asks(TaskCompleted({"safe": 1})) is None
    assert asks(AccountOpened("acme"), stream="account-acme") is None


def test_relayed_headers_are_read_from_pairs_or_a_mapping():
    from consumers.fleet.messages import relayed_stream_and_type as seen

    pairs = (("ce_vecstream", b"task-t"), ("ce_type", b"vec.ChunkSubmitted"), ("x", b"1"))
    assert seen(pairs) == seen(list(pairs)) == seen(dict(pairs)) == ("task-t", "ChunkSubmitted")
    assert seen([("ce_type", b"vec.ChunkSubmitted")]) is None and seen(None) is None and seen(()) is None
    assert seen([("ce_vecstream", b"task-t"), ("ce_type", b"other.ChunkSubmitted")]) is None  # not ours: decoded

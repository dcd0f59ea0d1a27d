"""The outbox port's contract (consumers/outbox.py `Outbox`), reusable by every SQL session
(SQLite, PostgreSQL, the in-memory backend's SQLite): what the webhooks' and the
notifications' loops rely on of their stores. Each test runs on both stores (WebhookStore,
NotificationStore), over the session a backend's module gives:

    class TestMyOutbox(OutboxContract):
        def make_session(self):    # a fresh, empty projections.sql.SqlSession
            ...

A store kind (`Kind`) says how its messages are put in the outbox and read back; the
contract itself only drives the port: ensure_schema, checkpoint, start_at, claim_due,
record, recover.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from consumers.notifications.mail import Message, NotificationStore
from consumers.webhooks.delivery import WebhookStore
from engine.keyring import Keyring
from engine.store.memory import MemoryKeyStore
from tests.integration.ports_contract import PortContract

T0 = datetime(2026, 5, 1, 9, 30, 15, 123456, tzinfo=timezone.utc)
HOLD_S = 40.0
SCHEDULE = (10.0, 60.0)  # the last step repeats


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Kind:
    SUCCESS: ClassVar[str]  # the outcome (and the state) of a message that arrived
    FAILURE: ClassVar[str]  # an outcome that is tried again
    KEY: ClassVar[str]  # the Job field naming its message
    CODE: ClassVar[str]  # an attempt's column of the answer's code
    ERROR: ClassVar[str]  # an attempt's column of what went wrong

    def store(self, sql: Any, clock: Clock) -> Any:
        raise NotImplementedError

    def enqueue(self, store: Any, expected: int, until: int, numbers: list[int], poison: bool = False) -> int | None:
        """Messages caused by the events at log positions `numbers`; `poison`: one more
        after them that cannot be written (its transaction raises)."""
        raise NotImplementedError

    def status(self, store: Any, key: str) -> str:
        raise NotImplementedError


class Webhooks(Kind):
    SUCCESS, FAILURE, KEY, CODE, ERROR = "delivered", "failed", "delivery_id", "status_code", "error"

    def __init__(self) -> None:
        self.keyring = Keyring(MemoryKeyStore())  # every process's store opens the same secrets

    def store(self, sql: Any, clock: Clock) -> WebhookStore:
        return WebhookStore(sql, clock, keyring=self.keyring)

    def enqueue(self, store: WebhookStore, expected: int, until: int, numbers: list[int],
                poison: bool = False) -> int | None:
        if not store.endpoints("a1"):
            store.add_endpoint("a1", "https://hooks.example.org/vec", "", created_position=0)
        ends = [(SimpleNamespace(position=n, event_id=f"00000000-0000-4000-8000-{n:012d}", type="TaskCompleted"),
                 {"data": {"account": "a1", "task_id": f"t{n}", "n": n}}) for n in numbers]
        if poison:  # a payload JSON cannot hold
            ends.append((SimpleNamespace(position=until, event_id="poison", type="TaskCompleted"),
                         {"data": {"account": "a1", "task_id": "tp", "n": {1, 2}}}))
        return store.enqueue(expected, until, ends)  # type: ignore[arg-type]

    def status(self, store: WebhookStore, key: str) -> str:
        delivery = store.delivery(key)
        assert delivery is not None
        return str(delivery["status"])


class Notifications(Kind):
    SUCCESS, FAILURE, KEY, CODE, ERROR = "sent", "deferred", "message_id", "code", "detail"

    def store(self, sql: Any, clock: Clock) -> NotificationStore:
        return NotificationStore(sql, clock)

    def enqueue(self, store: NotificationStore, expected: int, until: int, numbers: list[int],
                poison: bool = False) -> int | None:
        messages = [Message(f"ntf_{n:04d}", "a1", "task_end", f"ev{n}", n, f"t{n}", "ops@example.org",
                            f"Task t{n} completed", "counts", T0) for n in numbers]
        if poison:  # a message without its time cannot be stamped
            messages.append(Message("ntf_poison", "a1", "task_end", "evp", until, "tp", "ops@example.org", "s", "b",
                                    None))  # type: ignore[arg-type]
        return store.enqueue(expected, until, [("a1", 1)], messages, "vec <notifications@example.org>")

    def status(self, store: NotificationStore, key: str) -> str:
        message = store.message(key)
        assert message is not None
        return str(message["status"])


class OutboxContract(PortContract):
    def make_session(self) -> Any:
        raise NotImplementedError

    @pytest.fixture(params=[Webhooks, Notifications], ids=["webhooks", "notifications"])
    def kind(self, request: pytest.FixtureRequest) -> Kind:
        kind: Kind = request.param()
        return kind

    @pytest.fixture
    def clock(self) -> Clock:
        return Clock()

    @pytest.fixture
    def session(self) -> Any:
        return self.make_session()

    @pytest.fixture
    def store(self, kind: Kind, session: Any, clock: Clock) -> Any:
        return kind.store(session, clock).ensure_schema()

    def started(self, kind: Kind, store: Any, numbers: list[int]) -> list[str]:
        """The outbox with one message per number, from checkpoint 0: their keys, in order."""
        assert store.start_at(0) == 0
        assert kind.enqueue(store, 0, max(numbers), numbers) == len(numbers)
        jobs = store.claim_due(len(numbers) + 1, HOLD_S)
        keys = [getattr(job, kind.KEY) for job in jobs]
        assert len(keys) == len(numbers)
        return keys

    def outcomes(self, store: Any, key: str) -> list[tuple[int, str]]:
        return [(a["attempt"], a["outcome"]) for a in store.attempts(key)]

    # --- the schema and the checkpoint --------------------------------------------------------

    def test_schema_creation_is_idempotent_and_keeps_what_the_tables_hold(self, kind, session, clock, store):
        store.ensure_schema()
        assert store.start_at(3) == 3
        assert kind.enqueue(store, 3, 4, [4]) == 1
        again = kind.store(session, clock).ensure_schema()  # another process's store, the same tables
        assert again.checkpoint() == 4
        assert [job.attempt for job in again.claim_due(10, HOLD_S)] == [1]

    def test_the_checkpoint_is_none_until_started_and_the_first_start_wins(self, store):
        assert store.checkpoint() is None
        assert store.start_at(5) == 5
        assert store.start_at(9) == 5  # a racing consumer's start: the stored one holds
        assert store.checkpoint() == 5

    def test_enqueue_moves_the_checkpoint_only_from_the_expected_position(self, kind, store):
        store.start_at(5)
        assert kind.enqueue(store, 4, 8, [6, 7]) is None  # another consumer moved it: nothing written
        assert store.checkpoint() == 5
        assert store.claim_due(10, HOLD_S) == []
        assert kind.enqueue(store, 5, 8, [6, 7]) == 2
        assert store.checkpoint() == 8

    def test_enqueueing_the_same_events_again_adds_nothing(self, kind, store):
        store.start_at(0)
        assert kind.enqueue(store, 0, 2, [1, 2]) == 2
        assert kind.enqueue(store, 2, 3, [1, 2]) == 0  # a re-read of the log
        assert store.checkpoint() == 3
        assert len(store.claim_due(10, HOLD_S)) == 2

    def test_a_transaction_that_raises_leaves_nothing(self, kind, store):
        store.start_at(0)
        with pytest.raises(Exception):
            kind.enqueue(store, 0, 3, [1, 2], poison=True)
        assert store.checkpoint() == 0
        assert store.claim_due(10, HOLD_S) == []
        assert kind.enqueue(store, 0, 3, [1, 2]) == 2  # the same batch, written whole this time
        assert store.checkpoint() == 3

    # --- claims ------------------------------------------------------------------------------

    def test_due_messages_are_claimed_in_order_up_to_the_limit_each_once(self, kind, store):
        store.start_at(0)
        kind.enqueue(store, 0, 3, [1, 2, 3])
        first = store.claim_due(2, HOLD_S)
        second = store.claim_due(2, HOLD_S)
        assert [job.attempt for job in first + second] == [1, 1, 1]
        keys = [getattr(job, kind.KEY) for job in first + second]
        assert len(set(keys)) == 3 and keys == sorted(keys)
        assert store.claim_due(10, HOLD_S) == []  # each held for its attempt
        assert all(self.outcomes(store, key) == [(1, "sending")] for key in keys)

    def test_an_attempt_never_recorded_is_made_again_after_its_hold(self, kind, store, clock):
        [key] = self.started(kind, store, [1])
        clock.advance(HOLD_S - 1)
        assert store.claim_due(10, HOLD_S) == []
        clock.advance(1)
        [job] = store.claim_due(10, HOLD_S)
        assert (getattr(job, kind.KEY), job.attempt) == (key, 2)
        assert self.outcomes(store, key) == [(1, "interrupted"), (2, "sending")]

    # --- records, retries, the last attempt --------------------------------------------------

    def test_an_attempt_that_arrived_ends_its_message(self, kind, store, clock):
        [key] = self.started(kind, store, [1])
        assert store.claim_due(10, HOLD_S) == []  # held for its attempt
        held = SimpleNamespace(**{kind.KEY: key, "attempt": 1})
        assert store.record(held, kind.SUCCESS, 250, None, 12, SCHEDULE, 5) == kind.SUCCESS
        assert kind.status(store, key) == kind.SUCCESS
        assert store.attempts(key)[0]["outcome"] == kind.SUCCESS
        assert store.attempts(key)[0]["duration_ms"] == 12
        clock.advance(10 * 86400)
        assert store.claim_due(10, HOLD_S) == []

    def test_a_failed_attempt_is_tried_again_after_each_step_of_the_schedule(self, kind, store, clock):
        [key] = self.started(kind, store, [1])
        job = SimpleNamespace(**{kind.KEY: key, "attempt": 1})
        for attempt, wait_s in ((1, SCHEDULE[0]), (2, SCHEDULE[1]), (3, SCHEDULE[1])):  # the last step repeats
            job.attempt = attempt
            assert store.record(job, kind.FAILURE, 421, "try later", 5, SCHEDULE, 10) == "pending"
            assert kind.status(store, key) == "pending"
            clock.advance(wait_s - 1)
            assert store.claim_due(10, HOLD_S) == []
            clock.advance(1)
            [again] = store.claim_due(10, HOLD_S)
            assert again.attempt == attempt + 1
        assert [o for _, o in self.outcomes(store, key)] == [kind.FAILURE] * 3 + ["sending"]
        assert store.attempts(key)[0][kind.CODE] == 421

    def test_the_last_attempt_fails_the_message_for_good(self, kind, store, clock):
        [key] = self.started(kind, store, [1])
        job = SimpleNamespace(**{kind.KEY: key, "attempt": 1})
        assert store.record(job, kind.FAILURE, None, "down", 5, SCHEDULE, 2) == "pending"
        clock.advance(SCHEDULE[0])
        [job] = store.claim_due(10, HOLD_S)
        assert store.record(job, kind.FAILURE, None, "down", 5, SCHEDULE, 2) == "failed"
        assert kind.status(store, key) == "failed"
        clock.advance(10 * 86400)
        assert store.claim_due(10, HOLD_S) == []

    def test_a_late_record_of_an_older_attempt(self, kind, store, clock):
        [key] = self.started(kind, store, [1])
        clock.advance(HOLD_S)
        [second] = store.claim_due(10, HOLD_S)
        first = SimpleNamespace(**{kind.KEY: key, "attempt": 1})
        store.record(first, kind.FAILURE, None, "late", 5, SCHEDULE, 1)  # the newer claim stands
        assert kind.status(store, key) == "pending"
        assert store.record(first, kind.SUCCESS, 250, None, 5, SCHEDULE, 1) == kind.SUCCESS  # it arrived after all
        assert kind.status(store, key) == kind.SUCCESS
        assert second.attempt == 2

    # --- recovery at a sender's start ---------------------------------------------------------

    def test_recover_marks_sending_attempts_interrupted_and_makes_them_due(self, kind, session, store, clock):
        done, cut = self.started(kind, store, [1, 2])
        store.record(SimpleNamespace(**{kind.KEY: done, "attempt": 1}), kind.SUCCESS, 250, None, 5, SCHEDULE, 5)
        clock.advance(1)  # well inside the hold: only recover() makes it due
        restarted = kind.store(session, clock).ensure_schema()
        assert restarted.recover() == 1
        [attempt] = restarted.attempts(cut)
        assert attempt["outcome"] == "interrupted"
        assert restarted.SCHEMA.interrupted in attempt[kind.ERROR]
        assert [(getattr(j, kind.KEY), j.attempt) for j in restarted.claim_due(10, HOLD_S)] == [(cut, 2)]
        assert self.outcomes(restarted, done) == [(1, kind.SUCCESS)]
        assert kind.status(restarted, done) == kind.SUCCESS

    def test_recover_with_nothing_in_flight_changes_nothing(self, kind, store):
        assert store.recover() == 0
        [key] = self.started(kind, store, [1])
        store.record(SimpleNamespace(**{kind.KEY: key, "attempt": 1}), kind.FAILURE, None, "x", 5, SCHEDULE, 5)
        assert store.recover() == 0
        assert store.claim_due(10, HOLD_S) == []  # still waiting for its retry
        assert self.outcomes(store, key) == [(1, kind.FAILURE)]

"""The event-store contract, reusable by every backend (engine/store/base.py: EventStore).

A backend's test module subclasses `EventStoreContract` and implements two hooks:

    class TestMyStore(EventStoreContract):
        def make_store(self):             # a fresh, empty store
            ...
        def connect_again(self, store):   # another, independent connection to the same log
            ...

`self.workspace` is a fresh temporary directory for each test. Every test closes what it
opens. Nothing here knows which backend runs it.
"""
from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from engine.store.base import ANY, ConcurrencyError, DuplicateEventError, EventTally, Idempotency, IdempotencyConflict
from events import (
    RecordedEvent,
    AccountOpened,
    AddressVerified,
    ChunkFailed,
    ChunkSubmitted,
    CreditsDebited,
    CreditsGranted,
    CreditsRefunded,
    NewEvent,
    ResultUnknown,
    TaskCompleted,
    TaskCreated,
)

T0 = datetime(2026, 5, 1, 9, 30, 15, 123456, tzinfo=timezone.utc)
CHAIN_OF_TWO_EVENTS = "f4b41dcd085be2711f4203d26f8bfcad690d7462413428d1a387f3849993175f"  # engine/chain.py, TAG vec-chain-1


def new(stream: str, event=None, *, event_id: uuid.UUID | None = None, at: datetime = T0,
        correlation: str | None = None, causation: str | None = None) -> NewEvent:
    return NewEvent(stream, event if event is not None else CreditsGranted("payg", 1, "purchase"),
                    event_id or uuid.uuid4(), at, correlation, causation)


def grants(stream: str, *amounts: int) -> list[NewEvent]:
    return [new(stream, CreditsGranted("payg", a, "purchase")) for a in amounts]


class EventStoreContract:
    # --- hooks ------------------------------------------------------------------------

    def make_store(self):
        raise NotImplementedError

    def connect_again(self, store):
        raise NotImplementedError

    # --- plumbing ---------------------------------------------------------------------

    @pytest.fixture(autouse=True)
    def _contract_workspace(self, tmp_path):
        self.workspace = tmp_path
        self._opened = []
        yield
        for store in reversed(self._opened):
            try:
                store.close()
            except Exception:  # noqa: BLE001 - closing twice is fine
                pass

    @pytest.fixture
    def store(self):
        return self._track(self.make_store())

    def _track(self, store):
        self._opened.append(store)
        return store

    def other(self, store):
        return self._track(self.connect_again(store))

    @staticmethod
    def everything(store) -> list:
        return list(store.read_all())

    # --- an empty log -----------------------------------------------------------------

    def test_an_empty_store(self, store):
        assert store.head() == 0
        assert self.everything(store) == []
        assert list(store.read_stream("account-a")) == []
        assert store.stream_version("account-a") == 0

    def test_appending_nothing_appends_nothing(self, store):
        assert store.append([], {"account-a": 0}) == []
        assert store.head() == 0

    # --- tallies: what metrics count, without decoding ---------------------------------

    TALLIED = ("TaskCreated", "AddressVerified", "ResultUnknown", "ChunkFailed", "CreditsDebited", "CreditsRefunded",
               "CreditsGranted")

    def tallied_log(self, store) -> None:
        store.append([new("account-a", AccountOpened("a")), new("account-a", CreditsGranted("payg", 200, "welcome")),
                      new("account-a", CreditsDebited("t", 3, 4))], {"account-a": 0})  # positions 1-3
        store.append([new("task-t", e) for e in (
            TaskCreated("a", "bulk", 7, "f", "h", 2),  # 4
            ChunkSubmitted(0, ("a@x.org", "b@x.org"), "smtp", "primary"),  # 5: never tallied
            AddressVerified("a@x.org", "safe", "", 0, "primary"),  # 6
            AddressVerified("b@x.org", "safe", "", 0, "primary"),  # 7
            AddressVerified("c@x.org", "invalid", "user_unknown", 0, "primary"),  # 8
            ResultUnknown("d@x.org", "greylisted"),  # 9
            ChunkFailed(1, "down", ("e@x.org", "f@x.org")),  # 10
            AddressVerified("g@x.org", "risky", "", 1, "primary", True),  # 11: late
        )], {"task-t": 0})
        store.append([new("account-a", CreditsRefunded("t", 2, "chunk_failed"))], {"account-a": 3})  # 12

    @staticmethod
    def tallies(store, after: int, until: int, types=TALLIED) -> set[EventTally]:
        return set(store.tally(after, until, types))

    def test_a_tally_counts_events_by_type_and_labels_with_the_units_they_move(self, store):
        self.tallied_log(store)
        assert self.tallies(store, 0, store.head()) == {
            EventTally("CreditsGranted", None, "welcome", None, "payg", False, 1, 200),
            EventTally("CreditsDebited", None, None, None, None, False, 1, 7),  # monthly + payg
            EventTally("TaskCreated", None, None, "bulk", None, False, 1, 0),
            EventTally("AddressVerified", "safe", None, None, None, False, 2, 0),
            EventTally("AddressVerified", "invalid", None, None, None, False, 1, 0),
            EventTally("ResultUnknown", None, "greylisted", None, None, False, 1, 0),
            EventTally("ChunkFailed", None, None, None, None, False, 1, 2),  # its addresses, sealed or not
            EventTally("AddressVerified", "risky", None, None, None, True, 1, 0),
            EventTally("CreditsRefunded", None, "chunk_failed", None, None, False, 1, 2),
        }

    def test_a_tally_counts_only_its_window_and_its_types(self, store):
        self.tallied_log(store)
        assert self.tallies(store, 5, 7) == {EventTally("AddressVerified", "safe", None, None, None, False, 2, 0)}
        assert self.tallies(store, 0, 12, ("CreditsDebited", "CreditsRefunded")) == {
            EventTally("CreditsDebited", None, None, None, None, False, 1, 7),
            EventTally("CreditsRefunded", None, "chunk_failed", None, None, False, 1, 2)}
        assert self.tallies(store, 0, 12, ("TaskCompleted",)) == set()
        assert self.tallies(store, 12, 12) == set()
        assert self.tallies(store, 0, 12, ()) == set()

    def test_windows_of_a_tally_add_up_to_the_whole(self, store):
        self.tallied_log(store)
        whole: dict[tuple, list[int]] = {}
        for after in range(0, 12, 5):
            for t in store.tally(after, min(after + 5, 12), self.TALLIED):
                group = whole.setdefault(t[:6], [0, 0])
                group[0] += t.events
                group[1] += t.units
        assert {EventTally(*labels, *sums) for labels, sums in whole.items()} == self.tallies(store, 0, 12)

    # --- append and read order --------------------------------------------------------

    def test_append_gives_versions_and_positions_and_reads_back_equal(self, store):
        first = store.append([new("account-a", AccountOpened("a"), correlation="c1"),
                              new("account-a", CreditsGranted("payg", 200, "welcome"), causation="x")],
                             {"account-a": 0})
        assert [(r.stream, r.version, r.position) for r in first] == [("account-a", 1, 1), ("account-a", 2, 2)]
        assert first[0].event == AccountOpened("a") and first[0].correlation_id == "c1"
        assert first[1].causation_id == "x"
        assert list(store.read_stream("account-a")) == first
        assert self.everything(store) == first
        assert store.stream_version("account-a") == 2
        assert store.head() == 2

    def test_occurred_at_and_ids_are_preserved_exactly(self, store):
        ids = [uuid.uuid4(), uuid.uuid4()]
        other_zone = T0.astimezone(timezone(timedelta(hours=5, minutes=30)))
        store.append([new("s", event_id=ids[0], at=T0), new("s", event_id=ids[1], at=other_zone)], {"s": 0})
        read = list(store.read_stream("s"))
        assert [r.event_id for r in read] == ids
        assert read[0].occurred_at == T0 and read[1].occurred_at == other_zone  # the same instants
        # stored in UTC, so that the log's times order as text (vec replay --as-of)
        assert read[1].occurred_at.utcoffset() == timedelta(0)

    def test_payloads_of_every_shape_survive(self, store):
        events = [
            TaskCreated("acme", "bulk", 3, "file:a.csv", "ab" * 32, 2),
            ChunkSubmitted(0, ("a@x.org", "b@x.org"), "smtp", "primary"),
            AddressVerified("j\u00f6rg@b\u00fccher.de", "risky", "accept_all", 0, "primary", False),
            TaskCompleted({"safe": 1, "unknown": 2}),
        ]
        store.append([new("task-t", e) for e in events], {"task-t": 0})
        assert [r.event for r in store.read_stream("task-t")] == events

    def test_one_append_spans_streams_atomically_and_positions_follow_the_given_order(self, store):
        recorded = store.append(
            [new("task-t", TaskCreated("a", "bulk", 3, "f", "h", 2)), new("account-a", CreditsDebited("t", 0, 3)),
             new("task-t", ChunkSubmitted(0, ("x@y.z", "w@y.z"), "p", "t"))],
            {"task-t": 0, "account-a": 0})
        assert [(r.stream, r.version, r.position) for r in recorded] == [
            ("task-t", 1, 1), ("account-a", 1, 2), ("task-t", 2, 3)]
        assert store.stream_version("task-t") == 2 and store.stream_version("account-a") == 1

    def test_global_positions_are_contiguous_and_increasing_over_many_appends(self, store):
        versions = {}
        for i in range(30):
            stream = f"s-{i % 4}"
            batch = grants(stream, *range(1, 1 + (i % 3) + 1))
            store.append(batch, {stream: versions.get(stream, 0)})
            versions[stream] = versions.get(stream, 0) + len(batch)
        read = self.everything(store)
        assert [r.position for r in read] == list(range(1, len(read) + 1))
        assert store.head() == len(read)
        for stream, version in versions.items():
            assert [r.version for r in store.read_stream(stream)] == list(range(1, version + 1))
            assert store.stream_version(stream) == version

    def test_stream_versions_tells_many_streams_versions_in_one_look(self, store):
        assert store.stream_versions([]) == {}
        store.append(grants("s-a", 1, 2), {"s-a": 0})
        store.append(grants("s-b", 3), {"s-b": 0})
        streams = ["s-b", "nobody", "s-a"] + [f"s-{i}" for i in range(600)]  # past SQLite's 500 per statement
        versions = store.stream_versions(streams)
        assert list(versions) == streams  # every one asked, in the order asked
        assert (versions["s-a"], versions["s-b"], versions["nobody"]) == (2, 1, 0)
        assert versions == {s: store.stream_version(s) for s in streams}

    def test_an_event_for_a_stream_without_expected_version_is_refused(self, store):
        with pytest.raises(Exception):
            store.append([new("a"), new("b")], {"a": 0})
        assert store.head() == 0

    # --- optimistic concurrency -------------------------------------------------------

    def test_a_stale_expected_version_is_a_conflict_that_appends_nothing(self, store):
        store.append(grants("s", 1, 2), {"s": 0})
        for stale in (0, 1, 3):
            with pytest.raises(ConcurrencyError):
                store.append(grants("s", 9), {"s": stale})
        assert store.head() == 2 and store.stream_version("s") == 2
        assert [r.event.amount for r in store.read_stream("s")] == [1, 2]

    def test_a_conflict_on_one_stream_appends_nothing_on_the_others(self, store):
        store.append(grants("b", 1), {"b": 0})
        with pytest.raises(ConcurrencyError):
            store.append(grants("a", 5) + grants("b", 6), {"a": 0, "b": 0})
        assert store.head() == 1
        assert list(store.read_stream("a")) == [] and store.stream_version("a") == 0

    def test_an_expected_version_on_a_stream_not_written_is_still_checked(self, store):
        store.append(grants("account-a", 1), {"account-a": 0})
        with pytest.raises(ConcurrencyError):
            store.append(grants("task-t", 1), {"task-t": 0, "account-a": 0})
        assert store.head() == 1
        # with the right version the guarded append goes through and leaves the guard alone
        store.append(grants("task-t", 1), {"task-t": 0, "account-a": 1})
        assert store.stream_version("account-a") == 1 and store.stream_version("task-t") == 1

    def test_a_conflict_leaves_the_store_usable(self, store):
        store.append(grants("s", 1), {"s": 0})
        with pytest.raises(ConcurrencyError):
            store.append(grants("s", 2), {"s": 0})
        recorded = store.append(grants("s", 3), {"s": 1})
        assert [(r.version, r.position) for r in recorded] == [(2, 2)]

    # --- duplicate event ids ----------------------------------------------------------

    def test_a_duplicate_event_id_across_appends_is_refused_and_appends_nothing(self, store):
        same = uuid.uuid4()
        store.append([new("a", event_id=same)], {"a": 0})
        with pytest.raises(DuplicateEventError):
            store.append([new("b"), new("b", event_id=same)], {"b": 0})
        assert store.head() == 1 and list(store.read_stream("b")) == []

    def test_a_duplicate_event_id_within_one_append_is_refused(self, store):
        same = uuid.uuid4()
        with pytest.raises(DuplicateEventError):
            store.append([new("a", event_id=same), new("a", event_id=same)], {"a": 0})
        assert store.head() == 0

    # --- idempotency ------------------------------------------------------------------

    def test_an_unknown_key_replays_nothing(self, store):
        assert store.replayed(Idempotency("k", "f")) is None

    def test_an_idempotency_key_replays_the_same_events(self, store):
        store.append(grants("other", 1), {"other": 0})
        key = Idempotency("open-a", "fp-1")
        recorded = store.append([new("account-a", AccountOpened("a")), new("account-a")], {"account-a": 0}, key)
        store.append(grants("other", 2), {"other": 1})
        assert store.replayed(key) == recorded
        assert store.replayed(Idempotency("open-a", "fp-1")) == recorded

    def test_a_retried_append_with_the_same_key_appends_nothing(self, store):
        key = Idempotency("grant-1", "fp")
        recorded = store.append(grants("s", 5), {"s": 0}, key)
        try:
            again = store.append(grants("s", 5), {"s": 1}, key)
        except ConcurrencyError:
            pass  # the caller then asks replayed()
        else:
            assert again == recorded
        assert store.head() == 1
        assert store.replayed(key) == recorded

    def test_the_same_key_with_another_fingerprint_is_a_conflict(self, store):
        store.append(grants("s", 5), {"s": 0}, Idempotency("grant-1", "fp-a"))
        with pytest.raises(IdempotencyConflict):
            store.replayed(Idempotency("grant-1", "fp-b"))
        with pytest.raises(IdempotencyConflict):
            store.append(grants("s", 6), {"s": 1}, Idempotency("grant-1", "fp-b"))
        assert store.head() == 1

    def test_a_refused_append_does_not_use_up_its_key(self, store):
        store.append(grants("s", 1), {"s": 0})
        key = Idempotency("k", "fp")
        with pytest.raises(ConcurrencyError):
            store.append(grants("s", 2), {"s": 0}, key)
        assert store.replayed(key) is None
        recorded = store.append(grants("s", 2), {"s": 1}, key)
        assert store.replayed(key) == recorded

    def test_keys_are_independent(self, store):
        a = store.append(grants("s", 1), {"s": 0}, Idempotency("a", "fp"))
        b = store.append(grants("s", 2), {"s": 1}, Idempotency("b", "fp"))
        assert store.replayed(Idempotency("a", "fp")) == a
        assert store.replayed(Idempotency("b", "fp")) == b

    # --- reading windows --------------------------------------------------------------

    @pytest.fixture
    def interleaved(self, store):
        """Streams a and b interleaved: a@1 b@1 a@2 b@2 ... (10 each, positions 1..20)."""
        for i in range(10):
            store.append(grants("a", i), {"a": i})
            store.append(grants("b", 100 + i), {"b": i})
        return store

    def test_read_stream_after_version(self, interleaved):
        assert [r.version for r in interleaved.read_stream("a", after_version=7)] == [8, 9, 10]
        assert list(interleaved.read_stream("a", after_version=10)) == []
        assert [r.event.amount for r in interleaved.read_stream("b", after_version=8)] == [108, 109]

    def test_read_stream_until_position(self, interleaved):
        assert [r.version for r in interleaved.read_stream("a", until_position=5)] == [1, 2, 3]
        assert [r.version for r in interleaved.read_stream("b", until_position=6)] == [1, 2, 3]
        assert list(interleaved.read_stream("a", until_position=0)) == []
        assert [r.version for r in interleaved.read_stream("a", after_version=1, until_position=5)] == [2, 3]

    def test_read_all_window(self, interleaved):
        assert [r.position for r in interleaved.read_all(after_position=17)] == [18, 19, 20]
        assert [r.position for r in interleaved.read_all(after_position=3, until_position=6)] == [4, 5, 6]
        assert list(interleaved.read_all(after_position=20)) == []
        assert list(interleaved.read_all(until_position=0)) == []

    @pytest.mark.parametrize("batch", [1, 2, 3, 7, 19, 20, 21, 1000])
    def test_read_all_pages_through_every_batch_size(self, interleaved, batch):
        whole = list(interleaved.read_all())
        assert [r.position for r in whole] == list(range(1, 21))
        assert list(interleaved.read_all(batch=batch)) == whole
        assert list(interleaved.read_all(after_position=5, until_position=15, batch=batch)) == whole[5:15]

    # --- the hash chain (engine/chain.py) ---------------------------------------------

    def test_the_chain_links_every_event_in_position_order_and_pages_like_read_all(self, interleaved):
        from engine import chain

        self.other(interleaved).append(grants("c", 7, 8), {"c": 0})  # another connection links on
        rows = list(interleaved.read_chain())
        assert [r[0] for r in rows] == list(range(1, 23)) and all(len(r[-1]) == 32 for r in rows)
        assert list(chain.verify(rows)) == []
        assert list(interleaved.read_chain(after_position=5, until_position=15, batch=3)) == rows[5:15]
        assert list(chain.verify(rows[5:], rows[4][-1])) == []
        broken = list(chain.verify(rows[:3] + rows[4:]))  # a row left out
        assert [b.position for b in broken] == [5]

    def test_every_store_hashes_the_same_events_to_the_same_chain(self, store):
        """The canonical bytes do not depend on the backend: a log copied from one store to
        another keeps its chain (the figure is what engine/chain.py gives these events)."""
        events = [new("account-a", CreditsGranted("payg", 5, "purchase"), event_id=uuid.UUID(int=1),
                      correlation="corr", causation=None),
                  new("task-t", TaskCompleted({"safe": 1}), event_id=uuid.UUID(int=2), at=T0 + timedelta(seconds=1),
                      causation="cause")]
        store.append(events, {"account-a": 0, "task-t": 0})
        assert bytes(list(store.read_chain())[-1][-1]).hex() == CHAIN_OF_TWO_EVENTS

    # --- a second connection ----------------------------------------------------------

    def test_a_second_connection_sees_what_the_first_committed(self, store):
        recorded = store.append(grants("s", 1, 2), {"s": 0}, Idempotency("k", "fp"))
        again = self.other(store)
        assert self.everything(again) == recorded
        assert again.stream_version("s") == 2 and again.head() == 2
        assert again.replayed(Idempotency("k", "fp")) == recorded

    def test_two_connections_racing_on_one_version_let_exactly_one_win(self, store):
        store.append(grants("s", 1), {"s": 0})
        rival = self.other(store)
        rival.append(grants("s", 2), {"s": 1})
        with pytest.raises(ConcurrencyError):
            store.append(grants("s", 3), {"s": 1})
        assert [r.event.amount for r in store.read_stream("s")] == [1, 2]

    def test_concurrent_writers_never_leave_gaps_or_duplicates(self, store):
        writers, appends = 4, 25
        connections = [self.other(store) for _ in range(writers)]
        reader = self.other(store)
        errors: list[BaseException] = []
        won = [0] * writers
        conflicts = [0] * writers
        done = threading.Event()
        seen_by_reader: list[int] = []

        def write(n: int) -> None:
            mine = connections[n]
            try:
                for i in range(appends):
                    # one append to a private stream, one contended append on a shared stream
                    mine.append(grants(f"own-{n}", i, i), {f"own-{n}": 2 * i})
                    while True:
                        version = mine.stream_version("shared")
                        try:
                            mine.append([new("shared", CreditsGranted("payg", n + 1, "purchase"))],
                                        {"shared": version})
                            won[n] += 1
                            break
                        except ConcurrencyError:
                            conflicts[n] += 1
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)

        def read() -> None:
            # a catch-up reader polling while the writers write: it must never see a gap
            last = 0
            try:
                while not done.is_set() or last < reader.head():
                    for recorded in reader.read_all(after_position=last, batch=7):
                        assert recorded.position == last + 1, f"gap: {last} then {recorded.position}"
                        last = recorded.position
                        seen_by_reader.append(last)
            except BaseException as error:  # noqa: BLE001
                errors.append(error)

        threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
        watcher = threading.Thread(target=read)
        watcher.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        done.set()
        watcher.join(timeout=120)
        assert not errors, errors
        assert won == [appends] * writers

        total = writers * appends * 3
        everything = self.everything(store)
        assert [r.position for r in everything] == list(range(1, total + 1))
        assert len({r.event_id for r in everything}) == total
        assert seen_by_reader == list(range(1, total + 1))
        for n in range(writers):
            assert [r.version for r in store.read_stream(f"own-{n}")] == list(range(1, 2 * appends + 1))
        shared = list(store.read_stream("shared"))
        assert [r.version for r in shared] == list(range(1, writers * appends + 1))
        assert sorted(r.event.amount for r in shared) == sorted(n + 1 for n in range(writers) for _ in range(appends))

    # --- any-version appends ----------------------------------------------------------

    def test_an_any_version_append_lands_after_whatever_the_stream_holds(self, store):
        store.append(grants("acct", 1, 2), {"acct": 0})
        rival = self.other(store)
        rival.append(grants("acct", 3), {"acct": 2})
        recorded = store.append(grants("acct", 4) + grants("task", 9), {"acct": ANY, "task": 0})
        assert [(r.stream, r.version) for r in recorded] == [("acct", 4), ("task", 1)]
        assert [r.event.amount for r in store.read_stream("acct")] == [1, 2, 3, 4]
        assert store.append(grants("fresh", 5), {"fresh": ANY})[0].version == 1

    def test_an_any_version_append_still_fails_with_its_strict_partner(self, store):
        store.append(grants("task", 1), {"task": 0})
        with pytest.raises(ConcurrencyError):
            store.append(grants("acct", 1) + grants("task", 2), {"acct": ANY, "task": 0})
        assert store.head() == 1 and store.stream_version("acct") == 0

    # --- a catch-up reader never skips an event ---------------------------------------

    def _held_writer(self, store, stream: str, outcome: str):
        """A writer that has drawn its position and holds its transaction open until told
        to commit (or roll back)."""
        writer = self.other(store)
        held, release = threading.Event(), threading.Event()
        errors: list[BaseException] = []

        def hold() -> None:
            held.set()
            assert release.wait(20), "never released"
            if outcome == "rollback":
                raise RuntimeError("the first writer rolls back")

        writer.before_commit = hold

        def run() -> None:
            try:
                writer.append(grants(stream, 1), {stream: 0})
            except RuntimeError as error:
                if outcome != "rollback":
                    errors.append(error)
            except BaseException as error:  # noqa: BLE001
                errors.append(error)

        thread = threading.Thread(target=run)
        thread.start()
        assert held.wait(10), "the first writer never reached its commit"
        return thread, release, errors

    @pytest.mark.parametrize("outcome", ["commit", "rollback"])
    def test_a_catch_up_reader_never_skips_an_event_of_an_open_transaction(self, store, outcome):
        store.append(grants("before", 1), {"before": 0})
        reader, second_writer = self.other(store), self.other(store)  # connected before the first holds its lock
        first, release, errors = self._held_writer(store, "first", outcome)
        second = threading.Thread(target=lambda: second_writer.append(grants("second", 2), {"second": 0}))
        second.start()
        seen: list[RecordedEvent] = []
        polling_until = time.monotonic() + 0.6
        while time.monotonic() < polling_until:  # the reader polls while the first is open
            seen += list(reader.read_all(after_position=seen[-1].position if seen else 1))
            time.sleep(0.02)
        assert seen == [], f"the reader moved past an open transaction: {[(r.position, r.stream) for r in seen]}"
        release.set()
        first.join(timeout=20)
        second.join(timeout=20)
        assert not errors, errors
        while len(seen) < (2 if outcome == "commit" else 1):
            seen += list(reader.read_all(after_position=seen[-1].position if seen else 1))
        expected = ["first", "second"] if outcome == "commit" else ["second"]
        assert [r.stream for r in seen] == expected
        assert [r.position for r in seen] == list(range(2, 2 + len(expected)))
        assert [r.stream for r in reader.read_all()] == ["before", *expected]

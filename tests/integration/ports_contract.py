"""The contracts of the store's other ports, reusable by every backend (as store_contract.py
is for the event store): StagedInputs, EngineLease and FleetStore (engine/store/base.py),
KeyStore (engine/keyring.py).

A backend's test module subclasses each contract and implements its one hook:

    class TestMyInputs(StagedInputsContract):
        def make_inputs(self):      # a fresh, empty StagedInputs
            ...

`self.workspace` is a fresh temporary directory for each test; a hook registers what must
be closed with `self.closing(close)`. Nothing here knows which backend runs it.
"""
from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from engine.keyring import SEALED, Sealer
from engine.store.lease import LeaseHeld
from projections.base import Table
from projections.sql import scalar, upsert_sql

T0 = datetime(2026, 5, 1, 9, 30, 15, 123456, tzinfo=timezone.utc)
PARIS = timezone(timedelta(hours=2))


class PortContract:
    @pytest.fixture(autouse=True)
    def _port_workspace(self, tmp_path):
        self.workspace = tmp_path
        self._closers: list[Callable[[], None]] = []
        yield
        for close in reversed(self._closers):
            close()

    def closing(self, close: Callable[[], None]) -> None:
        self._closers.append(close)


class StagedInputsContract(PortContract):
    def make_inputs(self):
        raise NotImplementedError

    @pytest.fixture
    def inputs(self):
        return self.make_inputs()

    def test_nothing_is_staged_at_first(self, inputs):
        assert inputs.staged() == {}
        assert inputs.chunk("u-1", 0, 10) == []

    def test_stage_keeps_each_address_once_case_insensitively_first_seen_first(self, inputs):
        raw = ["b@x.org", "A@x.org", "c@x.org", "a@X.org", "B@x.org", "d@x.org", "C@X.ORG"]
        assert inputs.stage("u-1", raw, T0) == 4
        assert inputs.chunk("u-1", 0, 100) == ["b@x.org", "A@x.org", "c@x.org", "d@x.org"]
        assert inputs.staged() == {"u-1": 4}

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.differing_executors])
    @given(st.lists(st.sampled_from(["a@x.org", "A@x.org", "b@x.org", "B@X.ORG", "c@y.org", "d@y.org"]), max_size=40))
    def test_stage_keeps_the_first_of_each_address_whatever_repeats(self, inputs, raw):
        """The reference: a case-insensitive 'first seen wins' over the list (the SQLite store
        finds repeats by a hash of each key, then compares keys)."""
        first: dict[str, str] = {}
        for address in raw:
            first.setdefault(address.lower(), address)
        upload = f"u-{uuid.uuid4().hex}"
        assert inputs.stage(upload, raw, T0) == len(first)
        assert inputs.chunk(upload, 0, 100) == list(first.values())
        assert inputs.chunk(upload, 1, 3) == list(first.values())[3:6]

    def test_stage_reads_any_iterable_once(self, inputs):
        assert inputs.stage("u-1", (f"a{i}@x.org" for i in range(3)), T0) == 3
        assert inputs.chunk("u-1", 0, 10) == ["a0@x.org", "a1@x.org", "a2@x.org"]

    def test_chunks_are_consecutive_windows_in_staged_order(self, inputs):
        addresses = [f"a{i}@x.org" for i in range(7)]
        inputs.stage("u-1", addresses, T0)
        assert [inputs.chunk("u-1", n, 3) for n in range(4)] == [addresses[0:3], addresses[3:6], addresses[6:], []]
        assert inputs.chunk("u-1", 1, 5) == addresses[5:]

    def test_sealed_addresses_are_stored_sealed_compared_sealed_and_opened_on_read(self, inputs):
        sealer = Sealer(bytes(range(64)))
        raw = ["Jörg@Bücher.de", "x@y.org", "jörg@bücher.de", "X@Y.ORG", "z@y.org"]
        assert inputs.stage("u-1", raw, T0, seal=sealer.seal) == 3
        stored = inputs.chunk("u-1", 0, 10)
        assert all(s.startswith(SEALED) for s in stored) and not set(stored) & set(raw)
        assert inputs.chunk("u-1", 0, 10, open_=sealer.open) == ["Jörg@Bücher.de", "x@y.org", "z@y.org"]
        assert inputs.chunk("u-1", 1, 2, open_=sealer.open) == ["z@y.org"]

    def test_uploads_are_kept_apart(self, inputs):
        inputs.stage("u-1", ["a@x.org", "b@x.org"], T0)
        inputs.stage("u-2", ["b@x.org", "c@x.org", "d@x.org"], T0)
        assert inputs.staged() == {"u-1": 2, "u-2": 3}
        assert inputs.chunk("u-2", 0, 10) == ["b@x.org", "c@x.org", "d@x.org"]

    def test_an_upload_id_is_staged_once(self, inputs):
        inputs.stage("u-1", ["a@x.org"], T0)
        with pytest.raises(Exception):
            inputs.stage("u-1", ["b@x.org", "c@x.org"], T0)
        assert inputs.staged() == {"u-1": 1}
        assert inputs.chunk("u-1", 0, 10) == ["a@x.org"]

    def test_a_source_that_fails_midway_stages_nothing(self, inputs):
        def broken() -> Iterator[str]:
            yield "a@x.org"
            raise OSError("the upload was cut")

        with pytest.raises(OSError):
            inputs.stage("u-1", broken(), T0)
        assert inputs.staged() == {}
        assert inputs.stage("u-1", ["b@x.org"], T0) == 1  # the id is still free
        assert inputs.chunk("u-1", 0, 10) == ["b@x.org"]

    def test_discard_drops_one_upload(self, inputs):
        inputs.stage("u-1", ["a@x.org"], T0)
        inputs.stage("u-2", ["b@x.org"], T0)
        inputs.discard("u-1")
        inputs.discard("never-staged")
        assert inputs.staged() == {"u-2": 1}
        assert inputs.chunk("u-1", 0, 10) == []
        assert inputs.stage("u-1", ["c@x.org"], T0) == 1  # a discarded id may be staged again

    def test_sweep_drops_old_uploads_but_keeps_those_in_use(self, inputs):
        inputs.stage("old", ["a@x.org"], T0)
        inputs.stage("old-in-use", ["b@x.org"], T0.astimezone(PARIS))
        inputs.stage("new", ["c@x.org"], T0 + timedelta(days=2))
        assert inputs.sweep(T0 + timedelta(days=1), keep=["old-in-use", "new"]) == 1
        assert inputs.staged() == {"old-in-use": 1, "new": 1}
        assert inputs.sweep(T0 + timedelta(days=1), keep=(u for u in ["old-in-use"])) == 0
        assert inputs.staged() == {"old-in-use": 1, "new": 1}

    def test_sweep_compares_instants_not_clock_faces(self, inputs):
        inputs.stage("u-1", ["a@x.org"], T0.astimezone(PARIS))  # 11:30 in Paris = 09:30 UTC
        assert inputs.sweep(T0 - timedelta(seconds=1), keep=[]) == 0
        assert inputs.sweep((T0 + timedelta(seconds=1)).astimezone(timezone(timedelta(hours=-4))), keep=[]) == 1
        assert inputs.staged() == {}


class EngineLeaseContract(PortContract):
    TTL_S = 30.0

    def make_lease(self):
        raise NotImplementedError

    @pytest.fixture
    def lease(self):
        return self.make_lease()

    def test_no_lease_at_first(self, lease):
        assert lease.current() is None

    def test_the_first_acquire_takes_the_lease_for_this_process(self, lease):
        assert lease.acquire("a", T0, self.TTL_S) is None
        current = lease.current()
        assert (current.holder, current.pid, current.heartbeat) == ("a", os.getpid(), T0)

    def test_a_live_lease_of_another_holder_is_refused_and_left_alone(self, lease):
        lease.acquire("a", T0, self.TTL_S)
        with pytest.raises(LeaseHeld) as refused:
            lease.acquire("b", T0 + timedelta(seconds=self.TTL_S), self.TTL_S)
        assert refused.value.lease.holder == "a"
        assert (lease.current().holder, lease.current().heartbeat) == ("a", T0)

    def test_acquire_returns_the_previous_lease(self, lease):
        lease.acquire("a", T0, self.TTL_S)
        again = lease.acquire("a", T0 + timedelta(seconds=5), self.TTL_S)  # its own holder: a restart
        assert (again.holder, again.heartbeat) == ("a", T0)
        later = T0 + timedelta(seconds=5 + self.TTL_S + 1)  # a's heartbeat is too old: a died
        previous = lease.acquire("b", later, self.TTL_S)
        assert (previous.holder, previous.heartbeat) == ("a", T0 + timedelta(seconds=5))
        assert (lease.current().holder, lease.current().heartbeat) == ("b", later)

    def test_only_the_holder_beats(self, lease):
        lease.acquire("a", T0, self.TTL_S)
        assert lease.beat("b", T0 + timedelta(seconds=1)) is False
        assert lease.current().heartbeat == T0
        assert lease.beat("a", T0 + timedelta(seconds=2)) is True
        assert lease.current().heartbeat == T0 + timedelta(seconds=2)
        # the heartbeat keeps a lease alive past the TTL of its first acquire
        with pytest.raises(LeaseHeld):
            lease.acquire("b", T0 + timedelta(seconds=self.TTL_S + 1), self.TTL_S)

    def test_beating_without_a_lease_is_false(self, lease):
        assert lease.beat("a", T0) is False
        assert lease.current() is None

    def test_release_frees_the_lease_and_keeps_the_outage_clock(self, lease):
        lease.acquire("a", T0, self.TTL_S)
        lease.release("b", T0 + timedelta(seconds=1))  # not the holder: nothing happens
        assert (lease.current().holder, lease.current().heartbeat) == ("a", T0)
        lease.release("a", T0 + timedelta(seconds=2))
        assert (lease.current().holder, lease.current().heartbeat) == ("", T0 + timedelta(seconds=2))
        assert lease.beat("a", T0 + timedelta(seconds=3)) is False
        previous = lease.acquire("b", T0 + timedelta(seconds=3), self.TTL_S)  # at once: no wait for the TTL
        assert (previous.holder, previous.heartbeat) == ("", T0 + timedelta(seconds=2))

    def test_heartbeats_are_instants(self, lease):
        lease.acquire("a", T0.astimezone(PARIS), self.TTL_S)
        assert lease.current().heartbeat == T0
        assert lease.beat("a", (T0 + timedelta(seconds=1)).astimezone(PARIS))
        assert lease.current().heartbeat == T0 + timedelta(seconds=1)


class KeyStoreContract(PortContract):
    def make_keystore(self):
        raise NotImplementedError

    @pytest.fixture
    def keys(self):
        return self.make_keystore()

    def test_an_unknown_scope_has_no_key(self, keys):
        assert keys.get("t-1") is None

    def test_put_stores_and_returns_the_key(self, keys):
        key = os.urandom(64)
        assert keys.put("t-1", key) == key
        assert keys.get("t-1") == key
        assert isinstance(keys.get("t-1"), bytes)

    def test_put_twice_keeps_the_first_key(self, keys):
        first, second = os.urandom(64), os.urandom(64)
        keys.put("t-1", first)
        assert keys.put("t-1", second) == first  # two processes racing to make a key agree on one
        assert keys.get("t-1") == first

    def test_destroy_drops_one_key_for_good(self, keys):
        one, two = os.urandom(64), os.urandom(64)
        keys.put("t-1", one)
        keys.put("t-2", two)
        keys.destroy("t-1")
        keys.destroy("never-had-one")
        assert keys.get("t-1") is None
        assert keys.get("t-2") == two
        fresh = os.urandom(64)
        assert keys.put("t-1", fresh) == fresh  # a new key, never the destroyed one

    def test_scopes_are_compared_exactly(self, keys):
        key = os.urandom(64)
        keys.put("Task-1", key)
        assert keys.get("task-1") is None and keys.get("Task-1 ") is None


class ReadModelSessionContract(PortContract):
    """projections.sql.SqlSession: what the read models, the runner (checkpoints, savepoints,
    the projector lock) and the queries ask of a database."""

    def make_session(self):
        raise NotImplementedError

    TABLE = Table("rm_contract", ("kind", "seq", "text", "count"), ("kind", "seq"), frozenset({"seq", "count"}),
                  (("text",),))

    def session_with_table(self):
        session = self.make_session()
        with session.transaction():
            session.create_table(self.TABLE)
            session.create_table(self.TABLE)  # idempotent
        return session

    def rows(self, session) -> list[tuple]:
        return [tuple(r) for r in session.execute("SELECT kind, seq, text, count FROM rm_contract ORDER BY kind, seq")]

    def test_an_upsert_inserts_then_replaces_by_key_with_types_kept(self):
        session = self.session_with_table()
        with session.transaction():
            session.executemany(upsert_sql(self.TABLE), [("a", 1, "one", 10), ("a", 2, None, 2**62)])
        with session.transaction():
            session.executemany(upsert_sql(self.TABLE), [("a", 1, "uno", 11)])
        assert self.rows(session) == [("a", 1, "uno", 11), ("a", 2, None, 2**62)]

    def test_many_rows_are_upserted_as_few_are_in_one_transaction(self):
        """upsert_many (the projector's writes; PostgreSQL COPYs a batch of 500 rows or more):
        inserted, then replaced by key, a key twice in one batch ending as its last row, and
        nothing kept of a transaction that raises."""
        session = self.session_with_table()
        many = [("m", n, f"t{n}", n) for n in range(1200)]
        with session.transaction():
            session.upsert_many(self.TABLE, many)
        replaced = [("m", n, "new", -n) for n in range(600, 1800)] + [("m", 5, "first", 1), ("m", 5, "last", 2)]
        with session.transaction():
            session.upsert_many(self.TABLE, replaced)
        expected = {(k, n): (t, c) for k, n, t, c in many + replaced}
        assert self.rows(session) == sorted((k, n, t, c) for (k, n), (t, c) in expected.items())
        with pytest.raises(RuntimeError), session.transaction():
            session.upsert_many(self.TABLE, [("m", n, "lost", 0) for n in range(2000)])
            raise RuntimeError("the fold failed")
        assert self.rows(session) == sorted((k, n, t, c) for (k, n), (t, c) in expected.items())

    def test_runs_are_upserted_as_their_rows_are_in_order(self):
        """upsert_runs (the projector's Appends: SQLite writes a run that differs in a few
        columns as one statement): long runs, short ones, a key replaced by a later run and
        twice within one, every kind of value the table holds."""
        session = self.session_with_table()
        shared_text = [("r", n, "same", 7) for n in range(300)]
        odd_values = [("r", 1000 + n, text, 2**63 - 1 if n % 2 else -(2**63))
                      for n, text in enumerate(["é", "\u00a7x@y", 'a "quoted", comma', "tab\there", None, "𝄞", "\\u0000"] * 10)]
        short = [("r", 5, "short", 1), ("r", 6, None, None)]
        replacing = [("r", n, "again", n) for n in range(250, 320)] + [("r", 299, "twice", 1), ("r", 299, "last", 2)]
        runs = [shared_text, short, odd_values, replacing]
        with session.transaction():
            session.upsert_runs(self.TABLE, runs)
        expected = {(k, n): (t, c) for run in runs for k, n, t, c in run}
        assert self.rows(session) == sorted((k, n, t, c) for (k, n), (t, c) in expected.items())

    def test_many_runs_are_upserted_whether_their_keys_are_new_taken_or_repeated(self):
        """Past 500 rows (PostgreSQL COPYs appended rows into the table itself, and upserts
        them when a key is taken): new keys, keys already stored, a key twice in one call."""
        session = self.session_with_table()
        new = [[("n", n, "new", n) for n in range(m, m + 300)] for m in (0, 300)]
        taken = [[("n", n, "again", -n) for n in range(450, 750)], [("n", n, "more", 1) for n in range(750, 1000)]]
        twice = [[("n", 5000 + n % 400, f"t{n}", n) for n in range(600)]]
        for runs in (new, taken, twice):
            with session.transaction():
                session.upsert_runs(self.TABLE, runs)
        expected = {(k, n): (t, c) for runs in (new, taken, twice) for run in runs for k, n, t, c in run}
        assert self.rows(session) == sorted((k, n, t, c) for (k, n), (t, c) in expected.items())
        with pytest.raises(RuntimeError), session.transaction():
            session.upsert_runs(self.TABLE, [[("n", n, "lost", 0) for n in range(9000, 9600)]])
            raise RuntimeError("the fold failed")
        assert self.rows(session) == sorted((k, n, t, c) for (k, n), (t, c) in expected.items())

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.differing_executors])
    @given(st.lists(st.tuples(
        st.integers(0, 120),  # rows in the run
        st.sampled_from(["", "x", "§AAAA", "ü\n", None]), st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
        st.sets(st.sampled_from([1, 2, 3]), max_size=3),  # which columns vary within the run
        st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=6)), max_size=5))
    def test_runs_match_their_rows_upserted_one_by_one(self, shapes):
        session = self.session_with_table()
        runs: list[list[tuple]] = []
        for n, (rows, text, count, varying, odd) in enumerate(shapes):
            runs.append([("p", (n * 37 + i) % 150 if 1 in varying else n, (text or "") + odd + str(i) if 2 in varying else text,
                          i * (count or 1) % 2**62 if 3 in varying else count) for i in range(rows)])
        with session.transaction():
            session.execute("DELETE FROM rm_contract")
            session.upsert_runs(self.TABLE, runs)
        expected = {(k, n): (t, c) for run in runs for k, n, t, c in run}
        assert self.rows(session) == sorted((k, n, t, c) for (k, n), (t, c) in expected.items())

    def test_a_transaction_that_raises_leaves_nothing(self):
        session = self.session_with_table()
        with pytest.raises(RuntimeError), session.transaction():
            session.execute(upsert_sql(self.TABLE), ("a", 1, "one", 1))
            raise RuntimeError("the fold failed")
        assert self.rows(session) == []

    def test_a_savepoint_rolls_back_one_event_and_keeps_the_rest(self):
        session = self.session_with_table()
        with session.transaction():
            session.execute(upsert_sql(self.TABLE), ("a", 1, "kept", 1))
            session.execute("SAVEPOINT one_event")
            session.execute(upsert_sql(self.TABLE), ("a", 2, "dropped", 2))
            session.execute("ROLLBACK TO SAVEPOINT one_event")
            session.execute("RELEASE SAVEPOINT one_event")
        assert self.rows(session) == [("a", 1, "kept", 1)]

    def test_the_projector_lock_is_taken_inside_a_transaction(self):
        session = self.session_with_table()
        for _ in range(2):  # released at the end of each transaction
            with session.transaction():
                session.lock("vec.projector")
                session.execute(upsert_sql(self.TABLE), ("a", 1, "x", 1))
        assert self.rows(session) == [("a", 1, "x", 1)]

    def test_stream_pages_through_every_row_in_order(self):
        session = self.session_with_table()
        with session.transaction():
            session.executemany(upsert_sql(self.TABLE), [("b", n, f"t{n}", n) for n in range(25)])
        streamed = list(session.stream("SELECT seq FROM rm_contract WHERE kind = ? ORDER BY seq", ("b",), size=4))
        assert [r[0] for r in streamed] == list(range(25))

    def test_rowcount_scalar_and_a_snapshot_read(self):
        session = self.session_with_table()
        with session.transaction():
            session.executemany(upsert_sql(self.TABLE), [("c", n, "x", n) for n in range(3)])
            cursor = session.execute("UPDATE rm_contract SET count = count + 1 WHERE kind = ?", ("c",))
            assert cursor.rowcount == 3
        with session.snapshot():
            assert scalar(session.execute("SELECT COUNT(*) FROM rm_contract")) == 3
            assert scalar(session.execute("SELECT SUM(count) FROM rm_contract")) == 6

    def test_a_value_no_column_holds_is_an_error_of_the_event_not_of_the_database(self):
        """The runner tells a poison event (stop that read model) from a database that is busy
        or gone (retry) by transient_errors."""
        session = self.session_with_table()
        with pytest.raises(Exception) as raised, session.transaction():
            session.execute(upsert_sql(self.TABLE), ("a", 1, "x", 2**64))
        assert not isinstance(raised.value, session.transient_errors)
        assert self.rows(session) == []


class FleetStoreContract(PortContract):
    """Heartbeats and chunk claims (engine/store/base.py FleetStore): what the fleet's workers
    and watchdog rely on, the same on PostgreSQL and in memory (the simulator's)."""

    def make_database(self):
        """A fresh, empty Database whose `fleet` is the adapter under test."""
        raise NotImplementedError

    @pytest.fixture
    def db(self):
        return self.make_database()

    def test_a_free_chunk_is_claimed_and_a_live_claim_of_another_is_refused(self, db):
        fleet, stale = db.fleet, T0 - timedelta(seconds=10)
        assert fleet.claim("t1", 0, "w1", T0, stale) is True
        assert fleet.claim("t1", 0, "w2", T0 + timedelta(seconds=1), stale) is False
        assert fleet.claim("t1", 0, "w1", T0 + timedelta(seconds=2), stale) is True  # its own, again
        assert fleet.claim("t1", 1, "w2", T0, stale) is True  # another chunk
        assert fleet.live_claims(stale) == {("t1", 0), ("t1", 1)}

    def test_a_claim_whose_heartbeat_stopped_is_taken_over(self, db):
        fleet, later = db.fleet, T0 + timedelta(seconds=30)
        assert fleet.claim("t1", 0, "w1", T0, T0 - timedelta(seconds=10)) is True
        assert fleet.live_claims(later - timedelta(seconds=10)) == set()
        assert fleet.claim("t1", 0, "w2", later, later - timedelta(seconds=10)) is True
        fleet.release("t1", 0, "w1")  # the old holder wakes: its release leaves the new claim alone
        assert fleet.live_claims(later - timedelta(seconds=10)) == {("t1", 0)}
        assert fleet.claim("t1", 0, "w1", later, later - timedelta(seconds=10)) is False

    def test_renewals_keep_a_workers_claims_alive(self, db):
        fleet, later = db.fleet, T0 + timedelta(seconds=30)
        fleet.claim("t1", 0, "w1", T0, T0)
        fleet.claim("t1", 1, "w2", T0, T0)
        fleet.renew("w1", later)
        assert fleet.live_claims(later - timedelta(seconds=10)) == {("t1", 0)}

    def test_release_and_leave_drop_only_the_holders_claims(self, db):
        fleet, stale = db.fleet, T0 - timedelta(seconds=10)
        for chunk_no, worker in ((0, "w1"), (1, "w1"), (2, "w2")):
            fleet.claim("t1", chunk_no, worker, T0, stale)
        fleet.release("t1", 2, "w1")  # not its claim
        fleet.release("t1", 0, "w1")
        assert fleet.live_claims(stale) == {("t1", 1), ("t1", 2)}
        fleet.leave("w1")
        assert fleet.live_claims(stale) == {("t1", 2)}

    def test_the_last_worker_beat_counts_processes_with_the_worker_role_only(self, db):
        fleet = db.fleet
        assert fleet.last_worker_beat() is None
        fleet.beat("wd", "projector,relay,watchdog", "h", 1, T0 + timedelta(seconds=50), "ready")
        assert fleet.last_worker_beat() is None
        fleet.beat("w1", "worker", "h", 2, T0, "starting")
        fleet.beat("w1", "worker", "h", 2, T0 + timedelta(seconds=5), "ready")
        assert fleet.last_worker_beat() == T0 + timedelta(seconds=5)
        members = fleet.members(T0 + timedelta(seconds=1))
        assert [(m["worker_id"], m["state"], m["started_at"]) for m in members] == [
            ("w1", "ready", T0), ("wd", "ready", T0 + timedelta(seconds=50))]

    def test_stopped_tasks_are_read_from_the_log(self, db):
        from entrypoints.settings import EngineSettings
        from engine.service import Engine

        engine = Engine(db, EngineSettings(store=db.url))
        engine.open_account("a1")
        running, stopped = (engine.create_single("a1", f"{n}@example.org") for n in ("x", "y"))
        assert db.fleet.stopped_tasks([running, stopped]) == set()
        engine.fail_for_system(stopped, "engine_outage: test")
        assert db.fleet.stopped_tasks([running, stopped, "never-created"]) == {stopped}
        assert db.fleet.stopped_tasks([]) == set()

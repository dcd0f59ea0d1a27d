"""The embedded runtime against scripted providers (no network): chunking, retries,
chunk failures, provider outages, cancel with late results, crash recovery and the
outage watchdog. Money is checked by `vec audit`'s engine after every scenario."""
from __future__ import annotations

import asyncio
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from consumers.providers import InstantProvider
from consumers.runtime import Runtime
from engine.audit import audit
from entrypoints.settings import EngineSettings
from engine.domain.tasks import Result
from engine.service import Engine, utcnow
from engine.store import open_database
from verifier.provider import ProviderError, ProviderUnavailable
from tests.staged import staged_chunk


def settings(**overrides) -> EngineSettings:
    base = dict(provider="instant", chunk_size=5, chunk_window=2, workers=4, retry_backoff=0.01, chunk_retries=2,
                poll_interval=0.02, heartbeat_interval=0.1, results_flush_interval=0.02, provider_deadline=0.3,
                partial_failure_threshold=0.3, outage_grace=60)
    base.update(overrides)
    return EngineSettings(**base)


class ScriptedProvider:
    """Answers like InstantProvider, but slowly, failing chosen chunks or being unreachable."""

    name = "scripted"
    tier = "scripted"

    def __init__(self, delay=0.0, reject=lambda addresses: False, unreachable=False):
        self.delay, self.reject, self.unreachable = delay, reject, unreachable
        self.calls: list[list[str]] = []
        self.finished: list[str] = []

    async def verify(self, addresses, on_result=None):
        self.calls.append(list(addresses))
        if self.unreachable:
            raise ProviderUnavailable("connection refused")
        if self.reject(addresses):
            raise ProviderError("batch rejected")
        results = []
        for result in await InstantProvider().verify(addresses):
            await asyncio.sleep(self.delay)
            results.append(result)
            self.finished.append(result.address)
            if on_result:
                on_result(result)
        return results


def write_csv(path: Path, addresses: list[str]) -> Path:
    path.write_text("email\n" + "\n".join(addresses) + "\n")
    return path


def addresses(n: int, prefix: str = "user") -> list[str]:
    return [f"{prefix}{i}@example.test" for i in range(n)]


async def run_until(engine: Engine, provider, done, timeout: float = 20.0) -> None:
    stop = asyncio.Event()
    runtime = asyncio.create_task(Runtime(engine, provider).run(stop))
    try:
        async with asyncio.timeout(timeout):
            while not done():
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await runtime


def crashed_runtime(db, died_ago: timedelta) -> None:
    """The lease as a runtime killed `died_ago` left it: its last beat then, its PID gone."""
    dead = _reaped_pid()
    db.lease.acquire("crashed-runtime", utcnow() - died_ago, ttl=1)
    db.events.conn.execute("UPDATE engine_lease SET pid = ?", (dead,))


def _reaped_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def assert_audit_clean(db) -> None:
    report = audit(db)
    assert report.violations == []


@pytest.fixture
def engine(db):
    e = Engine(db, settings())
    e.open_account("acme")
    e.grant_credits("acme", "payg", 1000)
    return e


def test_mixed_bulk_completes_and_settles_every_address(engine, db, tmp_path):
    mix = addresses(12) + addresses(5, "unknown") + addresses(4, "invalid") + addresses(3, "risky")
    task_id = engine.create_bulk("acme", write_csv(tmp_path / "f.csv", mix)).task_id
    asyncio.run(run_until(engine, InstantProvider(), lambda: not engine.task(task_id).active))
    db.catch_up()
    row = db.read.task(task_id)
    assert (row["status"], row["total"], row["consumed"], row["unknown"], row["refunded"]) == (
        "completed", 24, 19, 5, 5)
    assert db.read.balances("acme")["total"] == 1200 - 24 + 5
    refunds = db.read.history("acme", "refund")
    assert [r["description"] for r in refunds] == ["Credit refund: 1 credits"] * 5
    assert {r["status"] for r in db.read.results(task_id)} == {"safe", "unknown", "invalid", "risky"}
    assert staged_chunk(db, task_id, 0, 5) == []  # staged inputs are dropped once chunked
    assert_audit_clean(db)


def test_rejected_chunk_is_retried_then_failed_and_refunded(engine, db, tmp_path):
    bad = {"user7@example.test"}
    provider = ScriptedProvider(reject=lambda batch: bool(bad & set(batch)))
    task_id = engine.create_bulk("acme", write_csv(tmp_path / "f.csv", addresses(20))).task_id  # 4 chunks
    asyncio.run(run_until(engine, provider, lambda: not engine.task(task_id).active))
    assert sum(1 for call in provider.calls if bad & set(call)) == 1 + engine.settings.chunk_retries
    db.catch_up()
    row = db.read.task(task_id)
    # 1 failed chunk of 4 = 25% <= 30% threshold: the task completes with the badge
    assert (row["status"], row["partial_failure"], row["failed"], row["consumed"], row["refunded"]) == (
        "completed", True, 5, 15, 5)
    assert [r["amount"] for r in db.read.history("acme", "refund")] == [5]
    assert_audit_clean(db)


def test_failed_chunks_past_threshold_fail_the_task_and_refund_the_rest(engine, db, tmp_path):
    provider = ScriptedProvider(reject=lambda batch: True)
    task_id = engine.create_bulk("acme", write_csv(tmp_path / "f.csv", addresses(20))).task_id
    asyncio.run(run_until(engine, provider, lambda: not engine.task(task_id).active))
    db.catch_up()
    row = db.read.task(task_id)
    assert (row["status"], row["partial_failure"], row["consumed"], row["refunded"]) == ("failed", True, 0, 20)
    assert db.read.balances("acme")["total"] == 1200
    assert_audit_clean(db)


def test_provider_unreachable_past_deadline_is_a_system_failure(engine, db, tmp_path):
    provider = ScriptedProvider(unreachable=True)
    task_id = engine.create_bulk("acme", write_csv(tmp_path / "f.csv", addresses(8))).task_id
    asyncio.run(run_until(engine, provider, lambda: not engine.task(task_id).active))
    db.catch_up()
    assert db.read.task(task_id)["status"] == "failed"
    rows = db.read.history("acme", "refund")
    assert [r["amount"] for r in rows] == [8]
    assert db.read.balances("acme")["total"] == 1200
    assert_audit_clean(db)


class AnswersHeldUntilTheCancel(ScriptedProvider):
    """The first chunk is answered as usual; every later chunk hands its answers to the
    engine (on_result) and then hangs, so they sit in the chunk's buffer (a long
    results_flush_interval) until the stop signal cancels the chunk and flushes them: results
    that arrive after the cancel, for sure, not by luck of timing."""

    async def verify(self, addresses, on_result=None):
        if not self.calls:
            return await super().verify(addresses, on_result)
        self.calls.append(list(addresses))
        for result in await InstantProvider().verify(addresses):
            self.finished.append(result.address)
            if on_result:
                on_result(result)
        await asyncio.Event().wait()  # in flight until the stop signal cancels it


def test_cancel_stops_workers_refunds_unverified_once_and_late_results_cost_nothing(engine, db, tmp_path):
    engine = Engine(db, settings(results_flush_interval=60))  # a chunk's results leave with the chunk
    provider = AnswersHeldUntilTheCancel()
    task_id = engine.create_bulk("acme", write_csv(tmp_path / "f.csv", addresses(40))).task_id

    async def scenario():
        stop = asyncio.Event()
        runtime = asyncio.create_task(Runtime(engine, provider).run(stop))
        async with asyncio.timeout(20):
            while engine.task(task_id).consumed < 3 or len(provider.calls) < 2:  # answers held in flight
                await asyncio.sleep(0.01)
        # cancel from elsewhere: a second engine with its own connection to the same file
        other = Engine(open_database(db.url), engine.settings)
        other.cancel_task(task_id)
        at_cancel = other.task(task_id)
        async with asyncio.timeout(20):  # the held answers reach the log, after the cancel
            while engine.task(task_id).late == 0:
                await asyncio.sleep(0.01)
        stop.set()
        await runtime
        return at_cancel

    at_cancel = asyncio.run(scenario())
    state = engine.task(task_id)
    db.catch_up()
    row = db.read.task(task_id)
    assert row["status"] == "cancelled"
    assert state.late > 0  # results did arrive after the cancel (what the checks below measure)
    # ...and they cost nothing: neither consumed nor refunded again since the cancel
    assert (state.consumed, state.refunded) == (at_cancel.consumed, at_cancel.refunded)
    assert state.chunks_submitted <= 1 + engine.settings.chunk_window  # no chunk after the cancel
    cancel_rows = db.read.history("acme", "cancel")
    assert len(cancel_rows) == 1
    assert cancel_rows[0]["amount"] == 40 - row["consumed"] - row["unknown"]
    assert row["consumed"] + row["refunded"] == 40
    assert len(provider.finished) < 40  # workers stopped before finishing the bulk
    # results of in-flight chunks that finished after the cancel were logged, never shown
    shown = {r["address"] for r in db.read.results(task_id)}
    assert len(shown) == row["verified"] == row["consumed"]
    assert_audit_clean(db)


def test_restart_within_grace_resumes_without_charging_twice(engine, db, tmp_path):
    task_id = engine.create_bulk("acme", write_csv(tmp_path / "f.csv", addresses(10))).task_id
    engine.submit_chunk(task_id, 0, staged_chunk(db, task_id, 0, 5), "scripted", "scripted")
    engine.record_results(task_id, 0, [Result("user0@example.test", "safe"), Result("user1@example.test", "invalid")])
    crashed_runtime(db, died_ago=timedelta(seconds=5))
    provider = ScriptedProvider()
    asyncio.run(run_until(engine, provider, lambda: not engine.task(task_id).active))
    assert "user0@example.test" not in provider.calls[0]  # only what had no result is verified again
    db.catch_up()
    row = db.read.task(task_id)
    assert (row["status"], row["consumed"], row["debited"]) == ("completed", 10, 10)
    assert db.read.balances("acme")["total"] == 1190
    assert_audit_clean(db)


def test_restart_after_grace_fails_running_tasks_through_system_failure(engine, db, tmp_path):
    running = engine.create_bulk("acme", write_csv(tmp_path / "a.csv", addresses(10))).task_id
    engine.submit_chunk(running, 0, staged_chunk(db, running, 0, 5), "scripted", "scripted")
    engine.record_results(running, 0, [Result("user0@example.test", "safe")])
    queued = engine.create_bulk("acme", write_csv(tmp_path / "b.csv", addresses(3, "q"))).task_id
    crashed_runtime(db, died_ago=timedelta(seconds=120))
    engine.settings = settings(outage_grace=30)
    asyncio.run(run_until(engine, InstantProvider(), lambda: not engine.task(queued).active))
    db.catch_up()
    row = db.read.task(running)
    assert (row["status"], row["consumed"], row["refunded"]) == ("failed", 1, 9)
    assert db.read.task(queued)["status"] == "completed"  # never started: it just runs
    system_rows = [r for r in db.read.history("acme", "refund") if r["task_id"] == running]
    assert [r["amount"] for r in system_rows] == [9]
    assert_audit_clean(db)


def test_a_second_runtime_cannot_take_a_live_lease(engine, db):
    from engine.store.lease import LeaseHeld

    db.lease.acquire("someone-else", utcnow(), ttl=10)
    with pytest.raises(LeaseHeld):
        asyncio.run(Runtime(engine, InstantProvider()).run())


def test_an_engine_starting_waits_for_a_cli_driving_one_task_then_takes_over(engine, db):
    """`vec verify` with no engine up drives its task itself (a "follower" lease); `vec run`
    started meanwhile waits for it instead of dying with "another engine is running"."""
    from engine.store.lease import LeaseHeld

    db.lease.acquire("follower-cli", utcnow(), ttl=10)  # alive: this process's pid
    task_id = engine.create_single("acme", "alice@example.test")
    refused = []
    acquire = db.lease.acquire

    def counted_acquire(holder, now, ttl):
        try:
            return acquire(holder, now, ttl)
        except LeaseHeld:
            refused.append(holder)
            raise
    db.lease.acquire = counted_acquire

    async def scenario():
        stop = asyncio.Event()
        runtime = asyncio.create_task(Runtime(engine, InstantProvider()).run(stop))
        async with asyncio.timeout(10):  # it asked for the lease twice and was refused: it waits
            while len(refused) < 2:
                await asyncio.sleep(0.01)
        assert not runtime.done() and engine.task(task_id).active  # waiting, not driving, not dead
        db.lease.release("follower-cli", utcnow())  # the CLI's task ended
        async with asyncio.timeout(10):
            while engine.task(task_id).active:
                await asyncio.sleep(0.02)
        stop.set()
        await runtime

    asyncio.run(scenario())
    # a follower itself still refuses a live lease: it waits in the CLI, not here
    db.lease.acquire("runtime-other", utcnow(), ttl=10)
    with pytest.raises(LeaseHeld):
        asyncio.run(Runtime(engine, InstantProvider(), only_task=task_id).run())


def test_a_task_appended_but_not_yet_folded_when_the_engine_starts_is_driven(engine, db, monkeypatch):
    """The race seen under load: `vec verify` appended TaskCreated just after the starting
    engine caught its read models up, and before they folded it. The engine must find it in
    the log's tail, not only among the active tasks the read model lists."""
    monkeypatch.setattr(Runtime, "recover", lambda self, previous: None)  # the append lands after it
    task_id = engine.create_single("acme", "alice@example.test")
    created = next(e.position for e in db.events.read_all() if e.type == "TaskCreated")
    sql = db.events.conn
    sql.execute("DELETE FROM rm_tasks WHERE task_id = ?", (task_id,))  # as if not folded yet
    sql.execute("UPDATE rm_checkpoints SET position = ? WHERE name = 'tasks'", (created - 1,))
    asyncio.run(run_until(engine, InstantProvider(), lambda: not engine.task(task_id).active))
    db.catch_up()
    assert db.read.task(task_id)["status"] == "completed"
    assert_audit_clean(db)


def test_staging_a_big_upload_does_not_block_other_writers(engine, db, tmp_path):
    from engine.store import open_database

    other = Engine(open_database(db.url), engine.settings)

    def addresses_while_someone_writes():
        for i in range(20):
            if i == 10:  # another process appends while the file streams in
                other.grant_credits("acme", "payg", 5)
            yield f"user{i}@example.test"

    assert db.inputs.stage("upload-1", addresses_while_someone_writes(), utcnow()) == 20
    assert other.account("acme").payg == 1205


def test_the_watchdog_expires_lapsed_monthly_credits_and_sweeps_orphan_uploads(engine, db, tmp_path):
    now = utcnow()
    engine.grant_credits("acme", "monthly", 50, "subscription", now + timedelta(hours=1))
    active = engine.create_bulk("acme", write_csv(tmp_path / "a.csv", addresses(15))).task_id  # 3 chunks, window 2
    later = now + timedelta(hours=2)  # the monthly period has ended
    db.inputs.stage("orphan", ["lost@example.test"], now)  # a crash between stage and create, 2 h ago
    db.inputs.stage("fresh", ["new@example.test"], later)  # a create still on its way
    engine.clock = lambda: later

    def swept() -> bool:  # the expiry appended and the orphan upload gone
        expired = any(e.type == "MonthlyCreditsExpired" for e in db.events.read_stream("account-acme"))
        uploads = {r[0] for r in db.events.conn.execute("SELECT DISTINCT upload_id FROM task_inputs")}
        return expired and "orphan" not in uploads

    async def until_swept():
        stop = asyncio.Event()
        runtime = asyncio.create_task(Runtime(engine, ScriptedProvider(delay=10)).run(stop))
        try:
            async with asyncio.timeout(20):
                while not swept():
                    await asyncio.sleep(0.02)
        finally:
            stop.set()
            await runtime

    asyncio.run(until_swept())
    db.catch_up()
    assert db.read.balances("acme")["monthly"] == 0
    assert [r["amount"] for r in db.read.history("acme", "expiry")] == [-35]  # 15 were spent first
    staged = {r[0] for r in db.events.conn.execute("SELECT DISTINCT upload_id FROM task_inputs")}
    assert "orphan" not in staged and "fresh" in staged
    assert engine.task(active).upload_id in staged  # its last chunk still waits: kept, though 2 h old
    assert_audit_clean(db)


def test_a_follower_ends_with_its_task_not_at_its_next_poll(db, tmp_path):
    """`vec bulk --wait` follows one task: once its driver is done, the follower's last catch-up
    runs at once. With a poll interval far past the timeout, a follower that waited for its
    next look at the log would time out here."""
    engine = Engine(db, settings(poll_interval=60))
    engine.open_account("acme")
    engine.grant_credits("acme", "payg", 100)
    task_id = engine.create_bulk("acme", write_csv(tmp_path / "list.csv", addresses(12))).task_id

    async def follow() -> None:
        async with asyncio.timeout(10):
            await Runtime(engine, InstantProvider(), only_task=task_id).run()

    asyncio.run(follow())
    assert db.read.task(task_id)["status"] == "completed"  # its read model caught up before the end

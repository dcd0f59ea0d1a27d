"""A supervised runtime: it stops loudly rather than running half-alive, escalates errors
of its own instead of retrying them forever, pauses (not settles) while the provider is
down, and never leaves a task processing without progress past the documented bound."""
from __future__ import annotations

import asyncio
import sqlite3

import pytest

from consumers.runtime import EngineCrashed, LeaseLost, Runtime
from engine.domain.tasks import Result
from engine.service import Engine
from tests.integration.test_runtime import (
    ScriptedProvider,
    addresses,
    assert_audit_clean,
    run_until,
    settings,
    write_csv,
)
from verifier.provider import ProviderUnavailable


@pytest.fixture
def engine(db):
    e = Engine(db, settings(driver_retries=2, task_stall_timeout=30))
    e.open_account("acme")
    e.grant_credits("acme", "payg", 1000)
    return e


class HangingProvider:
    """Never answers: a provider stuck in a way no timeout of its own catches."""

    name = tier = "hanging"

    async def verify(self, addresses, on_result=None):
        await asyncio.Event().wait()


async def _run_expecting_crash(engine, provider) -> EngineCrashed:
    with pytest.raises(EngineCrashed) as crashed:
        async with asyncio.timeout(10):
            await Runtime(engine, provider).run()
    return crashed.value


def test_a_failing_heartbeat_stops_the_whole_runtime_loudly(engine, db, tmp_path):
    task_id = engine.create_bulk("acme", write_csv(tmp_path / "f.csv", addresses(10))).task_id

    def broken_beat(holder, now):
        raise sqlite3.OperationalError("disk I/O error")

    db.lease.beat = broken_beat
    crash = asyncio.run(_run_expecting_crash(engine, HangingProvider()))
    assert "heartbeat failed" in str(crash) and "disk I/O error" in str(crash)
    head = db.events.head()
    assert engine.task(task_id).active  # nothing settled it: a restart resumes it
    assert db.events.head() == head


def test_a_failing_projector_stops_the_whole_runtime_loudly(engine, db, tmp_path):
    engine.create_bulk("acme", write_csv(tmp_path / "f.csv", addresses(10)))
    real, calls = db.projector.catch_up, []

    def broken_catch_up(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:  # the catch-up at start works; the follower's next one fails
            raise RuntimeError("projector bug")
        return real(*args, **kwargs)

    db.projector.catch_up = broken_catch_up
    crash = asyncio.run(_run_expecting_crash(engine, HangingProvider()))
    assert "follower failed" in str(crash) and "projector bug" in str(crash)


def test_losing_the_lease_stops_driving_at_once(engine, db, tmp_path):
    engine.create_bulk("acme", write_csv(tmp_path / "f.csv", addresses(10)))

    async def scenario():
        runtime = Runtime(engine, HangingProvider())
        running = asyncio.create_task(runtime.run())
        async with asyncio.timeout(10):  # the runtime drives the task (waited for, not slept on)
            while not runtime.drivers:
                await asyncio.sleep(0.01)
        db.events.conn.execute("UPDATE engine_lease SET holder = 'usurper'")
        with pytest.raises(LeaseLost):
            async with asyncio.timeout(5):
                await running
        assert not runtime.drivers

    asyncio.run(scenario())


class BadStatusProvider(ScriptedProvider):
    """Answers one chunk with a status the engine does not know: an error of ours, every time."""

    def __init__(self, bad: str):
        super().__init__()
        self.bad = bad

    async def verify(self, batch, on_result=None):
        results = await super().verify(batch)
        return [Result(r.address, "bogus") if r.address == self.bad else r for r in results]


def test_a_worker_that_keeps_failing_fails_its_chunk_with_its_refund(engine, db, tmp_path):
    task_id = engine.create_bulk("acme", write_csv(tmp_path / "f.csv", addresses(20))).task_id  # 4 chunks of 5
    provider = BadStatusProvider("user7@example.test")
    asyncio.run(run_until(engine, provider, lambda: not engine.task(task_id).active))
    assert sum(1 for call in provider.calls if "user7@example.test" in call) == 1 + 2  # driver_retries = 2
    db.catch_up()
    row = db.read.task(task_id)
    assert (row["status"], row["partial_failure"], row["failed"], row["consumed"]) == ("completed", True, 5, 15)
    assert [r["amount"] for r in db.read.history("acme", "refund")] == [5]
    assert_audit_clean(db)


def test_a_scheduling_step_that_keeps_failing_fails_the_task_with_its_refund(engine, db, tmp_path):
    task_id = engine.create_bulk("acme", write_csv(tmp_path / "f.csv", addresses(20))).task_id
    db.events.conn.execute("DELETE FROM task_inputs WHERE seq = 12")  # lost staged input: chunk 2 can never be made
    asyncio.run(run_until(engine, ScriptedProvider(), lambda: not engine.task(task_id).active))
    db.catch_up()
    row = db.read.task(task_id)
    assert row["status"] == "failed"
    assert row["consumed"] + row["refunded"] == 20
    events = [r.event for r in db.events.read_stream(f"task-{task_id}")]
    assert "engine_error" in events[-1].reason
    assert_audit_clean(db)


def test_a_task_without_progress_past_the_bound_fails_with_its_refund(db, tmp_path):
    engine = Engine(db, settings(task_stall_timeout=0.5, provider_deadline=0.3))
    engine.open_account("acme")
    task_id = engine.create_bulk("acme", write_csv(tmp_path / "f.csv", addresses(8))).task_id
    asyncio.run(run_until(engine, HangingProvider(), lambda: not engine.task(task_id).active, timeout=10))
    db.catch_up()
    assert db.read.task(task_id)["status"] == "failed"
    assert [r["type"] for r in db.read.history("acme")][-1] == "refund"
    assert db.read.balances("acme")["total"] == 200
    assert_audit_clean(db)


class FlakyProvider(ScriptedProvider):
    """Cut off for its first `outages` calls; in the first one it still answers one address."""

    def __init__(self, outages: int):
        super().__init__()
        self.outages, self.calls_down = outages, 0

    async def verify(self, batch, on_result=None):
        if self.calls_down >= self.outages:
            return await ScriptedProvider.verify(self, batch, on_result)
        self.calls_down += 1
        answered = batch[:1] if self.calls_down == 1 else []
        await ScriptedProvider.verify(self, answered, on_result)
        raise ProviderUnavailable("our resolver is not answering", unanswered=tuple(batch[len(answered):]))


def test_an_outage_of_ours_pauses_the_chunk_instead_of_settling_unknowns(engine, db, tmp_path):
    task_id = engine.create_bulk("acme", write_csv(tmp_path / "f.csv", addresses(10))).task_id
    provider = FlakyProvider(outages=3)
    asyncio.run(run_until(engine, provider, lambda: not engine.task(task_id).active))
    db.catch_up()
    row = db.read.task(task_id)
    assert (row["status"], row["consumed"], row["unknown"], row["refunded"]) == ("completed", 10, 0, 0)
    assert_audit_clean(db)


def test_an_outage_of_ours_past_the_deadline_fails_the_task_with_a_refund_row(engine, db, tmp_path):
    task_id = engine.create_bulk("acme", write_csv(tmp_path / "f.csv", addresses(10))).task_id
    provider = FlakyProvider(outages=10_000)
    asyncio.run(run_until(engine, provider, lambda: not engine.task(task_id).active))
    db.catch_up()
    row = db.read.task(task_id)
    assert (row["status"], row["unknown"], row["consumed"], row["refunded"]) == ("failed", 0, 1, 9)
    assert [(r["type"], r["amount"]) for r in db.read.history("acme")][-1] == ("refund", 9)
    assert_audit_clean(db)

"""The timed policies (engine/policies.py) through both runners: the same scenarios run
through the embedded runtime (SQLite) and the fleet's watchdog (PostgreSQL), and must end
alike. The engine clock is moved by hand: the rules use the log's own time, so neither a
restart nor a process's clock changes what they decide.

Each scenario first shows the rule holding back (just inside its bound), then acting
(just past it)."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterator

import pytest

from entrypoints import bootstrap
from consumers.providers import InstantProvider
from consumers.runtime import Runtime
from entrypoints.settings import EngineSettings
from engine.policies import STALE_UPLOAD_S
from engine.domain.tasks import Result
from engine.service import Engine
from engine.store import open_database
from engine.store.lease import LeaseInfo
from tests.integration.test_service import assert_audit_clean

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
STALL_S, GRACE_S = 900.0, 300.0


@dataclass
class Runner:
    """One runner over its store, with the engine clock in the test's hands."""

    engine: Engine
    now: list[datetime]
    beat: Callable[[], None]  # one beat of the runner (its stall bound)
    sweep: Callable[[], None]  # the runner's sweeps
    down_since: Callable[[datetime], None]  # the runner learns nothing ran since then

    def at(self, moment: datetime) -> "Runner":
        self.now[0] = moment
        return self


def _settings() -> EngineSettings:
    return EngineSettings(_env_file=None, provider="instant", task_stall_timeout=STALL_S, outage_grace=GRACE_S,
                          provider_deadline=120, chunk_size=10)


@contextlib.contextmanager
def _embedded(tmp_path) -> Iterator[Runner]:
    db = open_database(f"sqlite:///{tmp_path}/vec.db")
    now = [T0]
    engine = Engine(db, _settings(), clock=lambda: now[0])
    runtime = Runtime(engine, InstantProvider())

    def beat(sweep: bool) -> None:
        db.catch_up()  # what the runtime's follower does all along
        runtime.on_beat(sweep)

    try:
        yield Runner(engine, now, beat=lambda: beat(False), sweep=lambda: beat(True),
                     down_since=lambda t: runtime.recover(LeaseInfo("runtime-gone", 0, "elsewhere", t)))
    finally:
        db.close()


@contextlib.contextmanager
def _fleet(pg_url) -> Iterator[Runner]:
    db = open_database(pg_url, migrate=True)
    now = [T0]
    engine = Engine(db, _settings(), clock=lambda: now[0])
    fleet = bootstrap.fleet(engine, {"watchdog"})
    started_at = T0 - timedelta(days=1)

    def down_since(moment: datetime) -> None:
        db.fleet.beat("worker-gone", "worker", "elsewhere", 1, moment, "ready")
        fleet._watch_once(started_at, {})

    def beat() -> None:
        db.fleet.beat("worker-here", "worker", "here", 2, now[0], "ready")  # a live fleet
        fleet._watch_once(started_at, {})

    def sweep() -> None:
        db.catch_up()  # what the fleet's projector (and the watchdog's own pass) do all along
        fleet.reactions.sweep()

    try:
        yield Runner(engine, now, beat=beat, sweep=sweep, down_since=down_since)
    finally:
        fleet.call.close()
        db.close()


@pytest.fixture(params=["embedded", pytest.param("fleet", marks=pytest.mark.postgres)])
def runner(request, tmp_path) -> Iterator[Runner]:
    if request.param == "embedded":
        with _embedded(tmp_path) as made:
            yield made
    else:
        with _fleet(request.getfixturevalue("pg_url")) as made:
            yield made


def _processing_task(engine: Engine, account: str = "acme") -> str:
    engine.open_account(account)
    task_id = engine.create_single(account, "alice@example.com")
    engine.submit_chunk(task_id, 0, ["alice@example.com"], "instant", "primary")
    return task_id


def _status(runner: Runner, task_id: str) -> str:
    return runner.engine.task(task_id).status


def _system_failure(runner: Runner, task_id: str) -> str:
    last = list(runner.engine.db.events.read_stream(f"task-{task_id}"))
    reasons = [r.event.reason for r in last if type(r.event).__name__ == "SystemFailure"]
    assert len(reasons) == 1, reasons
    return reasons[0]


def test_a_task_silent_past_the_stall_bound_fails_with_its_refund(runner):
    task_id = _processing_task(runner.engine)
    runner.at(T0 + timedelta(seconds=STALL_S - 5)).beat()
    assert _status(runner, task_id) == "processing"
    runner.at(T0 + timedelta(seconds=STALL_S + 5)).beat()
    assert _status(runner, task_id) == "failed"
    assert _system_failure(runner, task_id).startswith("stalled: no progress for 905s")
    runner.engine.db.catch_up()
    assert runner.engine.db.read.balances("acme")["total"] == 200
    assert_audit_clean(runner.engine.db)


def test_a_new_event_restarts_the_stall_bound(runner, tmp_path):
    engine = runner.engine
    engine.open_account("acme")
    listing = tmp_path / "two.csv"
    listing.write_text("email\nalice@example.com\nbob@example.com\n")
    task_id = engine.create_bulk("acme", listing).task_id
    engine.submit_chunk(task_id, 0, ["alice@example.com", "bob@example.com"], "instant", "primary")
    runner.at(T0 + timedelta(seconds=STALL_S - 5))
    engine.record_results(task_id, 0, [Result("alice@example.com", "safe", tier="primary")])  # progress
    runner.at(T0 + timedelta(seconds=STALL_S + 5)).beat()
    assert _status(runner, task_id) == "processing"  # 10 s since its last event, not 905 s
    runner.at(T0 + timedelta(seconds=2 * STALL_S)).beat()
    assert _status(runner, task_id) == "failed"
    assert _system_failure(runner, task_id).startswith("stalled: no progress for 905s")


def test_an_outage_past_the_grace_fails_processing_tasks_and_a_shorter_one_resumes(runner):
    short = _processing_task(runner.engine, "short")
    runner.at(T0 + timedelta(seconds=GRACE_S - 5)).down_since(T0)
    assert _status(runner, short) == "processing"
    runner.at(T0 + timedelta(seconds=GRACE_S + 5)).down_since(T0)
    assert _status(runner, short) == "failed"
    assert _system_failure(runner, short).startswith("engine_outage:")
    assert_audit_clean(runner.engine.db)


def test_monthly_credits_expire_at_the_end_of_their_period(runner):
    engine = runner.engine
    engine.open_account("acme")
    engine.grant_credits("acme", "monthly", 50, "subscription", T0 + timedelta(days=30))
    runner.at(T0 + timedelta(days=30) - timedelta(seconds=1)).sweep()
    assert engine.account("acme").monthly == 50
    runner.at(T0 + timedelta(days=30, seconds=1)).sweep()
    assert engine.account("acme").monthly == 0
    engine.db.catch_up()
    assert [r["type"] for r in engine.db.read.history("acme")][-1] == "expiry"
    assert_audit_clean(engine.db)


def test_a_finished_tasks_data_is_erased_once_its_retention_ran_out(runner):
    engine = runner.engine
    task_id = _processing_task(engine)
    engine.set_retention("acme", 2)
    engine.record_results(task_id, 0, [Result("alice@example.com", "safe", tier="primary")])
    assert _status(runner, task_id) == "completed"
    engine.db.catch_up()
    runner.at(T0 + timedelta(days=2) - timedelta(seconds=1)).sweep()
    assert not engine.task(task_id).erased
    runner.at(T0 + timedelta(days=2, seconds=1)).sweep()
    assert engine.task(task_id).erased
    assert_audit_clean(engine.db)


def test_the_upload_sweep_keeps_a_failed_tasks_unprocessed_addresses_until_it_is_erased(runner, tmp_path):
    engine = runner.engine
    engine.open_account("acme")
    everyone = [f"user{i}@example.com" for i in range(12)]  # chunks of 10: the second is never submitted
    listing = tmp_path / "twelve.csv"
    listing.write_text("email\n" + "".join(f"{a}\n" for a in everyone))
    task_id = engine.create_bulk("acme", listing).task_id
    engine.submit_chunk(task_id, 0, everyone[:10], "instant", "primary")
    engine.record_results(task_id, 0, [Result(a, "safe", tier="primary") for a in everyone[:10]])
    engine.fail_for_system(task_id, "engine_outage: test")
    engine.db.inputs.stage("orphan", ["left@example.com"], T0)  # a create that crashed after staging
    engine.db.catch_up()
    runner.at(T0 + timedelta(seconds=STALE_UPLOAD_S + 60)).sweep()
    assert "orphan" not in engine.db.inputs.staged()  # the sweep ran
    assert list(engine.unprocessed(task_id)) == everyone[10:]  # the failed task's download is kept
    engine.erase_task(task_id)
    assert engine.task(task_id).upload_id not in engine.db.inputs.staged()
    assert_audit_clean(engine.db)

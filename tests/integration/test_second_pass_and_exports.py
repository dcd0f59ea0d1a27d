"""The second look at Unknowns (VEC_SECOND_PASS), and the exports of a failed task's
unprocessed addresses."""
from __future__ import annotations

import asyncio

import pytest

from consumers.providers import InstantProvider, SecondPass
from engine.domain.errors import ResultsDeleted
from engine.domain.tasks import Result
from engine.service import Engine
from tests.integration.test_runtime import ScriptedProvider, addresses, assert_audit_clean, run_until, settings, write_csv


class GreylistedOnce:
    """Unknown (greylisted) the first time it sees an address, safe the second time."""

    name = tier = "grey"

    def __init__(self):
        self.seen: set[str] = set()
        self.calls: list[list[str]] = []

    async def verify(self, batch, on_result=None):
        self.calls.append(list(batch))
        out = []
        for address in batch:
            result = Result(address, "safe", "", "", self.tier) if address in self.seen else \
                Result(address, "unknown", "greylisted", "450 4.2.0 try later", self.tier)
            self.seen.add(address)
            out.append(result)
            if on_result:
                on_result(result)
        return out


def test_with_the_second_pass_unknowns_are_checked_again_before_they_settle(db, tmp_path):
    engine = Engine(db, settings(second_pass=True, second_pass_delay=0.05))
    engine.open_account("acme")
    provider = GreylistedOnce()
    task_id = engine.create_bulk("acme", write_csv(tmp_path / "f.csv", addresses(8))).task_id
    asyncio.run(run_until(engine, SecondPass(provider, 0.05), lambda: not engine.task(task_id).active))
    db.catch_up()
    row = db.read.task(task_id)
    assert (row["status"], row["consumed"], row["unknown"], row["refunded"]) == ("completed", 8, 0, 0)
    tiers = {r["tier"] for r in db.read.results(task_id)}
    assert tiers == {"second-pass/grey"}  # each result says which tier decided it
    assert all(len(call) <= 5 for call in provider.calls) and len(provider.calls) == 4  # 2 chunks x 2 looks
    assert not [r for r in db.read.history("acme") if r["type"] == "refund"]
    assert_audit_clean(db)


def test_without_it_the_first_unknown_settles_and_is_refunded(db, tmp_path):
    engine = Engine(db, settings())
    engine.open_account("acme")
    task_id = engine.create_bulk("acme", write_csv(tmp_path / "f.csv", addresses(4))).task_id
    asyncio.run(run_until(engine, GreylistedOnce(), lambda: not engine.task(task_id).active))
    db.catch_up()
    assert db.read.task(task_id)["unknown"] == 4
    assert len([r for r in db.read.history("acme") if r["type"] == "refund"]) == 4
    assert_audit_clean(db)


def test_a_failed_task_offers_its_unprocessed_addresses(db, tmp_path):
    engine = Engine(db, settings(partial_failure_threshold=0.0, chunk_window=1))
    engine.open_account("acme")
    everyone = addresses(20)  # 4 chunks of 5; the second fails, which fails the task (threshold 0)
    bad = set(everyone[5:10])
    provider = ScriptedProvider(reject=lambda batch: bool(bad & set(batch)))
    task_id = engine.create_bulk("acme", write_csv(tmp_path / "f.csv", everyone)).task_id
    asyncio.run(run_until(engine, provider, lambda: not engine.task(task_id).active))
    db.catch_up()
    row = db.read.task(task_id)
    assert row["status"] == "failed" and row["partial_failure"]
    unprocessed = list(engine.unprocessed(task_id))
    assert sorted(unprocessed[:5]) == sorted(everyone[5:10])  # the failed chunk's
    assert unprocessed[5:] == everyone[10:]  # then the never submitted ones, in file order
    assert row["consumed"] == 5 and row["refunded"] == 15
    engine.erase_task(task_id)
    with pytest.raises(ResultsDeleted):  # erased with the rest of its data, and said so
        list(engine.unprocessed(task_id))
    assert_audit_clean(db)


def test_instant_provider_through_second_pass_keeps_its_answers():
    answers = asyncio.run(SecondPass(InstantProvider(), 0).verify(["a@x.test", "unknown1@x.test"]))
    assert {a.address: a.status for a in answers} == {"a@x.test": "safe", "unknown1@x.test": "unknown"}

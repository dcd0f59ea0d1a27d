"""The deterministic simulator (tests/sim/simulator.py) over a hundred seeds: every money rule
and `vec audit` hold after every run, and each rule was exercised. A failure names its seed
and how to replay it. Then the simulator itself is tried: an engine with one rule broken
must fail a seed, naming the rule. The same for the fleet mode (tests/sim/fleet.py): the
distributed runner's roles on a simulated broker."""
from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import replace
from typing import Callable, ContextManager
from unittest import mock

import pytest

from tests.sim.checks import Violation
from tests.sim.simulator import run_seed

SEEDS = int(os.environ.get("VEC_SIM_SEEDS", "96"))
BATCHES = 8  # spread over the pytest workers
# kinds of move the simulator makes, each seen in every batch of 12 seeds or more (the rarer
# ones, retention erasures and later retries, are proven by the sabotages below)
EXERCISED = ("Monthly periods begun", "Monthly leftovers expired at period end", "debits from Monthly",
             "unknown refunds to PAYG of a Monthly debit", "single tasks", "bulk tasks", "deletes",
             "erasures (request)", "idempotent retries (raced)")


@pytest.mark.parametrize("batch", range(BATCHES))
def test_the_engine_survives_every_seed(batch):
    seeds = range(batch, SEEDS, BATCHES)
    crashes, exercised = 0, Counter()
    for seed in seeds:
        story = run_seed(seed)
        crashes += story.crashes
        exercised.update(story.coverage)
    assert crashes > 0  # the runs did crash the engine: a simulator that never crashes proves nothing
    if len(seeds) >= 12:  # nor one that never tries a rule
        assert [what for what in EXERCISED if not exercised[what]] == []


def test_a_seed_replays_exactly():
    first, second = run_seed(7), run_seed(7)
    assert (first.lines, first.events, first.coverage) == (second.lines, second.events, second.coverage)


# --- the simulator catches an engine that breaks a rule ------------------------------------

def _payg_first() -> ContextManager[object]:
    from engine.domain import accounts
    from events import CreditsDebited

    real = accounts._debit

    def debit(command, state):
        return [replace(e, payg=min(state.payg, e.monthly + e.payg), monthly=max(0, e.monthly + e.payg - state.payg))
                if isinstance(e, CreditsDebited) else e for e in real(command, state)]

    return mock.patch.object(accounts, "_debit", debit)


def _erasure_keeps_results() -> ContextManager[object]:
    from events import TaskDataErased, TaskDeleted
    from projections.read_models import ResultsProjection

    real = ResultsProjection.evolve

    def evolve(self, view, recorded):
        return [] if isinstance(recorded.event, (TaskDataErased, TaskDeleted)) else real(self, view, recorded)

    return mock.patch.object(ResultsProjection, "evolve", evolve)


SABOTAGES: dict[str, tuple[Callable[[], ContextManager[object]], str]] = {
    "no Monthly expiry sweep": (lambda: mock.patch("engine.policies.monthly_expiry", lambda accounts: []),
                                "Monthly credits at t="),
    "no retention sweep": (lambda: mock.patch("engine.policies.retention_due", lambda finished, now: []),
                           "outlived the"),
    # vec audit's own rule may name it first ([monthly-first]); the simulator's check says "not Monthly first"
    "PAYG debited before Monthly": (_payg_first, r"\[monthly-first\]|not Monthly first"),
    "erasure keeps the task's key": (lambda: mock.patch("engine.keyring.Keyring.destroy", lambda self, scope: None),
                                     "was erased but its"),
    "erasure keeps the results": (_erasure_keeps_results, "results"),
    "idempotency keys ignored": (lambda: mock.patch("engine.service.Engine._idempotency",
                                                    staticmethod(lambda key, *content: None)),
                                 "with one idempotency key"),
}


@pytest.mark.parametrize("sabotage", SABOTAGES)
def test_a_broken_rule_fails_a_seed(sabotage):
    patch, named = SABOTAGES[sabotage]
    with patch():
        for seed in range(40):
            try:
                run_seed(seed)
            except Violation as caught:
                assert re.search(named, str(caught)), str(caught)
                return
    pytest.fail(f"40 seeds of an engine with {sabotage} found nothing")


# --- the fleet mode: the distributed runner on a simulated broker ----------------------------

FLEET_SEEDS = int(os.environ.get("VEC_SIM_FLEET_SEEDS", "64"))
FLEET_BATCHES = 4
# what the fleet mode does to the runner, each seen in every batch of 16 seeds or more
FLEET_EXERCISED = ("chunks re-dispatched by the watchdog", "workers paused past their claims",
                   "bus: redelivered", "bus: ack lost (duplicate)", "bus: send failed",
                   "unknown refunds to PAYG of a Monthly debit", "bulk tasks", "single tasks")
# rarer, so sought across the seeds: every worker paused or dead past the outage grace while
# a task runs (since the settler schedules a task's next chunks itself, tasks end sooner and
# some batches of 16 seeds hold none: seeds 0-63, 2, 0, 6, 7 by batch); a paused worker's
# chunk taken over by another (since whoever submits a chunk sends its work item, tasks end
# sooner still: 0, 6, 7, 4 by batch)
FLEET_RARE = ("tasks failed: engine_outage", "paused workers woken after their claim was taken over")


@pytest.mark.parametrize("batch", range(FLEET_BATCHES))
def test_the_fleet_survives_every_seed(batch):
    seeds = range(batch, FLEET_SEEDS, FLEET_BATCHES)
    crashes, exercised = 0, Counter()
    for seed in seeds:
        story = run_seed(seed, mode="fleet")
        crashes += story.crashes
        exercised.update(story.coverage)
    assert crashes > 0
    if len(seeds) >= 16:
        assert [what for what in FLEET_EXERCISED if not exercised[what]] == []


@pytest.mark.parametrize("rare", FLEET_RARE)
def test_the_fleet_meets_its_rarer_faults_within_the_seeds(rare):
    """Checked by the simulator's invariants like every other seed: some seed of the campaign
    fails a task on an engine outage; some wakes a paused worker whose chunk another took."""
    for seed in range(FLEET_SEEDS):
        if run_seed(seed, mode="fleet").coverage[rare]:
            return
    pytest.fail(f"no fleet seed of {FLEET_SEEDS} saw {rare!r}")


def test_a_fleet_seed_replays_exactly():
    first, second = run_seed(11, mode="fleet"), run_seed(11, mode="fleet")
    assert first.crashes > 0
    assert (first.lines, first.events, first.coverage) == (second.lines, second.events, second.coverage)


def test_a_watchdog_that_never_dispatches_again_fails_a_fleet_seed():
    """Without re-dispatch, a chunk whose worker died is never verified: the fleet must not
    leave it to the stall bound (half the seeds have none to speak of)."""
    with mock.patch("consumers.fleet.roles.Fleet._reconcile", lambda *args: None):
        for seed in range(80):  # the first seeds to lose a chunk for good: 24, 33, 54
            try:
                run_seed(seed, mode="fleet")
            except Violation as caught:
                assert "still active" in str(caught), str(caught)
                return
    pytest.fail("80 fleet seeds with no re-dispatch found nothing")

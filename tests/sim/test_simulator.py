"""The deterministic simulator (tests/sim/simulator.py) over a few hundred seeds: every money
rule and `vec audit` hold after every run. A failure names its seed and how to replay it."""
from __future__ import annotations

import os

import pytest

from tests.sim.simulator import run_seed

SEEDS = int(os.environ.get("VEC_SIM_SEEDS", "240"))
BATCHES = 8  # spread over the pytest workers


@pytest.mark.parametrize("batch", range(BATCHES))
def test_the_engine_survives_every_seed(batch):
    seeds = range(batch, SEEDS, BATCHES)
    crashes = 0
    for seed in seeds:
        crashes += run_seed(seed).crashes
    assert crashes > 0  # the runs did crash the engine: a simulator that never crashes proves nothing


def test_a_seed_replays_exactly():
    first, second = run_seed(7), run_seed(7)
    assert (first.lines, first.events) == (second.lines, second.events)

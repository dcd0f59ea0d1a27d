"""Smoke sizes of the two fault campaigns (scripts/kill-campaign, scripts/fault-campaign): the
campaign itself must run clean end to end, strict as it is. Both use this session's mail
world (VEC_MAILWORLD_STATE_DIR), so they sit in the mail world's xdist group."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.mailworld import REPO

pytestmark = pytest.mark.mailworld


def campaign(mailworld, script: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, str(REPO / "scripts" / script), *args, "--json"], capture_output=True,
                          text=True, timeout=600, check=False,
                          env={**os.environ, "VEC_MAILWORLD_STATE_DIR": str(mailworld.state_dir)})
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stdout}\n{done.stderr[-3000:]}"
    return json.loads(done.stdout)


def test_the_kill_campaign_recovers_from_every_kill_and_charges_no_address_twice(mailworld):
    outcome = campaign(mailworld, "kill-campaign", "--kills", "3", "--seed", "1", "--past-grace", "0")
    assert outcome["recoveries"] == 2  # every restart after a kill appended an event in its bound
    assert outcome["violations"] == outcome["addresses_charged_twice"] == outcome["tasks_debited_twice"] == 0
    assert outcome["bulks"] >= 1 and outcome["events"] > 0


@pytest.mark.postgres
@pytest.mark.kafka
def test_the_fleet_fault_campaign_survives_a_kill_a_broker_and_a_postgres_restart(mailworld):
    # seed 69 draws kill -9, a PostgreSQL restart and a broker restart, in that order
    outcome = campaign(mailworld, "fault-campaign", "--faults", "3", "--seed", "69", "--slow", "4")
    assert outcome["by_kind"] == {"kill9": 1, "postgres": 1, "broker": 1}
    assert outcome["recoveries"] == 3 and not outcome["unexpected_exits"]
    assert outcome["violations"] == outcome["addresses_charged_twice"] == outcome["tasks_debited_twice"] == 0
    assert outcome["rcpts_counted"] > 0  # the SMTP servers saw the probes the duplicates are counted from

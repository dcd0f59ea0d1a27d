"""The timed policies' exact wording and bounds (engine/policies.py), beside test_policies.py:
what an operator reads in a failed task's reason, and the monthly sweep (written for the
mutation run, docs/mutation.md)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from engine import policies

NOW = datetime(2026, 12, 7, tzinfo=timezone.utc)


def test_the_stall_bound_says_how_long_the_task_was_silent():
    failed = policies.stall_bound({"t1": NOW - timedelta(seconds=901), "t2": NOW - timedelta(seconds=900)}, NOW, 900)
    assert failed == [policies.FailTask("t1", "stalled: no progress for 901s", "stalled")]


def test_the_outage_reason_names_what_was_down_with_a_fractional_grace():
    failed = policies.outage_rule(["t1"], NOW - timedelta(seconds=90), NOW, 2.5, "no worker alive")
    assert failed == [policies.FailTask("t1", "engine_outage: no worker alive 90s, grace 2.5s", "engine_outage")]


def test_retention_erases_at_the_exact_end_of_the_days():
    finished = [("due", NOW - timedelta(days=3), 3), ("not yet", NOW - timedelta(days=3) + timedelta(seconds=1), 3)]
    assert policies.retention_due(finished, NOW) == [policies.EraseTask("due")]


def test_the_monthly_sweep_asks_each_account_past_its_period_once():
    assert policies.monthly_expiry(iter(["a", "b"])) == [policies.ExpireMonthly("a"), policies.ExpireMonthly("b")]
    assert policies.monthly_expiry([]) == []


def test_the_upload_sweep_drops_uploads_staged_an_hour_ago_or_earlier():
    sweep = policies.upload_sweep(NOW, iter(["u1"]))
    assert sweep == policies.SweepUploads(NOW - timedelta(hours=1), ("u1",))

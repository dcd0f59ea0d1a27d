"""The timed policies as pure decisions (engine/policies.py): what each one decides from a
view and the log's time, at and around its bound."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from engine import policies

NOW = datetime(2026, 12, 7, tzinfo=timezone.utc)


@given(silences=st.dictionaries(st.text("abcdef", min_size=1, max_size=4), st.integers(0, 2000), max_size=12))
def test_the_stall_bound_fails_exactly_the_tasks_silent_past_it(silences):
    last = {task: NOW - timedelta(seconds=s) for task, s in silences.items()}
    failed = policies.stall_bound(last, NOW, 900)
    assert {f.task_id for f in failed} == {t for t, s in silences.items() if s > 900}
    assert all(f.cause == "stalled" and f.reason.startswith("stalled: no progress for") for f in failed)


def test_the_outage_rule_holds_at_the_grace_and_acts_past_it():
    assert policies.outage_rule(["t1"], NOW - timedelta(seconds=300), NOW, 300, "engine down") == []
    failed = policies.outage_rule(["t1", "t2"], NOW - timedelta(seconds=301), NOW, 300, "engine down")
    assert [f.task_id for f in failed] == ["t1", "t2"]
    assert failed[0].reason == "engine_outage: engine down 301s, grace 300s" and failed[0].cause == "engine_outage"
    assert policies.outage_rule([], NOW - timedelta(days=1), NOW, 300, "engine down") == []
    assert policies.outage_rule(["t1"], None, NOW, 300, "engine down") == []  # never ran: nothing to resume


def test_retention_erases_the_tasks_whose_days_ran_out():
    finished = [("old", NOW - timedelta(days=15), 15), ("young", NOW - timedelta(days=14, hours=23), 15),
                ("short", NOW - timedelta(days=2), 1)]
    assert [e.task_id for e in policies.retention_due(finished, NOW)] == ["old", "short"]


def test_the_upload_sweep_keeps_what_active_tasks_read():
    sweep = policies.upload_sweep(NOW, ["u1", "u2"])
    assert sweep.keep == ("u1", "u2") and sweep.staged_before == NOW - timedelta(seconds=policies.STALE_UPLOAD_S)

"""Settlement across the task and the account (engine/domain/settlement.py): each task
event that frees credits gives exactly one refund, to PAYG, tagged by its cause; a refund
can never exceed what the task still has outstanding on the account."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.domain import accounts, settlement, tasks
from engine.domain.errors import InvalidCommand
from events import (AccountOpened, ChunkFailed, CreditsDebited, CreditsGranted, ResultsRecorded, ResultUnknown,
                    SystemFailure, TaskCancelled)

NOW = datetime(2026, 12, 7, tzinfo=timezone.utc)


def _account(debited: int) -> accounts.AccountState:
    state = accounts.AccountState()
    for event in (AccountOpened("acme"), CreditsGranted("payg", 10_000, "purchase"), CreditsDebited("t1", 0, debited)):
        state = accounts.evolve(state, event)
    return state


def test_each_cause_gives_one_refund_tagged_by_its_kind():
    unknown, cancelled = ResultUnknown("a@x.test", "smtp_timeout"), TaskCancelled(3)
    refunds = settlement.refunds("t1", [unknown, cancelled], _account(10))
    assert [(cause, r.amount, r.reason) for cause, r in refunds] == [(unknown, 1, "unknown"), (cancelled, 3, "cancelled")]
    assert all(r.task_id == "t1" for _, r in refunds)


def test_late_unknowns_give_nothing_back():
    assert settlement.refunds("t1", [ResultUnknown("a@x.test", "smtp_timeout", late=True)], _account(1)) == []


@given(debited=st.integers(1, 50), unknowns=st.integers(0, 60))
def test_refunds_never_exceed_what_is_outstanding(debited, unknowns):
    events = [ResultUnknown(f"u{i}@x.test", "greylisted") for i in range(unknowns)]
    if unknowns > debited:
        with pytest.raises(InvalidCommand, match="outstanding"):
            settlement.refunds("t1", events, _account(debited))
        return
    refunds = settlement.refunds("t1", [*events, SystemFailure("x", debited - unknowns)], _account(debited))
    assert sum(r.amount for _, r in refunds) == debited


def _one_by_one(task_id, decided, account):
    """The rule as first written: every credit decided and folded on its own."""
    caused = []
    for cause, amount, reason in tasks.refunds_for(decided):
        for refund in accounts.decide(accounts.RefundCredits(task_id, amount, reason), account):
            account = accounts.evolve(account, refund)
            caused.append((cause, refund))
    return caused


@given(debited=st.integers(1, 40), batches=st.lists(st.tuples(st.integers(1, 12), st.booleans()), max_size=6),
       failed=st.integers(0, 5))
def test_a_batch_of_unknowns_decided_at_once_refunds_as_one_by_one(debited, batches, failed):
    """settlement.refunds decides a batch's Unknowns on their sum: the same refunds, causes and
    refusals as deciding each on its own."""
    decided = [ResultsRecorded(n, "unknown", "greylisted", "primary", late, tuple(f"u{n}.{i}@x.test" for i in range(size)))
               for n, (size, late) in enumerate(batches)]
    decided += [ChunkFailed(99, "down", tuple(f"f{i}@x.test" for i in range(failed)))] if failed else []
    try:
        expected = _one_by_one("t1", decided, _account(debited))
    except InvalidCommand:
        with pytest.raises(InvalidCommand, match="outstanding"):
            settlement.refunds("t1", decided, _account(debited))
        return
    assert settlement.refunds("t1", decided, _account(debited)) == expected

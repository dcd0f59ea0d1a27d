"""Settlement across the task and the account (engine/domain/settlement.py): each task
event that frees credits gives exactly one refund, to PAYG, tagged by its cause; a refund
can never exceed what the task still has outstanding on the account."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.domain import accounts, settlement
from engine.domain.errors import InvalidCommand
from events import AccountOpened, CreditsDebited, CreditsGranted, ResultUnknown, SystemFailure, TaskCancelled

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

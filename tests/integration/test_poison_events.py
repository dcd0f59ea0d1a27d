"""No event can wedge the read models. A log written before amounts were bounded may hold a
grant too big for a 64-bit column: the credits read model stops right before it with a
named error (readers and `vec audit` report it), while the other read models and the
engine's commands go on."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest

from engine.audit import audit
from engine.domain.errors import InvalidCommand, InvariantViolation
from engine.domain.limits import MAX_BALANCE
from engine.service import Engine
from engine.store.base import ANY
from events import CreditsGranted, NewEvent
from projections.runner import ProjectionStopped

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)


def _append_raw(db, stream: str, event) -> int:
    """What an older engine without bounds could have appended."""
    return db.events.append([NewEvent(stream, event, uuid.uuid4(), NOW)], {stream: ANY})[0].position


def test_a_grant_beyond_the_bound_is_refused_and_appends_nothing(db):
    engine = Engine(db)
    engine.open_account("acme")
    head = db.events.head()
    for amount in (10**20, MAX_BALANCE + 1):
        with pytest.raises(InvalidCommand, match="at most"):
            engine.grant_credits("acme", "payg", amount)
    engine.grant_credits("acme", "payg", MAX_BALANCE - 200)  # up to the bound exactly
    with pytest.raises(InvalidCommand, match="balance is at most"):
        engine.grant_credits("acme", "monthly", 1, "subscription", datetime(2099, 1, 1, tzinfo=timezone.utc))
    assert db.events.head() == head + 1
    db.catch_up()
    assert db.read.balances("acme")["total"] == MAX_BALANCE


def test_a_poison_event_stops_only_its_read_model_with_a_named_error(db, tmp_path):
    engine = Engine(db)
    engine.open_account("acme")
    engine.open_account("beta")
    _append_raw(db, "account-acme", CreditsGranted("payg", 2**62, "purchase"))
    poison = _append_raw(db, "account-acme", CreditsGranted("payg", 2**62, "purchase"))  # 2**63: no column holds it
    db.catch_up()  # does not raise, does not loop
    stopped = db.projector.stopped()
    assert set(stopped) == {"credits"} and stopped["credits"].position == poison
    assert "OverflowError" in stopped["credits"].message or "too large" in stopped["credits"].message
    with pytest.raises(ProjectionStopped, match=f"credits read model stopped before position {poison}"):
        db.projector.require("credits")
    # The rest of the engine serves: another account's task is created, its read model moves on.
    path = tmp_path / "list.csv"
    path.write_text("a@example.com\nb@example.com\n")
    task_id = engine.create_bulk("beta", path).task_id
    db.catch_up()
    assert db.read.task(task_id)["total"] == 2
    assert db.projector.checkpoints()["credits"] == poison - 1
    # The poisoned account refuses commands clearly: its log breaks an invariant.
    with pytest.raises(InvariantViolation, match="out of bounds"):
        engine.grant_credits("acme", "payg", 1)
    report = audit(db)
    assert any("credits read model stopped" in v for v in report.violations)
    assert any("out of bounds" in v for v in report.violations)

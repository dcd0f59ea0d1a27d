"""The account decider with concrete examples: DESIGN.md "The money rules" 1, 2, 4, 9."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import reduce

import pytest

from engine.domain import accounts
from engine.domain.accounts import (
    AccountState,
    DebitCredits,
    ExpireMonthly,
    GrantCredits,
    OpenAccount,
    RefundCredits,
    decide,
    evolve,
)
from engine.domain.errors import (
    InvariantViolation,
    AccountAlreadyOpen,
    AccountNotFound,
    DomainError,
    InsufficientCredits,
    InvalidCommand,
)
from events import (
    AccountOpened,
    CreditsDebited,
    CreditsGranted,
    CreditsRefunded,
    MonthlyCreditsExpired,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
END_OF_MARCH = datetime(2026, 4, 1, tzinfo=timezone.utc)
END_OF_APRIL = datetime(2026, 5, 1, tzinfo=timezone.utc)


def fold(events, state: AccountState | None = None) -> AccountState:
    return reduce(evolve, events, state or AccountState())


def run(state: AccountState, command) -> tuple[list, AccountState]:
    """Decide, then fold what was decided: the way the service uses the decider."""
    events = decide(command, state)
    return events, fold(events, state)


def opened(account_id: str = "acme") -> AccountState:
    return fold(decide(OpenAccount(account_id), AccountState()))


def with_monthly(amount: int, expires: datetime = END_OF_MARCH, payg_extra: int = 0) -> AccountState:
    state = opened()
    _, state = run(state, GrantCredits("monthly", amount, "subscription", NOW, expires))
    if payg_extra:
        _, state = run(state, GrantCredits("payg", payg_extra, "purchase", NOW))
    return state


# --- opening and the welcome grant ----------------------------------------------------

def test_opening_appends_account_opened_and_a_welcome_grant_of_200_payg():
    events = decide(OpenAccount("acme"), AccountState())
    assert events == [AccountOpened("acme"), CreditsGranted("payg", 200, "welcome", None)]
    state = fold(events)
    assert (state.account_id, state.monthly, state.payg, state.total) == ("acme", 0, 200, 200)
    assert state.monthly_expires_at is None


def test_opening_twice_is_refused():
    with pytest.raises(AccountAlreadyOpen):
        decide(OpenAccount("acme"), opened())


@pytest.mark.parametrize("bad_id", ["", "x" * 129, "tab\there", "new\nline"])
def test_account_ids_must_be_1_to_128_printable_characters(bad_id):
    with pytest.raises(InvalidCommand):
        decide(OpenAccount(bad_id), AccountState())


def test_an_account_id_of_128_characters_is_fine():
    assert decide(OpenAccount("x" * 128), AccountState())[0] == AccountOpened("x" * 128)


@pytest.mark.parametrize("command", [
    GrantCredits("payg", 10, "purchase", NOW),
    DebitCredits("t1", 1, NOW),
    RefundCredits("t1", 1, "unknown"),
    ExpireMonthly(NOW),
])
def test_every_command_on_an_unopened_account_is_refused(command):
    with pytest.raises(AccountNotFound):
        decide(command, AccountState())


# --- grants ---------------------------------------------------------------------------

def test_payg_grant_adds_to_payg_only():
    events, state = run(opened(), GrantCredits("payg", 50, "purchase", NOW))
    assert events == [CreditsGranted("payg", 50, "purchase", None)]
    assert (state.monthly, state.payg) == (0, 250)


def test_payg_never_expires_so_an_expiry_on_it_is_refused():
    with pytest.raises(InvalidCommand, match="never expire"):
        decide(GrantCredits("payg", 50, "purchase", NOW, END_OF_MARCH), opened())


def test_monthly_grant_records_its_expiry():
    events, state = run(opened(), GrantCredits("monthly", 1000, "subscription", NOW, END_OF_MARCH))
    assert events == [CreditsGranted("monthly", 1000, "subscription", END_OF_MARCH.isoformat())]
    assert (state.monthly, state.payg, state.monthly_expires_at) == (1000, 200, END_OF_MARCH)


@pytest.mark.parametrize("amount", [0, -5, True, 2.5])
def test_grant_amount_must_be_a_whole_positive_number(amount):
    with pytest.raises(InvalidCommand):
        decide(GrantCredits("payg", amount, "purchase", NOW), opened())


@pytest.mark.parametrize("reason", ["welcome", "gift", ""])
def test_grant_reason_must_be_purchase_subscription_or_support(reason):
    # "welcome" is only ever emitted by opening an account
    with pytest.raises(InvalidCommand):
        decide(GrantCredits("payg", 5, reason, NOW), opened())


def test_unknown_bucket_is_refused():
    with pytest.raises(InvalidCommand):
        decide(GrantCredits("yearly", 5, "purchase", NOW, END_OF_MARCH), opened())


@pytest.mark.parametrize("expires", [None, datetime(2026, 4, 1), NOW, NOW - timedelta(seconds=1),
                                     # past year 9999 once in UTC: refused, not an OverflowError
                                     datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-5)))])
def test_monthly_grant_needs_a_future_timezone_aware_expiry(expires):
    with pytest.raises(InvalidCommand):
        decide(GrantCredits("monthly", 5, "subscription", NOW, expires), opened())


def test_new_monthly_period_expires_the_leftover_before_granting():
    state = with_monthly(1000)
    _, state = run(state, DebitCredits("t1", 300, NOW))
    assert state.monthly == 700
    events, state = run(state, GrantCredits("monthly", 1000, "subscription", NOW + timedelta(days=1), END_OF_APRIL))
    assert events == [
        MonthlyCreditsExpired(700),
        CreditsGranted("monthly", 1000, "subscription", END_OF_APRIL.isoformat()),
    ]
    assert (state.monthly, state.payg, state.monthly_expires_at) == (1000, 200, END_OF_APRIL)


def test_top_up_within_the_same_period_keeps_the_leftover():
    state = with_monthly(100)
    events, state = run(state, GrantCredits("monthly", 50, "support", NOW, END_OF_MARCH))
    assert events == [CreditsGranted("monthly", 50, "support", END_OF_MARCH.isoformat())]
    assert state.monthly == 150


def test_new_period_with_an_empty_monthly_bucket_expires_nothing():
    state = with_monthly(10)
    _, state = run(state, DebitCredits("t1", 10, NOW))
    assert state.monthly == 0
    events = decide(GrantCredits("monthly", 100, "subscription", NOW, END_OF_APRIL), state)
    assert [type(e) for e in events] == [CreditsGranted]


# --- debits ---------------------------------------------------------------------------

def test_debit_takes_monthly_first_then_payg():
    state = with_monthly(30)
    events, state = run(state, DebitCredits("t1", 50, NOW))
    assert events == [CreditsDebited("t1", monthly=30, payg=20)]
    assert (state.monthly, state.payg) == (0, 180)
    assert dict(state.outstanding) == {"t1": 50}


def test_debit_that_fits_in_monthly_leaves_payg_alone():
    events, state = run(with_monthly(30), DebitCredits("t1", 12, NOW))
    assert events == [CreditsDebited("t1", 12, 0)]
    assert (state.monthly, state.payg) == (18, 200)


def test_debit_with_payg_only():
    events, state = run(opened(), DebitCredits("t1", 200, NOW))
    assert events == [CreditsDebited("t1", 0, 200)]
    assert state.total == 0


def test_insufficient_credits_are_refused_with_no_events():
    state = with_monthly(30)
    with pytest.raises(InsufficientCredits, match="needs 231 credits and the balance is 230"):
        decide(DebitCredits("t1", 231, NOW), state)
    # the refused command changed nothing
    assert (state.monthly, state.payg, dict(state.outstanding)) == (30, 200, {})


def test_the_whole_balance_can_be_spent_to_exactly_zero():
    events, state = run(with_monthly(30), DebitCredits("t1", 230, NOW))
    assert events == [CreditsDebited("t1", 30, 200)]
    assert state.total == 0
    with pytest.raises(InsufficientCredits):
        decide(DebitCredits("t2", 1, NOW), state)


@pytest.mark.parametrize("amount", [0, -1])
def test_a_debit_of_nothing_is_refused(amount):
    with pytest.raises(InvalidCommand):
        decide(DebitCredits("t1", amount, NOW), opened())


def test_a_task_is_debited_only_once():
    _, state = run(opened(), DebitCredits("t1", 5, NOW))
    with pytest.raises(InvalidCommand, match="already debited"):
        decide(DebitCredits("t1", 5, NOW), state)


def test_expired_monthly_is_expired_lazily_on_debit_and_not_spent():
    state = with_monthly(100)
    events, state = run(state, DebitCredits("t1", 20, END_OF_MARCH))  # exactly at the expiry instant
    assert events == [MonthlyCreditsExpired(100), CreditsDebited("t1", 0, 20)]
    assert (state.monthly, state.payg) == (0, 180)


def test_monthly_before_its_expiry_is_spent_normally():
    state = with_monthly(100)
    events = decide(DebitCredits("t1", 20, END_OF_MARCH - timedelta(microseconds=1)), state)
    assert events == [CreditsDebited("t1", 20, 0)]


def test_a_debit_refused_for_credits_after_lazy_expiry_appends_not_even_the_expiry():
    state = with_monthly(100)  # 100 monthly + 200 payg, but the monthly is gone at END_OF_MARCH
    with pytest.raises(InsufficientCredits, match="balance is 200"):
        decide(DebitCredits("t1", 250, END_OF_MARCH + timedelta(days=1)), state)
    # before the expiry the same debit fits
    assert decide(DebitCredits("t1", 250, NOW), state) == [CreditsDebited("t1", 100, 150)]


# --- refunds --------------------------------------------------------------------------

def test_refunds_always_land_in_payg_even_when_the_debit_came_from_monthly():
    state = with_monthly(100)
    _, state = run(state, DebitCredits("t1", 40, NOW))
    assert (state.monthly, state.payg) == (60, 200)
    events, state = run(state, RefundCredits("t1", 15, "unknown"))
    assert events == [CreditsRefunded("t1", 15, "unknown")]
    assert (state.monthly, state.payg) == (60, 215)
    assert dict(state.outstanding) == {"t1": 25}


def test_refunds_up_to_the_debit_and_never_beyond():
    _, state = run(opened(), DebitCredits("t1", 3, NOW))
    _, state = run(state, RefundCredits("t1", 2, "cancelled"))
    _, state = run(state, RefundCredits("t1", 1, "unknown"))
    assert state.payg == 200 and dict(state.outstanding) == {"t1": 0}
    with pytest.raises(InvalidCommand, match="exceeds"):
        decide(RefundCredits("t1", 1, "unknown"), state)


def test_refund_for_a_task_never_debited_is_refused():
    with pytest.raises(InvalidCommand, match="never debited"):
        decide(RefundCredits("other", 1, "unknown"), opened())


@pytest.mark.parametrize("amount", [0, -3])
def test_refund_of_nothing_is_refused(amount):
    _, state = run(opened(), DebitCredits("t1", 3, NOW))
    with pytest.raises(InvalidCommand):
        decide(RefundCredits("t1", amount, "unknown"), state)


def test_refund_of_an_expired_monthly_debit_still_goes_to_payg():
    state = with_monthly(10)
    _, state = run(state, DebitCredits("t1", 10, NOW))
    _, state = run(state, ExpireMonthly(END_OF_MARCH))  # nothing to expire: monthly already spent
    events, state = run(state, RefundCredits("t1", 10, "system_failure"))
    assert (state.monthly, state.payg) == (0, 210)


# --- ExpireMonthly --------------------------------------------------------------------

def test_expire_monthly_after_the_period_expires_the_whole_leftover():
    state = with_monthly(100)
    _, state = run(state, DebitCredits("t1", 30, NOW))
    events, state = run(state, ExpireMonthly(END_OF_MARCH + timedelta(hours=1)))
    assert events == [MonthlyCreditsExpired(70)]
    assert (state.monthly, state.payg) == (0, 200)


def test_expire_monthly_before_the_period_end_does_nothing():
    assert decide(ExpireMonthly(NOW), with_monthly(100)) == []


def test_expire_monthly_twice_expires_once():
    events, state = run(with_monthly(100), ExpireMonthly(END_OF_MARCH))
    assert events == [MonthlyCreditsExpired(100)]
    assert decide(ExpireMonthly(END_OF_MARCH + timedelta(days=2)), state) == []


def test_expire_monthly_with_no_monthly_bucket_does_nothing():
    assert decide(ExpireMonthly(NOW + timedelta(days=400)), opened()) == []


# --- evolve guards the invariants -----------------------------------------------------

def test_evolve_refuses_a_debit_that_would_make_a_bucket_negative():
    with pytest.raises(InvariantViolation, match="negative"):
        evolve(opened(), CreditsDebited("t1", 0, 201))
    with pytest.raises(InvariantViolation, match="negative"):
        evolve(opened(), CreditsDebited("t1", 1, 0))


def test_evolve_refuses_a_refund_beyond_the_debit():
    _, state = run(opened(), DebitCredits("t1", 2, NOW))
    with pytest.raises(InvariantViolation, match="beyond"):
        evolve(state, CreditsRefunded("t1", 3, "unknown"))


def test_evolve_refuses_an_expiry_that_does_not_match_the_bucket():
    with pytest.raises(InvariantViolation):
        evolve(with_monthly(100), MonthlyCreditsExpired(99))


def test_evolve_does_not_mutate_the_state_it_is_given():
    state = with_monthly(100)
    before = (state.monthly, state.payg, dict(state.outstanding))
    evolve(state, CreditsDebited("t1", 10, 10))
    evolve(state, MonthlyCreditsExpired(100))
    assert (state.monthly, state.payg, dict(state.outstanding)) == before


def test_all_refusals_are_domain_errors():
    for error in (AccountAlreadyOpen, AccountNotFound, InsufficientCredits, InvalidCommand):
        assert issubclass(error, DomainError)


def test_a_command_of_another_kind_is_a_type_error():
    with pytest.raises(TypeError):
        accounts.decide(object(), opened())  # type: ignore[arg-type]


# --- time zones -----------------------------------------------------------------------

KARACHI = timezone(timedelta(hours=5))


def test_a_monthly_expiry_given_in_another_zone_is_recorded_in_utc():
    expires = datetime(2026, 4, 1, 5, 0, tzinfo=KARACHI)  # = 2026-04-01T00:00Z
    events, state = run(opened(), GrantCredits("monthly", 10, "subscription", NOW, expires))
    assert events == [CreditsGranted("monthly", 10, "subscription", "2026-04-01T00:00:00+00:00")]
    assert state.monthly_expires_at == END_OF_MARCH
    # the same instant written in another zone is the same period: a top-up, no expiry
    events = decide(GrantCredits("monthly", 5, "support", NOW, END_OF_MARCH), state)
    assert [type(e) for e in events] == [CreditsGranted]
    # and it expires at that instant, whatever zone the clock reads in
    assert decide(ExpireMonthly(datetime(2026, 4, 1, 4, 59, tzinfo=KARACHI)), state) == []
    assert decide(ExpireMonthly(datetime(2026, 4, 1, 5, 0, tzinfo=KARACHI)), state) == [MonthlyCreditsExpired(10)]

"""The account decider at its edges: each bound exactly at and just past it, the key, retention
and notification settings, the duplicate-upload window, and the invariants `evolve` enforces
(written for the mutation run, docs/mutation.md; behaviour only)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from engine.domain.accounts import (
    API_SCOPES,
    MAX_KEYS,
    AccountState,
    DebitCredits,
    ExpireMonthly,
    GrantCredits,
    IssueApiKey,
    OpenAccount,
    RefundCredits,
    RevokeApiKey,
    SetNotifications,
    SetRetention,
    decide,
    evolve,
)
from engine.domain.errors import (
    AccountAlreadyOpen,
    AccountNotFound,
    DuplicateUpload,
    InsufficientCredits,
    InvalidCommand,
    InvariantViolation,
)
from engine.domain.limits import (
    DEFAULT_RETENTION_DAYS,
    MAX_BALANCE,
    MAX_RETENTION_DAYS,
    MAX_TASK_ADDRESSES,
    MIN_RETENTION_DAYS,
)
from events import (
    AccountOpened,
    ApiKeyIssued,
    ApiKeyRevoked,
    CreditsDebited,
    CreditsGranted,
    CreditsRefunded,
    MonthlyCreditsExpired,
    NotificationsSet,
    RetentionSet,
)

from tests.unit.test_accounts import fold, opened, run

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
END_OF_MARCH = datetime(2026, 4, 1, tzinfo=timezone.utc)
SHA = "ab" * 32
DAY = timedelta(hours=24)


def rich(payg: int = 10_000) -> AccountState:
    return run(opened(), GrantCredits("payg", payg, "purchase", NOW))[1]


# --- grants: bounds and buckets ---------------------------------------------------------

def test_a_grant_up_to_the_balance_bound_is_taken_and_one_credit_more_is_refused():
    state = opened()  # 200 welcome credits
    room = MAX_BALANCE - state.total
    events, after = run(state, GrantCredits("payg", room, "purchase", NOW))
    assert events == [CreditsGranted("payg", room, "purchase")]
    assert after.total == MAX_BALANCE
    with pytest.raises(InvalidCommand, match="at most"):
        decide(GrantCredits("payg", 1, "purchase", NOW), after)


def test_a_single_grant_above_the_bound_is_refused_even_on_an_empty_account():
    state = fold([AccountOpened("acme")])  # no welcome grant folded: balance 0
    assert decide(GrantCredits("payg", MAX_BALANCE, "support", NOW), state) == [
        CreditsGranted("payg", MAX_BALANCE, "support")]
    with pytest.raises(InvalidCommand, match="at most"):
        decide(GrantCredits("payg", MAX_BALANCE + 1, "support", NOW), state)


@pytest.mark.parametrize("amount", [True, 2.0, "5"])
def test_a_grant_of_something_other_than_a_whole_number_is_refused(amount):
    with pytest.raises(InvalidCommand, match="whole number"):
        decide(GrantCredits("payg", amount, "purchase", NOW), opened())


def test_a_grant_of_one_credit_is_the_smallest_taken():
    events, state = run(opened(), GrantCredits("payg", 1, "purchase", NOW))
    assert events == [CreditsGranted("payg", 1, "purchase")]
    assert state.payg == 201


@pytest.mark.parametrize("reason", ["purchase", "subscription", "support"])
def test_each_grant_reason_is_carried_by_the_event(reason):
    events = decide(GrantCredits("monthly", 5, reason, NOW, END_OF_MARCH), opened())
    assert [e.reason for e in events] == [reason]


def test_the_welcome_reason_is_the_engine_s_alone():
    with pytest.raises(InvalidCommand, match="grant reason"):
        decide(GrantCredits("payg", 5, "welcome", NOW), opened())


def test_a_monthly_expiry_at_the_very_moment_of_the_grant_is_refused():
    with pytest.raises(InvalidCommand, match="future"):
        decide(GrantCredits("monthly", 5, "subscription", NOW, NOW), opened())
    later = NOW + timedelta(seconds=1)
    assert decide(GrantCredits("monthly", 5, "subscription", NOW, later), opened()) == [
        CreditsGranted("monthly", 5, "subscription", later.isoformat())]


def test_a_monthly_expiry_without_a_time_zone_is_refused():
    with pytest.raises(InvalidCommand, match="time zone"):
        decide(GrantCredits("monthly", 5, "subscription", NOW, datetime(2026, 4, 1)), opened())


def test_a_monthly_expiry_past_the_last_representable_date_is_a_clear_refusal():
    end = datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-5)))
    with pytest.raises(InvalidCommand, match="9999-12-31"):
        decide(GrantCredits("monthly", 5, "subscription", NOW, end), opened())


def test_a_monthly_grant_sets_the_bucket_and_its_expiry_and_leaves_payg_alone():
    _, state = run(opened(), GrantCredits("monthly", 30, "subscription", NOW, END_OF_MARCH))
    assert (state.monthly, state.payg, state.monthly_expires_at) == (30, 200, END_OF_MARCH)
    _, state = run(state, GrantCredits("monthly", 5, "subscription", NOW, END_OF_MARCH))
    assert (state.monthly, state.payg, state.monthly_expires_at) == (35, 200, END_OF_MARCH)


def test_evolve_refuses_a_grant_of_nothing_or_past_the_bound():
    state = opened()
    with pytest.raises(InvariantViolation, match="grant of 0 takes the balance 200 out of bounds"):
        evolve(state, CreditsGranted("payg", 0, "purchase"))
    with pytest.raises(InvariantViolation, match="out of bounds"):
        evolve(state, CreditsGranted("payg", MAX_BALANCE - state.total + 1, "purchase"))
    assert evolve(state, CreditsGranted("payg", MAX_BALANCE - state.total, "purchase")).total == MAX_BALANCE


# --- the Monthly period -----------------------------------------------------------------

def test_monthly_expires_at_the_exact_end_of_its_period_not_a_moment_before():
    _, state = run(opened(), GrantCredits("monthly", 30, "subscription", NOW, END_OF_MARCH))
    assert decide(ExpireMonthly(END_OF_MARCH - timedelta(microseconds=1)), state) == []
    assert decide(ExpireMonthly(END_OF_MARCH), state) == [MonthlyCreditsExpired(30)]
    events = decide(DebitCredits("t1", 10, END_OF_MARCH), state)
    assert events == [MonthlyCreditsExpired(30), CreditsDebited("t1", 0, 10)]


def test_an_empty_monthly_bucket_is_never_expired_even_past_its_period():
    _, state = run(opened(), GrantCredits("monthly", 10, "subscription", NOW, END_OF_MARCH))
    _, state = run(state, DebitCredits("t1", 10, NOW))
    assert state.monthly == 0
    assert decide(ExpireMonthly(END_OF_MARCH + DAY), state) == []
    assert decide(DebitCredits("t2", 5, END_OF_MARCH + DAY), state) == [CreditsDebited("t2", 0, 5)]


def test_a_new_period_expires_even_a_single_credit_left_over():
    _, state = run(opened(), GrantCredits("monthly", 1, "subscription", NOW, END_OF_MARCH))
    end_of_april = END_OF_MARCH + timedelta(days=30)
    events, state = run(state, GrantCredits("monthly", 30, "subscription", NOW, end_of_april))
    assert events == [MonthlyCreditsExpired(1), CreditsGranted("monthly", 30, "subscription", end_of_april.isoformat())]
    assert state.monthly == 30


def test_evolve_refuses_an_expiry_of_another_amount_than_the_bucket_holds():
    _, state = run(opened(), GrantCredits("monthly", 30, "subscription", NOW, END_OF_MARCH))
    with pytest.raises(InvariantViolation, match="expiry of 29 but monthly holds 30"):
        evolve(state, MonthlyCreditsExpired(29))


def test_expiring_the_bucket_empties_it_and_keeps_payg():
    _, state = run(opened(), GrantCredits("monthly", 30, "subscription", NOW, END_OF_MARCH))
    _, state = run(state, ExpireMonthly(END_OF_MARCH))
    assert (state.monthly, state.payg) == (0, 200)


# --- debits -----------------------------------------------------------------------------

def test_a_debit_records_how_much_each_bucket_gave_and_what_is_outstanding():
    _, state = run(opened(), GrantCredits("monthly", 30, "subscription", NOW, END_OF_MARCH))
    events, after = run(state, DebitCredits("t1", 50, NOW))
    assert events == [CreditsDebited("t1", 30, 20)]
    assert (after.monthly, after.payg, after.outstanding["t1"]) == (0, 180, 50)


def test_a_debit_of_the_largest_task_is_taken_and_one_address_more_is_refused():
    state = rich(MAX_TASK_ADDRESSES)
    assert decide(DebitCredits("t1", MAX_TASK_ADDRESSES, NOW), state) == [
        CreditsDebited("t1", 0, MAX_TASK_ADDRESSES)]
    with pytest.raises(InvalidCommand, match="at most"):
        decide(DebitCredits("t1", MAX_TASK_ADDRESSES + 1, NOW), rich(MAX_TASK_ADDRESSES + 1))


def test_a_debit_of_one_credit_more_than_the_balance_names_both():
    with pytest.raises(InsufficientCredits, match="needs 201 credits and the balance is 200"):
        decide(DebitCredits("t1", 201, NOW), opened())


def test_a_bulk_debit_records_its_file_and_when_in_utc_and_a_single_one_neither():
    at = datetime(2026, 3, 1, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    events, state = run(rich(), DebitCredits("t1", 3, at, sha256=SHA, duplicate_window=DAY))
    assert events == [CreditsDebited("t1", 0, 3, SHA, "2026-03-01T12:00:00+00:00")]
    assert state.uploads[SHA] == ("t1", "2026-03-01T12:00:00+00:00")
    events, state = run(state, DebitCredits("t2", 3, at))
    assert events == [CreditsDebited("t2", 0, 3, "", "")]
    assert set(state.uploads) == {SHA}


def test_the_same_file_within_the_window_is_refused_up_to_its_last_moment():
    _, state = run(rich(), DebitCredits("t1", 3, NOW, sha256=SHA, duplicate_window=DAY))
    with pytest.raises(DuplicateUpload, match=r"within 24 h \(task t1\)"):
        decide(DebitCredits("t2", 3, NOW + DAY, sha256=SHA, duplicate_window=DAY), state)
    later = NOW + DAY + timedelta(microseconds=1)
    assert decide(DebitCredits("t2", 3, later, sha256=SHA, duplicate_window=DAY), state) == [
        CreditsDebited("t2", 0, 3, SHA, later.isoformat())]


def test_the_same_file_is_allowed_when_no_window_is_asked_for_and_another_file_always():
    _, state = run(rich(), DebitCredits("t1", 3, NOW, sha256=SHA, duplicate_window=DAY))
    assert decide(DebitCredits("t2", 3, NOW, sha256=SHA), state) == [CreditsDebited("t2", 0, 3, SHA, NOW.isoformat())]
    other = "cd" * 32
    assert decide(DebitCredits("t2", 3, NOW, sha256=other, duplicate_window=DAY), state) == [
        CreditsDebited("t2", 0, 3, other, NOW.isoformat())]


def test_a_single_address_debit_never_meets_the_duplicate_rule():
    _, state = run(rich(), DebitCredits("t1", 1, NOW))
    assert decide(DebitCredits("t2", 1, NOW, duplicate_window=DAY), state) == [CreditsDebited("t2", 0, 1)]


def test_evolve_refuses_a_negative_part_and_a_second_debit_of_a_task():
    state = rich()
    with pytest.raises(InvariantViolation, match="negative debit"):
        evolve(state, CreditsDebited("t1", -1, 5))
    with pytest.raises(InvariantViolation, match="negative debit"):
        evolve(state, CreditsDebited("t1", 0, -1))
    state = evolve(state, CreditsDebited("t1", 0, 5))
    with pytest.raises(InvariantViolation, match="debited twice"):
        evolve(state, CreditsDebited("t1", 0, 5))


def test_evolve_refuses_a_debit_past_the_monthly_bucket():
    _, state = run(opened(), GrantCredits("monthly", 3, "subscription", NOW, END_OF_MARCH))
    with pytest.raises(InvariantViolation, match="negative"):
        evolve(state, CreditsDebited("t1", 4, 0))
    assert evolve(state, CreditsDebited("t1", 3, 0)).monthly == 0


# --- refunds ----------------------------------------------------------------------------

@pytest.mark.parametrize("reason", ["unknown", "cancelled", "system_failure", "partial_failure", "support"])
def test_each_refund_reason_is_carried_by_the_event(reason):
    _, state = run(rich(), DebitCredits("t1", 5, NOW))
    assert decide(RefundCredits("t1", 5, reason), state) == [CreditsRefunded("t1", 5, reason)]


def test_an_unknown_refund_reason_is_refused():
    _, state = run(rich(), DebitCredits("t1", 5, NOW))
    with pytest.raises(InvalidCommand, match="refund reason"):
        decide(RefundCredits("t1", 1, "goodwill"), state)


def test_a_refund_of_the_whole_outstanding_leaves_nothing_to_refund():
    _, state = run(rich(100), DebitCredits("t1", 5, NOW))
    events, state = run(state, RefundCredits("t1", 5, "cancelled"))
    assert events == [CreditsRefunded("t1", 5, "cancelled")]
    assert (state.payg, state.outstanding["t1"]) == (300, 0)
    with pytest.raises(InvalidCommand, match="exceeds the 0 credits outstanding"):
        decide(RefundCredits("t1", 1, "cancelled"), state)


def test_evolve_refuses_a_refund_of_nothing_and_one_of_a_task_never_debited():
    _, state = run(rich(), DebitCredits("t1", 5, NOW))
    with pytest.raises(InvariantViolation):
        evolve(state, CreditsRefunded("t1", 0, "unknown"))
    with pytest.raises(InvariantViolation):
        evolve(state, CreditsRefunded("t9", 1, "unknown"))
    assert evolve(state, CreditsRefunded("t1", 5, "unknown")).outstanding["t1"] == 0


# --- API keys ---------------------------------------------------------------------------

def test_a_key_is_issued_with_its_scopes_sorted_once_each_and_kept_live():
    events, state = run(opened(), IssueApiKey("k1", "f" * 64, ("write", "read", "write"), "ci"))
    assert events == [ApiKeyIssued("k1", "f" * 64, ("read", "write"), "ci")]
    assert state.keys["k1"] == ("f" * 64, ("read", "write"), False)


@pytest.mark.parametrize("scopes, says", [((), "scopes are some of read, write, audit"),
                                          (("read", "admin", "root"), "unknown: admin, root")])
def test_keys_need_known_scopes(scopes, says):
    with pytest.raises(InvalidCommand, match=says):
        decide(IssueApiKey("k1", "f" * 64, scopes), opened())


def test_every_scope_is_grantable():
    assert decide(IssueApiKey("k1", "f" * 64, API_SCOPES), opened())[0].scopes == tuple(sorted(API_SCOPES))


def test_a_key_id_is_issued_once():
    _, state = run(opened(), IssueApiKey("k1", "f" * 64, ("read",)))
    with pytest.raises(InvalidCommand, match="exists already"):
        decide(IssueApiKey("k1", "e" * 64, ("read",)), state)


def test_a_key_label_is_up_to_200_printable_characters():
    assert decide(IssueApiKey("k1", "f" * 64, ("read",), "x" * 200), opened())[0].label == "x" * 200
    for label in ("x" * 201, "tab\there"):
        with pytest.raises(InvalidCommand, match="label"):
            decide(IssueApiKey("k1", "f" * 64, ("read",), label), opened())


def test_an_account_holds_at_most_the_live_key_bound_and_a_revoked_key_frees_a_place():
    state = opened()
    for n in range(MAX_KEYS - 1):
        _, state = run(state, IssueApiKey(f"k{n}", "f" * 64, ("read",)))
    _, full = run(state, IssueApiKey("last", "f" * 64, ("read",)))  # the bound itself is allowed
    with pytest.raises(InvalidCommand, match=f"at most {MAX_KEYS} live keys"):
        decide(IssueApiKey("one-more", "f" * 64, ("read",)), full)
    _, freed = run(full, RevokeApiKey("k0"))
    assert decide(IssueApiKey("one-more", "f" * 64, ("read",)), freed)[0].key_id == "one-more"


def test_revoking_marks_the_key_and_keeps_its_secret_and_scopes():
    _, state = run(opened(), IssueApiKey("k1", "f" * 64, ("audit",)))
    events, state = run(state, RevokeApiKey("k1"))
    assert events == [ApiKeyRevoked("k1")]
    assert state.keys["k1"] == ("f" * 64, ("audit",), True)
    with pytest.raises(InvalidCommand, match="already revoked"):
        decide(RevokeApiKey("k1"), state)
    with pytest.raises(InvalidCommand, match="no key k2"):
        decide(RevokeApiKey("k2"), state)


# --- retention and notifications ------------------------------------------------------

def test_retention_takes_its_bounds_and_refuses_past_them():
    state = opened()
    assert state.retention_days == DEFAULT_RETENTION_DAYS
    for days in (MIN_RETENTION_DAYS, MAX_RETENTION_DAYS):
        events, after = run(state, SetRetention(days))
        assert events == [RetentionSet(days)] and after.retention_days == days
    for days in (MIN_RETENTION_DAYS - 1, MAX_RETENTION_DAYS + 1, True, 7.0):
        with pytest.raises(InvalidCommand, match=f"{MIN_RETENTION_DAYS}-{MAX_RETENTION_DAYS} days"):
            decide(SetRetention(days), state)


def test_setting_the_retention_it_already_has_appends_nothing():
    assert decide(SetRetention(DEFAULT_RETENTION_DAYS), opened()) == []


def test_notifications_are_stored_normalised_and_folded():
    events, state = run(opened(), SetNotifications("  Ops@Example.COM ", True, 50))
    assert events == [NotificationsSet("Ops@example.com", True, 50)]
    assert (state.notify_email, state.notify_on_completion, state.low_balance_threshold) == (
        "Ops@example.com", True, 50)
    assert decide(SetNotifications("Ops@example.com", True, 50), state) == []
    assert decide(SetNotifications("Ops@example.com", False, 50), state) == [
        NotificationsSet("Ops@example.com", False, 50)]
    assert decide(SetNotifications("Ops@example.com", True, 51), state) == [
        NotificationsSet("Ops@example.com", True, 51)]


def test_notification_thresholds_run_from_off_to_the_balance_bound():
    state = opened()
    for threshold in (0, MAX_BALANCE):
        assert decide(SetNotifications("ops@example.com", False, threshold), state)[0].low_balance_threshold == threshold
    for threshold in (-1, MAX_BALANCE + 1, True, 1.5):
        with pytest.raises(InvalidCommand, match="low-balance threshold"):
            decide(SetNotifications("ops@example.com", False, threshold), state)


@pytest.mark.parametrize("email, says", [("not an address", "not a valid e-mail address"),
                                         (42, "is an e-mail address")])
def test_a_notification_address_must_be_an_address(email, says):
    with pytest.raises(InvalidCommand, match=says):
        decide(SetNotifications(email, False, 0), opened())


def test_on_completion_is_true_or_false():
    with pytest.raises(InvalidCommand, match="true or false"):
        decide(SetNotifications("ops@example.com", 1, 0), opened())


@pytest.mark.parametrize("command", [IssueApiKey("k", "f" * 64, ("read",)), RevokeApiKey("k"), SetRetention(5),
                                     SetNotifications("ops@example.com", False, 0)])
def test_settings_on_an_unopened_account_are_refused(command):
    with pytest.raises(AccountNotFound) as refused:
        decide(command, AccountState())
    assert str(refused.value) == "no such account"


def test_opening_an_open_account_names_it():
    with pytest.raises(AccountAlreadyOpen) as refused:
        decide(OpenAccount("acme"), opened())
    assert str(refused.value) == "account acme is already open"


def test_a_command_of_another_kind_is_named_in_the_type_error():
    with pytest.raises(TypeError, match="not an account command: 'grant'"):
        decide("grant", opened())


# --- what a refused customer reads ----------------------------------------------------
# The CLI and the API print a refusal's message as it is: each must say what was wrong.

def _says(command, state: AccountState) -> str:
    with pytest.raises(InvalidCommand) as refused:
        decide(command, state)
    return str(refused.value)


@pytest.mark.parametrize("command, message", [
    (GrantCredits("payg", 0, "purchase", NOW), "a grant is a whole number of credits above zero"),
    (GrantCredits("payg", MAX_BALANCE + 1, "purchase", NOW), "a grant is at most 1,000,000,000,000 credits"),
    (GrantCredits("payg", MAX_BALANCE, "purchase", NOW),
     "this grant would bring the balance to 1,000,000,000,200 credits; a balance is at most 1,000,000,000,000"),
    (GrantCredits("payg", 5, "purchase", NOW, END_OF_MARCH),
     "PAYG credits never expire; --expires is for the monthly bucket"),
    (GrantCredits("yearly", 5, "purchase", NOW), "unknown bucket 'yearly'"),
    (GrantCredits("monthly", 5, "purchase", NOW), "monthly credits need an expiry with a time zone"),
    (GrantCredits("monthly", 5, "purchase", NOW, NOW - DAY), "monthly credits must expire in the future"),
    (GrantCredits("payg", 5, "gift", NOW), "unknown grant reason 'gift'"),
    (GrantCredits("monthly", 5, "purchase", NOW, datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-5)))),
     "the expiry is past the last representable date (9999-12-31 UTC)"),
    (IssueApiKey("k1", "f" * 64, ()), "scopes are some of read, write, audit"),
    (SetNotifications(None, False, 0), "a notification address is an e-mail address"),
    (DebitCredits("t1", 0, NOW), "a task needs at least one address"),
    (DebitCredits("t1", MAX_TASK_ADDRESSES + 1, NOW), "a task holds at most 1,000,000 addresses"),
    (RefundCredits("t1", 0, "unknown"), "a refund is at least one credit"),
    (RefundCredits("t9", 1, "unknown"), "task t9 was never debited on this account"),
    (OpenAccount("x" * 129), "an account id is 1-128 printable characters"),
    (IssueApiKey("k1", "f" * 64, ("read",), "x" * 201), "a key's label is up to 200 printable characters"),
    (SetNotifications("ops@example.com", "yes", 0), "on_completion is true or false"),
    (SetNotifications("ops@example.com", False, -1), "a low-balance threshold is 0 (off) to 1,000,000,000,000 credits"),
])
def test_each_refusal_says_what_was_wrong(command, message):
    state = opened() if not isinstance(command, OpenAccount) else AccountState()
    assert _says(command, state) == message


def test_a_refusal_for_credits_names_the_balance_left_after_the_lazy_expiry():
    _, state = run(opened(), GrantCredits("monthly", 30, "subscription", NOW, END_OF_MARCH))
    with pytest.raises(InsufficientCredits) as refused:
        decide(DebitCredits("t1", 201, END_OF_MARCH), state)
    assert str(refused.value) == "this task needs 201 credits and the balance is 200"


def test_a_duplicate_upload_says_when_and_which_task_and_how_to_go_on():
    _, state = run(rich(), DebitCredits("t1", 3, NOW, sha256=SHA, duplicate_window=timedelta(minutes=90)))
    with pytest.raises(DuplicateUpload) as refused:
        decide(DebitCredits("t2", 3, NOW, sha256=SHA, duplicate_window=timedelta(minutes=90)), state)
    assert str(refused.value) == ("the same file was uploaded within 1.5 h (task t1); "
                                  "pass --allow-duplicate to verify it again")


@pytest.mark.usefixtures("server_in_new_york")
def test_the_time_of_a_bulk_debit_is_utc_whatever_zone_the_server_runs_in():
    events = decide(DebitCredits("t1", 3, NOW, sha256=SHA), rich())
    assert events == [CreditsDebited("t1", 0, 3, SHA, "2026-03-01T12:00:00+00:00")]


@pytest.mark.usefixtures("server_in_new_york")
def test_a_monthly_expiry_is_kept_in_utc_whatever_zone_the_server_runs_in():
    expires = datetime(2026, 4, 1, 2, 0, tzinfo=timezone(timedelta(hours=2)))
    events = decide(GrantCredits("monthly", 5, "subscription", NOW, expires), opened())
    assert events == [CreditsGranted("monthly", 5, "subscription", "2026-04-01T00:00:00+00:00")]

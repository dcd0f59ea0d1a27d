"""The result taxonomy (projections/taxonomy.py): the detailed result never contradicts the
money status that decides charge or refund, the score stays in its documented range, and
the whole of it is a function of the event (the free-email flag is recorded by the provider
at verification time, never looked up at fold time)."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest
from hypothesis import given, strategies as st

from consumers.providers import to_result
from events import AddressVerified, ChunkFailed, RecordedEvent, ResultUnknown
from projections import taxonomy
from projections.base import InMemoryView
from projections.exports import RESULT_COLUMNS, csv_lines
from projections.read_models import RESULTS, ResultsProjection
from verifier.lists import is_free_email
from verifier.result import VerificationResult

KNOWN_REASONS = ("", "catch_all", "accept_all", "full_inbox", "inbox_full", "disposable", "role", "role_account",
                 "syntax", "no_domain", "null_mx", "no_mx", "user_unknown", "disabled", "smtputf8_unsupported",
                 "smtp_timeout", "greylisted", "antispam_block", "temporary_failure", "dns_failure",
                 "provider_error", "policy", "connection_refused")
KNOWN_FLAGS = ("role", "disposable", "catch_all", "mx_found", "free_email")
reasons = st.one_of(st.sampled_from(KNOWN_REASONS), st.text(max_size=20), st.none())
flag_sets = st.frozensets(st.one_of(st.sampled_from(KNOWN_FLAGS), st.text(max_size=12)), max_size=8)
money = st.sampled_from(taxonomy.MONEY_STATUSES)


# ------------------------------------------------------------------------------ properties

@given(money, reasons, flag_sets)
def test_the_detailed_result_never_contradicts_the_money_status(status, reason, flags):
    got = taxonomy.classify(status, reason, flags)
    assert got.result in taxonomy.RESULTS
    assert taxonomy.MONEY_OF[got.result] == status
    # spelled out, as the issue says it
    if got.result in ("invalid", "disabled"):
        assert status == "invalid"
    if got.result == "unknown":
        assert status == "unknown"
    if got.result in ("role_account", "catch_all", "disposable", "inbox_full"):
        assert status == "risky"
    if got.result == "safe":
        assert status == "safe"
    # and the other way round: every money status keeps its own family
    assert {"safe": {"safe"}, "unknown": {"unknown"}, "invalid": {"invalid", "disabled"},
            "risky": {"role_account", "catch_all", "disposable", "inbox_full"}}[status] >= {got.result}


@given(money, reasons, flag_sets)
def test_the_score_is_in_its_documented_range_and_the_risk_score_is_its_other_side(status, reason, flags):
    got = taxonomy.classify(status, reason, flags)
    assert taxonomy.MIN_SCORE <= got.score <= taxonomy.MAX_SCORE
    assert 0 <= got.risk_score <= 100 and got.score + got.risk_score == 100
    assert got.score == taxonomy.SCORE_OF[got.result]
    assert got.deliverability in ("high", "medium", "low", "unknown")
    assert (got.deliverability == "unknown") == (status == "unknown")
    # a refunded (unknown) result is never called valid, nor an invalid one
    if status in ("unknown", "invalid"):
        assert not got.is_valid
    # a deliverable result is a highly deliverable one
    if got.is_valid:
        assert got.deliverability == "high" and status in ("safe", "risky")


@given(money, reasons, flag_sets)
def test_it_is_a_function_of_the_event_and_the_flags_are_the_recorded_ones(status, reason, flags):
    first, again = taxonomy.classify(status, reason, flags), taxonomy.classify(status, reason, tuple(flags))
    assert first == again
    assert first.is_free_email == ("free_email" in flags)
    assert first.mx_found == ("mx_found" in flags)
    assert first.is_disposable == ("disposable" in flags or first.result == "disposable")
    assert first.is_role_account == ("role" in flags or first.result == "role_account")
    assert first.is_catch_all == ("catch_all" in flags or first.result == "catch_all")
    columns = taxonomy.columns(status, reason, flags)
    assert tuple(columns) == taxonomy.COLUMNS
    assert columns["result"] == first.result and columns["score"] == first.score
    assert all(columns[name] in (0, 1) for name in taxonomy.FLAG_COLUMNS)


@given(st.text(max_size=10).filter(lambda s: s not in taxonomy.MONEY_STATUSES), reasons, flag_sets)
def test_a_status_that_is_not_a_money_status_is_refused(status, reason, flags):
    with pytest.raises(ValueError):
        taxonomy.classify(status, reason, flags)


# ---------------------------------------------------------------------- the mapping table

@pytest.mark.parametrize("status, reason, flags, result, score, risk, deliverability, valid", [
    ("safe", "", (), "safe", 98, 2, "high", True),
    ("safe", "", ("role", "mx_found"), "safe", 98, 2, "high", True),  # money says safe: flags never overrule
    ("risky", "role", ("role",), "role_account", 93, 7, "high", True),  # the help center's example: risk 7, high
    ("risky", "catch_all", ("catch_all",), "catch_all", 71, 29, "medium", False),
    ("risky", "accept_all", (), "catch_all", 71, 29, "medium", False),
    ("risky", "disposable", (), "disposable", 30, 70, "low", False),
    ("risky", "full_inbox", (), "inbox_full", 20, 80, "low", False),
    ("risky", "", ("disposable", "catch_all"), "disposable", 30, 70, "low", False),
    ("risky", "something new", (), "catch_all", 71, 29, "medium", False),
    ("invalid", "disabled", (), "disabled", 4, 96, "low", False),
    ("invalid", "user_unknown", (), "invalid", 3, 97, "low", False),
    ("invalid", "null_mx", (), "invalid", 3, 97, "low", False),
    ("invalid", "syntax", (), "invalid", 3, 97, "low", False),
    ("unknown", "greylisted", ("mx_found",), "unknown", 0, 100, "unknown", False),
    ("unknown", "provider_error", (), "unknown", 0, 100, "unknown", False),
])
def test_the_mapping(status, reason, flags, result, score, risk, deliverability, valid):
    got = taxonomy.classify(status, reason, flags)
    assert (got.result, got.score, got.risk_score, got.deliverability, got.is_valid) == (
        result, score, risk, deliverability, valid)


# --------------------------------------------------------- the provider records free_email

def answer(address: str, **kwargs) -> VerificationResult:
    base = dict(address=address, normalized=address, status="safe", reason=None, detail="", tier="smtp",
                mx=("mx.example.test",))
    return VerificationResult(**{**base, **kwargs})


def test_the_free_email_list_is_the_maintained_package_and_matches_exact_domains():
    assert is_free_email("gmail.com") and is_free_email("Outlook.COM") and is_free_email("yahoo.com.")
    assert not is_free_email("example.com") and not is_free_email("corp.gmail.com.example")
    assert not is_free_email("")


def test_to_result_records_the_free_email_flag_with_the_others():
    assert to_result(answer("alice@gmail.com")).flags == ("mx_found", "free_email")
    assert to_result(answer("bob@example.com")).flags == ("mx_found",)
    role = to_result(answer("info@hotmail.com", status="risky", reason="role", role=True, mx=()))
    assert role.flags == ("role", "free_email")
    # the normalized form decides (the verifier's own reading of the address)
    assert "free_email" in to_result(answer("Carol@GMAIL.com", normalized="Carol@gmail.com")).flags


# ------------------------------------------------------------------ the read model and exports

def recorded(position: int, event, stream: str = "task-t1") -> RecordedEvent:
    return RecordedEvent(position, stream, position, uuid.uuid4(), datetime(2026, 1, 1, tzinfo=timezone.utc), event)


def test_results_rows_carry_the_taxonomy_from_the_event_alone():
    events = [
        recorded(1, AddressVerified("alice@gmail.com", "safe", "", 0, "smtp", flags=("mx_found", "free_email"))),
        recorded(2, AddressVerified("info@corp.test", "risky", "role", 0, "smtp", flags=("role", "mx_found"))),
        recorded(3, ResultUnknown("grey@corp.test", "greylisted", "451 try later", 0, "smtp")),
        recorded(4, ChunkFailed(1, "provider down", ("lost@corp.test",))),
    ]
    view = InMemoryView([ResultsProjection()]).fold(events)
    rows = {r["address"]: r for r in view.tables[RESULTS.name].values()}
    assert {k: rows["alice@gmail.com"][k] for k in taxonomy.COLUMNS} == {
        "result": "safe", "score": 98, "is_disposable": 0, "is_role_account": 0, "is_catch_all": 0,
        "is_free_email": 1, "mx_found": 1}
    assert (rows["info@corp.test"]["result"], rows["info@corp.test"]["is_role_account"]) == ("role_account", 1)
    assert (rows["grey@corp.test"]["result"], rows["grey@corp.test"]["score"]) == ("unknown", 0)
    assert (rows["lost@corp.test"]["result"], rows["lost@corp.test"]["status"]) == ("unknown", "unknown")
    # the same events, folded again: the same rows (a rebuild equals the live read model)
    assert InMemoryView([ResultsProjection()]).fold(events).sorted_rows(RESULTS.name) == view.sorted_rows(RESULTS.name)


def test_the_csv_export_has_the_taxonomy_columns_with_true_and_false():
    row = {"address": "alice@gmail.com", "status": "safe", "reason": "", "detail": "", "tier": "smtp",
           "reply": "250 ok", "result": "safe", "score": 98, "is_disposable": False, "is_role_account": False,
           "is_catch_all": False, "is_free_email": True, "mx_found": True}
    header, line = "".join(csv_lines([row])).splitlines()
    assert header.split(",") == list(RESULT_COLUMNS)
    assert line == "alice@gmail.com,safe,,,smtp,250 ok,safe,98,false,false,false,true,true"


def test_an_older_logs_per_address_results_fold_into_the_rows_a_batch_of_the_same_results_makes():
    """Logs written before batching hold AddressVerified and ResultUnknown: read as batches of
    one (events.as_batch), they give the rows they always gave, and the same as one batch."""
    from events import ResultsRecorded

    old = [recorded(5, AddressVerified("a@corp.test", "invalid", "user_unknown", 0, "smtp", reply="550 no",
                                       mx_host="mx[1.2.3.4]", flags=("mx_found",))),
           recorded(5, ResultUnknown("b@corp.test", "greylisted", "451 later", 0, "smtp", reply="451 4.7.1"))]
    batched = [recorded(5, ResultsRecorded(0, "invalid", "user_unknown", "smtp", False, ("a@corp.test",),
                                           replies=("550 no",), mx_hosts=("mx[1.2.3.4]",), flags=("mx_found",))),
               recorded(5, ResultsRecorded(0, "unknown", "greylisted", "smtp", False, ("b@corp.test",),
                                           details=("451 later",), replies=("451 4.7.1",)))]
    rows = {r["address"]: r for r in InMemoryView([ResultsProjection()]).fold(old).tables[RESULTS.name].values()}
    assert {k: rows["a@corp.test"][k] for k in ("status", "reason", "detail", "reply", "mx_host", "flags")} == {
        "status": "invalid", "reason": "user_unknown", "detail": "", "reply": "550 no", "mx_host": "mx[1.2.3.4]",
        "flags": "mx_found"}
    assert (rows["b@corp.test"]["reason"], rows["b@corp.test"]["detail"]) == ("greylisted", "451 later")
    assert InMemoryView([ResultsProjection()]).fold(old).sorted_rows(RESULTS.name) == \
        InMemoryView([ResultsProjection()]).fold(batched).sorted_rows(RESULTS.name)

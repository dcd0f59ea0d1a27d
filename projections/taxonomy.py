"""The product's result taxonomy: from a result's money status, its reason and the flags the
provider recorded in the event, the detailed result a customer sees (Safe, Role, Catch-All,
Disposable, Inbox Full, Disabled, Invalid, Unknown), its score and its flags.

Pure and total: the same event always gives the same row (a rebuild equals the live read
model), and nothing here is looked up at fold time: whether an address is a free-mail one
was decided by the provider when it verified it, and recorded as the "free_email" flag.

The money status alone decides charge or refund (shared/DESIGN.md): safe, invalid and risky
consume the credit, unknown is refunded. The detailed result only ever refines it; it never
contradicts it (`MONEY_OF[result] == status`, always).

Where the numbers come from (the product's help center):
- "Every result type, explained" gives each result a typical score out of 100, higher is
  safer: Safe 98, Role 93, Catch-All 71, Disposable 30, Inbox Full 20, Disabled 4,
  Invalid 3, Unknown 0.
- The single-verification endpoint answers a role account with `"risk_score": 7` and
  `"deliverability": "high"`: the risk score is the other side of the score (100 - 93).
- Only "high" is shown for `deliverability`; medium, low and unknown are this engine's
  reading of the same scores (Catch-All "maybe", the rest "no", Unknown "uncertain").
"""
from __future__ import annotations

import functools

from dataclasses import asdict, dataclass
from typing import Any, Iterable

MONEY_STATUSES = ("safe", "invalid", "risky", "unknown")

# detailed result -> (score, the money status it refines); the API spells Role "role_account"
RESULTS: dict[str, tuple[int, str]] = {
    "safe": (98, "safe"),
    "role_account": (93, "risky"),
    "catch_all": (71, "risky"),
    "disposable": (30, "risky"),
    "inbox_full": (20, "risky"),
    "disabled": (4, "invalid"),
    "invalid": (3, "invalid"),
    "unknown": (0, "unknown"),
}
MONEY_OF = {result: money for result, (_, money) in RESULTS.items()}
SCORE_OF = {result: score for result, (score, _) in RESULTS.items()}
MIN_SCORE, MAX_SCORE = 0, 100

# a risky result's reason (verifier/result.py) -> the detailed result
RISKY_REASONS = {"catch_all": "catch_all", "accept_all": "catch_all", "full_inbox": "inbox_full", "inbox_full": "inbox_full",
                 "disposable": "disposable", "role": "role_account", "role_account": "role_account"}
# a risky result whose reason is none of those: the flags, in this order; else Catch-All
# (accepted, but the mailbox could not be confirmed)
RISKY_BY_FLAG = (("disposable", "disposable"), ("catch_all", "catch_all"), ("role", "role_account"))
INVALID_REASONS = {"disabled": "disabled"}  # every other invalid reason: Invalid

DELIVERABLE = ("safe", "role_account")  # is_valid: "true if the email is deliverable"


@dataclass(frozen=True)
class Taxonomy:
    result: str  # the detailed result (the product API's `status`)
    score: int  # 0-100, higher is safer
    risk_score: int  # 0-100, higher is riskier: 100 - score
    deliverability: str  # high | medium | low | unknown
    is_valid: bool
    is_disposable: bool
    is_role_account: bool
    is_catch_all: bool
    is_free_email: bool
    mx_found: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def detailed_result(status: str, reason: str | None, flags: Iterable[str] = ()) -> str:
    """The detailed result of a money status (safe | invalid | risky | unknown)."""
    flags = frozenset(flags)
    if status == "safe":
        return "safe"
    if status == "unknown":
        return "unknown"
    if status == "invalid":
        return INVALID_REASONS.get(reason or "", "invalid")
    if status == "risky":
        if (reason or "") in RISKY_REASONS:
            return RISKY_REASONS[reason or ""]
        return next((result for flag, result in RISKY_BY_FLAG if flag in flags), "catch_all")
    raise ValueError(f"not a money status: {status!r} (one of {', '.join(MONEY_STATUSES)})")


def risk_score(score: int) -> int:
    return MAX_SCORE - score


def deliverability(result: str) -> str:
    score = SCORE_OF[result]
    if result == "unknown":
        return "unknown"
    return "high" if score >= 90 else "medium" if score >= 50 else "low"


def is_valid(result: str) -> bool:
    return result in DELIVERABLE


def classify(status: str, reason: str | None, flags: Iterable[str] = ()) -> Taxonomy:
    """Everything the product shows of a result, from what its event holds."""
    flags = frozenset(flags)
    result = detailed_result(status, reason, flags)
    score = SCORE_OF[result]
    return Taxonomy(
        result=result, score=score, risk_score=risk_score(score), deliverability=deliverability(result),
        is_valid=is_valid(result),
        is_disposable="disposable" in flags or result == "disposable",
        is_role_account="role" in flags or result == "role_account",
        is_catch_all="catch_all" in flags or result == "catch_all",
        is_free_email="free_email" in flags,
        mx_found="mx_found" in flags,
    )


# The read model's columns (projections/read_models.py RESULTS), in order; the flags are 0/1.
COLUMNS = ("result", "score", "is_disposable", "is_role_account", "is_catch_all", "is_free_email", "mx_found")
FLAG_COLUMNS = ("is_disposable", "is_role_account", "is_catch_all", "is_free_email", "mx_found")


def columns(status: str, reason: str | None, flags: Iterable[str] = ()) -> dict[str, Any]:
    """The taxonomy columns of a results row (flags as 0/1, as the read models store them);
    a fresh dict each time (the row is the caller's)."""
    return dict(_columns(status, reason, tuple(flags)))


@functools.lru_cache(maxsize=4096)  # a pure function of few distinct inputs, asked once per result
def _columns(status: str, reason: str | None, flags: tuple[str, ...]) -> tuple[tuple[str, Any], ...]:
    taxonomy = classify(status, reason, flags)
    return (("result", taxonomy.result), ("score", taxonomy.score),
            *((name, int(getattr(taxonomy, name))) for name in FLAG_COLUMNS))

"""The event catalogue of shared/DESIGN.md: one frozen class per event.

Field names are the contract. Extra fields beyond DESIGN.md are marked; they carry what
an auditor needs without joining other streams.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from events.base import Event, register

Bucket = Literal["payg", "monthly"]
GrantReason = Literal["welcome", "purchase", "subscription", "support"]
RefundReason = Literal["unknown", "cancelled", "system_failure", "partial_failure", "support"]
Definitive = Literal["safe", "invalid", "risky"]
ResultStatus = Literal["safe", "invalid", "risky", "unknown"]
UnknownReason = Literal[
    "smtp_timeout", "greylisted", "antispam_block", "temporary_failure", "dns_failure", "provider_error",
    "connection_refused",  # extra: every MX host refused the TCP connection
    "policy",  # extra: not probed by our own rule (the egress guard refused every MX address)
]

WELCOME_CREDITS = 200


def account_stream(account_id: str) -> str:
    return f"account-{account_id}"


def task_stream(task_id: str) -> str:
    return f"task-{task_id}"


# --- account stream -------------------------------------------------------------------

@register
@dataclass(frozen=True)
class AccountOpened(Event):
    account_id: str


@register
@dataclass(frozen=True)
class CreditsGranted(Event):
    bucket: Bucket
    amount: int
    reason: GrantReason
    expires_at: str | None = None  # ISO 8601, monthly grants only


@register
@dataclass(frozen=True)
class CreditsDebited(Event):
    # v2 added sha256 and at (v1 events read as ""): see events/upcasters.py
    schema_version = 2
    task_id: str
    monthly: int
    payg: int
    sha256: str = ""  # extra: digest of the bulk file ("" for a single task), for the duplicate rule
    at: str = ""  # extra: when, ISO 8601 UTC (bulk only): the duplicate window counts from it


@register
@dataclass(frozen=True)
class CreditsRefunded(Event):
    task_id: str
    amount: int
    reason: RefundReason


@register
@dataclass(frozen=True)
class MonthlyCreditsExpired(Event):
    amount: int


@register
@dataclass(frozen=True)
class RetentionSet(Event):
    """Extra: how many days after a task finishes its per-address data is erased."""

    days: int


@register
@dataclass(frozen=True)
class ApiKeyIssued(Event):
    """Extra: an API key of the account. Only the SHA-256 of its secret is kept."""

    secret = ("secret_sha256",)

    key_id: str
    secret_sha256: str
    scopes: tuple[str, ...]
    label: str = ""


@register
@dataclass(frozen=True)
class ApiKeyRevoked(Event):
    """Extra: the key no longer opens anything."""

    key_id: str


# --- an account's e-mail notification settings (consumers/notifications/mail.py) ---------------
@register
@dataclass(frozen=True)
class NotificationsSet(Event):
    """Extra: where and when the account is told by e-mail: on each task's end (opt-in) and
    once each time a debit takes its balance from >= low_balance_threshold to below (0: off)."""

    email: str
    on_completion: bool
    low_balance_threshold: int


# --- task stream ----------------------------------------------------------------------

@register
@dataclass(frozen=True)
class TaskCreated(Event):
    # v1 had neither `source` nor `chunk_size` (chunks were always 1,000); v3 added `name`:
    # see events/upcasters.py
    schema_version = 3
    account_id: str
    kind: Literal["single", "bulk"]
    address_count: int
    source: str
    sha256: str
    chunk_size: int
    upload_id: str = ""  # extra: key of the staged inputs; "" means the task id
    name: str = ""  # extra: the customer's name for it (lists, the debit's history row)


@register
@dataclass(frozen=True)
class ChunkSubmitted(Event):
    personal = ("addresses",)
    chunk_no: int
    addresses: tuple[str, ...]
    provider: str
    tier: str


@register
@dataclass(frozen=True)
class AddressVerified(Event):
    """One address's definitive result. No longer appended (results are batched per chunk in
    ResultsRecorded); logs written before hold it, and everything that folds still reads it."""
    # v2 added the evidence: reply, mx_host, flags (v1 events read them empty)
    schema_version = 2
    personal = ("address", "reply")
    address: str
    status: Definitive
    detail: str  # the reason: user_unknown, catch_all, full_inbox, role... ("" for a plain safe)
    chunk_no: int = 0  # extra: which chunk settled
    tier: str = ""  # extra: which provider tier answered
    late: bool = False  # extra: arrived after cancel/failure; logged for audit, never charged
    reply: str = ""  # extra: the SMTP reply that decided it, as sent ("550 5.1.1 <a@x>: User unknown")
    mx_host: str = ""  # extra: who sent that reply ("mx.x.org[192.0.2.1]")
    flags: tuple[str, ...] = ()  # extra: role, disposable, catch_all, mx_found, ... as the provider saw them


@register
@dataclass(frozen=True)
class ResultUnknown(Event):
    """One address's Unknown result (refunded). No longer appended: an entry of status
    "unknown" in ResultsRecorded is the same fact; logs written before hold it."""
    schema_version = 2  # as AddressVerified
    personal = ("address", "detail", "reply")
    address: str
    reason: UnknownReason
    detail: str = ""
    chunk_no: int = 0
    tier: str = ""
    late: bool = False
    reply: str = ""
    mx_host: str = ""
    flags: tuple[str, ...] = ()


@register
@dataclass(frozen=True)
class ResultsRecorded(Event):
    """A chunk's results that share a status, a reason and a tier, settled by one command.

    Each entry is one address's own fact, as one AddressVerified or ResultUnknown held it
    before (the engine appended those until results were batched; they still fold): an
    entry of status "unknown" is that address's ResultUnknown, refunded on its own. One
    event per group instead of one per address is what lets a million results be written,
    read and folded in seconds. The columns are aligned with `addresses`; an evidence column
    left empty means that no entry had any (as AddressVerified's defaults did)."""
    personal = ("addresses", "details", "replies")
    chunk_no: int
    status: ResultStatus
    reason: str  # a definitive result's reason ("" for a plain safe: each entry's text then says it), or the UnknownReason
    tier: str
    late: bool  # arrived after cancel/failure: logged for audit, never charged nor refunded
    addresses: tuple[str, ...]
    details: tuple[str, ...] = ()  # each Unknown's detail (personal, as ResultUnknown's)
    replies: tuple[str, ...] = ()  # the SMTP reply that decided each, as sent
    mx_hosts: tuple[str, ...] = ()  # who sent that reply
    flags: tuple[str, ...] = ()  # each entry's flags (role, disposable, ...), comma-joined
    texts: tuple[str, ...] = ()  # a definitive entry's text when its batch has no reason (as AddressVerified's detail)

    def column(self, name: str) -> tuple[str, ...]:
        """An evidence column, entry-aligned whether it was stored or left empty."""
        values: tuple[str, ...] = getattr(self, name)
        return values or ("",) * len(self.addresses)


def as_batch(event: Event) -> ResultsRecorded | None:
    """A result as a batch, so that every fold reads results one way: a ResultsRecorded as it
    is, a per-address event of a log written before batching as a batch of one (None: not a
    result). An AddressVerified's detail was its reason, or its text when it had none."""
    if isinstance(event, ResultsRecorded):
        return event
    if isinstance(event, AddressVerified):
        return ResultsRecorded(event.chunk_no, event.status, event.detail, event.tier, event.late, (event.address,),
                               replies=_one(event.reply), mx_hosts=_one(event.mx_host), flags=_one(",".join(event.flags)))
    if isinstance(event, ResultUnknown):
        return ResultsRecorded(event.chunk_no, "unknown", event.reason, event.tier, event.late, (event.address,),
                               _one(event.detail), _one(event.reply), _one(event.mx_host), _one(",".join(event.flags)))
    return None


def _one(value: str) -> tuple[str, ...]:
    return (value,) if value else ()


@register
@dataclass(frozen=True)
class ChunkFailed(Event):
    personal = ("error", "addresses")
    chunk_no: int
    error: str
    addresses: tuple[str, ...] = field(default=())  # extra: the ones refunded by this failure


@register
@dataclass(frozen=True)
class TaskCancelled(Event):
    unverified_count: int


@register
@dataclass(frozen=True)
class TaskCompleted(Event):
    counts: dict[str, int]


@register
@dataclass(frozen=True)
class TaskFailed(Event):
    reason: Literal["partial_failure", "provider_error"]
    unverified_count: int


@register
@dataclass(frozen=True)
class SystemFailure(Event):
    reason: str
    unverified_count: int = 0  # extra: refunded with it


@register
@dataclass(frozen=True)
class TaskDeleted(Event):
    pass


@register
@dataclass(frozen=True)
class TaskDataErased(Event):
    """Extra: the task's per-address data is gone for good: its key was destroyed (the log's
    sealed addresses can no longer be read), its results and staged inputs deleted. Counts
    and money stay."""

    reason: Literal["retention", "request", "account"]

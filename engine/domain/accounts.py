"""The account decider: credits in two buckets, Monthly first on debit, refunds to PAYG.

`decide(command, state) -> events` is pure. `evolve(state, event) -> state` folds one
event; it asserts the money invariants so a broken log can never fold silently.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone

from typing import cast, get_args

from immutables import Map

from events import (
    WELCOME_CREDITS,
    AccountOpened,
    ApiKeyIssued,
    ApiKeyRevoked,
    RetentionSet,
    CreditsDebited,
    CreditsGranted,
    CreditsRefunded,
    Event,
    GrantReason,
    MonthlyCreditsExpired,
    NotificationsSet,
    RefundReason,
)
from engine.domain.errors import (
    AccountAlreadyOpen,
    AccountNotFound,
    DuplicateUpload,
    InsufficientCredits,
    InvalidCommand,
    check,
)
from engine.domain.limits import (
    DEFAULT_RETENTION_DAYS,
    MAX_BALANCE,
    MAX_ID_LENGTH,
    MAX_RETENTION_DAYS,
    MAX_TASK_ADDRESSES,
    MIN_RETENTION_DAYS,
)
from engine.domain.text import printable


@dataclass(frozen=True)
class AccountState:
    account_id: str | None = None
    monthly: int = 0
    payg: int = 0
    monthly_expires_at: datetime | None = None
    # task id -> credits debited for it and not yet refunded; a refund may never exceed it.
    # A persistent map: each refund makes a new state in O(log tasks), not a copy of them all.
    outstanding: Map[str, int] = field(default_factory=Map)
    # sha256 of a bulk file -> (task id, when it was debited): the duplicate-upload rule is
    # decided here, on the account stream, so two racing uploads cannot both pass it
    uploads: Map[str, tuple[str, str]] = field(default_factory=Map)
    # key id -> (sha256 of its secret, scopes, revoked)
    keys: Map[str, tuple[str, tuple[str, ...], bool]] = field(default_factory=Map)
    retention_days: int = DEFAULT_RETENTION_DAYS  # per-address data is erased this long after a task ends
    # e-mail notifications (consumers/notifications/mail.py): where, on task end?, below which balance ("" / 0: off)
    notify_email: str = ""
    notify_on_completion: bool = False
    low_balance_threshold: int = 0

    @property
    def opened(self) -> bool:
        return self.account_id is not None

    @property
    def total(self) -> int:
        return self.monthly + self.payg

    def monthly_expired(self, now: datetime) -> bool:
        return self.monthly > 0 and self.monthly_expires_at is not None and self.monthly_expires_at <= now


# --- commands -------------------------------------------------------------------------

@dataclass(frozen=True)
class OpenAccount:
    account_id: str


@dataclass(frozen=True)
class GrantCredits:
    bucket: str
    amount: int
    reason: str
    now: datetime
    expires_at: datetime | None = None


@dataclass(frozen=True)
class DebitCredits:
    task_id: str
    amount: int
    now: datetime
    sha256: str = ""  # of a bulk file; "" for a single address
    duplicate_window: timedelta | None = None  # refuse a file debited within it; None: allowed


@dataclass(frozen=True)
class RefundCredits:
    task_id: str
    amount: int
    reason: str


@dataclass(frozen=True)
class ExpireMonthly:
    now: datetime


@dataclass(frozen=True)
class IssueApiKey:
    key_id: str
    secret_sha256: str
    scopes: tuple[str, ...]
    label: str = ""


@dataclass(frozen=True)
class RevokeApiKey:
    key_id: str


@dataclass(frozen=True)
class SetRetention:
    days: int


API_SCOPES = ("read", "write", "audit")  # read: its tasks and credits; write: create, cancel, delete; audit: the log
MAX_KEYS = 100


@dataclass(frozen=True)
class SetNotifications:
    email: str
    on_completion: bool
    low_balance_threshold: int


AccountCommand = (OpenAccount | GrantCredits | DebitCredits | RefundCredits | ExpireMonthly | IssueApiKey
                  | RevokeApiKey | SetRetention | SetNotifications)


def decide(command: AccountCommand, state: AccountState) -> list[Event]:
    if isinstance(command, OpenAccount):
        if state.opened:
            raise AccountAlreadyOpen(f"account {command.account_id} is already open")
        if (not command.account_id or len(command.account_id) > MAX_ID_LENGTH
                or not printable(command.account_id)):
            raise InvalidCommand(f"an account id is 1-{MAX_ID_LENGTH} printable characters")
        return [AccountOpened(command.account_id), CreditsGranted("payg", WELCOME_CREDITS, "welcome")]
    if not state.opened:
        raise AccountNotFound("no such account")
    if isinstance(command, GrantCredits):
        return _grant(command, state)
    if isinstance(command, DebitCredits):
        return _debit(command, state)
    if isinstance(command, RefundCredits):
        return _refund(command, state)
    if isinstance(command, ExpireMonthly):
        return [MonthlyCreditsExpired(state.monthly)] if state.monthly_expired(command.now) else []
    if isinstance(command, IssueApiKey):
        unknown = set(command.scopes) - set(API_SCOPES)
        if not command.scopes or unknown:
            raise InvalidCommand(f"scopes are some of {', '.join(API_SCOPES)}"
                                 + (f"; unknown: {', '.join(sorted(unknown))}" if unknown else ""))
        if command.key_id in state.keys:
            raise InvalidCommand(f"key {command.key_id} exists already")
        if sum(1 for _, _, revoked in state.keys.values() if not revoked) >= MAX_KEYS:
            raise InvalidCommand(f"an account holds at most {MAX_KEYS} live keys; revoke one first")
        if len(command.label) > 200 or not printable(command.label):
            raise InvalidCommand("a key's label is up to 200 printable characters")
        return [ApiKeyIssued(command.key_id, command.secret_sha256, tuple(sorted(set(command.scopes))),
                             command.label)]
    if isinstance(command, SetRetention):
        if isinstance(command.days, bool) or not isinstance(command.days, int) or \
                not MIN_RETENTION_DAYS <= command.days <= MAX_RETENTION_DAYS:
            raise InvalidCommand(f"data retention is {MIN_RETENTION_DAYS}-{MAX_RETENTION_DAYS} days")
        return [] if command.days == state.retention_days else [RetentionSet(command.days)]
    if isinstance(command, SetNotifications):
        return _notifications(command, state)
    if isinstance(command, RevokeApiKey):
        key = state.keys.get(command.key_id)
        if key is None:
            raise InvalidCommand(f"no key {command.key_id} on this account")
        if key[2]:
            raise InvalidCommand(f"key {command.key_id} is already revoked")
        return [ApiKeyRevoked(command.key_id)]
    raise TypeError(f"not an account command: {command!r}")


def _notifications(command: SetNotifications, state: AccountState) -> list[Event]:
    from email_validator import EmailNotValidError, validate_email

    if not isinstance(command.email, str):
        raise InvalidCommand("a notification address is an e-mail address")
    try:  # the syntax only (no DNS: a decider is pure); stored normalised
        email = validate_email(command.email.strip(), check_deliverability=False).normalized
    except EmailNotValidError as error:
        raise InvalidCommand(f"not a valid e-mail address for notifications: {error}") from None
    if not isinstance(command.on_completion, bool):
        raise InvalidCommand("on_completion is true or false")
    threshold = command.low_balance_threshold
    if isinstance(threshold, bool) or not isinstance(threshold, int) or not 0 <= threshold <= MAX_BALANCE:
        raise InvalidCommand(f"a low-balance threshold is 0 (off) to {MAX_BALANCE:,} credits")
    if (email, command.on_completion, threshold) == (state.notify_email, state.notify_on_completion,
                                                    state.low_balance_threshold):
        return []
    return [NotificationsSet(email, command.on_completion, threshold)]


def _grant(command: GrantCredits, state: AccountState) -> list[Event]:
    if not isinstance(command.amount, int) or isinstance(command.amount, bool) or command.amount <= 0:
        raise InvalidCommand("a grant is a whole number of credits above zero")
    if command.amount > MAX_BALANCE:
        raise InvalidCommand(f"a grant is at most {MAX_BALANCE:,} credits")
    if state.total + command.amount > MAX_BALANCE:
        raise InvalidCommand(f"this grant would bring the balance to {state.total + command.amount:,} credits; "
                             f"a balance is at most {MAX_BALANCE:,}")
    reason = _grant_reason(command.reason)
    if command.bucket == "payg":
        if command.expires_at is not None:
            raise InvalidCommand("PAYG credits never expire; --expires is for the monthly bucket")
        return [CreditsGranted("payg", command.amount, reason)]
    if command.bucket != "monthly":
        raise InvalidCommand(f"unknown bucket {command.bucket!r}")
    if command.expires_at is None or command.expires_at.tzinfo is None:
        raise InvalidCommand("monthly credits need an expiry with a time zone")
    if command.expires_at <= command.now:
        raise InvalidCommand("monthly credits must expire in the future")
    try:
        expires_utc = command.expires_at.astimezone(timezone.utc)
    except OverflowError:  # 9999-12-31T23:59-05:00 is past year 9999 in UTC
        raise InvalidCommand("the expiry is past the last representable date (9999-12-31 UTC)") from None
    events: list[Event] = []
    # A new period resets the bucket: the previous period's leftover expires first.
    if state.monthly > 0 and state.monthly_expires_at != expires_utc:
        events.append(MonthlyCreditsExpired(state.monthly))
    # Stored in UTC so expiries compare as text in every read model.
    expires = expires_utc.isoformat()
    events.append(CreditsGranted("monthly", command.amount, reason, expires))
    return events


def _grant_reason(reason: str) -> GrantReason:
    """Why credits are granted by a command (the welcome grant is the engine's alone)."""
    if reason in ("purchase", "subscription", "support"):
        return cast(GrantReason, reason)
    raise InvalidCommand(f"unknown grant reason {reason!r}")


def _refund_reason(reason: str) -> RefundReason:
    if reason in get_args(RefundReason):
        return cast(RefundReason, reason)
    raise InvalidCommand(f"unknown refund reason {reason!r}")


def _debit(command: DebitCredits, state: AccountState) -> list[Event]:
    if command.amount <= 0:
        raise InvalidCommand("a task needs at least one address")
    if command.amount > MAX_TASK_ADDRESSES:
        raise InvalidCommand(f"a task holds at most {MAX_TASK_ADDRESSES:,} addresses")
    if command.task_id in state.outstanding:
        raise InvalidCommand(f"task {command.task_id} was already debited")
    refuse_duplicate_upload(state, command.sha256, command.now, command.duplicate_window)
    events: list[Event] = []
    monthly = state.monthly
    if state.monthly_expired(command.now):
        events.append(MonthlyCreditsExpired(monthly))
        monthly = 0
    if command.amount > monthly + state.payg:
        raise InsufficientCredits(
            f"this task needs {command.amount} credits and the balance is {monthly + state.payg}"
        )
    from_monthly = min(monthly, command.amount)
    at = command.now.astimezone(timezone.utc).isoformat() if command.sha256 else ""
    events.append(CreditsDebited(command.task_id, from_monthly, command.amount - from_monthly, command.sha256, at))
    return events


def refuse_duplicate_upload(state: AccountState, sha256: str, now: datetime, window: timedelta | None) -> None:
    """The duplicate-upload rule: the same file again within the window needs allow_duplicate."""
    earlier = state.uploads.get(sha256) if sha256 and window is not None else None
    if earlier is not None and window is not None and now - datetime.fromisoformat(earlier[1]) <= window:
        raise DuplicateUpload(f"the same file was uploaded within {window.total_seconds() / 3600:g} h "
                              f"(task {earlier[0]}); pass --allow-duplicate to verify it again")


def _refund(command: RefundCredits, state: AccountState) -> list[Event]:
    if command.amount <= 0:
        raise InvalidCommand("a refund is at least one credit")
    outstanding = state.outstanding.get(command.task_id)
    if outstanding is None:
        raise InvalidCommand(f"task {command.task_id} was never debited on this account")
    if command.amount > outstanding:
        raise InvalidCommand(
            f"refund of {command.amount} for task {command.task_id} exceeds the {outstanding} credits outstanding"
        )
    return [CreditsRefunded(command.task_id, command.amount, _refund_reason(command.reason))]


def evolve(state: AccountState, event: Event) -> AccountState:
    if isinstance(event, AccountOpened):
        return replace(state, account_id=event.account_id)
    if isinstance(event, CreditsGranted):
        check(0 < event.amount and state.total + event.amount <= MAX_BALANCE,
              "grant of {} takes the balance {} out of bounds", event.amount, state.total)
        if event.bucket == "payg":
            return replace(state, payg=state.payg + event.amount)
        expires = datetime.fromisoformat(event.expires_at) if event.expires_at else None
        return replace(state, monthly=state.monthly + event.amount, monthly_expires_at=expires)
    if isinstance(event, CreditsDebited):
        check(event.monthly >= 0 and event.payg >= 0, "negative debit {}", event)
        check(event.task_id not in state.outstanding, "task {} debited twice", event.task_id)
        new = replace(
            state,
            monthly=state.monthly - event.monthly,
            payg=state.payg - event.payg,
            outstanding=state.outstanding.set(event.task_id, event.monthly + event.payg),
            uploads=state.uploads.set(event.sha256, (event.task_id, event.at)) if event.sha256 else state.uploads,
        )
        check(new.monthly >= 0 and new.payg >= 0, "balance went negative on {}", event)
        return new
    if isinstance(event, CreditsRefunded):
        left = state.outstanding.get(event.task_id, 0) - event.amount
        check(event.amount > 0 and left >= 0, "refund beyond the debit on {}", event)
        return replace(state, payg=state.payg + event.amount, outstanding=state.outstanding.set(event.task_id, left))
    if isinstance(event, MonthlyCreditsExpired):
        check(event.amount == state.monthly, "expiry of {} but monthly holds {}", event.amount, state.monthly)
        return replace(state, monthly=0)
    if isinstance(event, RetentionSet):
        return replace(state, retention_days=event.days)
    if isinstance(event, NotificationsSet):
        return replace(state, notify_email=event.email, notify_on_completion=event.on_completion,
                       low_balance_threshold=event.low_balance_threshold)
    if isinstance(event, ApiKeyIssued):
        return replace(state, keys=state.keys.set(event.key_id, (event.secret_sha256, event.scopes, False)))
    if isinstance(event, ApiKeyRevoked):
        secret, scopes, _ = state.keys[event.key_id]
        return replace(state, keys=state.keys.set(event.key_id, (secret, scopes, True)))
    return state

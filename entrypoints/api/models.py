"""The API's request and response shapes (they make the OpenAPI document)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from engine.domain.limits import MAX_BALANCE, MAX_ID_LENGTH, MAX_NAME_LENGTH
from engine.domain.text import PRINTABLE_PATTERN, printable


def _printable(text: str | None) -> str | None:
    if text is not None and not printable(text):
        raise ValueError("holds a control, format or separator character (the schema's pattern)")
    return text


# The engine's one "printable" rule (engine/domain/text.py): checked with it, documented with
# its pattern, so the document allows exactly what the server takes. PRINTABLE goes into an
# Annotated query or header parameter, `Printable` is the field type.
PRINTABLE = AfterValidator(_printable)
PRINTABLE_SCHEMA = {"pattern": PRINTABLE_PATTERN}
Printable = Annotated[str, PRINTABLE, Field(json_schema_extra=PRINTABLE_SCHEMA)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AccountIn(Strict):
    account_id: Printable = Field(min_length=1, max_length=MAX_ID_LENGTH)


class GrantIn(Strict):
    bucket: Literal["payg", "monthly"]
    amount: int = Field(gt=0, le=MAX_BALANCE)
    reason: Literal["purchase", "subscription", "support"] | None = None
    expires_at: datetime | None = Field(None, description="monthly credits only; with a time zone")

    @field_validator("expires_at")
    @classmethod
    def _expires_in_utc(cls, value: datetime | None) -> datetime | None:
        """A time with its zone that has a UTC time (9999-12-31T23:00-05:00 has none): a 422, not a 500."""
        if value is not None:
            if value.tzinfo is None or value.utcoffset() is None:
                raise ValueError("expires_at needs a time zone (e.g. 2026-12-31T23:59:59+00:00)")
            try:
                value.astimezone(timezone.utc)
            except OverflowError:
                raise ValueError("expires_at is out of range") from None
        return value


KeyScope = Literal["read", "write", "audit"]


def _read_write() -> list[KeyScope]:
    return ["read", "write"]


class KeyIn(Strict):
    scopes: list[KeyScope] = Field(default_factory=_read_write, min_length=1)
    label: Printable = Field("", max_length=200)


class SingleIn(Strict):
    address: str = Field(min_length=3, max_length=320, pattern=r"^[^\x00-\x1f\x7f]*@[^\x00-\x1f\x7f]*$",
                         examples=["alice@example.com"])
    name: Printable = Field("", max_length=MAX_NAME_LENGTH, description="a name for the task (lists, the Credits History)")


class Retention(Strict):
    data_retention_days: int = Field(ge=1, le=3650)


class Balance(BaseModel):
    account: str
    monthly: int
    payg: int
    total: int
    monthly_expires_at: str | None = None


class HistoryRow(BaseModel):
    seq: int
    time: str
    type: str
    bucket: str
    amount: int
    balance_after: int
    description: str
    task_id: str | None
    actor: str | None


class HistoryPage(BaseModel):
    items: list[HistoryRow]
    next_cursor: str | None


class Task(BaseModel):
    task_id: str
    account: str
    kind: Literal["single", "bulk"]
    status: Literal["pending", "processing", "completed", "cancelled", "failed", "deleted"]
    partial_failure: bool
    total: int
    verified: int
    unknown: int
    failed: int
    refunded: int
    consumed: int
    debited: int
    late: int
    created_at: str
    finished_at: str | None
    created_by: str | None
    results_deleted_at: str | None = None
    name: str = ""
    url: str


class TaskPage(BaseModel):
    items: list[Task]
    next_cursor: str | None


class SingleResult(BaseModel):
    task: Task
    address: str
    status: str | None = Field(description="safe | invalid | risky | unknown; null while still running")
    reason: str | None
    detail: str | None


class EmailResult(BaseModel):
    """Result taxonomy: one verified address as the product's public API shows it (POST
    /api/verify-single, and each item of GET /api/get-results/{task_id}); see
    projections/taxonomy.py for how the detailed result and the scores are derived."""

    email: str
    status: Literal["safe", "role_account", "catch_all", "disposable", "inbox_full", "disabled", "invalid",
                    "unknown"] = Field(description="the detailed result; its money status alone decides the charge: "
                                                   "unknown is refunded")
    is_valid: bool = Field(description="true if the email is deliverable (safe, role_account)")
    is_disposable: bool
    is_role_account: bool
    is_catch_all: bool
    is_free_email: bool = Field(description="a free webmail domain (recorded by the provider when it verified)")
    mx_found: bool
    domain: str
    risk_score: int = Field(ge=0, le=100, description="0-100, higher is riskier: 100 - the result's score")
    deliverability: Literal["high", "medium", "low", "unknown"]
    credits_used: int = Field(ge=0, le=1, description="1, or 0 when the result is unknown (refunded)")
    verified_at: str | None = Field(description="when the task finished (single); null in a bulk task's list")
    reason: str = Field(description="a human-readable explanation")
    task_id: str


class Upload(BaseModel):
    task: Task
    addresses: int
    duplicates: int
    rows_without_address: int
    column: str


class ApiKey(BaseModel):
    key_id: str
    account: str
    scopes: list[str]
    key: str = Field(description="shown once: only its hash is kept")


class Problem(BaseModel):
    """An error, as RFC 9457 problem details (`application/problem+json`)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": True})

    type: str = Field(description="a URI naming the kind of problem")
    title: str
    status: int
    detail: str = Field(description="what went wrong, fit to show to a person")
    instance: str = Field(description="the path of the request")
    retry_after_seconds: int | None = Field(None, description="429 only: seconds until the key may ask again")


class Event(BaseModel):
    position: int
    stream: str
    version: int
    type: str
    data: dict[str, Any]
    metadata: dict[str, Any]


class EventPage(BaseModel):
    items: list[Event]
    next_after: int

"""The product's public API as its help center documents it, on the same app as /v1:

- POST /api/verify-single   {"email": ...} -> the result of one address, in the documented shape
- POST /api/verify-bulk     {"emails": [...], "name": ...} -> a task id (the list is written to a
                            temporary CSV file and goes through the same `create_bulk` as /v1)
- GET  /api/get-results/{task_id} -> the task's status and progress, and its results once finished

Same engine paths as /v1: the single route *is* `routes.single` (its wait, its idempotency),
its answer translated; the bulk route uses /v1's `create_bulk`, `idempotent` and upload report.
Same `Authorization: Bearer` account keys (and the admin token, naming the account with
?account=), same per-key limiter (`Services.throttle`). What differs is the shape of what is
said, as documented: errors are `{"error": ..., "message": ...}` (402 adds `current_balance`,
429 adds `limit`, `window`, `current`, `retry_after_seconds`), and every answer to a known key
carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`.

The money rules do not change here: the detailed `status` (safe, role_account, catch_all, ...)
refines the money status that decided the charge (projections/taxonomy.py); an unknown result
is refunded (`credits_used: 0`).
"""
from __future__ import annotations

import logging
import math
import os
import tempfile
from datetime import datetime, timezone
from typing import Annotated, Any, AsyncIterator, Awaitable, Callable, TypeVar

import orjson
from fastapi import APIRouter, Query, Request, Security
from fastapi.responses import Response, StreamingResponse
from limits import RateLimitItem
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from engine.domain.errors import InsufficientCredits
from engine.domain.limits import MAX_NAME_LENGTH, MAX_TASK_ADDRESSES
from entrypoints.api import models, problems, routes
from entrypoints.api.deps import Principal, Services, fingerprint, idempotent, json_response
from entrypoints.api.problems import Problem
from engine.service import Upload
from projections import taxonomy

log = logging.getLogger("vec.api")

FINISHED = ("completed", "failed", "cancelled")
RESULTS_PAGE = 2000
MISSING_KEY = "Missing or invalid Authorization header. Use: Authorization: Bearer YOUR_API_KEY"
INVALID_KEY = "Invalid or inactive API key"
# characters refused in an address of a JSON list: they would break the CSV file it becomes
# (the reader guesses the delimiter among , ; TAB |), and no deliverable address holds them
NOT_IN_AN_ADDRESS = frozenset(",;|\"") | frozenset(map(chr, range(32))) | {"\x7f"}


# --- shapes --------------------------------------------------------------------------------

class ErrorBody(BaseModel):
    """An error as the product's API says it (not problem details)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": True})

    error: str = Field(description="what went wrong; stable, safe to match on")
    message: str | None = Field(None, description="a human-readable hint")


class InsufficientCreditsBody(ErrorBody):
    current_balance: int = Field(description="total credits of the account when the request was refused")


class RateLimitedBody(ErrorBody):
    limit: int = Field(description="requests allowed in the window")
    window: str = Field(description='e.g. "1 minute"')
    current: int = Field(description="requests in the window, this one included")
    retry_after_seconds: int = Field(ge=1, description="seconds to wait before retrying")


ADDRESS = r"^[^\x00-\x1f\x7f]*@[^\x00-\x1f\x7f]*$"  # as /v1's SingleIn; checked by it (400 if not)
LISTED = r'^[^\x00-\x1f\x7f,;|"]*@[^\x00-\x1f\x7f,;|"]*$'  # what NOT_IN_AN_ADDRESS leaves


class VerifySingleIn(BaseModel):
    email: str = Field(max_length=320, description="the address to verify", examples=["user@example.com"],
                       json_schema_extra={"minLength": 3, "pattern": ADDRESS})


Email = Annotated[str, StringConstraints(min_length=1, max_length=320), Field(json_schema_extra={"pattern": LISTED})]


class VerifyBulkIn(BaseModel):
    emails: list[Email] = Field(min_length=1, max_length=MAX_TASK_ADDRESSES,
                                description="the addresses to verify (duplicates are verified and charged once)",
                                examples=[["user1@example.com", "user2@example.com"]])
    name: models.Printable = Field("", max_length=MAX_NAME_LENGTH, description="a friendly name for the task")


class SinglePending(BaseModel):
    task_id: str
    email: str
    status: str = Field(description='"processing": poll GET /api/get-results/{task_id}')
    message: str


class BulkTask(BaseModel):
    task_id: str
    name: str
    status: str = Field(description="pending | processing | completed | failed | cancelled")
    total_emails: int = Field(description="unique addresses, one credit each")
    is_chunked: bool
    total_chunks: int
    partial_failure: bool
    failed_emails_count: int
    credits_refunded: int
    duplicates: int = Field(description="addresses given more than once (charged once)")
    message: str


class TaskResults(BaseModel):
    task_id: str
    name: str
    status: str = Field(description="pending | processing | completed | failed | cancelled | deleted")
    progress: float = Field(ge=0, le=100, description="percent of the addresses settled")
    total_emails: int
    processed_emails: int
    failed_emails_count: int = Field(description="addresses whose chunk failed (refunded)")
    partial_failure: bool
    credits_used: int
    credits_refunded: int
    created_at: str
    completed_at: str | None
    results: list[models.EmailResult] = Field(description="every result, once the task finished (else empty)")


Body = TypeVar("Body", bound=BaseModel)


# --- documentation -------------------------------------------------------------------------

def _error(description: str, model: type[BaseModel] = ErrorBody,
           headers: dict[str, Any] | None = None) -> dict[str, Any]:
    documented: dict[str, Any] = {"model": model, "description": description}
    if headers:
        documented["headers"] = headers
    return documented


def _int_header(description: str) -> dict[str, Any]:
    return {"schema": {"type": "integer"}, "required": True, "description": description}


RATE_HEADERS = {
    "X-RateLimit-Limit": _int_header("requests allowed in the per-key window"),
    "X-RateLimit-Remaining": _int_header("requests left in the window"),
    "X-RateLimit-Reset": _int_header("Unix time (seconds) when the window next frees a request"),
}
ERRORS: routes.Responses = {
    401: _error(f'no valid API key: "{MISSING_KEY}" or "{INVALID_KEY}"',
                headers={"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}}),
    403: _error("the key lacks the scope this route needs"),
    404: _error("no such task or account (another account's are not found either)"),
    422: _error("refused as it stands: nothing was changed"),
    429: _error("too many requests for this key", RateLimitedBody,
                {"Retry-After": {"schema": {"type": "integer", "minimum": 1}, "required": True}, **RATE_HEADERS}),
    503: _error("the store cannot be reached, or a read model stopped: try again"),
}
POSTED: routes.Responses = {
    400: _error("the body is missing, not JSON, or not of the documented shape (\"Email is required\", ...)"),
    402: _error("the account has fewer credits than the request needs (nothing is deducted)",
                InsufficientCreditsBody),
    409: _error("an Idempotency-Key used for another request"),
    413: _error("the body is too large"),
}
IDEMPOTENCY_HEADER = {"name": "Idempotency-Key", "in": "header", "required": False,
                      "schema": {"type": "string", "maxLength": 200, **models.PRINTABLE_SCHEMA},
                      "description": "a retry with the same key gets the original answer; the same key with "
                                     "another request is a 409"}
ACCOUNT = Query(None, description="the admin token names the account; an API key acts for its own")

router = APIRouter(prefix="/api", tags=["compat"], responses=ERRORS, dependencies=[Security(routes.bearer)])


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}},
            "parameters": [IDEMPOTENCY_HEADER]}


# --- the frame every compat answer goes through ---------------------------------------------

async def _answer(request: Request, act: Callable[[Services, Principal], Awaitable[Response]]) -> Response:
    """Who is asking (as /v1), the per-key limiter (as /v1), then `act`; any refusal said the
    documented way, and the rate-limit headers on every answer to a known key."""
    svc = routes.services(request)
    who: Principal | None = None
    rate_headers: dict[str, str] = {}
    try:
        who = await svc.authenticate(request)
        try:
            await svc.throttle(who)
        except Problem as limited:
            return await _rate_limited(svc, who, limited)
        rate_headers = await _rate_headers(svc, who)  # as counted when the request was let in
        if any("\x00" in value for value in (*request.path_params.values(), *request.query_params.keys(),
                                              *request.query_params.values())):
            raise Problem(422, "Invalid request", "a path or query value holds a NUL character")
        response = await act(svc, who)
    except Exception as error:  # noqa: BLE001 - every refusal is answered in the documented shape
        problem = problems.from_exception(error)
        if problem.status >= 500 and not isinstance(error, Problem):
            log.exception("unexpected error on %s %s", request.method, request.url.path)
        response = _error_response(request, problem)
    if rate_headers:
        response.headers.update(rate_headers)
    elif who is not None:
        response.headers.update(await _rate_headers(svc, who))
    return response


def _error_response(request: Request, problem: Problem) -> Response:
    if problem.status == 401:
        sent = request.headers.get("authorization", "")
        error = INVALID_KEY if sent.lower().startswith("bearer ") and sent[7:].strip() else MISSING_KEY
        body: dict[str, Any] = {"error": error, "message": problem.detail}
    elif problem.status == 402:
        body = {"error": "Insufficient credits", "message": "Please purchase more credits to continue"}
    elif problem.status == 404:
        body = {"error": "Not found", "message": problem.detail}
    else:
        body = {"error": problem.title, "message": problem.detail}
    body.update(problem.extra)
    return json_response(body, problem.status, problem.headers or None)


def _window(item: RateLimitItem) -> str:
    unit = item.GRANULARITY.name
    return f"{item.multiples} {unit}" + ("" if item.multiples == 1 else "s")


async def _stats(svc: Services, who: Principal) -> list[tuple[RateLimitItem, float, int]]:
    return await svc.call(svc.limits.stats, "per_key", who.id)


async def _rate_headers(svc: Services, who: Principal) -> dict[str, str]:
    """The most binding of the key's limits (the one with the fewest requests left)."""
    item, reset, remaining = min(await _stats(svc, who), key=lambda s: (s[2], s[0].amount))
    return {"X-RateLimit-Limit": str(item.amount), "X-RateLimit-Remaining": str(max(0, remaining)),
            "X-RateLimit-Reset": str(math.ceil(reset))}


async def _rate_limited(svc: Services, who: Principal, limited: Problem) -> Response:
    if limited.status != 429:
        raise limited
    item, reset, _ = min(await _stats(svc, who), key=lambda s: (s[2], s[0].amount))
    wait = int(limited.extra.get("retry_after_seconds") or limited.headers.get("Retry-After") or 1)
    body = {"error": "Rate limit exceeded", "limit": item.amount, "window": _window(item),
            "current": item.amount + 1, "retry_after_seconds": wait, "message": limited.detail}
    return json_response(body, 429, {"Retry-After": str(wait), "X-RateLimit-Limit": str(item.amount),
                                     "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(math.ceil(reset))})


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Problem(413, "Payload too large", f"a request body is at most {limit:,} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Problem(413, "Payload too large", f"a request body is at most {limit:,} bytes")
    return bytes(body)


def _parse(raw: bytes, model: type[Body], required: str, missing: str) -> Body:
    try:
        data = orjson.loads(raw) if raw.strip() else None
    except orjson.JSONDecodeError:
        raise Problem(400, "Invalid JSON", "the body is not JSON") from None
    if not isinstance(data, dict) or data.get(required) in (None, "", []):
        raise Problem(400, missing, f'send a JSON object with "{required}"')
    try:
        return model.model_validate(data)
    except ValidationError as error:
        messages = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        raise Problem(400, "Invalid request", messages) from None


async def _insufficient(svc: Services, account_id: str) -> Problem:
    balance = await svc.call(routes._balance, svc, account_id)
    return Problem(402, "Insufficient credits", "Please purchase more credits to continue",
                   current_balance=balance["total"])


# --- what a result looks like ---------------------------------------------------------------

EXPLAINED = {"safe": "Valid mailbox: it exists and accepts mail", "role_account": "Role account detected",
             "catch_all": "Catch-all domain: the mailbox itself cannot be confirmed",
             "disposable": "Disposable (temporary) email address", "inbox_full": "Mailbox is full",
             "disabled": "Mailbox is disabled"}
INVALID_EXPLAINED = {"syntax": "Invalid email syntax", "no_domain": "The domain does not exist",
                     "null_mx": "The domain accepts no mail", "no_mx": "The domain has no mail server",
                     "smtputf8_unsupported": "The mail server cannot take this (non-ASCII) address"}


def _explain(row: dict[str, Any]) -> str:
    result, reason = row["result"], row["reason"] or ""
    if result == "invalid":
        return INVALID_EXPLAINED.get(reason, "Mailbox does not exist")
    if result == "unknown":
        return f"Could not be verified ({reason or 'no answer'}); the credit was refunded"
    return EXPLAINED[result]


def _utc(stamp: str | None) -> str | None:
    if not stamp:
        return None
    moment = datetime.fromisoformat(stamp).astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def email_result(row: dict[str, Any], task: dict[str, Any]) -> dict[str, Any]:
    """A results row (with its taxonomy columns) as the product's API shows it."""
    result, address = row["result"], row["address"]
    return {"email": address, "status": result, "is_valid": taxonomy.is_valid(result),
            "is_disposable": bool(row["is_disposable"]), "is_role_account": bool(row["is_role_account"]),
            "is_catch_all": bool(row["is_catch_all"]), "is_free_email": bool(row["is_free_email"]),
            "mx_found": bool(row["mx_found"]), "domain": address.rpartition("@")[2],
            "risk_score": taxonomy.risk_score(row["score"]), "deliverability": taxonomy.deliverability(result),
            "credits_used": 0 if row["status"] == "unknown" else 1,
            "verified_at": _utc(task["finished_at"]) if task["kind"] == "single" else None,
            "reason": _explain(row), "task_id": task["task_id"]}


def _single_result(svc: Services, who: Principal, task_id: str, email: str) -> dict[str, Any]:
    task = routes._task(svc, who, task_id)
    row = next(iter(svc.db.read.results(task_id)), None)
    if row is None:  # finished without a result (a system failure): refunded, as an unknown
        row = {"address": email, "status": "unknown", "reason": "provider_error",
               **taxonomy.columns("unknown", "provider_error")}
    return email_result(row, task)


# --- the routes ------------------------------------------------------------------------------

@router.post("/verify-single", response_model=models.EmailResult,
             responses={**POSTED, 202: {"model": SinglePending, "description": "still running: poll get-results",
                                        "headers": {"Location": {"schema": {"type": "string"}, "required": True},
                                                    **RATE_HEADERS}},
                        200: {"description": "the result", "headers": RATE_HEADERS},
                        410: _error("a retry (same Idempotency-Key) of a verification whose task was erased since "
                                    "(data retention or erasure): its result is gone")},
             openapi_extra=_body_doc(VerifySingleIn),
             summary="Verify one email in real time (1 credit; an unknown result is refunded)")
async def verify_single(request: Request, account: str | None = ACCOUNT) -> Response:
    async def act(svc: Services, who: Principal) -> Response:
        raw = await _read_body(request, 64 * 1024)
        email = _parse(raw, VerifySingleIn, "email", "Email is required").email
        try:
            single_in = models.SingleIn(address=email.strip())
        except ValidationError:
            raise Problem(400, "Invalid email format", f"{email!r} is not an email address") from None
        account_id = routes.account_of(who, account)
        try:
            answered = await routes.single(single_in, request, account, who)  # /v1's own route: same engine path
        except InsufficientCredits:
            raise await _insufficient(svc, account_id) from None
        outcome = orjson.loads(answered.body)
        task_id = outcome["task"]["task_id"]
        if answered.status_code != 200:
            return json_response({"task_id": task_id, "email": email, "status": "processing",
                                  "message": f"still verifying: GET /api/get-results/{task_id}"}, 202,
                                 {"Location": f"/api/get-results/{task_id}"})
        return json_response(await svc.call(_single_result, svc, who, task_id, single_in.address))

    return await _answer(request, act)


def _emails_file(emails: list[str]) -> str:
    """The list as a one-column CSV file, for `create_bulk` (the caller unlinks it)."""
    handle = tempfile.NamedTemporaryFile("w", prefix="vec-compat-", suffix=".csv", delete=False, encoding="utf-8")
    with handle:
        handle.write("email\n")
        for email in emails:
            handle.write(email + "\n")
    return handle.name


def _bulk_json(svc: Services, who: Principal, upload: Upload) -> dict[str, Any]:
    shown = routes._upload_json(svc, who, upload)  # /v1's answer to an upload
    task = shown["task"]
    chunks = max(1, -(-task["total"] // svc.settings.chunk_size))
    return {"task_id": task["task_id"], "name": task["name"], "status": task["status"],
            "total_emails": task["total"], "is_chunked": chunks > 1, "total_chunks": chunks,
            "partial_failure": task["partial_failure"], "failed_emails_count": task["failed"],
            "credits_refunded": task["refunded"], "duplicates": shown["duplicates"],
            "message": f"Bulk verification task created: poll GET /api/get-results/{task['task_id']}"}


@router.post("/verify-bulk", response_model=BulkTask,
             responses={**POSTED, 200: {"description": "the task, created", "headers": RATE_HEADERS},
                        413: _error("the body is larger than VEC_API_MAX_UPLOAD_BYTES")},
             openapi_extra=_body_doc(VerifyBulkIn),
             summary="Submit a list of emails as a bulk task (1 credit per unique email; unknowns refunded)")
async def verify_bulk(request: Request, account: str | None = ACCOUNT) -> Response:
    async def act(svc: Services, who: Principal) -> Response:
        routes.need(who, "write")
        account_id = routes.account_of(who, account)
        with svc.gates.admit("upload", account_id):  # decided before a byte of the body is read
            raw = await _read_body(request, svc.settings.api_max_upload_bytes)
            # parsing a big list takes seconds: on the upload lane, never the loop or the engine lane
            path, name = await svc.uploads.call(lambda _engine: _list_file(raw), actor=who.actor)
            return await _create_from_list(request, svc, who, account_id, account, raw, path, name)

    return await _answer(request, act)


def _list_file(raw: bytes) -> tuple[str, str]:
    """The body's list of emails as a CSV file (the caller unlinks it), and the task's name."""
    body = _parse(raw, VerifyBulkIn, "emails", "Emails are required")
    bad = next((e for e in body.emails if not NOT_IN_AN_ADDRESS.isdisjoint(e)), None)
    if bad is not None:
        raise Problem(400, "Invalid email format", f"{bad!r} holds a character no address may hold here")
    return _emails_file(body.emails), body.name


async def _create_from_list(request: Request, svc: Services, who: Principal, account_id: str, account: str | None,
                            raw: bytes, path: str, name: str) -> Response:
    try:
        async def run(key: str | None) -> Response:
            upload = await svc.uploads.call(
                lambda engine: engine.create_bulk(account_id, path, True, None, key, name), actor=who.actor)
            svc.wake_engine()
            return json_response(await svc.call(_bulk_json, svc, who, upload))

        try:
            return await idempotent(svc, who, request, fingerprint(request, raw + f"\n{account}".encode()), run)
        except InsufficientCredits:
            raise await _insufficient(svc, account_id) from None
    finally:
        os.unlink(path)


def _task_head(svc: Services, who: Principal, task_id: str) -> dict[str, Any]:
    task = routes._task(svc, who, task_id)
    svc.db.projector.require("results")
    return task


@router.get("/get-results/{task_id}", response_model=TaskResults,
            responses={200: {"description": "the task, and its results once it finished", "headers": RATE_HEADERS}},
            summary="A task's status and progress, and every result once it finished (no credits used)")
async def get_results(task_id: str, request: Request) -> Response:
    async def act(svc: Services, who: Principal) -> Response:
        routes.need(who, "read")
        task = await svc.call(_task_head, svc, who, task_id)
        settled = task["verified"] + task["failed"]
        head = {"task_id": task["task_id"], "name": task["name"], "status": task["status"],
                "progress": 100.0 if not task["total"] else round(min(100.0, 100 * settled / task["total"]), 2),
                "total_emails": task["total"], "processed_emails": settled, "failed_emails_count": task["failed"],
                "partial_failure": task["partial_failure"], "credits_used": task["consumed"],
                "credits_refunded": task["refunded"], "created_at": _utc(task["created_at"]),
                "completed_at": _utc(task["finished_at"])}

        async def body() -> AsyncIterator[bytes]:
            yield orjson.dumps(head)[:-1] + b',"results":['
            first, after = True, None
            while task["status"] in FINISHED:
                rows, after = await svc.call(svc.db.read.results_page, task_id, None, after, RESULTS_PAGE)
                for row in rows:
                    yield (b"" if first else b",") + orjson.dumps(email_result(row, task))
                    first = False
                if len(rows) < RESULTS_PAGE:
                    break
            yield b"]}"

        return StreamingResponse(body(), media_type="application/json")

    return await _answer(request, act)

"""The routes under /v1: accounts and credits, tasks and results, the log for audit tooling.

Access: the admin token opens every route; an account's key opens only its own account and
tasks (another account's task is a 404, never a 403: nothing to enumerate), within its
scopes (read, write, audit).
"""
from __future__ import annotations

import asyncio
import base64
import itertools
import os
import tempfile
import time
from typing import Annotated, Any, AsyncIterator, Callable, Literal

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request, Security
from fastapi.responses import Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import Receive, Scope, Send

from engine.domain.errors import AccountNotFound, TaskNotFound
from entrypoints.api import models
from entrypoints.api.deps import Principal, Services, fingerprint, idempotent, json_response, task_json
from entrypoints.api.problems import Problem
from entrypoints.api.problems import response as problem_response
from entrypoints.api.uploads import Received, receive_upload
from engine.domain.limits import MAX_TASK_ADDRESSES
from engine.service import Engine, Upload
from events import RecordedEvent
from projections.exports import RESULT_COLUMNS, csv_lines, txt_lines
from projections.read_models import HistoryType

PAGE = 100
MAX_PAGE = 1000
# attribution: who issued the command (`admin`, `apikey:KEY_ID`, `cli:USER`, `engine`), as the
# events' metadata and the tasks' `created_by` say
BY = Query(None, min_length=1, max_length=200, description="only what this issuer did: admin, apikey:KEY_ID,"
                                                           " cli:USER or engine")
TASK_NAME = Query("", max_length=200, json_schema_extra=models.PRINTABLE_SCHEMA,
                  description="a name for the task (lists, the Credits History)")
MAX_UNPROCESSED = MAX_TASK_ADDRESSES
MAX_POSITION = 2**63 - 1  # positions and sequence numbers are 64-bit integers

Responses = dict[int | str, dict[str, Any]]  # a route's documented answers, by status

# What every route may answer besides its success (all of them RFC 9457 problem details).
ERRORS: Responses = {
    400: problem_response("the body cannot be parsed (not JSON, a broken multipart form)"),
    401: problem_response("no valid API key or admin token (missing, unknown, mistyped or revoked)",
                          {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}}),
    403: problem_response("the key lacks the scope this route needs, or the route is the admin's"),
    404: problem_response("no such account, task or stream (another account's are not found either)"),
    408: problem_response("the request body paused for longer than VEC_API_BODY_IDLE_TIMEOUT_S"),
    413: problem_response("the body is larger than this route takes (VEC_API_MAX_BODY_BYTES; uploads: "
                          "VEC_API_MAX_UPLOAD_BYTES), refused before it was read"),
    422: problem_response("the request is not valid: nothing was changed"),
    429: problem_response("this key sent too many requests: try again after Retry-After seconds",
                          {"Retry-After": {"schema": {"type": "integer", "minimum": 1}, "required": True}}),
    503: problem_response("the store cannot be reached, or a read model stopped: try again"),
}
CONFLICT: Responses = {409: problem_response("refused in the resource's current state, or an Idempotency-Key used for "
                                  "another request")}
RESULTS_GONE: Responses = {410: problem_response("the task's per-address data was deleted (data retention or erasure); "
                                      "its counts and credits remain")}
PAYMENT: Responses = {402: problem_response("the account has too few credits")}

router = APIRouter(prefix="/v1", responses=ERRORS)
bearer = HTTPBearer(auto_error=False, description="an account's API key (`vec_<id>_<secret>`, from `vec apikey "
                    "create` or POST /v1/accounts/{account_id}/keys) or the admin token (VEC_ADMIN_TOKEN)")


def idempotency_key(key: str | None = Header(
        None, alias="Idempotency-Key", max_length=200, json_schema_extra=models.PRINTABLE_SCHEMA,
        description="a retry with the same key gets the original answer (header Idempotent-Replayed: true); "
                    "the same key with another request is a 409")) -> None:
    """Documents the header; `deps.idempotent` acts on it."""


IDEMPOTENT = [Depends(idempotency_key)]


def services(request: Request) -> Services:
    svc: Services = request.app.state.services  # set by the app's lifespan (entrypoints/api/app.py)
    return svc


async def principal(request: Request,
                    _bearer: HTTPAuthorizationCredentials | None = Security(bearer)) -> Principal:
    svc = services(request)
    who = await svc.authenticate(request)
    await svc.throttle(who)
    # No store keeps a NUL in a text value (PostgreSQL refuses it): an id or a query value
    # holding one names nothing, and must not reach a query as a 5xx.
    if any("\x00" in value for value in (*request.path_params.values(), *request.query_params.keys(),
                                          *request.query_params.values())):
        raise Problem(422, "Invalid request", "a path or query value holds a NUL character")
    return who


def need(who: Principal, scope: str) -> None:
    if not who.may(scope):
        raise Problem(403, "Forbidden", f"this key lacks the '{scope}' scope")


def admin_only(who: Principal) -> None:
    if who.kind != "admin":
        raise Problem(403, "Forbidden", "this route needs the admin token")


def account_of(who: Principal, account: str | None) -> str:
    """The account a request acts for: a key's own; the admin names one with ?account=."""
    if who.kind == "key" and who.account_id is not None:  # (a key always names its account)
        if account is not None and account != who.account_id:
            raise Problem(404, "Not found", f"no such account: {account}")
        return who.account_id
    if not account:
        raise Problem(422, "Invalid request", "the admin names the account: ?account=ID")
    return account


def cursor_out(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def cursor_in(cursor: str | None, arity: int | tuple[type | tuple[type, ...], ...]) -> list[Any] | None:
    """The values of a cursor this API gave out: `arity` of them, or one of each type given
    (int: a 64-bit position or sequence number, str: an id or a time). Anything else is a
    422, never a value that breaks the query (a string for a number, a NUL, a huge int)."""
    if not cursor:
        return None
    kinds: tuple[type | tuple[type, ...], ...] = arity if isinstance(arity, tuple) else ((int, str),) * arity
    try:
        values = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if isinstance(values, list) and len(values) == len(kinds) and all(map(_cursor_value, values, kinds)):
            return values
    except ValueError:
        pass
    raise Problem(422, "Invalid request", "this cursor is not one this API gave out")


def _cursor_value(value: Any, kinds: type | tuple[type, ...]) -> bool:
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return int in kinds and 0 <= value <= MAX_POSITION
    if isinstance(value, str):
        return str in kinds and len(value) <= 1000 and "\x00" not in value
    return False


# --- accounts and credits ---------------------------------------------------------------

@router.post("/accounts", status_code=201, response_model=models.Balance, tags=["accounts"],
             responses=CONFLICT, dependencies=IDEMPOTENT, summary="Open an account (admin): 200 welcome credits")
async def open_account(body: models.AccountIn, request: Request, who: Principal = Depends(principal)) -> Response:
    admin_only(who)
    svc = services(request)

    async def run(key: str | None) -> Response:
        await svc.call(svc.engine.open_account, body.account_id, key, actor=who.actor)
        return json_response(await svc.call(_balance, svc, body.account_id), 201)

    return await idempotent(svc, who, request, fingerprint(request, body.model_dump_json()), run)


def _balance(svc: Services, account_id: str) -> dict[str, Any]:
    svc.db.catch_up()
    svc.db.projector.require("credits")
    row = svc.db.read.balances(account_id)
    if row is None:
        raise AccountNotFound(f"no such account: {account_id}")
    return row


@router.post("/accounts/{account_id}/credits", response_model=models.Balance, tags=["accounts"],
             responses=CONFLICT, dependencies=IDEMPOTENT, summary="Grant credits (admin)")
async def grant(account_id: str, body: models.GrantIn, request: Request,
                who: Principal = Depends(principal)) -> Response:
    admin_only(who)
    svc = services(request)
    if body.bucket == "monthly" and body.expires_at is None:
        raise Problem(422, "Invalid request", "monthly credits need expires_at")
    reason = body.reason or ("subscription" if body.bucket == "monthly" else "purchase")

    async def run(key: str | None) -> Response:
        await svc.call(svc.engine.grant_credits, account_id, body.bucket, body.amount, reason, body.expires_at, key,
                       actor=who.actor)
        return json_response(await svc.call(_balance, svc, account_id))

    return await idempotent(svc, who, request, fingerprint(request, body.model_dump_json()), run)


@router.get("/accounts/{account_id}/credits", response_model=models.Balance, tags=["accounts"],
            summary="Balance per bucket")
async def credits(account_id: str, request: Request, who: Principal = Depends(principal)) -> Response:
    need(who, "read")
    if not who.sees_account(account_id):
        raise Problem(404, "Not found", f"no such account: {account_id}")
    svc = services(request)
    return json_response(await svc.call(_balance, svc, account_id))


@router.get("/accounts/{account_id}/history", response_model=models.HistoryPage, tags=["accounts"],
            summary="The Credits History, oldest first, a page at a time")
async def history(account_id: str, request: Request, type: HistoryType | None = None,  # noqa: A002
                  cursor: str | None = None, limit: int = Query(PAGE, ge=1, le=MAX_PAGE),
                  by: str | None = BY, who: Principal = Depends(principal)) -> Response:
    need(who, "read")
    if not who.sees_account(account_id):
        raise Problem(404, "Not found", f"no such account: {account_id}")
    svc = services(request)
    after = cursor_in(cursor, (int,))

    def page() -> list[dict[str, Any]]:
        _balance(svc, account_id)
        return svc.db.read.history_page(account_id, type, int(after[0]) if after else 0, limit, actor=by)

    rows = await svc.call(page)
    return json_response({"items": rows, "next_cursor": cursor_out([rows[-1]["seq"]]) if len(rows) == limit
                          else None})


@router.put("/accounts/{account_id}/retention", response_model=models.Retention, tags=["accounts"],
            summary="Days a finished task's per-address data is kept before it is erased (admin)")
async def set_retention(account_id: str, body: models.Retention, request: Request,
                        who: Principal = Depends(principal)) -> Response:
    admin_only(who)
    svc = services(request)

    def run() -> dict[str, Any]:
        svc.engine.set_retention(account_id, body.data_retention_days)
        return {"data_retention_days": svc.engine.account(account_id).retention_days}

    return json_response(await svc.call(run, actor=who.actor))


@router.post("/accounts/{account_id}/keys", status_code=201, response_model=models.ApiKey, tags=["accounts"],
             responses=CONFLICT, dependencies=IDEMPOTENT, summary="Create an API key for the account (admin); the key is shown once")
async def create_key(account_id: str, body: models.KeyIn, request: Request,
                     who: Principal = Depends(principal)) -> Response:
    admin_only(who)
    svc = services(request)

    def issue() -> tuple[str, str]:
        if not svc.engine.account(account_id).opened:
            raise AccountNotFound(f"no such account: {account_id}")
        return svc.engine.issue_api_key(account_id, body.scopes, body.label)

    async def run(_key: str | None) -> Response:
        key_id, key = await svc.call(issue, actor=who.actor)
        return json_response({"key_id": key_id, "account": account_id, "scopes": sorted(set(body.scopes)),
                              "key": key}, 201)

    return await idempotent(svc, who, request, fingerprint(request, body.model_dump_json()), run)


@router.delete("/accounts/{account_id}/keys/{key_id}", status_code=204, tags=["accounts"],
               responses=CONFLICT, summary="Revoke an API key (admin): it stops working at once")
async def revoke_key(account_id: str, key_id: str, request: Request, who: Principal = Depends(principal)) -> Response:
    admin_only(who)
    svc = services(request)

    def revoke() -> None:
        keys = svc.engine.account(account_id).keys  # an unknown key is a 404, a revoked one a 409
        if key_id not in keys:
            raise Problem(404, "Not found", f"no key {key_id} on account {account_id}")
        if keys[key_id][2]:
            raise Problem(409, "Conflict", f"key {key_id} is already revoked")
        svc.engine.revoke_api_key(account_id, key_id)

    await svc.call(revoke, actor=who.actor)
    return Response(status_code=204)


# --- tasks ------------------------------------------------------------------------------

def _task(svc: Services, who: Principal, task_id: str) -> dict[str, Any]:
    svc.db.catch_up()
    svc.db.projector.require("tasks")
    row = svc.db.read.task(task_id)
    if row is None or not who.sees_account(row["account"]):
        raise TaskNotFound(f"no such task: {task_id}")
    return task_json(row)


@router.post("/tasks/single", response_model=models.SingleResult, tags=["tasks"],
             responses={202: {"model": models.SingleResult, "description": "still running: follow the Location",
                              "headers": {"Location": {"schema": {"type": "string"}, "required": True,
                                                       "description": "the task: GET it until it finished"}}},
                        **PAYMENT, **CONFLICT, **RESULTS_GONE}, dependencies=IDEMPOTENT,
             summary="Verify one address: the result, or 202 when it takes longer than the single-task bound")
async def single(body: models.SingleIn, request: Request, account: str | None = None,
                 who: Principal = Depends(principal)) -> Response:
    need(who, "write")
    svc = services(request)
    account_id = account_of(who, account)

    async def run(key: str | None) -> Response:
        task_id = await svc.call(svc.engine.create_single, account_id, body.address, None, key, body.name,
                                 actor=who.actor)
        svc.wake_engine()
        deadline = time.monotonic() + svc.settings.api_single_wait
        while time.monotonic() < deadline and (await svc.call(svc.engine.task, task_id)).active:
            await asyncio.sleep(0.02)
        outcome = await svc.call(_single_outcome, svc, who, task_id, body.address)
        done = outcome["status"] is not None
        return json_response(outcome, 200 if done else 202, None if done else {"Location": outcome["task"]["url"]})

    return await idempotent(svc, who, request, fingerprint(request, body.model_dump_json() + str(account)), run)


def _single_outcome(svc: Services, who: Principal, task_id: str, address: str) -> dict[str, Any]:
    task = _task(svc, who, task_id)
    # a retry (same Idempotency-Key) of a task erased since: its result is gone for good, not "still running"
    svc.engine.require_results_kept(task_id)
    row = next(iter(svc.db.read.results(task_id)), None) if task["status"] not in ("pending", "processing") else None
    return {"task": task, "address": address, "status": row["status"] if row else None,
            "reason": (row["reason"] or None) if row else None, "detail": (row["detail"] or None) if row else None}


@router.post("/tasks/bulk", status_code=201, response_model=models.Upload, tags=["tasks"],
             responses={**PAYMENT, **CONFLICT, 413: problem_response("the file is larger than VEC_API_MAX_UPLOAD_BYTES"),
                        415: problem_response("send the file as text/csv or multipart/form-data")},
             dependencies=IDEMPOTENT,
             openapi_extra={"requestBody": {"required": True, "content": {
                 "text/csv": {"schema": {"type": "string"}, "example": "email\nalice@example.com\nbob@example.org\n"},
                 "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                     "file": {"type": "string", "format": "binary"}}}}}}},
             summary="Upload a file of addresses (CSV or one per line) as a bulk task; streamed to the store")
async def bulk(request: Request, account: str | None = None, allow_duplicate: bool = False,
               name: Annotated[str, models.PRINTABLE] = TASK_NAME,
               who: Principal = Depends(principal)) -> Response:
    need(who, "write")
    svc = services(request)
    account_id = account_of(who, account)
    with svc.gates.admit("upload", account_id):  # decided before a byte of the body is read
        received = await receive_upload(request, svc.settings.api_max_upload_bytes)
        return await create_bulk(request, svc, who, account_id, received, allow_duplicate, name)


async def create_bulk(request: Request, svc: Services, who: Principal, account_id: str, received: Received,
                      allow_duplicate: bool, name: str) -> Response:
    """A bulk task from a received file: parsed, staged and created on the upload lane (never
    the thread that answers other requests); the file is deleted whatever happens."""
    try:
        async def run(key: str | None) -> Response:
            upload = await svc.uploads.call(
                lambda engine: engine.create_bulk(account_id, received.path, allow_duplicate, None, key, name),
                actor=who.actor)
            svc.wake_engine()
            return json_response(await svc.call(_upload_json, svc, who, upload), 201)

        return await idempotent(svc, who, request, fingerprint(request, received.sha256), run)
    finally:
        received.discard()


def _upload_json(svc: Services, who: Principal, upload: Upload) -> dict[str, Any]:
    report = upload.report
    return {"task": _task(svc, who, upload.task_id), "addresses": report.unique, "duplicates": report.duplicates,
            "rows_without_address": report.rows_without_address, "column": report.column}


@router.get("/tasks", response_model=models.TaskPage, tags=["tasks"], summary="Tasks, oldest first, a page at a time")
async def list_tasks(request: Request, status: Literal["pending", "processing", "completed", "cancelled",
                                                       "failed", "deleted"] | None = None,
                     cursor: str | None = None, limit: int = Query(PAGE, ge=1, le=MAX_PAGE), account: str | None = None,
                     by: str | None = BY, who: Principal = Depends(principal)) -> Response:
    need(who, "read")
    svc = services(request)
    account_id = account_of(who, account) if who.kind == "key" or account else None
    after = cursor_in(cursor, (str, str))

    def page() -> list[dict[str, Any]]:
        svc.db.catch_up()
        svc.db.projector.require("tasks")
        return svc.db.read.tasks_page(account_id, status, tuple(after) if after else None, limit, created_by=by)

    rows = [task_json(r) for r in await svc.call(page)]
    last = rows[-1] if len(rows) == limit else None
    return json_response({"items": rows, "next_cursor": cursor_out([last["created_at"], last["task_id"]])
                          if last else None})


@router.get("/tasks/{task_id}", response_model=models.Task, tags=["tasks"], summary="A task's status and progress")
async def get_task(task_id: str, request: Request, who: Principal = Depends(principal)) -> Response:
    need(who, "read")
    svc = services(request)
    return json_response(await svc.call(_task, svc, who, task_id))


@router.post("/tasks/{task_id}/cancel", response_model=models.Task, tags=["tasks"], responses=CONFLICT,
             dependencies=IDEMPOTENT,
             summary="Cancel a bulk task: every address without a result is refunded at once")
async def cancel(task_id: str, request: Request, who: Principal = Depends(principal)) -> Response:
    need(who, "write")
    svc = services(request)

    async def run(_key: str | None) -> Response:
        await svc.call(_task, svc, who, task_id)
        await svc.call(svc.engine.cancel_task, task_id, actor=who.actor)
        return json_response(await svc.call(_task, svc, who, task_id))

    return await idempotent(svc, who, request, fingerprint(request, b""), run)


@router.delete("/tasks/{task_id}", status_code=204, tags=["tasks"], responses=CONFLICT,
               summary="Delete a finished task: hidden with its results (the log keeps what audit needs)")
async def delete_task(task_id: str, request: Request, who: Principal = Depends(principal)) -> Response:
    need(who, "write")
    svc = services(request)
    await svc.call(_task, svc, who, task_id)
    await svc.call(svc.engine.delete_task, task_id, actor=who.actor)
    return Response(status_code=204)


@router.get("/tasks/{task_id}/results", tags=["tasks"],
            responses={200: {"content": {"text/csv": {"schema": {"type": "string"}},
                                         "text/plain": {"schema": {"type": "string"}},
                                         "application/json": {"schema": {"type": "array", "items": {"type": "object"}}}},
                             "description": "every result, streamed"}, **RESULTS_GONE},
            summary="A task's results as CSV (safe for spreadsheets), a JSON array or TXT (addresses), streamed")
async def results(task_id: str, request: Request, status: Literal["safe", "invalid", "risky", "unknown"] | None = None,
                  format: Literal["csv", "json", "txt"] = "csv",  # noqa: A002
                  who: Principal = Depends(principal)) -> Response:
    need(who, "read")
    svc = services(request)

    def first() -> dict[str, Any]:
        task = _task(svc, who, task_id)
        svc.engine.require_results_kept(task_id)
        svc.db.projector.require("results")
        return task

    release = svc.gates.enter("export", (await svc.call(first))["account"])

    async def pages() -> AsyncIterator[list[dict[str, Any]]]:
        after = None
        while True:
            rows, after = await svc.call(svc.db.read.results_page, task_id, status, after, 2000)
            if rows:
                yield rows
            if len(rows) < 2000:
                return

    if format == "json":
        async def body() -> AsyncIterator[bytes]:
            yield b"["
            first_row = True
            async for rows in pages():
                for row in rows:
                    yield (b"" if first_row else b",") + orjson.dumps(row)
                    first_row = False
            yield b"]"

        return GatedStream(release, body(), media_type="application/json")

    if format == "txt":
        async def txt_body() -> AsyncIterator[bytes]:
            async for rows in pages():
                for line in txt_lines(r["address"] for r in rows):
                    yield line.encode()

        return GatedStream(release, txt_body(), media_type="text/plain",
                           headers={"Content-Disposition": f'attachment; filename="{task_id}.txt"'})

    async def csv_body() -> AsyncIterator[bytes]:
        header = True
        async for rows in pages():
            for line in itertools.islice(csv_lines(rows, RESULT_COLUMNS), 0 if header else 1, None):
                yield line.encode()
            header = False
        if header:
            yield next(csv_lines([], RESULT_COLUMNS)).encode()

    return GatedStream(release, csv_body(), media_type="text/csv",
                       headers={"Content-Disposition": f'attachment; filename="{task_id}.csv"'})


@router.post("/tasks/{task_id}/erase", response_model=models.Task, tags=["tasks"], responses=CONFLICT,
             dependencies=IDEMPOTENT, summary="Erase a finished task's per-address data now (its counts and the Credits History stay)")
async def erase(task_id: str, request: Request, who: Principal = Depends(principal)) -> Response:
    need(who, "write")
    svc = services(request)

    async def run(_key: str | None) -> Response:
        await svc.call(_task, svc, who, task_id)
        await svc.call(svc.engine.erase_task, task_id, "request", actor=who.actor)
        return json_response(await svc.call(_task, svc, who, task_id))

    return await idempotent(svc, who, request, fingerprint(request, b""), run)


@router.get("/tasks/{task_id}/unprocessed", tags=["tasks"],
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "one address per line, streamed"}, **RESULTS_GONE},
            summary="The addresses of a partially failed task that got no answer (refunded)")
async def unprocessed(task_id: str, request: Request, who: Principal = Depends(principal)) -> Response:
    need(who, "read")
    svc = services(request)
    await svc.call(_task, svc, who, task_id)
    addresses = await svc.call(lambda: list(itertools.islice(svc.engine.unprocessed(task_id), MAX_UNPROCESSED)))

    async def body() -> AsyncIterator[bytes]:
        for line in txt_lines(addresses):
            yield line.encode()

    return StreamingResponse(body(), media_type="text/plain",
                             headers={"Content-Disposition": f'attachment; filename="{task_id}-unprocessed.txt"'})


@router.post("/tasks/{task_id}/retry-unknown", status_code=201, response_model=models.Upload, tags=["tasks"],
             responses={**PAYMENT, **CONFLICT, **RESULTS_GONE}, dependencies=IDEMPOTENT,
             summary="A new bulk task of this task's Unknown addresses, charged like any bulk (409 when it has none)")
async def retry_unknown(task_id: str, request: Request, who: Principal = Depends(principal)) -> Response:
    need(who, "write")
    svc = services(request)
    task = await svc.call(_task, svc, who, task_id)
    if task["status"] in ("pending", "processing"):
        raise Problem(409, "Conflict", "the task is still running; retry its Unknowns once it finished")

    def unknowns_file(engine: Engine) -> str:
        engine.require_results_kept(task_id)  # erased: a 410, not an empty file
        handle = tempfile.NamedTemporaryFile("w", prefix="vec-retry-", suffix=".csv", delete=False)
        count = 0
        with handle:
            handle.write("email\n")
            for count, row in enumerate(engine.db.read.results(task_id, "unknown"), 1):
                handle.write(row["address"] + "\n")
        if count == 0:
            os.unlink(handle.name)
            raise Problem(409, "Nothing to retry", f"task {task_id} ({task['status']}) has no Unknown addresses "
                                                   "to retry", kind="nothing-to-retry")
        return handle.name

    # a million Unknowns is an upload's work: on the upload lane, one per account at a time
    with svc.gates.admit("upload", task["account"]):
        path = await svc.uploads.call(unknowns_file, actor=who.actor)
        try:
            async def run(key: str | None) -> Response:
                upload = await svc.uploads.call(
                    lambda engine: engine.create_bulk(task["account"], path, True, None, key), actor=who.actor)
                svc.wake_engine()
                return json_response(await svc.call(_upload_json, svc, who, upload), 201)

            return await idempotent(svc, who, request, fingerprint(request, b""), run)
        finally:
            os.unlink(path)


class GatedStream(StreamingResponse):
    """A streamed answer that holds a tenant's place (`TenantGates`) until it is sent, or
    the client went away."""

    def __init__(self, release: Callable[[], None], content: AsyncIterator[bytes], **kwargs: Any):
        super().__init__(content, **kwargs)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


# --- the log, for audit tooling -----------------------------------------------------------

def _events_page(svc: Services, who: Principal, after: int, limit: int, stream: str | None) -> list[dict[str, Any]]:
    source = (r for r in svc.db.events.read_stream(stream) if r.position > after) if stream else \
        svc.db.events.read_all(after_position=after, batch=limit)
    return [_shown(r, who) for r in itertools.islice(source, limit)]


def _shown(recorded: RecordedEvent, who: Principal) -> dict[str, Any]:
    """An event as `who` reads it: an account's audit key never sees a credential's digest
    (an API key's secret_sha256); the admin sees the log as it is."""
    shown = recorded.to_json()
    if who.kind != "admin":
        for name in type(recorded.event).secret:
            shown["data"].pop(name, None)
    return shown


@router.get("/events", response_model=models.EventPage, tags=["audit"],
            summary="The log, in order (admin or audit scope)")
async def events(request: Request, after: int = Query(0, ge=0, le=MAX_POSITION), limit: int = Query(PAGE, ge=1, le=MAX_PAGE),
                 stream: str | None = None, who: Principal = Depends(principal)) -> Response:
    need(who, "audit")
    svc = services(request)
    await _may_read_stream(svc, who, stream)
    items = await svc.call(_events_page, svc, who, after, limit, stream)
    return json_response({"items": items, "next_after": items[-1]["position"] if items else after})


async def _may_read_stream(svc: Services, who: Principal, stream: str | None) -> None:
    """The admin reads the whole log; an account's audit key reads its account's stream and
    its tasks' streams, one at a time."""
    if who.kind == "admin":
        return
    if not stream:
        raise Problem(403, "Forbidden", "the whole log is for the admin; an audit key reads one of its streams: "
                                        "?stream=account-ID or ?stream=task-ID")
    if stream == f"account-{who.account_id}":
        return
    if stream.startswith("task-"):
        await svc.call(_task, svc, who, stream.removeprefix("task-"))  # 404 unless it is one of its tasks
        return
    raise Problem(404, "Not found", f"no such stream: {stream}")


SSE_BATCH = 50  # events per write of a follow stream; the client's leaving is checked between writes


def _sse(item: dict[str, Any]) -> bytes:
    return f"id: {item['position']}\nevent: {item['type']}\ndata: {orjson.dumps(item).decode()}\n\n".encode()


@router.get("/events/follow", tags=["audit"],
            responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                             "description": "Server-Sent Events: one per appended event"}},
            summary="Follow the log as Server-Sent Events (admin or audit scope)")
async def follow(request: Request, after: int = Query(0, ge=0, le=MAX_POSITION), stream: str | None = None,
                 who: Principal = Depends(principal)) -> Response:
    need(who, "audit")
    svc = services(request)
    await _may_read_stream(svc, who, stream)

    async def body() -> AsyncIterator[bytes]:
        position, quiet = after, time.monotonic()
        while not await request.is_disconnected():
            items = await svc.call(_events_page, svc, who, position, 500, stream)
            for start in range(0, len(items), SSE_BATCH):
                # between writes, not only between pages: a catch-up page is written in one go
                # otherwise, and every write after the client left logs "socket.send() raised exception"
                if await request.is_disconnected():
                    break
                batch = items[start:start + SSE_BATCH]
                position = batch[-1]["position"]
                yield b"".join(_sse(item) for item in batch)
            if items:
                quiet = time.monotonic()
                continue
            if time.monotonic() - quiet > 15:
                yield b": still here\n\n"
                quiet = time.monotonic()
            await asyncio.sleep(svc.settings.poll_interval)

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

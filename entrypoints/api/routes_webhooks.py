"""Webhooks under /v1: an account's endpoints, and the deliveries to them with every attempt.

An account's key acts on its own account (reading needs `read`, registering and removing
`write`); the admin names the account with ?account=. Another account's endpoint is a 404.
The signing secret (Standard Webhooks, `whsec_...`) is in the answer to the registration
only. The deliveries themselves are made by the engine (consumers/webhooks/delivery.py).
"""
from __future__ import annotations

import re
import weakref
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from engine.domain.errors import AccountNotFound
from engine.domain.limits import MAX_ID_LENGTH
from engine.domain.text import printable
from entrypoints.api import models
from entrypoints.api.deps import Principal, Services, fingerprint, idempotent, json_response
from entrypoints.api.problems import Problem
from entrypoints.api.routes import (CONFLICT, ERRORS, IDEMPOTENT, MAX_PAGE, PAGE, account_of, cursor_in, cursor_out,
                                    need, principal, services)
from consumers.webhooks.delivery import DeliveryStatus, WebhookStore

# The error responses and the Idempotency-Key header every route of routes.py documents
router = APIRouter(prefix="/v1", tags=["webhooks"], responses=ERRORS)


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2000, description="http:// or https://; never a loopback, private, "
                     "link-local or metadata address")
    description: models.Printable = Field("", max_length=200)


class Endpoint(BaseModel):
    endpoint_id: str
    account: str
    url: str
    description: str
    created_at: str
    created_by: str | None
    disabled_at: str | None


class NewEndpoint(Endpoint):
    secret: str = Field(description="the Standard Webhooks signing secret (whsec_...): shown once")


class EndpointList(BaseModel):
    items: list[Endpoint]


class Attempt(BaseModel):
    attempt: int
    started_at: str
    outcome: str = Field(description="sending | delivered | failed | refused (egress guard) | interrupted")
    status_code: int | None
    error: str | None
    duration_ms: int | None


class Delivery(BaseModel):
    delivery_id: str = Field(description="the webhook-id header: the same on every attempt")
    endpoint_id: str
    account: str
    task_id: str
    event_id: str
    position: int
    event_type: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: str | None
    last_status_code: int | None
    last_error: str | None
    created_at: str
    delivered_at: str | None
    attempt_log: list[Attempt]


class DeliveryPage(BaseModel):
    items: list[Delivery]
    next_cursor: str | None


class DeliveryDetail(Delivery):
    payload: dict[str, Any] = Field(description="the body that was signed and sent")


ENDPOINT_ID = re.compile(r"ep_[0-9a-f]{32}")
DELIVERY_ID = re.compile(r"msg_[0-9a-f]{32}")
MAX_POSITION = 2**63 - 1


def _account(who: Principal, account: str | None) -> str:
    """account_of, and an id no store could hold (control characters, too long) is no account."""
    account_id = account_of(who, account)
    if len(account_id) > MAX_ID_LENGTH or not printable(account_id):
        raise Problem(404, "Not found", "no such account")
    return account_id


def _endpoint_id(endpoint_id: str) -> str:
    if not ENDPOINT_ID.fullmatch(endpoint_id):
        raise Problem(404, "Not found", "no such webhook endpoint")
    return endpoint_id


_stores: weakref.WeakKeyDictionary[Services, WebhookStore] = weakref.WeakKeyDictionary()  # one per API process


def _store(svc: Services) -> WebhookStore:
    """The API process's webhook store (its schema ensured once); on the engine lane only."""
    store = _stores.get(svc)
    if store is None:
        store = _stores[svc] = WebhookStore(svc.db.projector.sql, svc.engine.clock,
                                            keyring=svc.db.keyring).ensure_schema()
    return store


def _endpoint_json(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["account"] = out.pop("account_id")
    return out


def _delivery_json(row: dict[str, Any]) -> dict[str, Any]:
    out = _endpoint_json(row)
    out["attempt_log"] = out.get("attempt_log", [])
    return out


def _own_endpoint(svc: Services, who: Principal, endpoint_id: str) -> dict[str, Any]:
    row = _store(svc).endpoint(_endpoint_id(endpoint_id))
    if row is None or not who.sees_account(row["account_id"]):
        raise Problem(404, "Not found", f"no such webhook endpoint: {endpoint_id}")
    return row


@router.post("/webhooks", status_code=201, response_model=NewEndpoint, responses=CONFLICT, dependencies=IDEMPOTENT,
             summary="Register an endpoint: the account's task ends are POSTed to it, signed (Standard Webhooks); "
                     "the secret is shown once")
async def add_webhook(body: WebhookIn, request: Request, account: str | None = None,
                      who: Principal = Depends(principal)) -> Response:
    need(who, "write")
    svc = services(request)
    account_id = _account(who, account)

    def register() -> dict[str, Any]:
        store = _store(svc)
        if not svc.engine.account(account_id).opened:
            raise AccountNotFound(f"no such account: {account_id}")
        return store.add_endpoint(account_id, body.url, body.description, svc.db.events.head(), who.actor,
                                  svc.settings.webhook_allow_loopback)

    async def run(_key: str | None) -> Response:
        return json_response(_endpoint_json(await svc.call(register)), 201)

    return await idempotent(svc, who, request, fingerprint(request, body.model_dump_json()), run)


@router.get("/webhooks", response_model=EndpointList, summary="The account's endpoints (never their secrets)")
async def list_webhooks(request: Request, account: str | None = None, include_removed: bool = False,
                        who: Principal = Depends(principal)) -> Response:
    need(who, "read")
    svc = services(request)
    account_id = _account(who, account)
    rows = await svc.call(lambda: _store(svc).endpoints(account_id, include_removed))
    return json_response({"items": [_endpoint_json(r) for r in rows]})


@router.get("/webhooks/{endpoint_id}", response_model=Endpoint, summary="One endpoint")
async def get_webhook(endpoint_id: str, request: Request, who: Principal = Depends(principal)) -> Response:
    need(who, "read")
    svc = services(request)
    return json_response(_endpoint_json(await svc.call(_own_endpoint, svc, who, endpoint_id)))


@router.delete("/webhooks/{endpoint_id}", status_code=204,
               summary="Remove an endpoint: nothing more is sent to it (its pending deliveries fail)")
async def remove_webhook(endpoint_id: str, request: Request, who: Principal = Depends(principal)) -> Response:
    need(who, "write")
    svc = services(request)

    def remove() -> None:
        _own_endpoint(svc, who, endpoint_id)
        _store(svc).remove_endpoint(endpoint_id)

    await svc.call(remove)
    return Response(status_code=204)


@router.get("/webhooks/{endpoint_id}/deliveries", response_model=DeliveryPage,
            summary="Deliveries to an endpoint, newest first, each with its attempts")
async def list_deliveries(endpoint_id: str, request: Request, status: DeliveryStatus | None = None,
                          cursor: str | None = None, limit: int = Query(PAGE, ge=1, le=MAX_PAGE),
                          who: Principal = Depends(principal)) -> Response:
    need(who, "read")
    svc = services(request)
    before = cursor_in(cursor, 2)
    if before is not None and not (isinstance(before[0], int) and 0 <= before[0] <= MAX_POSITION
                                   and isinstance(before[1], str) and DELIVERY_ID.fullmatch(before[1])):
        raise Problem(422, "Invalid request", "this cursor is not one this API gave out")

    def page() -> list[dict[str, Any]]:
        _own_endpoint(svc, who, endpoint_id)
        return _store(svc).deliveries(endpoint_id=endpoint_id, status=status,
                                      before=tuple(before) if before else None, limit=limit, with_attempts=True)

    rows = [_delivery_json(r) for r in await svc.call(page)]
    last = rows[-1] if len(rows) == limit else None
    return json_response({"items": rows, "next_cursor": cursor_out([last["position"], last["delivery_id"]])
                          if last else None})


@router.get("/webhooks/{endpoint_id}/deliveries/{delivery_id}", response_model=DeliveryDetail,
            summary="One delivery: the body sent, and every attempt")
async def get_delivery(endpoint_id: str, delivery_id: str, request: Request,
                       who: Principal = Depends(principal)) -> Response:
    need(who, "read")
    svc = services(request)

    def one() -> dict[str, Any]:
        _own_endpoint(svc, who, endpoint_id)
        row = _store(svc).delivery(delivery_id) if DELIVERY_ID.fullmatch(delivery_id) else None
        if row is None or row["endpoint_id"] != endpoint_id:
            raise Problem(404, "Not found", f"no such delivery: {delivery_id}")
        return row

    return json_response(_delivery_json(await svc.call(one)))

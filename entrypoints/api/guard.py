"""The API's guard against hostile load: every request is bounded before any work is done.

- **Bodies**: a cap per route class, checked before routing, authentication, parsing or
  spooling. A declared Content-Length over the cap is refused at once (413, the body never
  read); a body without one is counted as it arrives and refused the moment it crosses the
  cap. JSON bodies get a small cap (`VEC_API_MAX_BODY_BYTES`); the three upload routes get
  the bulk file limit (`VEC_API_MAX_UPLOAD_BYTES`) plus room for a multipart envelope.
- **Slow clients**: a request's headers must arrive within `VEC_API_HEADER_TIMEOUT_S` of the
  connection (or of the previous answer on a kept-alive one), and a body may not pause for
  longer than `VEC_API_BODY_IDLE_TIMEOUT_S` (408): a slowloris holds nothing for long.
- **Connections**: at most `VEC_API_MAX_CONNECTIONS` at once (uvicorn answers 503 beyond).

So an unauthenticated client can make the server hold at most one small body per
connection, and never a byte on disk.
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

import orjson
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.exceptions import HTTPException
from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle

from entrypoints.api.problems import MEDIA_TYPE, TYPE_BASE, Problem

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

# The routes whose body is a customer's file (raw CSV, a multipart form, the product's JSON list).
UPLOAD_ROUTES = frozenset({("POST", "/v1/tasks/bulk"), ("POST", "/api/verify-bulk"),
                           ("POST", "/dashboard/account/upload")})
MULTIPART_ENVELOPE_BYTES = 64 * 1024  # part headers, boundaries and the form's small fields


class GuardSettings(BaseSettings):
    """The limits every API process enforces (environment, prefix VEC_)."""

    model_config = SettingsConfigDict(env_prefix="VEC_", env_file=".env", extra="ignore")

    api_max_body_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024,
                                    description="largest JSON or form body of every route but the uploads")
    api_header_timeout_s: float = Field(10.0, gt=0, le=300, description="seconds a client has to send a "
                                        "request's headers")
    api_body_idle_timeout_s: float = Field(30.0, gt=0, le=600, description="seconds a request body may pause "
                                           "before the request is refused (408)")
    api_max_connections: int = Field(1000, ge=1, le=100_000, description="connections served at once; beyond "
                                     "that uvicorn answers 503")
    api_upload_workers: int = Field(2, ge=1, le=16, description="uploads parsed and staged at once, on threads "
                                    "of their own (never the thread that answers reads)")
    api_tenant_uploads: int = Field(1, ge=1, le=64, description="uploads one account may have in progress at "
                                    "once (more: 429)")
    api_tenant_exports: int = Field(2, ge=1, le=64, description="result exports one account may stream at once "
                                    "(more: 429)")
    api_trusted_proxies: str = Field("127.0.0.1,::1", description="addresses whose X-Forwarded-For/-Proto are "
                                     "believed (comma-separated, '*' for any: only behind a proxy you run)")
    public_url: str = Field("", description="the URL people reach the API at; https:// makes the dashboard's "
                            "cookie Secure whatever the proxy says")


def body_limit(method: str, path: str, settings: GuardSettings, upload_bytes: int) -> int:
    """The most bytes a request to this route may send."""
    if (method, path.rstrip("/") or "/") in UPLOAD_ROUTES:
        return upload_bytes + MULTIPART_ENVELOPE_BYTES
    return settings.api_max_body_bytes


class BodyGuard:
    """ASGI middleware: refuses a body over its route's cap, and a body that stalls."""

    def __init__(self, app: App, settings: GuardSettings, upload_bytes: int):
        self.app, self.settings, self.upload_bytes = app, settings, upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit(scope["method"], scope["path"], self.settings, self.upload_bytes)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send, scope, _too_large(limit))  # before a byte of the body is read
            return
        await self.app(scope, _counted(receive, limit, self.settings.api_body_idle_timeout_s), send)


class BodyRefused(Problem, HTTPException):
    """Raised from `receive` when a body crosses its cap or stalls: the app's problem
    handlers answer it (413 or 408) like any refusal. An HTTPException too, so FastAPI's
    body reader lets it through instead of calling it a parse error (400)."""

    def __init__(self, status: int, title: str, detail: str, headers: dict[str, str]):
        Problem.__init__(self, status, title, detail, headers=headers)
        self.status_code = status

    headers: dict[str, str]  # as Problem's (HTTPException's may be None; these never are)


def _too_large(limit: int) -> BodyRefused:
    return BodyRefused(413, "Payload too large", f"this route takes a body of at most {limit:,} bytes",
                       headers={"Connection": "close"})


def _counted(receive: Receive, limit: int, idle_timeout_s: float) -> Receive:
    received = 0

    async def guarded() -> Message:
        nonlocal received
        try:
            message = await asyncio.wait_for(receive(), idle_timeout_s)
        except asyncio.TimeoutError:
            raise BodyRefused(408, "Request timeout", f"the body paused for more than {idle_timeout_s:g}s",
                              headers={"Connection": "close"}) from None
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _too_large(limit)
        return message

    return guarded


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


async def _refuse(send: Send, scope: Scope, problem: Problem) -> None:
    body = orjson.dumps({"type": TYPE_BASE + problem.kind, "title": problem.title, "status": problem.status,
                         "detail": problem.detail, "instance": scope["path"]})
    headers = [(b"content-type", MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode()),
               *((k.lower().encode(), v.encode()) for k, v in problem.headers.items())]
    await send({"type": "http.response.start", "status": problem.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def guarded_h11(header_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline on request headers: a connection that has not
    sent a whole request head within `header_timeout_s` (of connecting, or of its previous
    answer) is closed. uvicorn itself only times out idle kept-alive connections."""

    class HeaderDeadlineH11(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        # uvicorn's H11Protocol takes an asyncio.Transport where BaseProtocol says BaseTransport
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            waiting_on = self.cycle  # a new cycle starts when a whole request head arrived
            self._deadline = self.loop.call_later(header_timeout_s, self._expire, waiting_on)

        def _expire(self, waiting_on: RequestResponseCycle | None) -> None:
            if self.cycle is waiting_on and not self.transport.is_closing():
                if waiting_on is None or waiting_on.response_complete:
                    self.transport.close()

    return HeaderDeadlineH11


MIN_ADMIN_TOKEN_CHARS = 24
MIN_ADMIN_TOKEN_DISTINCT = 10


def weak_admin_token(token: str) -> str | None:
    """Why this admin token is too weak to serve with, or None. Empty is allowed: no admin
    over HTTP at all."""
    if not token:
        return None
    if len(token) < MIN_ADMIN_TOKEN_CHARS or len(set(token)) < MIN_ADMIN_TOKEN_DISTINCT:
        return (f"VEC_ADMIN_TOKEN is too weak: use at least {MIN_ADMIN_TOKEN_CHARS} characters with at least "
                f"{MIN_ADMIN_TOKEN_DISTINCT} different ones (e.g. python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))')")
    return None

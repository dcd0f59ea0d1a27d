"""What every request needs: the engine (on a thread of its own), who is asking, fair use,
and idempotency keys."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar
from datetime import datetime, timedelta, timezone

import orjson
from fastapi import Request
from fastapi.responses import Response

from engine import tracing  # engine/tracing.py
from entrypoints.settings import EngineSettings
from engine.domain.text import printable
from engine.service import Engine, acting_as, parse_api_key
from entrypoints.api.guard import GuardSettings
from entrypoints.api.lanes import TenantGates, UploadLane
from entrypoints.api.problems import Problem
from entrypoints.api.ratelimit import Limits
from entrypoints.api.sessions import SessionSettings, SessionStore, admin_mark
from projections.base import Table

API_REQUESTS = Table("api_requests", ("principal", "key", "fingerprint", "status", "body", "created_at"),
                     ("principal", "key"), frozenset({"status"}))


@dataclass(frozen=True)
class Principal:
    """Who is asking: the admin, or one API key of one account."""

    kind: str  # admin | key
    account_id: str | None = None
    key_id: str | None = None
    scopes: frozenset[str] = frozenset()

    @property
    def actor(self) -> str:
        return "admin" if self.kind == "admin" else f"apikey:{self.key_id}"

    @property
    def id(self) -> str:
        return self.actor

    def may(self, scope: str) -> bool:
        return self.kind == "admin" or scope in self.scopes

    def sees_account(self, account_id: str) -> bool:
        return self.kind == "admin" or self.account_id == account_id


ADMIN = Principal("admin", scopes=frozenset({"read", "write", "audit", "admin"}))
T = TypeVar("T")


class Services:
    """The API process's engine, on lanes of threads that never wait on each other:

    - the **engine lane**, one thread: every short engine or store call (authentication,
      reads, commands), in order; the loop never waits on the database, and the engine's
      caches and the store connection are only ever used there;
    - the **upload lane**, `VEC_API_UPLOAD_WORKERS` threads, each with its own store
      connection and engine: parsing, sealing and staging a customer's file, and the task's
      creation. A tenant's 100 MB upload never queues another tenant's read.

    Expensive operations are also limited per account (`admit`): one tenant cannot take
    every upload thread."""

    def __init__(self, engine: Engine, settings: EngineSettings, guard: GuardSettings | None = None,
                 rate_limit: str | None = None, session_settings: SessionSettings | None = None):
        self.engine, self.settings, self.db = engine, settings, engine.db
        self.guard = guard or GuardSettings()
        self.admin_token = settings.admin_token
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="vec-api-engine")
        self.uploads = UploadLane(settings, self.guard.api_upload_workers)
        self.gates = TenantGates({"upload": self.guard.api_tenant_uploads, "export": self.guard.api_tenant_exports})
        self.session_settings = session_settings or SessionSettings()
        shared = self.db.projector.sql if settings.store.startswith("postgres") else None
        self.limits = Limits.build(shared, per_key=rate_limit or settings.api_rate_limit,
                                   signin=self.session_settings.dashboard_signin_limit)
        self.sessions = SessionStore(self.db.projector.sql, self.session_settings)
        # the embedded runtime's nudge, when one runs in this process
        self.wake_engine: Callable[[], None] = lambda: None

    async def call(self, fn: Callable[..., T], *args: Any, actor: str | None = None, **kwargs: Any) -> T:
        def run() -> T:
            if actor is None:
                return fn(*args, **kwargs)
            with acting_as(actor):
                return fn(*args, **kwargs)

        return await asyncio.get_running_loop().run_in_executor(self.executor, tracing.carry(run))

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.uploads.close()

    # --- who is asking ----------------------------------------------------------------

    async def authenticate(self, request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Problem(401, "Unauthorized", "send Authorization: Bearer <API key>",
                          headers={"WWW-Authenticate": "Bearer"})
        principal = await self.principal_of(token.strip())
        if principal is None:
            raise Problem(401, "Unauthorized", "this API key is not valid (unknown, mistyped or revoked)",
                          headers={"WWW-Authenticate": "Bearer"})
        return principal

    async def principal_of(self, token: str) -> Principal | None:
        """Who holds this token (the admin token or a live API key), else None."""
        if self.admin_token and hmac.compare_digest(token.encode(), self.admin_token.encode()):
            return ADMIN
        key_id, _ = parse_api_key(token)
        return await self.call(self._check_key, key_id, token) if key_id else None

    def _check_key(self, key_id: str, token: str) -> Principal | None:
        account_id = self._account_of_key(key_id)
        checked = self.engine.check_api_key(account_id, token) if account_id else None
        if checked is None:
            return None
        return Principal("key", account_id, checked[0], frozenset(checked[1]))

    def _account_of_key(self, key_id: str) -> str | None:
        account_id = self.db.read.api_key_account(key_id)
        if account_id is None:  # a key created a moment ago: the read model may be behind
            self.db.catch_up()
            account_id = self.db.read.api_key_account(key_id)
        return account_id

    def live_key(self, account_id: str, key_id: str) -> Principal | None:
        """The principal of a key that is still live (a dashboard session's key), else None."""
        stored = self.engine.account(account_id).keys.get(key_id)
        if stored is None or stored[2]:
            return None
        return Principal("key", account_id, key_id, frozenset(stored[1]))

    # --- dashboard sessions (entrypoints/api/sessions.py) ------------------------------

    def open_session(self, who: Principal) -> str:
        mark = admin_mark(self.admin_token) if who.kind == "admin" else None
        return self.sessions.open(who.kind, who.account_id, who.key_id, mark)

    def session_principal(self, sid: str) -> Principal | None:
        """Who a live session signed in as, if that is still so: the admin token it was opened
        with is still the admin token, or its key is still live."""
        session = self.sessions.find(sid)
        if session is None:
            return None
        if session.kind == "admin":
            still = bool(self.admin_token) and hmac.compare_digest(session.admin_mark or "",
                                                                   admin_mark(self.admin_token))
            return ADMIN if still else None
        if session.account_id is None or session.key_id is None:
            return None
        return self.live_key(session.account_id, session.key_id)

    # --- fair use -------------------------------------------------------------------------

    async def throttle(self, principal: Principal) -> None:
        """Per-key fair use: past the limit, 429 with Retry-After (other keys are not slowed)."""
        await self.limit("per_key", principal.id, "the limit of this key")

    async def limit(self, name: str, who: str, what: str) -> None:
        crossed = await self.call(self.limits.hit, name, who)
        if crossed is not None:
            item, wait = crossed
            raise Problem(429, "Too many requests", f"{what} is {item}; try again in {wait}s",
                          headers={"Retry-After": str(wait)}, retry_after_seconds=wait)

    # --- idempotency keys -------------------------------------------------------------

    def recall(self, principal: Principal, key: str) -> tuple[str, int, bytes | None] | None:
        """(fingerprint, status, body) of the first answer to this key within the window; body
        None when the answer was about a task erased since (the request then runs again and
        the engine's own idempotency gives the same task, as it is now)."""
        row = self.db.projector.sql.execute(
            "SELECT fingerprint, status, body FROM api_requests WHERE principal = ? AND key = ? AND created_at > ?",
            (principal.id, key, _window_start())).fetchone()
        return (row[0], row[1], self._open_answer(row[2])) if row else None

    def remember(self, principal: Principal, key: str, fingerprint: str, status: int, body: bytes) -> None:
        sealed = self._seal_answer(body)
        if sealed is None:
            return  # its task is already erased: nothing personal may be kept
        sql = self.db.projector.sql
        sql.execute("DELETE FROM api_requests WHERE created_at <= ?", (_window_start(),))
        sql.execute(  # first one wins: two racing requests with one key answer alike
            "INSERT INTO api_requests (principal, key, fingerprint, status, body, created_at) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (principal, key) DO NOTHING",
            (principal.id, key, fingerprint, status, sealed, datetime.now(timezone.utc).isoformat()))

    # Kept answers hold addresses (a single task's result) and secrets (a new API key, a
    # webhook's signing secret): never in plain text. An answer about a task is sealed with
    # that task's key, so erasing the task erases it; the others with a key of their own.
    def _seal_answer(self, body: bytes) -> str | None:
        scope = _answer_scope(body)
        sealer = self.db.keyring.sealer(scope, create=scope == REPLAY_SCOPE)
        return None if sealer is None else f"@{scope}:{sealer.seal(body.decode())}"

    def _open_answer(self, stored: str) -> bytes | None:
        if not stored.startswith("@"):
            return stored.encode()  # kept before answers were sealed
        scope, _, sealed = stored[1:].partition(":")
        sealer = self.db.keyring.sealer(scope)
        return None if sealer is None else sealer.open(sealed).encode()


IDEMPOTENCY_WINDOW = timedelta(hours=24)  # a retry within a day gets the first answer (as Stripe's keys)
REPLAY_SCOPE = "~idempotency"  # the key that seals kept answers about no task


def _window_start() -> str:
    return (datetime.now(timezone.utc) - IDEMPOTENCY_WINDOW).isoformat()


def _answer_scope(body: bytes) -> str:
    """The task an answer is about ({"task_id": ...} or {"task": {"task_id": ...}}), else REPLAY_SCOPE."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return REPLAY_SCOPE
    if not isinstance(data, dict):
        return REPLAY_SCOPE
    task = data.get("task")
    task_id = task.get("task_id") if isinstance(task, dict) else data.get("task_id")
    return task_id if isinstance(task_id, str) and task_id.isalnum() else REPLAY_SCOPE


def fingerprint(request: Request, body: bytes | str) -> str:
    digest = hashlib.sha256(f"{request.method} {request.url.path}?{request.url.query}\n".encode())
    digest.update(body if isinstance(body, bytes) else body.encode())
    return digest.hexdigest()


async def idempotent(services: Services, principal: Principal, request: Request, fingerprint_: str,
                     run: Callable[[str | None], Awaitable[Response]]) -> Response:
    """With an Idempotency-Key header: a retry returns the original answer, the same key with
    another request is a 409; without one, `run` simply runs (given the engine's idempotency
    key: `principal:key`, or None)."""
    key = request.headers.get("idempotency-key")
    if not key:
        return await run(None)
    if len(key) > 200 or not printable(key):
        raise Problem(422, "Invalid request", "an Idempotency-Key is 1-200 printable characters")
    earlier = await services.call(services.recall, principal, key)
    if earlier is not None:
        if earlier[0] != fingerprint_:
            raise Problem(409, "Idempotency conflict", f"the Idempotency-Key {key!r} was used for another request")
        if earlier[2] is not None:
            return Response(earlier[2], status_code=earlier[1], media_type="application/json",
                            headers={"Idempotent-Replayed": "true"})
    response = await run(f"{principal.id}:{key}")
    # A 202 (still running) is not kept: its retry asks again, the engine replays the same task
    # for the key, and the answer is the task as it is now (a replayed 202 would also lack its Location).
    if response.status_code < 500 and response.status_code != 202:
        await services.call(services.remember, principal, key, fingerprint_, response.status_code, response.body)
    return response


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers=headers)


def task_json(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "url": f"/v1/tasks/{row['task_id']}"}



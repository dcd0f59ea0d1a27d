"""Errors as RFC 9457 problem details (`application/problem+json`), one clear message each.

Bad input is a 4xx and changes nothing; a 5xx only ever means the engine or its database
is unwell (503 when the database cannot be reached)."""
from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount
from starlette.types import Scope

from engine.domain import errors
from engine.domain.errors import InvariantViolation
from entrypoints.api.models import Problem as ProblemModel
from engine.store.base import ConcurrencyError, IdempotencyConflict, SchemaMissing, StoreError, StoreUnavailable
from projections.runner import ProjectionStopped

log = logging.getLogger("vec.api")

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://vec.dev/problems/"


class Problem(Exception):
    def __init__(self, status: int, title: str, detail: str, kind: str | None = None,
                 headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail
        self.kind = kind or title.lower().replace(" ", "-")
        self.headers, self.extra = headers or {}, extra


# engine refusals -> (status, title)
_DOMAIN = [
    (errors.AccountNotFound, 404, "Not found"),
    (errors.TaskNotFound, 404, "Not found"),
    (errors.InsufficientCredits, 402, "Insufficient credits"),
    (errors.ResultsDeleted, 410, "Results deleted"),
    (errors.DuplicateUpload, 409, "Duplicate upload"),
    (errors.BadUpload, 422, "Bad upload"),
    (errors.AccountAlreadyOpen, 409, "Conflict"),
    (errors.TaskNotCancellable, 409, "Conflict"),
    (errors.TaskAlreadyCancelled, 409, "Conflict"),
    (errors.TaskAlreadyFinished, 409, "Conflict"),
    (errors.TaskNotFinished, 409, "Conflict"),
    (errors.InvalidCommand, 422, "Invalid request"),
    (errors.DomainError, 422, "Invalid request"),
]


def problem_response(request: Request, problem: Problem) -> JSONResponse:
    body = {"type": TYPE_BASE + problem.kind, "title": problem.title, "status": problem.status,
            "detail": problem.detail, "instance": request.url.path, **problem.extra}
    return JSONResponse(body, status_code=problem.status, media_type=MEDIA_TYPE, headers=problem.headers)


def from_exception(error: Exception) -> Problem:
    if isinstance(error, Problem):
        return error
    if isinstance(error, IdempotencyConflict):
        return Problem(409, "Idempotency conflict", str(error))
    if isinstance(error, ProjectionStopped):
        return Problem(503, "Read model stopped", str(error))
    if isinstance(error, (StoreUnavailable, SchemaMissing)):
        return Problem(503, "Store unavailable", str(error))
    if isinstance(error, ConcurrencyError):
        return Problem(503, "Busy", f"{error}; try again")
    if isinstance(error, StoreError):
        return Problem(503, "Store error", str(error))
    if isinstance(error, InvariantViolation):
        return Problem(500, "Invariant broken", f"the log breaks an invariant: {error} (run `vec audit`)")
    for kind, status, title in _DOMAIN:
        if isinstance(error, kind):
            return Problem(status, title, str(error))
    return Problem(500, "Internal error", "the engine failed on this request; it was logged")


def response(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """An error response of the OpenAPI document: problem details (the `Problem` schema)."""
    documented: dict[str, Any] = {"description": description,
                  "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    if headers:
        documented["headers"] = headers
    return documented


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(app: FastAPI, scope: Scope) -> str | None:
    """The methods some route of the app takes on this path (Starlette's 405 names only the
    first matching route's, and a path may have several: GET and DELETE /v1/tasks/{id});
    None under a mount (static files say their own)."""
    routes = [route for route in app.router.routes if not isinstance(route, Mount)]
    allowed = [method for method in METHODS
               if any(route.matches({**scope, "method": method})[0] == Match.FULL for route in routes)]
    return ", ".join(allowed) or None


def add_schema(document: dict[str, Any]) -> None:
    """The `Problem` schema every error response of the OpenAPI document refers to."""
    document.setdefault("components", {}).setdefault("schemas", {})["Problem"] = ProblemModel.model_json_schema()


def install(app: FastAPI) -> None:
    """The handlers that answer every error as problem details."""
    @app.exception_handler(Problem)
    async def _problem(request: Request, error: Problem) -> JSONResponse:
        return problem_response(request, error)

    @app.exception_handler(errors.DomainError)
    @app.exception_handler(StoreError)
    @app.exception_handler(ProjectionStopped)
    @app.exception_handler(InvariantViolation)
    async def _engine(request: Request, error: Exception) -> JSONResponse:
        return problem_response(request, from_exception(error))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        messages = "; ".join(f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in error.errors())
        return problem_response(request, Problem(422, "Invalid request", messages or "the request is not valid"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        titles = {400: "Bad request", 404: "Not found", 405: "Method not allowed", 401: "Unauthorized", 413: "Payload too large"}
        headers = dict(error.headers or {})
        allowed = allowed_methods(request.app, request.scope) if error.status_code == 405 else None
        if allowed:  # RFC 9110: every method of the path, not only the first route's
            headers["Allow"] = allowed
        return problem_response(request, Problem(error.status_code, titles.get(error.status_code, "Error"),
                                                 str(error.detail), headers=headers))

    @app.exception_handler(Exception)
    async def _bug(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return problem_response(request, from_exception(error))

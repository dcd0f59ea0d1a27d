"""The FastAPI application, and `serve`: uvicorn with, on the embedded store, the engine's
runtime in the same process (one process does everything); on a PostgreSQL store with Kafka
the API alone (the fleet does the work), as many of them as you like."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, AsyncIterator

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from consumers.metrics import exporter as metrics  # GET /metrics
from engine import sealing_pool, tracing
from entrypoints.settings import EngineSettings
from entrypoints import bootstrap
from entrypoints.api import docs, links, problems
from entrypoints.api.deps import API_REQUESTS, Services
from entrypoints.api.guard import BodyGuard, GuardSettings, guarded_h11
from entrypoints.api.routes import router
from entrypoints.api import routes_webhooks  # endpoints, deliveries and attempts
from entrypoints.api import dashboard  # the ops dashboard (pages under /dashboard/, not in the OpenAPI document)
from entrypoints.api import routes_compat  # the product's public API under /api

if TYPE_CHECKING:
    from consumers.runtime import Runtime

log = logging.getLogger("vec.api")

VERSION = "1.0.0"


class _Api(FastAPI):
    """FastAPI, with its OpenAPI document completed as it is first generated: the `Problem`
    schema every error response refers to, and the links between operations."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is not None:
            return self.openapi_schema
        document = super().openapi()  # kept as self.openapi_schema: completed in place, once
        problems.add_schema(document)
        links.add_links(document)  # entrypoints/api/links.py
        return document


def create_app(settings: EngineSettings, guard: GuardSettings | None = None,
               runtime: Runtime | None = None) -> FastAPI:
    """The API; `runtime`: the embedded engine running beside it in this process, nudged
    when a request appends (else the engine finds the work on its next poll)."""
    guard = guard or GuardSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = bootstrap.open_engine(settings, "api")
        db = engine.db
        with db.projector.sql.transaction():
            db.projector.sql.lock("vec.api.schema")
            db.projector.sql.create_table(API_REQUESTS)
        services = Services(engine, settings, guard)
        if runtime is not None:
            services.wake_engine = runtime.nudge
        app.state.services = services
        try:
            yield
        finally:
            services.close()
            db.close()
            # the sealing worker stops with the API, waited for: uvicorn re-raises a SIGTERM once
            # shut down, and the worker would otherwise only end when this process's exit closes its pipe
            sealing_pool.POOL.close()

    app = _Api(title="VEC engine API", version=VERSION, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Email verification tasks, credits and their history, and the event log behind "
                              "them. Authorization: Bearer API key (one account) or the admin token. Errors are "
                              "RFC 9457 problem details. Every POST takes an Idempotency-Key header.")
    problems.install(app)
    app.add_middleware(BodyGuard, settings=guard, upload_bytes=settings.api_max_upload_bytes)  # before routing
    if tracing.configure("vec-api", settings.tracing):  # a span per request (engine/tracing.py)
        tracing.instrument_app(app)
    app.include_router(router)
    # more routers (webhooks, metrics, the dashboard) are included below, one line each
    metrics.mount(app)  # GET /metrics, Prometheus (consumers/metrics/exporter.py)
    app.include_router(routes_webhooks.router)  # /v1/webhooks (entrypoints/api/routes_webhooks.py)
    app.include_router(dashboard.router)  # the ops dashboard: /dashboard/ (and / redirects there)
    app.include_router(routes_compat.router)  # /api/verify-single, verify-bulk, get-results (routes_compat.py)
    app.mount(dashboard.PREFIX + "/static", dashboard.static_files(), name="dashboard-static")  # its CSS and JS
    docs.mount(app)  # /docs and /redoc with their files served here, none from a CDN (entrypoints/api/docs.py)

    @app.get("/healthz", tags=["ops"], summary="The API process answers and reaches its store")
    async def healthz() -> JSONResponse:
        services: Services = app.state.services
        head = await services.call(services.db.events.head)
        return JSONResponse({"ok": True, "head": head})

    return app


async def serve(settings: EngineSettings, runtime: Runtime | None = None) -> int:
    """Runs the API until SIGINT/SIGTERM; with `runtime` (the embedded engine), runs it beside
    the API, supervised: if it stops, the API stops too (never half-alive). Returns the exit
    status."""
    import uvicorn

    from consumers.runtime import EngineCrashed

    guard = GuardSettings()
    app = create_app(settings, guard, runtime)
    server = uvicorn.Server(uvicorn.Config(
        app, host=settings.api_host, port=settings.api_port, log_level="warning", lifespan="on", access_log=False,
        http=guarded_h11(guard.api_header_timeout_s), limit_concurrency=guard.api_max_connections,
        proxy_headers=True, forwarded_allow_ips=guard.api_trusted_proxies))
    if runtime is None:
        await server.serve()
        return 0 if server.started else 1
    stop = asyncio.Event()
    engine_task = asyncio.create_task(runtime.run(stop))
    server_task = asyncio.create_task(server.serve())
    done, _ = await asyncio.wait([engine_task, server_task], return_when=asyncio.FIRST_COMPLETED)
    status = 0
    if engine_task in done:  # the engine stopped first: that is a crash, the API goes with it
        server.should_exit = True
        error = engine_task.exception()
        log.error("the engine stopped: %s; stopping the API", error)
        status = 2 if isinstance(error, EngineCrashed) or error else 2
        await server_task
    else:
        stop.set()
        with contextlib.suppress(EngineCrashed):
            await engine_task
        status = 0 if server.started else 1
    return status

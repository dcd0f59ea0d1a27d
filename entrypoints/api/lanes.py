"""Where the API's expensive work runs, so that it never stalls anyone else's requests.

`UploadLane`: threads of their own for parsing and staging customer files, each with its
own store connection and engine (the engine lane's connection is never shared across
threads). `TenantGates`: how many expensive operations of one account may run at once.
"""
from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, TypeVar

from engine import tracing
from entrypoints.settings import EngineSettings
from engine.service import Engine, acting_as
from engine.store import Database
from entrypoints import bootstrap
from entrypoints.api.problems import Problem

T = TypeVar("T")
BUSY_RETRY_AFTER_S = 5  # what a refused tenant is told to wait: an upload or export takes seconds


class UploadLane:
    """A pool of threads, each holding an engine over its own connection to the store."""

    def __init__(self, settings: EngineSettings, workers: int):
        self.settings = settings
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="vec-api-upload")
        self._local = threading.local()
        self._opened: list[Database] = []
        self._lock = threading.Lock()

    def _engine(self) -> Engine:
        engine: Engine | None = getattr(self._local, "engine", None)
        if engine is None:
            engine = bootstrap.open_engine(self.settings, "api")
            with self._lock:
                self._opened.append(engine.db)
            self._local.engine = engine
        return engine

    async def call(self, fn: Callable[[Engine], T], actor: str) -> T:
        """Runs `fn(engine)` on an upload thread, as `actor`."""
        def run() -> T:
            with acting_as(actor):
                return fn(self._engine())

        # the caller's context goes along (the request's trace span: engine/tracing.py)
        return await asyncio.get_running_loop().run_in_executor(self.executor, tracing.carry(run))

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        with self._lock:
            for db in self._opened:
                db.close()
            self._opened.clear()


class TenantGates:
    """Per-account counts of expensive operations in progress, each kind with its limit.
    Lives on the event loop's thread: no lock needed."""

    def __init__(self, limits: dict[str, int]):
        self.limits = limits
        self.running: dict[tuple[str, str], int] = {}

    def enter(self, kind: str, account_id: str) -> Callable[[], None]:
        """Takes a place (429 with Retry-After when the account has none left); returns the
        function that gives it back (call it exactly once)."""
        key = (kind, account_id)
        if self.running.get(key, 0) >= self.limits[kind]:
            raise Problem(429, "Too many requests",
                          f"this account already has {self.limits[kind]} {kind}(s) in progress; try again when "
                          "one has finished", headers={"Retry-After": str(BUSY_RETRY_AFTER_S)},
                          retry_after_seconds=BUSY_RETRY_AFTER_S)
        self.running[key] = self.running.get(key, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                left = self.running[key] - 1
                if left:
                    self.running[key] = left
                else:
                    del self.running[key]

        return release

    @contextlib.contextmanager
    def admit(self, kind: str, account_id: str) -> Iterator[None]:
        release = self.enter(kind, account_id)
        try:
            yield
        finally:
            release()

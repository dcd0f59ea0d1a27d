"""Opening a store by URL: `sqlite:///path` (the embedded default)."""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from urllib.parse import urlparse

from engine.store.base import ConcurrencyError, DuplicateEventError, Idempotency, IdempotencyConflict  # noqa: F401
from engine.store.inputs import SqliteInputs
from engine.store.lease import Lease
from engine.store.sqlite import SqliteEventStore, connect
from projections.read_models import all_projections
from projections.runner import ProjectionRunner


class StoreUrlError(ValueError):
    pass


@dataclass
class Database:
    """Everything the embedded engine keeps in its one SQLite file."""

    url: str
    conn: object
    events: SqliteEventStore
    inputs: SqliteInputs
    lease: Lease
    projector: ProjectionRunner = field(repr=False)
    # errors of the database itself (busy, locked, gone): retried, never blamed on an event
    transient_errors: tuple[type[Exception], ...] = (sqlite3.OperationalError,)

    def catch_up(self) -> int:
        return self.projector.catch_up()

    def close(self) -> None:
        self.conn.close()


def sqlite_path(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme != "sqlite":
        if parsed.scheme in ("postgres", "postgresql"):
            raise StoreUrlError("the PostgreSQL store is not available yet; use sqlite:///PATH")
        raise StoreUrlError(f"unsupported store URL {url!r}; use sqlite:///PATH")
    path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
    if not path:
        raise StoreUrlError(f"store URL {url!r} names no file; use sqlite:///PATH (sqlite:////abs/path)")
    return path


def open_database(url: str) -> Database:
    conn = connect(sqlite_path(url))
    events = SqliteEventStore(conn)
    return Database(url, conn, events, SqliteInputs(conn), Lease(conn), ProjectionRunner(conn, all_projections(),
                                                                                        events.read_all))

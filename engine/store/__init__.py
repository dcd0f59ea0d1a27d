"""Opening a store by URL: `sqlite:///PATH` (the embedded default),
`postgresql://USER@HOST:PORT/DB` (the distributed mode's log of record) or `memory://`
(nothing on disk: the in-memory adapters of engine/store/memory.py, for fast tests).

Both give a `Database`: the same ports (engine/store/base.py, projections/sql.py) over
either backend, so the service, the runtime, audit and replay never know which one runs.
"""
from __future__ import annotations

import functools
import sqlite3
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager
from urllib.parse import urlparse

from engine.store.base import (  # noqa: F401 (re-exported)
    ConcurrencyError,
    CorruptEvent,
    DuplicateEventError,
    EngineLease,
    EventStore,
    FleetStore,
    Idempotency,
    IdempotencyConflict,
    StagedInputs,
    StoreError,
    StoreUnavailable,
)
from engine.keyring import Keyring
from projections.queries import ReadModelQueries
from projections.read_models import all_projections
from projections.runner import ProjectionRunner


class StoreUrlError(StoreError):
    pass


@dataclass
class Database:
    """The log, the staged uploads, the engine lease and the read models of one store."""

    url: str
    events: EventStore
    inputs: StagedInputs
    lease: EngineLease
    projector: ProjectionRunner = field(repr=False)
    read: ReadModelQueries = field(repr=False)
    # errors of the database itself (busy, locked, gone): retried, never blamed on an event
    transient_errors: tuple[type[Exception], ...] = field(repr=False)
    snapshot: Callable[[], ContextManager[object]] = field(repr=False)
    close: Callable[[], None] = field(repr=False)
    keyring: Keyring = field(repr=False)  # each task's data key (engine/keyring.py): seals personal data
    fleet: FleetStore | None = field(default=None, repr=False)  # heartbeats and chunk claims (PostgreSQL only)

    def catch_up(self) -> int:
        return self.projector.catch_up()


def open_database(url: str, migrate: bool = False) -> Database:
    """Opens the store at `url`. The embedded store creates its schema as it opens; a
    PostgreSQL store must have been migrated (`vec migrate`, i.e. `migrate=True`), and a
    missing or older schema is a clear SchemaMissing error."""
    scheme = urlparse(url).scheme
    if scheme == "sqlite":
        return _open_sqlite(url)
    if scheme in ("postgres", "postgresql"):
        from engine.store.postgres import open_postgres

        return open_postgres(url, migrate=migrate)
    if scheme == "memory":
        return _open_memory(url)
    raise StoreUrlError(f"unsupported store URL {url!r}; use sqlite:///PATH, postgresql://USER@HOST:PORT/DB"
                        " or memory://")


def sqlite_path(url: str) -> str:
    path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
    if not path:
        raise StoreUrlError(f"store URL {url!r} names no file; use sqlite:///PATH (sqlite:////abs/path)")
    return path


def _open_sqlite(url: str) -> Database:
    from engine.store.inputs import SqliteInputs
    from engine.store.lease import Lease
    from engine.store.sqlite import SqliteEventStore, SqliteKeyStore, connect

    path = sqlite_path(url)
    try:
        conn = connect(path)
        keyring = Keyring(SqliteKeyStore(conn))
        return _with_sqlite_read_models(url, conn, keyring, SqliteEventStore(conn, keyring), SqliteInputs(conn),
                                        Lease(conn))
    except sqlite3.DatabaseError as error:
        if isinstance(error, sqlite3.OperationalError):  # busy, locked, no such directory: said as it is
            raise StoreUnavailable(f"cannot open the store {path}: {error}") from None
        raise StoreError(f"{path} is not a VEC store ({error})") from None


def _open_memory(url: str) -> Database:
    """A store that lives as long as the Database: the log, staged uploads, lease and keys in
    memory (engine/store/memory.py); the read models in an in-memory SQLite database, as
    they are SQL. Each call is a new, empty store."""
    from engine.store.memory import MemoryEventStore, MemoryInputs, MemoryKeyStore, MemoryLease
    from engine.store.sqlite import connect

    keyring = Keyring(MemoryKeyStore())
    return _with_sqlite_read_models(url, connect(":memory:"), keyring, MemoryEventStore(keyring=keyring),
                                    MemoryInputs(), MemoryLease())


def _with_sqlite_read_models(url: str, conn: sqlite3.Connection, keyring: Keyring, events: EventStore,
                             inputs: StagedInputs, lease: EngineLease) -> Database:
    """The Database of these ports, its read models in the SQLite connection `conn`."""
    from engine.store.sqlite import SqliteSession

    session = SqliteSession(conn)
    return Database(url, events, inputs, lease,
                    ProjectionRunner(session, all_projections(), functools.partial(events.read_all, opened=False),
                                     seal_row=keyring.seal_row),
                    ReadModelQueries(session, keyring.row_opener, keyring.blocks_opener), session.transient_errors, session.snapshot,
                    conn.close, keyring)


def migrate_store(url: str) -> dict[str, Any]:
    """Creates or upgrades the schema of the store at `url`, reshapes read models of an older
    version and folds them up to the log's head; returns what it did."""
    scheme = urlparse(url).scheme
    before = after = None
    if scheme in ("postgres", "postgresql"):
        from engine.store.postgres import Pool, describe, migrate_log

        pool = Pool(url, max_size=1)
        try:
            before, after = migrate_log(pool)
        finally:
            pool.close()
        where = describe(url)
    else:
        where = sqlite_path(url) if scheme == "sqlite" else url
    db = open_database(url, migrate=True)
    try:
        folded = db.catch_up()
        head = db.events.head()
    finally:
        db.close()
    return {"store": where, "schema_before": before, "schema": after, "read_models_folded": folded, "head": head}

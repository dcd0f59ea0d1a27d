"""The distributed mode's log of record: PostgreSQL, through psycopg 3 and a connection pool.

Global order without gaps. Every append takes one row lock, on the log's head row, for
the length of its transaction: it draws its positions right after the head, writes, moves
the head, commits. So positions are handed out in commit order and a catch-up reader
(`position > checkpoint`) can never step over a transaction that is still open: there is
none below the head it sees. The known alternative (positions from a sequence, readers
held back by `pg_snapshot_xmin(pg_current_snapshot())`) lets many appenders run at once,
but a sequence value can be drawn before the transaction id is assigned, and a reader then
skips that event for good; its readers also see holes they must wait out. One appender at
a time costs little here: appends are short and batched (a chunk's results in one), and
the figure is in `bench/bench_distributed.py --only pg_append`.

The same lock makes the expected-version checks race-free (nobody else appends meanwhile),
exactly as SQLite's `BEGIN IMMEDIATE` does.
"""
from __future__ import annotations

import contextlib
import functools
import threading
import uuid
import zlib
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterable, Iterator, Mapping, Sequence
from urllib.parse import urlparse

import psycopg
import psycopg.errors
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout

from engine import chain
from engine.keyring import append_seals
from projections.sql import Rows, upsert_select_sql, upsert_sql
from events import Decoder, Event, NewEvent, RecordedEvent, decode, encode

if TYPE_CHECKING:
    from engine.keyring import Keyring
    from engine.store import Database
    from engine.store.lease import LeaseInfo
    from projections.base import Table
from engine.store.base import (
    ANY,
    ConcurrencyError,
    DuplicateEventError,
    EventTally,
    JsonSql,
    Idempotency,
    IdempotencyConflict,
    staged_row,
    SchemaMissing,
    StoreError,
    corrupt,
    paged,
    payload_bytes,
    StoreUnavailable,
    tally_rows,
)

SCHEMA_VERSION = 3  # 2: the actor of each event; 3: the hash chain (engine/chain.py)
CHAIN_BATCH = 20_000  # rows hashed per round trip when an older log gets its chain

LOG_SCHEMA = """
CREATE TABLE IF NOT EXISTS vec_schema (id INT PRIMARY KEY CHECK (id = 1), version INT NOT NULL);
CREATE TABLE IF NOT EXISTS log_head (id INT PRIMARY KEY CHECK (id = 1), position BIGINT NOT NULL);
ALTER TABLE log_head ADD COLUMN IF NOT EXISTS chain BYTEA;  -- schema 2 -> 3: the head event's chain hash
INSERT INTO log_head (id, position) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS events (
    position BIGINT PRIMARY KEY,
    event_id UUID NOT NULL UNIQUE,
    stream TEXT COLLATE "C" NOT NULL,
    version INT NOT NULL,
    type TEXT COLLATE "C" NOT NULL,
    schema_version INT NOT NULL,
    data TEXT NOT NULL,  -- the canonical JSON text, byte for byte as the SQLite store keeps it
    occurred_at TIMESTAMPTZ NOT NULL,
    correlation_id TEXT,
    causation_id TEXT,
    actor TEXT,
    UNIQUE (stream, version)
);
ALTER TABLE events ADD COLUMN IF NOT EXISTS actor TEXT;  -- schema 1 -> 2
ALTER TABLE events ADD COLUMN IF NOT EXISTS chain BYTEA;  -- schema 2 -> 3 (filled by fill_chain)
-- only `replay --as-of` looks events up by time, and times follow positions closely: a
-- BRIN index is enough for it and costs appends next to nothing (a b-tree costs each one)
CREATE INDEX IF NOT EXISTS events_occurred_at ON events USING brin (occurred_at);
CREATE TABLE IF NOT EXISTS streams (stream TEXT COLLATE "C" PRIMARY KEY, version INT NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT COLLATE "C" PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    first_position BIGINT NOT NULL,
    last_position BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS data_keys (scope TEXT COLLATE "C" PRIMARY KEY, key BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS uploads (upload_id TEXT COLLATE "C" PRIMARY KEY, staged_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS task_inputs (
    upload_id TEXT COLLATE "C" NOT NULL,
    seq INT NOT NULL,
    address TEXT NOT NULL,
    PRIMARY KEY (upload_id, seq)
);
-- the distributed mode's roles
CREATE TABLE IF NOT EXISTS relay_position (id INT PRIMARY KEY CHECK (id = 1), position BIGINT NOT NULL);
INSERT INTO relay_position (id, position) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS workers (  -- heartbeats of the fleet: the outage clock
    worker_id TEXT COLLATE "C" PRIMARY KEY,
    host TEXT NOT NULL,
    pid INT NOT NULL,
    roles TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'starting',  -- starting | ready (in its consumer group) | stopping
    leads TEXT NOT NULL DEFAULT '',  -- the roles it leads now (relay, projector, watchdog)
    started_at TIMESTAMPTZ NOT NULL,
    heartbeat TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS chunk_claims (  -- which worker verifies which chunk now
    task_id TEXT COLLATE "C" NOT NULL,
    chunk_no INT NOT NULL,
    worker_id TEXT COLLATE "C" NOT NULL,
    claimed_at TIMESTAMPTZ NOT NULL,
    heartbeat TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (task_id, chunk_no)
);
CREATE TABLE IF NOT EXISTS engine_lease (
    id INT PRIMARY KEY CHECK (id = 1),
    holder TEXT NOT NULL,
    pid INT NOT NULL,
    host TEXT NOT NULL,
    heartbeat TIMESTAMPTZ NOT NULL
);
"""

_COLUMNS = ("position, event_id, stream, version, type, schema_version, data, occurred_at, correlation_id, causation_id,"
            " actor")
COPY_UPSERT_ROWS = 500  # fewer rows are upserted a statement each: COPY's extra round trips cost more
_COPY_TYPES = ["int8", "uuid", "text", "int4", "text", "int4", "text", "timestamptz", "text", "text", "text", "bytea"]


def _row_to_event(row: tuple[Any, ...], keyring: Keyring | None,
                  decoder: Callable[..., Event] = decode) -> RecordedEvent:
    position, event_id, stream, version, type_name, schema_version, data, occurred_at, corr, cause, actor = row
    opener = keyring.open_for(stream) if keyring is not None else None  # may touch the database: outside the try
    try:
        event = decoder(type_name, schema_version, data, opener)
    except Exception as error:  # noqa: BLE001 - whatever the stored text holds, the log is broken there
        raise corrupt(row, error) from None
    return RecordedEvent(position, stream, version, event_id, occurred_at.astimezone(timezone.utc),
                         event, corr, cause, actor)


def describe(url: str) -> str:
    """host:port/db of a URL, for messages (never the password)."""
    parsed = urlparse(url)
    return f"{parsed.hostname or 'localhost'}:{parsed.port or 5432}{parsed.path or ''}"


class Pool:
    """Connections to one database. Inside `pinned()` (a transaction, a snapshot) every call
    of this thread uses the same connection; outside, each call borrows one for its length.
    Failures to reach the server become StoreUnavailable, one line, nothing appended."""

    def __init__(self, url: str, max_size: int = 8):
        self.url = url
        self._local = threading.local()
        try:  # one plain attempt first: a server that is down is one clear line at once
            psycopg.connect(url, connect_timeout=5).close()
        except psycopg.Error as error:
            raise StoreUnavailable(f"cannot reach PostgreSQL at {describe(url)}: {_first_line(error)}") from None
        self.pool = ConnectionPool(url, min_size=1, max_size=max_size, open=False, timeout=10.0,
                                   kwargs={"autocommit": True}, configure=self._configure, name="vec")
        try:
            self.pool.open(wait=True, timeout=10.0)
        except (PoolTimeout, psycopg.OperationalError) as error:
            self.pool.close()
            raise StoreUnavailable(f"cannot reach PostgreSQL at {describe(url)}: {_first_line(error)}") from None

    @staticmethod
    def _configure(conn: psycopg.Connection) -> None:
        conn.execute("SET TIME ZONE 'UTC'")

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        pinned = getattr(self._local, "conn", None)
        if pinned is not None:
            yield pinned
            return
        try:
            with self.pool.connection() as conn:
                yield conn
        except PoolTimeout as error:
            raise StoreUnavailable(f"cannot reach PostgreSQL at {describe(self.url)}: {_first_line(error)}") from None
        except psycopg.OperationalError as error:
            raise StoreUnavailable(f"PostgreSQL at {describe(self.url)}: {_first_line(error)}") from None

    @contextlib.contextmanager
    def pinned(self, isolation: psycopg.IsolationLevel | None = None,
               read_only: bool = False) -> Iterator[psycopg.Connection[Any]]:
        """One transaction on one connection for this thread's calls inside the block."""
        if getattr(self._local, "conn", None) is not None:
            with self._local.conn.transaction():  # nested: a savepoint
                yield self._local.conn
            return
        with self.connection() as conn:
            conn.isolation_level, conn.read_only = isolation, read_only
            try:
                with conn.transaction():
                    self._local.conn = conn
                    try:
                        yield conn
                    finally:
                        self._local.conn = None
            except psycopg.OperationalError as error:
                raise StoreUnavailable(f"PostgreSQL at {describe(self.url)}: {_first_line(error)}") from None
            finally:
                conn.isolation_level, conn.read_only = None, False

    def close(self) -> None:
        self.pool.close()


def _one(cursor: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    """The one row of a query that always returns one."""
    row = cursor.fetchone()
    if row is None:
        raise StoreError("a query that returns one row returned none")
    return tuple(row)


def _scalar(cursor: psycopg.Cursor[Any]) -> Any:
    """The first column of a query's one row (a query that always returns one)."""
    return _one(cursor)[0]


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def schema_version(pool: Pool) -> int:
    with pool.connection() as conn:
        exists = _scalar(conn.execute("SELECT to_regclass('vec_schema')"))
        if exists is None:
            return 0
        row = conn.execute("SELECT version FROM vec_schema WHERE id = 1").fetchone()
        return row[0] if row else 0


def require_schema(pool: Pool) -> None:
    version = schema_version(pool)
    if version == 0:
        raise SchemaMissing(f"the PostgreSQL store at {describe(pool.url)} has no vec schema; run `vec migrate`")
    if version < SCHEMA_VERSION:
        raise SchemaMissing(f"the PostgreSQL store at {describe(pool.url)} has schema {version}; "
                            f"this vec needs {SCHEMA_VERSION}: run `vec migrate`")
    if version > SCHEMA_VERSION:
        raise SchemaMissing(f"the PostgreSQL store at {describe(pool.url)} has schema {version}, newer than "
                            f"this vec ({SCHEMA_VERSION}): upgrade vec")


def migrate_log(pool: Pool) -> tuple[int, int]:
    """Creates or upgrades the log's schema; returns (version before, version after). Safe to
    run again and from several processes at once (an advisory lock serialises them)."""
    with pool.pinned() as conn:
        conn.execute("SELECT pg_advisory_xact_lock(7315001)")
        exists = _scalar(conn.execute("SELECT to_regclass('vec_schema')")) is not None
        before = _scalar(conn.execute("SELECT COALESCE(MAX(version), 0) FROM vec_schema")) if exists else 0
        if before > SCHEMA_VERSION:
            raise SchemaMissing(f"the store has schema {before}, newer than this vec ({SCHEMA_VERSION})")
        conn.execute(LOG_SCHEMA)
        fill_chain(conn)
        conn.execute("INSERT INTO vec_schema (id, version) VALUES (1, %s)"
                     " ON CONFLICT (id) DO UPDATE SET version = excluded.version", (SCHEMA_VERSION,))
    return before, SCHEMA_VERSION


def fill_chain(conn: psycopg.Connection[Any], batch: int = CHAIN_BATCH) -> int:
    """Computes the chain of the rows that have none (an older log), oldest first, in
    batches, and the head's; inside the migration's transaction, with the log's head row
    locked (no append meanwhile). Resumes where a run stopped. Returns rows filled."""
    head = _scalar(conn.execute("SELECT position FROM log_head WHERE id = 1 FOR UPDATE"))
    start = _scalar(conn.execute("SELECT MIN(position) FROM events WHERE chain IS NULL"))
    filled = 0
    if start is not None:
        before = conn.execute("SELECT chain FROM events WHERE position < %s ORDER BY position DESC LIMIT 1",
                              (start,)).fetchone()
        previous, after = (bytes(before[0]) if before else chain.GENESIS), start - 1
        while rows := conn.execute(f"SELECT {_COLUMNS} FROM events WHERE position > %s ORDER BY position LIMIT %s",
                                   (after, batch)).fetchall():
            hashes = []
            for row in rows:
                previous = chain.link(previous, row)
                hashes.append((previous, row[0]))
            conn.cursor().executemany("UPDATE events SET chain = %s WHERE position = %s", hashes)
            filled, after = filled + len(rows), rows[-1][0]
    last = conn.execute("SELECT chain FROM events WHERE position = %s", (head,)).fetchone()
    conn.execute("UPDATE log_head SET chain = %s WHERE id = 1", (bytes(last[0]) if last else None,))
    return filled


# the log's payloads to PostgreSQL's jsonb operators (engine/store/base.py tally_rows); only
# the tallied types are parsed (a ChunkSubmitted can be huge)
POSTGRES_JSON = JsonSql(text="(d ->> '{f}')", number="COALESCE((d ->> '{f}')::bigint, 0)",
                        length="COALESCE(jsonb_array_length(d -> '{f}'), 0)",
                        flag="(CASE WHEN d ->> '{f}' = 'true' THEN 1 ELSE 0 END)",
                        source="(SELECT type, data::jsonb AS d FROM events"
                               " WHERE position > ? AND position <= ? AND type IN ({marks})) e")


def log_head(rows: Rows) -> int:
    """The position of the last event of the log at `rows` (0 for an empty log)."""
    return int(rows("SELECT position FROM log_head WHERE id = 1")[0][0])


RELAYED_COLUMNS = ("position, event_id::text, stream, version, type, schema_version, data, occurred_at, actor,"
                   " correlation_id, causation_id")


def relayed_rows(conn: psycopg.Connection[Any], after_position: int, limit: int) -> list[tuple[Any, ...]]:
    """The stored events past a position as the relay publishes them (RELAYED_COLUMNS), on
    the relay's own connection."""
    return conn.execute(f"SELECT {RELAYED_COLUMNS} FROM events WHERE position > %s ORDER BY position LIMIT %s",
                        (after_position, limit)).fetchall()


def tally(rows: Rows, after_position: int, until_position: int, types: Sequence[str]) -> list[EventTally]:
    """EventStore.tally of the log at `rows` (a scrape's own connection)."""
    return tally_rows(rows, POSTGRES_JSON, after_position, until_position, types)


def rows_of(conn: psycopg.Connection[Any]) -> Rows:
    """`?` queries on one connection."""
    def rows(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return conn.execute(sql.replace("?", "%s"), params).fetchall()

    return rows


class PostgresEventStore:
    before_commit = None  # test seam: called with the transaction open, positions drawn

    def __init__(self, pool: Pool, keyring: Keyring | None = None):
        self.pool = pool
        self.keyring = keyring  # seals personal fields on the way in, opens them on the way out

    # --- writing ----------------------------------------------------------------------

    def append(self, events: Sequence[NewEvent], expected: Mapping[str, int | None],
               idempotency: Idempotency | None = None) -> list[RecordedEvent]:
        if not events:
            return []
        for new in events:
            if new.stream not in expected:
                raise ValueError(f"no expected version given for {new.stream}")
        seals = append_seals(self.keyring, events)
        try:
            with self.pool.pinned() as conn:
                head, previous = _one(conn.execute("SELECT position, chain FROM log_head WHERE id = 1 FOR UPDATE"))
                if previous is None and head:
                    raise StoreError("the log's head has no chain hash: run `vec migrate`")
                if idempotency is not None and self._lookup(conn, idempotency) is not None:
                    raise ConcurrencyError(f"idempotency key {idempotency.key} was used meanwhile")
                actual = dict(conn.execute("SELECT stream, version FROM streams WHERE stream = ANY(%s)",
                                           (list(expected),)).fetchall())
                versions: dict[str, int] = {}
                for stream, version in expected.items():
                    now_at = actual.get(stream, 0)
                    if version is not ANY and now_at != version:
                        raise ConcurrencyError(f"{stream} is at version {now_at}, expected {version}")
                    versions[stream] = now_at
                start = dict(versions)
                recorded = []
                for i, new in enumerate(events):
                    versions[new.stream] += 1
                    recorded.append(RecordedEvent(head + 1 + i, new.stream, versions[new.stream], new.event_id,
                                                  new.occurred_at.astimezone(timezone.utc), new.event,
                                                  new.correlation_id, new.causation_id, new.actor))
                rows = [(r.event_id, r.stream, r.version, r.event.type_name(), r.event.schema_version,
                         encode(r.event, seals[r.stream]), r.occurred_at, r.correlation_id, r.causation_id, r.actor)
                        for r in recorded]
                hashes = chain.links(bytes(previous or chain.GENESIS), head + 1, rows)
                with conn.cursor() as cursor, \
                        cursor.copy(f"COPY events ({_COLUMNS}, chain) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(_COPY_TYPES)  # binary: no text formatting of every value
                    for r, row, hashed in zip(recorded, rows, hashes):
                        copy.write_row((r.position, *row, hashed))
                conn.cursor().executemany(
                    "INSERT INTO streams (stream, version) VALUES (%s, %s)"
                    " ON CONFLICT (stream) DO UPDATE SET version = excluded.version",
                    [(s, v) for s, v in versions.items() if v != start[s]])
                last = head + len(recorded)
                conn.execute("UPDATE log_head SET position = %s, chain = %s WHERE id = 1", (last, hashes[-1]))
                if idempotency is not None:
                    conn.execute("INSERT INTO idempotency (key, fingerprint, first_position, last_position)"
                                 " VALUES (%s, %s, %s, %s)", (idempotency.key, idempotency.fingerprint, head + 1, last))
                if self.before_commit is not None:
                    self.before_commit()
        except psycopg.errors.UniqueViolation as error:
            if "event_id" in str(error):
                raise DuplicateEventError(_first_line(error)) from None
            raise ConcurrencyError(_first_line(error)) from None
        return recorded

    def _lookup(self, conn: psycopg.Connection[Any], idempotency: Idempotency) -> tuple[int, int] | None:
        row = conn.execute("SELECT fingerprint, first_position, last_position FROM idempotency WHERE key = %s",
                           (idempotency.key,)).fetchone()
        if row is None:
            return None
        if row[0] != idempotency.fingerprint:
            raise IdempotencyConflict(f"idempotency key {idempotency.key!r} was already used for a different command")
        return row[1], row[2]

    def replayed(self, idempotency: Idempotency) -> list[RecordedEvent] | None:
        with self.pool.connection() as conn:
            span = self._lookup(conn, idempotency)
        if span is None:
            return None
        return list(self.read_all(after_position=span[0] - 1, until_position=span[1]))

    # --- reading ----------------------------------------------------------------------

    def read_stream(self, stream: str, after_version: int = 0, until_position: int | None = None,
                    batch: int = 2000) -> Iterator[RecordedEvent]:
        version, decoder = after_version, Decoder()
        while True:
            with self.pool.connection() as conn:
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM events WHERE stream = %s AND version > %s"
                    " AND (%s::bigint IS NULL OR position <= %s) ORDER BY version LIMIT %s",
                    (stream, version, until_position, until_position, batch)).fetchall()
            for row in rows:
                yield _row_to_event(row, self.keyring, decoder)
            if len(rows) < batch:
                return
            version = rows[-1][3]

    def read_all(self, after_position: int = 0, until_position: int | None = None,
                 batch: int = 2000, opened: bool = True) -> Iterator[RecordedEvent]:
        keyring, decoder = self.keyring if opened else None, Decoder()
        for row in self._stored(_COLUMNS, after_position, until_position, batch):
            yield _row_to_event(row, keyring, decoder)

    def read_chain(self, after_position: int = 0, until_position: int | None = None,
                   batch: int = 5000) -> Iterator[tuple[Any, ...]]:
        """The stored rows, undecoded, each with its chain hash last (engine/chain.py)."""
        return self._stored(f"{_COLUMNS}, chain", after_position, until_position, batch)

    def _stored(self, columns: str, after_position: int, until_position: int | None,
                batch: int) -> Iterator[tuple[Any, ...]]:
        sql = (f"SELECT {columns} FROM events WHERE position > %s AND (%s::bigint IS NULL OR position <= %s)"
               " ORDER BY position LIMIT %s")

        def fetch(after: int, limit: int) -> list[tuple[Any, ...]]:
            with self.pool.connection() as conn:
                return conn.execute(sql, (after, until_position, until_position, limit)).fetchall()

        return paged(fetch, after_position, batch, weigh=payload_bytes)

    def read_headers(self, after_position: int = 0, limit: int = 10_000) -> list[tuple[int, str, str]]:
        with self.pool.connection() as conn:
            return conn.execute("SELECT position, stream, type FROM events WHERE position > %s"
                                " ORDER BY position LIMIT %s", (after_position, limit)).fetchall()

    def holds(self, event_id: uuid.UUID) -> bool:
        with self.pool.connection() as conn:
            return conn.execute("SELECT 1 FROM events WHERE event_id = %s", (event_id,)).fetchone() is not None

    def stream_version(self, stream: str) -> int:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT version FROM streams WHERE stream = %s", (stream,)).fetchone()
        return row[0] if row else 0

    def stream_versions(self, streams: Sequence[str]) -> dict[str, int]:
        with self.pool.connection() as conn:
            found = dict(conn.execute("SELECT stream, version FROM streams WHERE stream = ANY(%s)",
                                      (list(streams),)).fetchall())
        return {stream: found.get(stream, 0) for stream in streams}

    def head(self) -> int:
        with self.pool.connection() as conn:
            return log_head(rows_of(conn))

    def tally(self, after_position: int, until_position: int, types: Sequence[str]) -> list[EventTally]:
        with self.pool.connection() as conn:
            return tally(rows_of(conn), after_position, until_position, types)

    def position_at(self, moment: datetime) -> int:
        with self.pool.connection() as conn:
            return int(_scalar(conn.execute("SELECT COALESCE(MAX(position), 0) FROM events WHERE occurred_at <= %s",
                                            (moment,))))

    def close(self) -> None:
        self.pool.close()


class PostgresInputs:
    """Staged uploads: streamed with COPY into a temporary table (no lock on the log while a
    big file is read), de-duplicated case-insensitively, first seen first."""

    BATCH = 5000

    def __init__(self, pool: Pool):
        self.pool = pool

    def stage(self, upload_id: str, addresses: Iterable[str], now: datetime,
              seal: Callable[[str], str] | None = None) -> int:
        """As the SQLite inputs: sealed with `seal`, compared sealed (deterministic sealing)."""
        seal = seal or (lambda text: text)
        with self.pool.pinned() as conn:
            conn.execute("CREATE TEMP TABLE staging (raw_seq INT, key TEXT, address TEXT) ON COMMIT DROP")
            with conn.cursor() as cursor, cursor.copy("COPY staging (raw_seq, key, address) FROM STDIN") as copy:
                for raw_seq, address in enumerate(addresses):
                    copy.write_row((raw_seq, *staged_row(address, seal)))
            conn.execute("INSERT INTO uploads (upload_id, staged_at) VALUES (%s, %s)", (upload_id, now))
            return int(conn.execute(
                "INSERT INTO task_inputs (upload_id, seq, address)"
                " SELECT %s, (ROW_NUMBER() OVER (ORDER BY raw_seq) - 1)::int, address FROM"
                " (SELECT DISTINCT ON (key) raw_seq, address FROM staging ORDER BY key, raw_seq) AS firsts",
                (upload_id,)).rowcount)

    def chunk(self, upload_id: str, chunk_no: int, chunk_size: int,
              open_: Callable[[str], str] | None = None) -> list[str]:
        start = chunk_no * chunk_size
        open_ = open_ or (lambda text: text)
        with self.pool.connection() as conn:
            return [open_(r[0]) for r in conn.execute(
                "SELECT address FROM task_inputs WHERE upload_id = %s AND seq >= %s AND seq < %s ORDER BY seq",
                (upload_id, start, start + chunk_size)).fetchall()]

    def staged(self) -> dict[str, int]:
        with self.pool.connection() as conn:
            return dict(conn.execute("SELECT upload_id, COUNT(*) FROM task_inputs GROUP BY upload_id").fetchall())

    def discard(self, upload_id: str) -> None:
        with self.pool.pinned() as conn:
            conn.execute("DELETE FROM task_inputs WHERE upload_id = %s", (upload_id,))
            conn.execute("DELETE FROM uploads WHERE upload_id = %s", (upload_id,))

    def sweep(self, staged_before: datetime, keep: Iterable[str]) -> int:
        with self.pool.connection() as conn:
            old = {r[0] for r in conn.execute("SELECT upload_id FROM uploads WHERE staged_at < %s",
                                              (staged_before,)).fetchall()}
        stale = old - set(keep)  # `keep` may be an iterator: read once
        for upload_id in stale:
            self.discard(upload_id)
        return len(stale)


class PostgresLease:
    """The embedded runtime's lease, when it runs on PostgreSQL (one engine process)."""

    def __init__(self, pool: Pool):
        self.pool = pool

    def current(self) -> LeaseInfo | None:
        from engine.store.lease import LeaseInfo

        with self.pool.connection() as conn:
            row = conn.execute("SELECT holder, pid, host, heartbeat FROM engine_lease WHERE id = 1").fetchone()
        return LeaseInfo(row[0], row[1], row[2], row[3]) if row else None

    def acquire(self, holder: str, now: datetime, ttl: float) -> LeaseInfo | None:
        """As the SQLite lease: returns the previous lease (the outage clock), or LeaseHeld."""
        import os
        import socket

        from engine.store.lease import LeaseHeld, LeaseInfo

        with self.pool.pinned() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(7315002)")
            row = conn.execute("SELECT holder, pid, host, heartbeat FROM engine_lease WHERE id = 1").fetchone()
            previous = LeaseInfo(*row) if row else None
            if previous is not None and previous.holder != holder and previous.alive(now, ttl):
                raise LeaseHeld(previous)
            conn.execute("INSERT INTO engine_lease (id, holder, pid, host, heartbeat) VALUES (1, %s, %s, %s, %s)"
                         " ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, pid = excluded.pid,"
                         " host = excluded.host, heartbeat = excluded.heartbeat",
                         (holder, os.getpid(), socket.gethostname(), now))
        return previous

    def beat(self, holder: str, now: datetime) -> bool:
        with self.pool.connection() as conn:
            return conn.execute("UPDATE engine_lease SET heartbeat = %s WHERE id = 1 AND holder = %s",
                                (now, holder)).rowcount == 1

    def release(self, holder: str, now: datetime) -> None:
        with self.pool.connection() as conn:
            conn.execute("UPDATE engine_lease SET holder = '', pid = 0, heartbeat = %s WHERE id = 1 AND holder = %s",
                         (now, holder))


class PostgresSession:
    """The read models' port (projections.sql.SqlSession) on PostgreSQL."""

    transient_errors = (StoreUnavailable, psycopg.OperationalError, psycopg.errors.SerializationFailure,
                        psycopg.errors.DeadlockDetected)

    def __init__(self, pool: Pool):
        self.pool = pool
        self._sql: dict[str, str] = {}

    def _pg(self, sql: str) -> str:
        converted = self._sql.get(sql)
        if converted is None:
            converted = self._sql[sql] = sql.replace("?", "%s")
        return converted

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[TupleRow]:
        with self.pool.connection() as conn:
            cursor: psycopg.Cursor[TupleRow] = conn.cursor()
            cursor.execute(self._pg(sql), tuple(params))
            return cursor

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.pool.connection() as conn:
            conn.cursor().executemany(self._pg(sql), [tuple(r) for r in rows])

    def upsert_many(self, table: Table, rows: Sequence[Sequence[Any]]) -> None:
        """Many rows: COPY into a temporary table and one INSERT ... SELECT ... ON CONFLICT,
        not a statement a row (a rebuild's million results rows: the server's time went there).
        A key twice in one batch (that statement refuses it) goes row by row, as few rows do."""
        if len(rows) < COPY_UPSERT_ROWS:
            self.executemany(upsert_sql(table), rows)
            return
        columns = ", ".join(table.columns)
        # named by its columns: a connection outlives a reshape of the table (vec migrate)
        staged = f"upsert_{table.name}_{zlib.crc32(columns.encode()):08x}"
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {staged} (LIKE {table.name}) ON COMMIT DELETE ROWS")
            self._copy_rows(cursor, table, staged, rows)
            try:
                with conn.transaction():  # a savepoint
                    cursor.execute(upsert_select_sql(table, staged))
            except psycopg.errors.CardinalityViolation:
                cursor.executemany(self._pg(upsert_sql(table)), [tuple(r) for r in rows])
            cursor.execute(f"TRUNCATE {staged}")

    def upsert_runs(self, table: Table, runs: Sequence[Sequence[Sequence[Any]]]) -> None:
        """Appended rows have new keys (a task's results: each address settled once), so they
        are COPied into the table itself; a key already there (never, but for a hand-edited
        read model) undoes that and upserts them. A rebuild's million results rows: the
        server's INSERT ... SELECT ... ON CONFLICT was most of its time."""
        rows = [row for run in runs for row in run]
        if len(rows) < COPY_UPSERT_ROWS:
            self.upsert_many(table, rows)
            return
        with self.pool.connection() as conn, conn.cursor() as cursor:
            try:
                with conn.transaction():  # a savepoint
                    self._copy_rows(cursor, table, table.name, rows)
                return
            except psycopg.errors.UniqueViolation:
                pass
        self.upsert_many(table, rows)

    @staticmethod
    def _copy_rows(cursor: psycopg.Cursor[TupleRow], table: Table, target: str, rows: Sequence[Sequence[Any]]) -> None:
        """Binary COPY of rows in `table`'s column order into `target` (the table or its like)."""
        with cursor.copy(f"COPY {target} ({', '.join(table.columns)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int8" if c in table.ints else "text" for c in table.columns])
            for row in rows:
                copy.write_row(row)

    def transaction(self) -> ContextManager[psycopg.Connection[Any]]:
        return self.pool.pinned()

    def lock(self, name: str) -> None:
        self.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (name,))

    def snapshot(self) -> ContextManager[psycopg.Connection[Any]]:
        return self.pool.pinned(psycopg.IsolationLevel.REPEATABLE_READ, read_only=True)

    def stream(self, sql: str, params: Sequence[Any] = (), size: int = 2000) -> Iterator[tuple[Any, ...]]:
        pinned = getattr(self.pool._local, "conn", None)
        if pinned is not None:  # inside a snapshot: read what it sees
            with pinned.cursor(name=f"vec_{uuid.uuid4().hex[:12]}") as cursor:
                cursor.execute(self._pg(sql), tuple(params))
                while rows := cursor.fetchmany(size):
                    yield from rows
            return
        with self.pool.connection() as conn, conn.transaction():
            with conn.cursor(name=f"vec_{uuid.uuid4().hex[:12]}") as cursor:
                cursor.execute(self._pg(sql), tuple(params))
                while rows := cursor.fetchmany(size):
                    yield from rows

    def create_table(self, table: Table) -> None:
        columns = ", ".join(f"{c} BIGINT" if c in table.ints else f'{c} TEXT COLLATE "C"' for c in table.columns)
        names = [table.name] + [f"{table.name}_{'_'.join(index)}" for index in table.indexes]
        with self.pool.connection() as conn:
            # CREATE INDEX IF NOT EXISTS takes a SHARE lock on a table that already has it, which
            # deadlocks against a writer of two such tables: skip what the catalogue already holds.
            present = conn.execute("SELECT count(*) FROM unnest(%s::text[]) AS n WHERE to_regclass(n) IS NOT NULL",
                                   (names,)).fetchone()
            if present is not None and present[0] == len(names):
                return
            conn.execute(f"CREATE TABLE IF NOT EXISTS {table.name} ({columns}, PRIMARY KEY ({', '.join(table.key)}))")
            for index in table.indexes:
                conn.execute(f"CREATE INDEX IF NOT EXISTS {table.name}_{'_'.join(index)}"
                             f" ON {table.name} ({', '.join(index)})")


def open_postgres(url: str, migrate: bool = False) -> Database:
    from engine.keyring import Keyring
    from engine.store import Database
    from projections.queries import ReadModelQueries
    from projections.read_models import all_projections
    from projections.runner import ProjectionRunner

    pool = Pool(url)
    try:
        if migrate:
            migrate_log(pool)
        else:
            require_schema(pool)
        keyring = Keyring(PostgresKeyStore(pool))
        events = PostgresEventStore(pool, keyring)
        session = PostgresSession(pool)
        projector = ProjectionRunner(session, all_projections(), functools.partial(events.read_all, opened=False),
                                     reshape=migrate,
                                     seal_row=keyring.seal_row)
    except BaseException:
        pool.close()
        raise
    return Database(url, events, PostgresInputs(pool), PostgresLease(pool), projector,
                    ReadModelQueries(session, keyring.row_opener, keyring.blocks_opener), session.transient_errors, session.snapshot, pool.close,
                    keyring, PostgresFleet(pool))



def live_roles(rows: Rows, ttl_s: float) -> list[str]:
    """The roles of every fleet process that beat within `ttl_s` (one entry per process and role)."""
    return [role for (roles,) in rows("SELECT roles FROM workers WHERE heartbeat >= now() - make_interval(secs => ?)",
                                      (ttl_s,)) for role in roles.split(",")]


def live_claims(rows: Rows, ttl_s: float) -> int:
    """Chunks claimed by a worker whose claim beat within `ttl_s`."""
    found = rows("SELECT COUNT(*) FROM chunk_claims WHERE heartbeat >= now() - make_interval(secs => ?)", (ttl_s,))
    return int(found[0][0]) if found else 0


class PostgresFleet:
    """What the distributed roles share beside the log: who is alive (heartbeats, the fleet's
    outage clock) and which worker verifies which chunk (claims with a heartbeat, so that a
    chunk whose worker died is given to another)."""

    def __init__(self, pool: Pool):
        self.pool = pool

    def beat(self, worker_id: str, roles: str, host: str, pid: int, now: datetime, state: str = "starting",
             leads: str = "") -> None:
        with self.pool.connection() as conn:
            conn.execute("INSERT INTO workers (worker_id, host, pid, roles, state, leads, started_at, heartbeat)"
                         " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (worker_id) DO UPDATE"
                         " SET heartbeat = excluded.heartbeat, state = excluded.state, leads = excluded.leads",
                         (worker_id, host, pid, roles, state, leads, now, now))

    def leave(self, worker_id: str) -> None:
        with self.pool.connection() as conn:
            conn.execute("DELETE FROM chunk_claims WHERE worker_id = %s", (worker_id,))

    def last_worker_beat(self) -> datetime | None:
        """When a process with the worker role last proved it was alive (None: never)."""
        with self.pool.connection() as conn:
            beat: datetime | None = _scalar(conn.execute("SELECT MAX(heartbeat) FROM workers WHERE roles LIKE '%%worker%%'"))
            return beat

    def members(self, since: datetime) -> list[dict[str, Any]]:
        with self.pool.connection() as conn:
            rows = conn.execute("SELECT worker_id, host, pid, roles, state, leads, started_at, heartbeat FROM workers"
                                " WHERE heartbeat >= %s ORDER BY worker_id", (since,)).fetchall()
        return [dict(zip(("worker_id", "host", "pid", "roles", "state", "leads", "started_at", "heartbeat"), r))
                for r in rows]

    def claim(self, task_id: str, chunk_no: int, worker_id: str, now: datetime, stale_before: datetime) -> bool:
        """Takes the chunk unless a live worker holds it; True if this worker holds it now."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "INSERT INTO chunk_claims (task_id, chunk_no, worker_id, claimed_at, heartbeat)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (task_id, chunk_no) DO UPDATE"
                " SET worker_id = excluded.worker_id, claimed_at = excluded.claimed_at, heartbeat = excluded.heartbeat"
                " WHERE chunk_claims.worker_id = excluded.worker_id OR chunk_claims.heartbeat < %s"
                " RETURNING worker_id", (task_id, chunk_no, worker_id, now, now, stale_before)).fetchone()
        return row is not None

    def renew(self, worker_id: str, now: datetime) -> None:
        with self.pool.connection() as conn:
            conn.execute("UPDATE chunk_claims SET heartbeat = %s WHERE worker_id = %s", (now, worker_id))

    def release(self, task_id: str, chunk_no: int, worker_id: str) -> None:
        with self.pool.connection() as conn:
            conn.execute("DELETE FROM chunk_claims WHERE task_id = %s AND chunk_no = %s AND worker_id = %s",
                         (task_id, chunk_no, worker_id))

    def live_claims(self, fresh_after: datetime) -> set[tuple[str, int]]:
        with self.pool.connection() as conn:
            return {(t, c) for t, c in conn.execute(
                "SELECT task_id, chunk_no FROM chunk_claims WHERE heartbeat >= %s", (fresh_after,)).fetchall()}

    def stopped_tasks(self, task_ids: list[str]) -> set[str]:
        """Which of these tasks stopped (cancelled, failed, completed, deleted): read from the
        log itself, so a cancel reaches the workers without waiting for any projector."""
        if not task_ids:
            return set()
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT DISTINCT stream FROM events WHERE stream = ANY(%s) AND type = ANY(%s)",
                ([f"task-{t}" for t in task_ids],
                 ["TaskCancelled", "TaskCompleted", "TaskFailed", "SystemFailure", "TaskDeleted"])).fetchall()
        return {r[0].removeprefix("task-") for r in rows}


class PostgresKeyStore:
    """The data keys (engine/keyring.py) in PostgreSQL. Destroying one rewrites the keys table
    (VACUUM FULL, a small table): no copy of the key stays in the table's files."""

    def __init__(self, pool: Pool):
        self.pool = pool

    def get(self, scope: str) -> bytes | None:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT key FROM data_keys WHERE scope = %s", (scope,)).fetchone()
        return bytes(row[0]) if row else None

    def put(self, scope: str, key: bytes) -> bytes:
        with self.pool.connection() as conn:
            conn.execute("INSERT INTO data_keys (scope, key) VALUES (%s, %s) ON CONFLICT (scope) DO NOTHING",
                         (scope, key))
        stored = self.get(scope)
        if stored is None:  # inserted or already there: it must read back
            raise StoreError(f"the data key of {scope} did not persist")
        return stored

    def destroy(self, scope: str) -> None:
        with self.pool.connection() as conn:
            conn.execute("DELETE FROM data_keys WHERE scope = %s", (scope,))
        with psycopg.connect(self.pool.url, autocommit=True, connect_timeout=5) as conn:
            conn.execute("VACUUM FULL data_keys")  # not in a transaction, not on a shared connection


class LeaderLock:
    """A role that must run once in the whole fleet (relay, projector, watchdog) holds a
    session-level advisory lock on a connection of its own; if its process dies, the
    connection closes and PostgreSQL frees the lock for a standby."""

    def __init__(self, url: str, key: int):
        self.url, self.key = url, key
        self.conn: psycopg.Connection | None = None

    def try_acquire(self) -> bool:
        try:
            if self.conn is None or self.conn.closed:
                self.conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
            return bool(_scalar(self.conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))))
        except psycopg.OperationalError:
            self.drop()
            return False

    def still_held(self) -> bool:
        try:
            return self.conn is not None and not self.conn.closed and self.conn.execute("SELECT 1").fetchone() == (1,)
        except psycopg.OperationalError:
            self.drop()
            return False

    def drop(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg.Error:
                pass
        self.conn = None

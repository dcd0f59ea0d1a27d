"""The embedded backend: one SQLite file in WAL mode holds the log (and, beside it, the
read models, staged uploads and the engine lease).

One writer at a time (BEGIN IMMEDIATE), so positions are handed out in commit order and a
catch-up reader never sees a gap.
"""
from __future__ import annotations

import contextlib
import json
import sqlite3
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterable, Iterator, Mapping, Sequence

from events import Decoder, Event, NewEvent, RecordedEvent, decode, encode
from engine import chain
from engine.keyring import Keyring, append_seals
from projections.sql import upsert_select_sql, upsert_sql

if TYPE_CHECKING:
    from projections.base import Table
    from projections.sql import Rows
from engine.store.base import (
    ANY,
    StoreError,
    ConcurrencyError,
    DuplicateEventError,
    EventTally,
    JsonSql,
    Idempotency,
    corrupt,
    IdempotencyConflict,
    paged,
    payload_bytes,
    tally_rows,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id BLOB NOT NULL UNIQUE,  -- 16 bytes: half the index of the text form
    stream TEXT NOT NULL,
    version INTEGER NOT NULL,
    type TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    data TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    correlation_id TEXT,
    causation_id TEXT,
    actor TEXT,  -- who issued the command (format 3)
    chain BLOB,  -- SHA-256 of this row and the previous row's chain (format 4, engine/chain.py)
    UNIQUE (stream, version)
);
CREATE TABLE IF NOT EXISTS streams (
    stream TEXT PRIMARY KEY,
    version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    first_position INTEGER NOT NULL,
    last_position INTEGER NOT NULL
) WITHOUT ROWID;
"""

_COLUMNS = ("position, event_id, stream, version, type, schema_version, data, occurred_at, correlation_id, causation_id,"
            " actor")


def connect(path: str | Path) -> sqlite3.Connection:
    path = str(path)
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, timeout=30.0, check_same_thread=False)
    # a new store gives freed pages back (SqliteInputs.discard: an upload's staged addresses are
    # as large as its results); an older one keeps its mode until a VACUUM, and works the same
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL survives a process crash (kill -9); only an OS crash may lose the tail.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA foreign_keys=ON")
    # what is deleted is overwritten with zeros, not left in free pages: erasure (engine/keyring.py)
    conn.execute("PRAGMA secure_delete=ON")
    return conn


class transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
                return
            except BaseException:
                if self.conn.in_transaction:  # a failed COMMIT leaves the transaction open
                    self.conn.execute("ROLLBACK")
                raise
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")


def _utc(moment: datetime) -> str:
    """Times are stored in UTC, so that comparing them as text orders them in time."""
    return moment.astimezone(timezone.utc).isoformat()


class _Stamps:
    """The times of one append, converted once: a command's events share one moment."""

    def __init__(self) -> None:
        self._moment: datetime | None = None
        self._utc = datetime.min
        self._text = ""

    def utc(self, moment: datetime) -> datetime:
        if moment is not self._moment:
            self._moment, self._utc = moment, moment.astimezone(timezone.utc)
            self._text = self._utc.isoformat()
        return self._utc

    def text(self, moment: datetime) -> str:
        """As stored (`_utc`)."""
        self.utc(moment)
        return self._text


def _row_to_event(row: tuple[Any, ...], keyring: Keyring | None,
                  decoder: Callable[..., Event] = decode) -> RecordedEvent:
    position, event_id, stream, version, type_name, schema_version, data, occurred_at, corr, cause, actor = row
    opener = keyring.open_for(stream) if keyring else None  # may touch the database: outside the try
    try:
        return RecordedEvent(
            position=position,
            stream=stream,
            version=version,
            event_id=uuid.UUID(bytes=event_id),
            occurred_at=datetime.fromisoformat(occurred_at),
            event=decoder(type_name, schema_version, data, opener),
            correlation_id=corr,
            causation_id=cause,
            actor=actor,
        )
    except Exception as error:  # noqa: BLE001 - whatever the stored text holds, the log is broken there
        raise corrupt(row, error) from None


FORMAT = 4  # PRAGMA user_version of the file; 2 = 16-byte event ids, 3 = the actor, 4 = the hash chain
UPGRADES = {2: ["ALTER TABLE events ADD COLUMN actor TEXT"], 3: ["ALTER TABLE events ADD COLUMN chain BLOB"]}
CHAIN_BATCH = 20_000  # rows hashed per transaction when an older log gets its chain


def fill_chain(conn: sqlite3.Connection, batch: int = CHAIN_BATCH) -> int:
    """Computes the chain of the rows that have none (an older log), oldest first, one
    transaction per batch; resumes where an interrupted run stopped. Returns rows filled."""
    start = conn.execute("SELECT MIN(position) FROM events WHERE chain IS NULL").fetchone()[0]
    if start is None:
        return 0
    before = conn.execute("SELECT chain FROM events WHERE position < ? ORDER BY position DESC LIMIT 1",
                          (start,)).fetchone()
    previous, after, filled = (before[0] if before else chain.GENESIS), start - 1, 0
    while True:
        with transaction(conn):
            rows = conn.execute(f"SELECT {_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?",
                                (after, batch)).fetchall()
            hashes = []
            for row in rows:
                previous = chain.link(previous, row)
                hashes.append((previous, row[0]))
            conn.executemany("UPDATE events SET chain = ? WHERE position = ?", hashes)
        filled += len(rows)
        if len(rows) < batch:
            return filled
        after = rows[-1][0]


def _upgrade(conn: sqlite3.Connection, version: int) -> None:
    """One step from format `version` to the next; a step a run left midway is finished."""
    with transaction(conn):
        for statement in UPGRADES[version]:
            try:
                conn.execute(statement)
            except sqlite3.OperationalError as error:
                if "duplicate column" not in str(error):
                    raise
    if version == 3:
        fill_chain(conn)
    with transaction(conn):
        conn.execute(f"PRAGMA user_version = {version + 1}")


# the log's payloads to SQLite's JSON functions (engine/store/base.py tally_rows)
SQLITE_JSON = JsonSql(text="json_extract(data, '$.{f}')", number="COALESCE(json_extract(data, '$.{f}'), 0)",
                      length="COALESCE(json_array_length(data, '$.{f}'), 0)",
                      flag="COALESCE(json_extract(data, '$.{f}'), 0)",
                      source="events WHERE position > ? AND position <= ? AND type IN ({marks})")


def log_head(rows: Rows) -> int:
    """The position of the last event of the log at `rows` (0 for an empty log)."""
    return int(rows("SELECT COALESCE(MAX(position), 0) FROM events")[0][0])


def tally(rows: Rows, after_position: int, until_position: int, types: Sequence[str]) -> list[EventTally]:
    """EventStore.tally of the log at `rows` (a scrape's own read-only connection)."""
    return tally_rows(rows, SQLITE_JSON, after_position, until_position, types)


class SqliteEventStore:
    before_commit = None  # test seam: called with the transaction open, positions drawn

    def __init__(self, conn: sqlite3.Connection, keyring: Keyring | None = None):
        self.conn = conn
        self.keyring = keyring  # seals personal fields on the way in, opens them on the way out
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        has_log = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'events'").fetchone()
        while has_log and version in UPGRADES:  # an older file is upgraded in place, step by step
            _upgrade(conn, version)
            version += 1
        if has_log and version != FORMAT:
            raise StoreError(f"this store file has format {version}; this vec reads format {FORMAT} "
                             "(open it with the vec version that wrote it, or start a new store)")
        conn.executescript(SCHEMA)
        conn.execute(f"PRAGMA user_version = {FORMAT}")

    @classmethod
    def open(cls, path: str | Path) -> "SqliteEventStore":
        conn = connect(path)
        return cls(conn, Keyring(SqliteKeyStore(conn)))

    # --- writing ----------------------------------------------------------------------

    def append(
        self,
        events: Sequence[NewEvent],
        expected: Mapping[str, int | None],
        idempotency: Idempotency | None = None,
    ) -> list[RecordedEvent]:
        if not events:
            return []
        seals = append_seals(self.keyring, events)
        with transaction(self.conn) as conn:
            if idempotency is not None and self._lookup(idempotency) is not None:
                raise ConcurrencyError(f"idempotency key {idempotency.key} was used meanwhile")
            versions: dict[str, int] = {}
            for stream, version in expected.items():
                row = conn.execute("SELECT version FROM streams WHERE stream = ?", (stream,)).fetchone()
                actual = row[0] if row else 0
                if version is not ANY and actual != version:
                    raise ConcurrencyError(f"{stream} is at version {actual}, expected {version}")
                versions[stream] = actual
            start = dict(versions)
            rows = []
            stamps = _Stamps()
            for new in events:
                if new.stream not in versions:
                    raise ValueError(f"no expected version given for {new.stream}")
                versions[new.stream] += 1
                rows.append((
                    new.event_id.bytes, new.stream, versions[new.stream], new.event.type_name(),
                    new.event.schema_version, encode(new.event, seals[new.stream]), stamps.text(new.occurred_at),
                    new.correlation_id, new.causation_id, new.actor,
                ))
            last_row = conn.execute("SELECT position, chain FROM events ORDER BY position DESC LIMIT 1").fetchone()
            first, previous = (last_row[0] + 1, last_row[1]) if last_row else (1, chain.GENESIS)
            if previous is None:
                raise StoreError("the log's last event has no chain hash: run `vec migrate`")
            try:
                conn.executemany(
                    "INSERT INTO events (position, event_id, stream, version, type, schema_version, data, occurred_at,"
                    " correlation_id, causation_id, actor, chain) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    [(first + i, *row, h) for i, (row, h) in enumerate(zip(rows, chain.links(previous, first, rows)))],
                )
            except sqlite3.IntegrityError as error:
                if "event_id" in str(error):
                    raise DuplicateEventError(str(error)) from None
                raise ConcurrencyError(str(error)) from None
            conn.executemany(
                "INSERT INTO streams (stream, version) VALUES (?, ?)"
                " ON CONFLICT (stream) DO UPDATE SET version = excluded.version",
                [(s, v) for s, v in versions.items() if v != start[s]],
            )
            last = first + len(rows) - 1
            if idempotency is not None:
                conn.execute(
                    "INSERT INTO idempotency (key, fingerprint, first_position, last_position) VALUES (?,?,?,?)",
                    (idempotency.key, idempotency.fingerprint, first, last),
                )
            if self.before_commit is not None:
                self.before_commit()
        return [
            RecordedEvent(first + i, new.stream, row[2], new.event_id, stamps.utc(new.occurred_at),
                          new.event, new.correlation_id, new.causation_id, new.actor)
            for i, (new, row) in enumerate(zip(events, rows))
        ]

    def _lookup(self, idempotency: Idempotency) -> tuple[int, int] | None:
        row = self.conn.execute(
            "SELECT fingerprint, first_position, last_position FROM idempotency WHERE key = ?",
            (idempotency.key,),
        ).fetchone()
        if row is None:
            return None
        if row[0] != idempotency.fingerprint:
            raise IdempotencyConflict(
                f"idempotency key {idempotency.key!r} was already used for a different command"
            )
        return row[1], row[2]

    def replayed(self, idempotency: Idempotency) -> list[RecordedEvent] | None:
        span = self._lookup(idempotency)
        if span is None:
            return None
        return list(self.read_all(after_position=span[0] - 1, until_position=span[1]))

    # --- reading ----------------------------------------------------------------------

    def read_stream(self, stream: str, after_version: int = 0,
                    until_position: int | None = None) -> Iterator[RecordedEvent]:
        limit = until_position if until_position is not None else -1
        cursor = self.conn.execute(
            f"SELECT {_COLUMNS} FROM events WHERE stream = ? AND version > ?"
            " AND (? < 0 OR position <= ?) ORDER BY version",
            (stream, after_version, limit, limit),
        )
        decoder = Decoder()
        for row in cursor:
            yield _row_to_event(row, self.keyring, decoder)

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
        sql = (f"SELECT {columns} FROM events WHERE position > ? AND (? IS NULL OR position <= ?)"
               " ORDER BY position LIMIT ?")
        return paged(lambda after, limit: self.conn.execute(sql, (after, until_position, until_position, limit)).fetchall(),
                     after_position, batch, weigh=payload_bytes)

    def read_headers(self, after_position: int = 0, limit: int = 10_000) -> list[tuple[int, str, str]]:
        """(position, stream, type) of the events past a position: enough for a log follower
        to know whom to wake, without decoding payloads."""
        return self.conn.execute(
            "SELECT position, stream, type FROM events WHERE position > ? ORDER BY position LIMIT ?",
            (after_position, limit)).fetchall()

    def position_at(self, moment: datetime) -> int:
        """The last position recorded at or before `moment` (0 if none)."""
        row = self.conn.execute("SELECT COALESCE(MAX(position), 0) FROM events WHERE occurred_at <= ?",
                                (_utc(moment),)).fetchone()
        return int(row[0])

    def holds(self, event_id: uuid.UUID) -> bool:
        return self.conn.execute("SELECT 1 FROM events WHERE event_id = ?", (event_id.bytes,)).fetchone() is not None

    def stream_versions(self, streams: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for start in range(0, len(streams), 500):  # SQLite's bound on parameters per statement
            part = list(streams[start:start + 500])
            marks = ",".join("?" * len(part))
            found.update(self.conn.execute(f"SELECT stream, version FROM streams WHERE stream IN ({marks})",
                                           part).fetchall())
        return {stream: found.get(stream, 0) for stream in streams}

    def stream_version(self, stream: str) -> int:
        row = self.conn.execute("SELECT version FROM streams WHERE stream = ?", (stream,)).fetchone()
        return row[0] if row else 0

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, params).fetchall()

    def head(self) -> int:
        return log_head(self._rows)

    def tally(self, after_position: int, until_position: int, types: Sequence[str]) -> list[EventTally]:
        return tally(self._rows, after_position, until_position, types)

    def close(self) -> None:
        self.conn.close()


class SqliteSession:
    """The read models' port (projections.sql.SqlSession) on the SQLite file."""

    transient_errors = (sqlite3.OperationalError,)

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)

    def upsert_many(self, table: Table, rows: Sequence[Sequence[Any]]) -> None:
        self.executemany(upsert_sql(table), rows)

    def upsert_runs(self, table: Table, runs: Sequence[Sequence[Sequence[Any]]]) -> None:
        """A run whose rows differ in a few columns only (one event's results: all but the
        address, mostly) is one INSERT ... SELECT over a JSON array of those columns, the
        rest bound once: a statement step a row was most of a results row's cost."""
        plain: list[Sequence[Any]] = []  # runs not worth it, in order, one executemany
        for run in runs:
            shared = _shared_insert(table, run) if len(run) >= SHARED_RUN_ROWS else None
            if shared is None:
                plain.extend(run)
                continue
            if plain:
                self.upsert_many(table, plain)
                plain = []
            self.conn.execute(*shared)
        if plain:
            self.upsert_many(table, plain)

    def transaction(self) -> ContextManager[sqlite3.Connection]:
        return transaction(self.conn)

    def lock(self, name: str) -> None:
        """Nothing to do: BEGIN IMMEDIATE already lets one writer in at a time."""

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        self.conn.execute("BEGIN")  # deferred: the first read fixes the snapshot (WAL)
        try:
            yield
        finally:
            self.conn.execute("COMMIT")

    def stream(self, sql: str, params: Sequence[Any] = (), size: int = 2000) -> Iterator[tuple[Any, ...]]:
        cursor = self.conn.execute(sql, params)
        while rows := cursor.fetchmany(size):
            yield from rows

    def create_table(self, table: Table) -> None:
        columns = ", ".join(f"{c} INTEGER" if c in table.ints else f"{c} TEXT" for c in table.columns)
        self.conn.execute(f"CREATE TABLE IF NOT EXISTS {table.name} ({columns},"
                          f" PRIMARY KEY ({', '.join(table.key)})) WITHOUT ROWID")
        for index in table.indexes:
            self.conn.execute(f"CREATE INDEX IF NOT EXISTS {table.name}_{'_'.join(index)}"
                              f" ON {table.name} ({', '.join(index)})")


class SqliteKeyStore:
    """The embedded store's data keys (engine/keyring.py), in the same file."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        conn.execute("CREATE TABLE IF NOT EXISTS data_keys (scope TEXT PRIMARY KEY, key BLOB NOT NULL) WITHOUT ROWID")

    def get(self, scope: str) -> bytes | None:
        row = self.conn.execute("SELECT key FROM data_keys WHERE scope = ?", (scope,)).fetchone()
        return row[0] if row else None

    def put(self, scope: str, key: bytes) -> bytes:
        with transaction(self.conn):
            self.conn.execute("INSERT OR IGNORE INTO data_keys (scope, key) VALUES (?, ?)", (scope, key))
        stored = self.get(scope)
        if stored is None:  # inserted or already there: it must read back
            raise StoreError(f"the data key of {scope} did not persist")
        return stored

    def destroy(self, scope: str) -> None:
        """Deletes the key (secure_delete zeroes its bytes in the file) and folds the WAL back
        into the file and truncates it, so no copy of the key is left in either."""
        with transaction(self.conn):
            self.conn.execute("DELETE FROM data_keys WHERE scope = ?", (scope,))
        for _ in range(50):  # a reader holding an old snapshot delays the truncation a moment
            busy, _, _ = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                return
            time.sleep(0.1)
        raise StoreError("could not fold the WAL back into the store file (a reader holds it); try the erasure again")


SHARED_RUN_ROWS = 50  # a shorter run goes with the executemany of the others
SHARED_RUN_VARYING = 3  # columns extracted from JSON a row: each costs about as much as binding three
_JSON_TYPES = frozenset({str, int, type(None)})  # what a JSON value gives back unchanged
_INT64 = (-(2 ** 63), 2 ** 63)
_shared_sql: dict[tuple[str, tuple[int, ...]], str] = {}


def _shared_insert(table: Table, run: Sequence[Sequence[Any]]) -> tuple[str, tuple[Any, ...]] | None:
    """(statement, parameters) writing `run` as upsert_sql would, row by row and in order, or
    None when its rows differ in too many columns, or hold a value JSON would not give back
    as it is (a float, a bool, a NUL, an integer beyond 64 bits)."""
    first, count = run[0], len(run)
    columns = list(zip(*run))
    varying = tuple(i for i, column in enumerate(columns) if column.count(first[i]) != count)
    if len(varying) > SHARED_RUN_VARYING or not varying:
        return None
    for i in varying:
        kinds = set(map(type, columns[i]))
        if not kinds <= _JSON_TYPES:
            return None
        if int in kinds:
            numbers = [v for v in columns[i] if v is not None]
            if min(numbers) < _INT64[0] or max(numbers) >= _INT64[1]:
                return None
    values = columns[varying[0]] if len(varying) == 1 else list(zip(*(columns[i] for i in varying)))
    payload = json.dumps(values, ensure_ascii=False, separators=(",", ":"))
    if "\\u0000" in payload:
        return None
    key = (table.name + "|" + ",".join(table.columns), varying)
    sql = _shared_sql.get(key)
    if sql is None:
        sql = _shared_sql[key] = _shared_insert_sql(table, varying)
    shared = tuple(v for i, v in enumerate(first) if i not in varying)
    return sql, (*shared, payload)


def _shared_insert_sql(table: Table, varying: tuple[int, ...]) -> str:
    """The shared columns are parameters ?1, ?2, ... in column order; the JSON array the last."""
    select, shared = [], 0
    for i in range(len(table.columns)):
        if i in varying:
            select.append("j.value" if len(varying) == 1 else f"j.value ->> {varying.index(i)}")
        else:
            shared += 1
            select.append(f"?{shared}")
    return upsert_select_sql(table, f"json_each(?{shared + 1}) AS j", select)

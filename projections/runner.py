"""The checkpointed runner: folds new events into read-model tables (in SQLite or
PostgreSQL, through a SqlSession), and stores each projection's position in the same
transaction as its rows, so a crash can neither skip nor double-apply an event.

One event can never wedge the read models: when a batch fails, it is folded again one
event at a time, and a projection whose fold (or row write) fails on an event stops right
before it, with a named error recorded beside its checkpoint (`ProjectionStopped` for
its readers, a violation for `vec audit`). The other projections go on. `rebuild` clears
the record and tries again.
"""
from __future__ import annotations

import hashlib
import logging
from typing import Any, Callable, Iterable, Iterator

from events import RecordedEvent
from events.base import is_sealed
from projections.base import Append, Change, DeleteWhere, Projection, Put, Row, Table
from projections.sql import Rows, SqlSession, upsert_sql

# (after, until) -> the events in (after, until] from the caller's memory, contiguous from
# after + 1, or None when it does not hold them
Recent = Callable[[int, int], "list[RecordedEvent] | None"]
# (table, row) -> the row as stored: its personal columns sealed (engine/keyring.py)
SealRow = Callable[[Table, Row], Row]

log = logging.getLogger("vec.projector")

BATCH = 5000  # events per transaction
FLUSH_ROWS = 20_000  # changed rows a batch holds in memory before writing them (a batch of results: 500 an event)
FETCH = 500  # rows per read: a ChunkSubmitted row can carry thousands of addresses

# Bumped when a fold changes what it writes without changing a table's shape (a status
# renamed, say): stored read models of another version are folded again.
READ_MODELS_VERSION = 3

CHECKPOINTS = Table("rm_checkpoints", ("name", "position"), ("name",), frozenset({"position"}))
STOPPED = Table("rm_stopped", ("name", "position", "error"), ("name",), frozenset({"position"}))
SHAPE = Table("rm_shape", ("id", "digest"), ("id",), frozenset({"id"}))


def checkpoint_positions(rows: Rows) -> dict[str, int]:
    """Each read model's checkpoint, by projection name (`rows`: engine/store/base.py Rows)."""
    return {name: int(position) for name, position in rows(f"SELECT name, position FROM {CHECKPOINTS.name}")}


def stopped_names(rows: Rows) -> set[str]:
    """The read models stopped on an event they could not fold."""
    return {row[0] for row in rows(f"SELECT name FROM {STOPPED.name}")}


class ReadModelsOutdated(Exception):
    """The stored read models have another shape than this code's, and may not be reshaped here."""


class ProjectionStopped(Exception):
    """A read model stopped on an event it could not fold; its readers get this error."""

    def __init__(self, name: str, position: int, message: str):
        super().__init__(f"the {name} read model stopped before position {position}: {message} "
                         "(run `vec audit`; after a fix, `vec rebuild`)")
        self.name, self.position, self.message = name, position, message


class _Poisoned(Exception):
    def __init__(self, name: str, recorded: RecordedEvent, error: BaseException):
        super().__init__(f"{recorded.type} at position {recorded.position}: {type(error).__name__}: {error}")
        self.name, self.position = name, recorded.position


class _SqlView:
    """Rows of the tables as of the last flush, plus this batch's changes held in memory."""

    def __init__(self, sql: SqlSession, specs: dict[str, Table], seal_row: SealRow | None = None):
        self.sql, self.specs, self.seal_row = sql, specs, seal_row
        self.dirty: dict[str, dict[tuple[Any, ...], Row]] = {name: {} for name in specs}
        # rows no fold reads back, one run an Append (what a backend may write in one statement)
        self.appended: dict[str, list[list[tuple[Any, ...]]]] = {name: [] for name in specs}
        self.held = 0  # rows put since the last flush (an upper bound: a row put twice counts twice)

    def get(self, table: str, key: tuple[Any, ...]) -> Row | None:
        """The row itself, not a copy: a fold that fails is discarded with its whole view
        (the batch is folded again, one event at a time, each flushed before the next)."""
        spec = self.specs[table]
        if self.appended[table]:
            self.flush()  # a fold reading a table it appends to sees its rows
        row = self.dirty[table].get(key)
        if row is not None:
            return row
        where = " AND ".join(f"{c} = ?" for c in spec.key)
        found = self.sql.execute(f"SELECT {', '.join(spec.columns)} FROM {table} WHERE {where}", key).fetchone()
        return dict(zip(spec.columns, found)) if found else None

    def apply(self, change: Change) -> None:
        if isinstance(change, Put):
            spec = self.specs[change.table]
            self.dirty[change.table][spec.key_of(change.row)] = change.row
            self.held += 1
        elif isinstance(change, Append):
            self.appended[change.table].append(self._as_stored(self.specs[change.table], change.rows))
            self.held += len(change.rows)
        elif isinstance(change, DeleteWhere):
            self.flush()
            self.sql.execute(f"DELETE FROM {change.table} WHERE {change.column} = ?", (change.value,))

    def discard(self) -> None:
        """Forgets the changes not yet flushed (those of an event that could not be folded)."""
        for rows in self.dirty.values():
            rows.clear()
        for appended in self.appended.values():
            appended.clear()
        self.held = 0

    def flush(self) -> None:
        for name, rows in self.dirty.items():
            if rows:
                self._write(self.specs[name], rows.values())
                rows.clear()
        for name, appended in self.appended.items():
            if appended:
                self.sql.upsert_runs(self.specs[name], appended)  # sealed already: _as_stored
                appended.clear()
        self.held = 0

    def _write(self, spec: Table, rows: Iterable[Row]) -> None:
        if spec.personal and self.seal_row is not None:
            seal_row = self.seal_row
            rows = (seal_row(spec, r) for r in rows)
        self.sql.upsert_many(spec, [spec.values_of(r) for r in rows])

    def _as_stored(self, spec: Table, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """An Append's rows with their personal values sealed. They come from one event, whose
        personal values are all sealed (folded from the log as stored) or none are (this
        process's own events): its first one tells which, one check an event, not one a row."""
        personal = spec.personal_indexes
        if not personal or self.seal_row is None:
            return rows
        first = next((values[i] for values in rows for i in personal if values[i]), None)
        if first is None or is_sealed(first):
            return rows
        seal_row, columns = self.seal_row, spec.columns
        return [spec.values_of(seal_row(spec, dict(zip(columns, values)))) for values in rows]


class ProjectionRunner:
    def __init__(self, sql: SqlSession, projections: Iterable[Projection],
                 read_all: Callable[..., Iterator[RecordedEvent]], reshape: bool = True,
                 seal_row: SealRow | None = None):
        """`reshape`: drop and refold read models of another shape on open (the embedded store,
        one process); a shared store leaves that to `vec migrate`, so that processes of two
        versions never take turns dropping each other's tables."""
        self.sql = sql
        self.seal_row = seal_row
        self.projections = list(projections)
        self.read_all = read_all
        self.specs = {t.name: t for p in self.projections for t in p.tables}
        self._drop_if_shape_changed(reshape)
        for spec in (CHECKPOINTS, STOPPED, *self.specs.values()):
            sql.create_table(spec)

    def _drop_if_shape_changed(self, reshape: bool) -> None:
        """Read models are disposable: when this code's tables differ from the stored ones,
        they are dropped and folded again from the log."""
        shape = hashlib.sha256(repr((READ_MODELS_VERSION, sorted(
            (t.name, t.columns, t.key, sorted(t.ints), t.indexes, sorted(t.personal))
            for t in self.specs.values()))).encode()).hexdigest()
        if reshape:
            self.sql.create_table(SHAPE)
        try:
            stored = self.sql.execute("SELECT digest FROM rm_shape").fetchone()
        except Exception as error:  # noqa: BLE001 - no such table: never migrated
            if self._transient(error):
                raise
            stored = None
        if stored is not None and stored[0] == shape:
            return
        if not reshape:
            raise ReadModelsOutdated("the read models in this store are of another version; run `vec migrate`")
        with self.sql.transaction():
            for name in (*self.specs, CHECKPOINTS.name, STOPPED.name):
                self.sql.execute(f"DROP TABLE IF EXISTS {name}")
            self.sql.execute(upsert_sql(SHAPE), (1, shape))
        if stored is not None:
            log.warning("read models changed shape: dropped, to be folded again from the log")

    def checkpoints(self) -> dict[str, int]:
        stored = dict(self.sql.execute("SELECT name, position FROM rm_checkpoints").fetchall())
        return {p.name: stored.get(p.name, 0) for p in self.projections}

    def stopped(self) -> dict[str, ProjectionStopped]:
        """The projections stopped on an event they could not fold."""
        return {name: ProjectionStopped(name, position, error) for name, position, error in
                self.sql.execute("SELECT name, position, error FROM rm_stopped ORDER BY name").fetchall()}

    def require(self, *names: str) -> None:
        """Raises ProjectionStopped if one of these read models is stopped."""
        for name, stop in self.stopped().items():
            if name in names:
                raise stop

    def catch_up(self, until: int | None = None, max_batches: int | None = None,
                 recent: Recent | None = None, stop_at: dict[str, int] | None = None) -> int:
        """Applies the events past the checkpoints (up to `until`, in at most `max_batches`
        transactions); returns how many were applied. `recent` may hand over events this
        process just appended, so they need not be read back and decoded. `stop_at` holds
        some projections back at a position of their own (an audit's fresh fold)."""
        total = 0
        for _ in iter(int, 1) if max_batches is None else range(max_batches):
            try:
                with self.sql.transaction():
                    done = self._batch(until, recent, stop_at=stop_at or {})
            except Exception as error:
                if self._transient(error):
                    raise
                # some event of the batch cannot be folded: again, one event at a time
                with self.sql.transaction():
                    done = self._batch(until, recent, careful=True, stop_at=stop_at or {})
            total += done
            if done < BATCH:
                break
        return total

    def _transient(self, error: Exception) -> bool:
        """Errors of the database itself (locked, gone, full), not of an event."""
        return isinstance(error, self.sql.transient_errors)

    def _batch(self, until: int | None, recent: Recent | None = None, careful: bool = False,
               stop_at: dict[str, int] | None = None) -> int:
        stop_at = stop_at or {}
        self.sql.lock("vec.projector")
        checkpoints = self.checkpoints()
        stopped = self.stopped()
        running = [p for p in self.projections if p.name not in stopped]
        start = min((checkpoints[p.name] for p in running), default=0)
        end = start + BATCH if until is None else min(start + BATCH, until)
        view = _SqlView(self.sql, self.specs, self.seal_row)
        last = start
        count = 0
        handlers: dict[type, list[Projection]] = {}  # event type -> the running projections that fold it
        handed = recent(start, end) if recent is not None else None
        for recorded in handed or self.read_all(after_position=start, until_position=end, batch=FETCH):
            count += 1
            kind = type(recorded.event)
            folding = handlers.get(kind)
            if folding is None:
                folding = handlers[kind] = [p for p in running if kind in p.handles]
            for projection in folding:
                if not checkpoints[projection.name] < recorded.position <= stop_at.get(projection.name, recorded.position):
                    continue
                if not self._fold(projection, view, recorded, careful):
                    running.remove(projection)
                    handlers.clear()
                    continue
                checkpoints[projection.name] = recorded.position
            last = recorded.position
            if view.held >= FLUSH_ROWS:
                view.flush()  # same transaction: memory stays bounded whatever the events carry
        view.flush()
        if last > start:
            for projection in running:  # past the events it does not fold, too
                position = checkpoints[projection.name]
                checkpoints[projection.name] = max(position, min(last, stop_at.get(projection.name, last)))
            self.sql.executemany(upsert_sql(CHECKPOINTS), [(p.name, checkpoints[p.name]) for p in self.projections])
        return count

    def _fold(self, projection: Projection, view: _SqlView, recorded: RecordedEvent, careful: bool) -> bool:
        """Folds one event into one projection; False when, folding carefully, the projection
        stopped on it (recorded as poisoned)."""
        if careful:
            self.sql.execute("SAVEPOINT one_event")
        try:
            for change in projection.evolve(view, recorded):
                view.apply(change)
            if careful:
                view.flush()
                self.sql.execute("RELEASE SAVEPOINT one_event")
            return True
        except Exception as error:
            if not careful or self._transient(error):
                raise
            view.discard()
            self.sql.execute("ROLLBACK TO SAVEPOINT one_event")
            self.sql.execute("RELEASE SAVEPOINT one_event")
            self._stop(_Poisoned(projection.name, recorded, error))
            return False

    def _stop(self, poisoned: _Poisoned) -> None:
        log.error("read model %s stopped: %s", poisoned.name, poisoned)
        self.sql.execute(upsert_sql(STOPPED), (poisoned.name, poisoned.position, str(poisoned)))

    def rebuild(self) -> int:
        """Drops every read model and folds the whole log again."""
        with self.sql.transaction():
            self.sql.lock("vec.projector")
            for spec in self.specs.values():
                self.sql.execute(f"DELETE FROM {spec.name}")
            self.sql.execute("DELETE FROM rm_checkpoints")
            self.sql.execute("DELETE FROM rm_stopped")
        return self.catch_up()

    def rows(self, table: str) -> Iterator[tuple[Any, ...]]:
        """Every row of a read model, streamed (for audits and comparisons)."""
        spec = self.specs[table]
        return self.sql.stream(f"SELECT {', '.join(spec.columns)} FROM {table}")

    def sorted_rows(self, table: str) -> list[tuple[Any, ...]]:
        return sorted(self.rows(table))

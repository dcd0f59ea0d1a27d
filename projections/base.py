"""What a projection is: a pure fold from (read-only view, event) to row changes.

The same projection runs over an in-memory view (unit tests, `vec audit`'s fresh fold,
`vec replay`) and over SQLite tables (the checkpointed runner), so the live read models
and a rebuild from the log are the same function of the same events.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from operator import itemgetter
from typing import Any, Callable, Iterable, Protocol

from events import RecordedEvent

Row = dict[str, Any]


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    ints: frozenset[str] = frozenset()  # columns holding whole numbers (64-bit); the others hold text
    indexes: tuple[tuple[str, ...], ...] = ()  # secondary indexes the queries need
    personal: frozenset[str] = frozenset()  # columns of personal data: stored sealed (engine/keyring.py)

    def key_of(self, row: Row) -> tuple[Any, ...]:
        return tuple(row[c] for c in self.key)

    @cached_property
    def personal_indexes(self) -> tuple[int, ...]:
        """Where the personal columns are in a row's values."""
        return tuple(i for i, c in enumerate(self.columns) if c in self.personal)

    @cached_property
    def values_of(self) -> Callable[[Row], tuple[Any, ...]]:
        """A row's values in column order (the tuple a statement takes), at C speed."""
        get = itemgetter(*self.columns)
        return get if len(self.columns) > 1 else lambda row: (get(row),)


@dataclass(frozen=True)
class Put:
    table: str
    row: Row


@dataclass(frozen=True)
class DeleteWhere:
    """Delete every row whose `column` equals `value` (e.g. all results of a task)."""

    table: str
    column: str
    value: Any


@dataclass(frozen=True)
class Append:
    """Rows a fold adds whole, in order, reading none back (a batch's results, one row an
    entry), each as its values in the table's column order (no dict a row): written as they
    come; a row whose key is taken replaces it, as a Put would."""

    table: str
    rows: list[tuple[Any, ...]]


Change = Put | DeleteWhere | Append


class View(Protocol):
    def get(self, table: str, key: tuple[Any, ...]) -> Row | None: ...


class Projection(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def tables(self) -> tuple[Table, ...]: ...

    @property
    def handles(self) -> frozenset[type]:
        """The event types `evolve` may change rows on: the runner skips the others."""

    def evolve(self, view: View, recorded: RecordedEvent) -> Iterable[Change]: ...


class InMemoryView:
    """Read models as dicts: the pure fold, with no I/O."""

    def __init__(self, projections: Iterable[Projection]):
        self.projections = list(projections)
        self.specs = {t.name: t for p in self.projections for t in p.tables}
        self.tables: dict[str, dict[tuple[Any, ...], Row]] = {name: {} for name in self.specs}

    def get(self, table: str, key: tuple[Any, ...]) -> Row | None:
        row = self.tables[table].get(key)
        return dict(row) if row is not None else None

    def apply(self, changes: Iterable[Change]) -> None:
        for change in changes:
            rows = self.tables[change.table]
            if isinstance(change, Put):
                rows[self.specs[change.table].key_of(change.row)] = dict(change.row)
            elif isinstance(change, Append):
                spec = self.specs[change.table]
                for values in change.rows:
                    row = dict(zip(spec.columns, values))
                    rows[spec.key_of(row)] = row
            else:
                for key in [k for k, r in rows.items() if r[change.column] == change.value]:
                    del rows[key]

    def fold(self, events: Iterable[RecordedEvent]) -> "InMemoryView":
        handlers: dict[type, list[Projection]] = {}  # event type -> the projections that fold it
        for recorded in events:
            kind = type(recorded.event)
            folding = handlers.get(kind)
            if folding is None:
                folding = handlers[kind] = [p for p in self.projections if kind in p.handles]
            for projection in folding:
                self.apply(projection.evolve(self, recorded))
        return self

    def sorted_rows(self, table: str) -> list[tuple[Any, ...]]:
        spec = self.specs[table]
        return sorted(tuple(row[c] for c in spec.columns) for row in self.tables[table].values())

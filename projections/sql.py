"""What a database must offer to hold the read models: the port both backends implement.

The read models' SQL is written once, with `?` placeholders and portable statements
(`INSERT ... ON CONFLICT ... DO UPDATE`, savepoints); each backend's session adapts the
placeholders and the column types, and says which of its errors are the database's own
(busy, gone: retried) rather than an event's (a row no column can hold: a poison event).
"""
from __future__ import annotations

from typing import Any, ContextManager, Iterable, Iterator, Protocol, Sequence

from projections.base import Table


class Rows(Protocol):
    """Rows of a query on some connection, `?` placeholders. A module that owns a table
    offers its readers functions of this (metrics and the dashboard never name another
    module's table)."""

    def __call__(self, sql: str, params: tuple[Any, ...] = ..., /) -> list[tuple[Any, ...]]: ...


class Cursor(Protocol):
    @property
    def description(self) -> Any: ...

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> tuple[Any, ...] | None: ...

    def fetchall(self) -> list[tuple[Any, ...]]: ...

    def __iter__(self) -> Iterator[tuple[Any, ...]]: ...


class SqlSession(Protocol):
    @property
    def transient_errors(self) -> tuple[type[Exception], ...]:
        """Errors of the database itself (busy, gone): retried, never blamed on an event."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        """Runs one statement (in the current transaction, if one is open)."""

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    def upsert_many(self, table: Table, rows: Sequence[Sequence[Any]]) -> None:
        """Rows of `table` in its column order, each inserted or replacing the row of its key
        (upsert_sql's meaning), in the current transaction: how the projector writes."""

    def upsert_runs(self, table: Table, runs: Sequence[Sequence[Sequence[Any]]]) -> None:
        """upsert_many of the runs' rows, in order; a run is one Append's rows, which share
        most of their values (one event's results), and a backend may write it as one."""

    def transaction(self) -> ContextManager[object]:
        """A write transaction: every call inside runs on one connection, committed at the end
        of the block and rolled back if it raises."""

    def lock(self, name: str) -> None:
        """Inside a transaction: waits until no other process holds `name`, then holds it to
        the end of the transaction (two projectors must never fold the same batch)."""

    def snapshot(self) -> ContextManager[object]:
        """A read-only transaction: every read inside sees one moment of the database."""

    def stream(self, sql: str, params: Sequence[Any] = (), size: int = 2000) -> Iterator[tuple[Any, ...]]:
        """Rows of a query, fetched `size` at a time (constant memory)."""

    def create_table(self, table: Table) -> None:
        """CREATE TABLE IF NOT EXISTS with the backend's types, its key and its indexes."""


def scalar(cursor: Cursor) -> Any:
    """The first column of a query that always returns one row (COUNT, MIN, a subselect)."""
    row = cursor.fetchone()
    if row is None:
        raise LookupError("a query that returns one row returned none")
    return row[0]


def upsert_sql(table: Table) -> str:
    columns = ", ".join(table.columns)
    marks = ", ".join("?" for _ in table.columns)
    return f"INSERT INTO {table.name} ({columns}) VALUES ({marks}) {_on_conflict(table)}"


def upsert_select_sql(table: Table, source: str, select: Sequence[str] | None = None) -> str:
    """upsert_sql of every row a query gives: `select` the expression of each column, in
    the table's order (by default the source's columns of the same names). `WHERE true`:
    SQLite's parser needs a WHERE before ON CONFLICT."""
    columns = ", ".join(table.columns)
    return (f"INSERT INTO {table.name} ({columns}) SELECT {', '.join(select or table.columns)} FROM {source}"
            f" WHERE true {_on_conflict(table)}")


def _on_conflict(table: Table) -> str:
    updates = ", ".join(f"{c} = excluded.{c}" for c in table.columns if c not in table.key)
    conflict = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
    return f"ON CONFLICT ({', '.join(table.key)}) {conflict}"
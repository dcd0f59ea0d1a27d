"""Staged task inputs: the de-duplicated addresses of an upload, waiting to be chunked.

They are not events: the log records what was charged (TaskCreated.address_count) and
each chunk as it is submitted. Rows are staged before the task exists and discarded if
the task is refused. Each upload has its own key (recorded in TaskCreated.upload_id), so
two creates racing for one task id can never overwrite each other's inputs. An upload
left behind by a crash between staging and creating is swept once it is old.
"""
from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from typing import Callable, Iterable

from engine.store.base import staged_row
from engine.store.sqlite import transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS task_inputs (
    upload_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    address TEXT NOT NULL,
    PRIMARY KEY (upload_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY,
    staged_at TEXT NOT NULL
) WITHOUT ROWID;
"""

BATCH = 5000


class SqliteInputs:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        conn.executescript(SCHEMA)

    def stage(self, upload_id: str, addresses: Iterable[str], now: datetime,
              seal: Callable[[str], str] | None = None) -> int:
        """Stores the unique addresses (case-insensitive) in first-seen order; returns how many.
        With `seal` (the task's sealer: engine/keyring.py) they are stored sealed, and compared
        sealed (sealing is deterministic), so no address reaches the disk in plain text.

        The file is read into a TEMP table first: that takes no lock on the main database,
        so a running engine keeps writing while a big upload streams in."""
        seal = seal or (lambda text: text)
        conn = self.conn
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS staging"
                     " (raw_seq INTEGER PRIMARY KEY, hash INTEGER, key TEXT, address TEXT)")
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS repeated (raw_seq INTEGER PRIMARY KEY)")
        conn.execute("BEGIN")
        try:
            conn.execute("DELETE FROM staging")
            batch: list[tuple[int, int, str | None, str]] = []
            for raw_seq, address in enumerate(addresses):
                key, stored = staged_row(address, seal)
                # the key's hash (this process's, of a sealed text) finds the few candidates for a
                # repeat; the key itself is kept only where it is not the address (most are)
                batch.append((raw_seq, hash(key), None if key == stored else key, stored))
                if len(batch) >= BATCH:
                    conn.executemany("INSERT INTO staging VALUES (?,?,?,?)", batch)
                    batch.clear()
            conn.executemany("INSERT INTO staging VALUES (?,?,?,?)", batch)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            with transaction(conn):
                conn.execute("INSERT INTO uploads (upload_id, staged_at) VALUES (?, ?)",
                             (upload_id, now.astimezone(timezone.utc).isoformat()))
                return self._keep_first_seen(upload_id)
        finally:
            conn.execute("DELETE FROM staging")
            conn.execute("DELETE FROM repeated")

    def _keep_first_seen(self, upload_id: str) -> int:
        """The staged rows into task_inputs, each key's first only, numbered in staged order.
        Only rows whose hash another row shares can repeat (a repeated address, or a 64-bit
        collision): those few are compared by key; a sort of a million sealed keys (GROUP BY
        key) was the slowest part of an upload, a sort of their hashes takes a quarter of it."""
        conn, group_hash = self.conn, None
        seen: set[str] = set()  # the keys of one hash: a few, whatever the upload
        batch: list[tuple[int]] = []
        for raw_seq, hashed, key in conn.execute(
                "SELECT raw_seq, hash, COALESCE(key, address) FROM staging WHERE hash IN"
                " (SELECT hash FROM staging GROUP BY hash HAVING COUNT(*) > 1) ORDER BY hash, raw_seq"):
            if hashed != group_hash:
                group_hash, seen = hashed, set()
            if key in seen:
                batch.append((raw_seq,))
            seen.add(key)
            if len(batch) >= BATCH:
                conn.executemany("INSERT INTO repeated VALUES (?)", batch)
                batch.clear()
        conn.executemany("INSERT INTO repeated VALUES (?)", batch)
        if conn.execute("SELECT NOT EXISTS (SELECT 1 FROM repeated)").fetchone()[0]:
            # nothing repeats (most uploads): the staged order is the order, no renumbering
            return int(conn.execute("INSERT INTO task_inputs (upload_id, seq, address)"
                                    " SELECT ?, raw_seq, address FROM staging", (upload_id,)).rowcount)
        return int(conn.execute(
            "INSERT INTO task_inputs (upload_id, seq, address)"
            " SELECT ?, ROW_NUMBER() OVER (ORDER BY raw_seq) - 1, address FROM staging"
            " WHERE raw_seq NOT IN (SELECT raw_seq FROM repeated)", (upload_id,)).rowcount)

    def chunk(self, upload_id: str, chunk_no: int, chunk_size: int,
              open_: Callable[[str], str] | None = None) -> list[str]:
        start = chunk_no * chunk_size
        open_ = open_ or (lambda text: text)
        return [open_(row[0]) for row in self.conn.execute(
            "SELECT address FROM task_inputs WHERE upload_id = ? AND seq >= ? AND seq < ? ORDER BY seq",
            (upload_id, start, start + chunk_size),
        )]

    def staged(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT upload_id, COUNT(*) FROM task_inputs GROUP BY upload_id").fetchall())

    def discard(self, upload_id: str) -> None:
        with transaction(self.conn) as conn:
            conn.execute("DELETE FROM task_inputs WHERE upload_id = ?", (upload_id,))
            conn.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))
        # sqlite3_exec steps it to the end (one execute() would free a single page): the file
        # shrinks by what the upload held
        self.conn.executescript("PRAGMA incremental_vacuum;")

    def sweep(self, staged_before: datetime, keep: Iterable[str]) -> int:
        """Drops uploads staged before a moment that no active task needs; returns how many."""
        cutoff = staged_before.astimezone(timezone.utc).isoformat()
        old = {r[0] for r in self.conn.execute("SELECT upload_id FROM uploads WHERE staged_at < ?", (cutoff,))}
        stale = old - set(keep)  # `keep` may be an iterator: read once
        for upload_id in stale:
            self.discard(upload_id)
        return len(stale)

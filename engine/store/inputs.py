"""Staged task inputs: the de-duplicated addresses of an upload, waiting to be chunked.

They are not events: the log records what was charged (TaskCreated.address_count) and
each chunk as it is submitted. Rows are staged before the task exists and discarded if
the task is refused. Each upload has its own key (recorded in TaskCreated.upload_id), so
two creates racing for one task id can never overwrite each other's inputs.
"""
from __future__ import annotations

import sqlite3
from typing import Iterable

from engine.store.sqlite import transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS task_inputs (
    upload_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    address TEXT NOT NULL,
    PRIMARY KEY (upload_id, seq)
) WITHOUT ROWID;
"""

BATCH = 5000


class SqliteInputs:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        conn.executescript(SCHEMA)

    def stage(self, upload_id: str, addresses: Iterable[str]) -> int:
        """Stores the unique addresses (case-insensitive) in first-seen order; returns how many."""
        with transaction(self.conn) as conn:
            conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS staging (raw_seq INTEGER PRIMARY KEY, key TEXT UNIQUE, address TEXT)"
            )
            conn.execute("DELETE FROM staging")
            batch: list[tuple[int, str, str]] = []
            for raw_seq, address in enumerate(addresses):
                batch.append((raw_seq, address.lower(), address))
                if len(batch) >= BATCH:
                    conn.executemany("INSERT OR IGNORE INTO staging VALUES (?,?,?)", batch)
                    batch.clear()
            conn.executemany("INSERT OR IGNORE INTO staging VALUES (?,?,?)", batch)
            conn.execute(
                "INSERT INTO task_inputs (upload_id, seq, address)"
                " SELECT ?, ROW_NUMBER() OVER (ORDER BY raw_seq) - 1, address FROM staging",
                (upload_id,),
            )
            unique = conn.execute("SELECT COUNT(*) FROM staging").fetchone()[0]
            conn.execute("DELETE FROM staging")
        return unique

    def chunk(self, upload_id: str, chunk_no: int, chunk_size: int) -> list[str]:
        start = chunk_no * chunk_size
        return [row[0] for row in self.conn.execute(
            "SELECT address FROM task_inputs WHERE upload_id = ? AND seq >= ? AND seq < ? ORDER BY seq",
            (upload_id, start, start + chunk_size),
        )]

    def discard(self, upload_id: str) -> None:
        with transaction(self.conn) as conn:
            conn.execute("DELETE FROM task_inputs WHERE upload_id = ?", (upload_id,))

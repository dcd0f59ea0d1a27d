"""The engine lease: which process drives the work, and when it last proved it was alive.

The heartbeat is also the outage clock: on start, the time since the last beat says how
long the engine was down.
"""
from __future__ import annotations

import os
import socket
import sqlite3
from dataclasses import dataclass
from datetime import datetime

from projections.sql import Rows
from engine.store.sqlite import transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS engine_lease (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    holder TEXT NOT NULL,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    heartbeat TEXT NOT NULL
);
"""


def lease_heartbeat(rows: Rows) -> datetime | None:
    """When the holder of the engine lease last beat; None while nobody holds it."""
    found = rows("SELECT holder, heartbeat FROM engine_lease WHERE id = 1")
    if not found or not found[0][0]:
        return None
    beat = found[0][1]
    return beat if isinstance(beat, datetime) else datetime.fromisoformat(beat)


@dataclass(frozen=True)
class LeaseInfo:
    holder: str
    pid: int
    host: str
    heartbeat: datetime

    def alive(self, now: datetime, ttl: float) -> bool:
        if not self.holder:
            return False  # released by a clean stop
        if self.host == socket.gethostname() and not _process_exists(self.pid):
            return False  # crashed (kill -9): no need to wait for the heartbeat to age
        return (now - self.heartbeat).total_seconds() <= ttl


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lease:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        conn.executescript(SCHEMA)

    def current(self) -> LeaseInfo | None:
        row = self.conn.execute("SELECT holder, pid, host, heartbeat FROM engine_lease WHERE id = 1").fetchone()
        return LeaseInfo(row[0], row[1], row[2], datetime.fromisoformat(row[3])) if row else None

    def acquire(self, holder: str, now: datetime, ttl: float) -> LeaseInfo | None:
        """Takes the lease unless a live holder has it. Returns the previous lease (for the
        outage clock) on success; raises LeaseHeld otherwise."""
        with transaction(self.conn):
            previous = self.current()
            if previous is not None and previous.holder != holder and previous.alive(now, ttl):
                raise LeaseHeld(previous)
            self.conn.execute(
                "INSERT INTO engine_lease (id, holder, pid, host, heartbeat) VALUES (1, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, pid = excluded.pid,"
                " host = excluded.host, heartbeat = excluded.heartbeat",
                (holder, os.getpid(), socket.gethostname(), now.isoformat()),
            )
        return previous

    def beat(self, holder: str, now: datetime) -> bool:
        """Renews the heartbeat; False if another process took the lease meanwhile."""
        with transaction(self.conn):
            cursor = self.conn.execute(
                "UPDATE engine_lease SET heartbeat = ? WHERE id = 1 AND holder = ?", (now.isoformat(), holder))
            return cursor.rowcount == 1

    def release(self, holder: str, now: datetime) -> None:
        """A clean stop: keeps the last heartbeat (the outage clock) but frees the lease."""
        with transaction(self.conn):
            self.conn.execute("UPDATE engine_lease SET holder = '', pid = 0, heartbeat = ? WHERE id = 1 AND holder = ?",
                              (now.isoformat(), holder))


class LeaseHeld(Exception):
    def __init__(self, lease: LeaseInfo):
        super().__init__(f"another engine (pid {lease.pid} on {lease.host}) is running on this store")
        self.lease = lease

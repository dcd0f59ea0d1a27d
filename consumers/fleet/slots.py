"""The per-MX session limit across the fleet: slot i of MX host H is a PostgreSQL advisory
lock (key of H, i), held on a connection of this process for as long as the session lasts.
N workers then never hold more than `VEC_PER_MX_CONCURRENCY` sessions to one host together,
and a worker that dies frees its slots with its connection.

The same connection shares the egress routes an MX refused for our address
(verifier.routes.SharedEgressState): a row per (route, MX address) until its cool-down
ends, so one worker's discovery spares the others the refusals."""
from __future__ import annotations

import asyncio
import logging
import zlib
from typing import Any, Callable

import psycopg

from verifier.result import ProviderUnavailable

log = logging.getLogger("vec.worker")

RETRY = 0.05  # seconds between looks for a free slot of a busy host
EGRESS_TABLE = """CREATE TABLE IF NOT EXISTS verifier_egress_blocks (
    route TEXT NOT NULL, mx TEXT NOT NULL, reply TEXT NOT NULL, until TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (route, mx))"""


def host_key(key: tuple[str, int]) -> int:
    """A stable signed 32-bit key for (address, port)."""
    return zlib.crc32(f"{key[0]}:{key[1]}".encode()) - 2**31


class FleetHostSlots:
    def __init__(self, url: str, limit: int):
        self.url, self.limit = url, limit
        self.conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self.lock = asyncio.Lock()  # one query at a time on the connection
        # slots this process holds: PostgreSQL's advisory locks are re-entrant within a
        # session, so a slot held here must never be asked for again
        self.mine: set[tuple[int, int]] = set()
        self.egress_table = False  # verifier_egress_blocks made sure of on this connection
        self.releasing: set[asyncio.Task[None]] = set()  # held here: the loop keeps only weak references

    async def _query(self, sql: str, params: tuple[Any, ...]) -> bool:
        async with self.lock:
            if self.conn is None or self.conn.closed:
                self.conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True, connect_timeout=5)
            cursor = await self.conn.execute(sql, params)
            row = await cursor.fetchone()
            return row is not None and bool(row[0])

    async def _rows(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        async with self.lock:
            if self.conn is None or self.conn.closed:
                self.conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True, connect_timeout=5)
            if not self.egress_table:
                await self.conn.execute(EGRESS_TABLE)
                self.egress_table = True
            cursor = await self.conn.execute(sql, params)
            return await cursor.fetchall() if cursor.description else []

    async def egress_blocks(self, mx_ip: str) -> list[tuple[str, str, float]]:
        return [(route, reply, float(left)) for route, reply, left in await self._rows(
            "SELECT route, reply, EXTRACT(EPOCH FROM until - now()) FROM verifier_egress_blocks"
            " WHERE mx = %s AND until > now()", (mx_ip,))]

    async def share_egress_block(self, route: str, mx_ip: str, reply: str, ttl_s: float) -> None:
        await self._rows(
            "INSERT INTO verifier_egress_blocks (route, mx, reply, until)"
            " VALUES (%s, %s, %s, now() + make_interval(secs => %s))"
            " ON CONFLICT (route, mx) DO UPDATE SET reply = EXCLUDED.reply,"
            " until = GREATEST(verifier_egress_blocks.until, EXCLUDED.until)",
            (route, mx_ip, reply[:500], ttl_s))

    async def acquire(self, key: tuple[str, int]) -> Callable[[], None]:
        host = host_key(key)
        while True:
            for slot in range(self.limit):
                if (host, slot) in self.mine:
                    continue
                self.mine.add((host, slot))  # reserved before the query: another coroutine skips it
                try:
                    won = await self._query("SELECT pg_try_advisory_lock(%s, %s)", (host, slot))
                except psycopg.Error as error:  # an outage of ours: the chunk pauses, nothing settles
                    self.conn = None
                    self.mine.clear()  # the connection is gone, and every lock of it
                    raise ProviderUnavailable(f"the fleet's MX slots (PostgreSQL) are unreachable: {error}") from None
                except BaseException:  # cancelled: the lock may have been granted, so give it back
                    self._release_soon(host, slot)
                    raise
                if won:
                    return lambda: self._release_soon(host, slot)
                self.mine.discard((host, slot))
            await asyncio.sleep(RETRY)

    def _release_soon(self, host: int, slot: int) -> None:
        task = asyncio.get_running_loop().create_task(self._release(host, slot))
        self.releasing.add(task)
        task.add_done_callback(self.releasing.discard)

    async def _release(self, host: int, slot: int) -> None:
        try:
            await self._query("SELECT pg_advisory_unlock(%s, %s)", (host, slot))
        except psycopg.Error as error:  # the connection is gone: so is the lock
            log.warning("releasing an MX slot: %s", error)
        finally:
            self.mine.discard((host, slot))

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()

"""Fair use, counted where every API process sees it.

The embedded store has one API process: its counters live in memory (limits' moving
window). On a PostgreSQL store any number of API processes serve the same keys, so the
counters live in the store's own database (`SqlCounterStorage`, limits' fixed window): N
processes allow the limit once, not N times.
"""
from __future__ import annotations

import time

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage, Storage
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter, RateLimiter

from projections.base import Table
from projections.sql import SqlSession

RATE_COUNTERS = Table("api_rate_counters", ("key", "hits", "expires_ms"), ("key",),
                      frozenset({"hits", "expires_ms"}), indexes=(("expires_ms",),))
SWEEP_EVERY_HITS = 1000  # expired counters are dropped now and then, never on every request


class SqlCounterStorage(Storage):
    """A `limits` storage over the read models' database: one row per (limit, key, window),
    incremented atomically by an upsert, so concurrent processes never lose a hit."""

    STORAGE_SCHEME = ["vec-sql"]

    def __init__(self, sql: SqlSession):
        super().__init__()
        self.sql = sql
        self._hits = 0

    @property
    def base_exceptions(self) -> tuple[type[Exception], ...]:
        return self.sql.transient_errors

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now_ms = _now_ms()
        self._hits += 1
        if self._hits % SWEEP_EVERY_HITS == 0:
            self.sql.execute(f"DELETE FROM {RATE_COUNTERS.name} WHERE expires_ms <= ?", (now_ms,))
        t = RATE_COUNTERS.name
        row = self.sql.execute(
            f"INSERT INTO {t} (key, hits, expires_ms) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
            f" hits = CASE WHEN {t}.expires_ms <= ? THEN excluded.hits ELSE {t}.hits + excluded.hits END,"
            f" expires_ms = CASE WHEN {t}.expires_ms <= ? THEN excluded.expires_ms ELSE {t}.expires_ms END"
            " RETURNING hits", (key, amount, now_ms + expiry * 1000, now_ms, now_ms)).fetchone()
        return int(row[0]) if row else amount

    def get(self, key: str) -> int:
        row = self.sql.execute(f"SELECT hits FROM {RATE_COUNTERS.name} WHERE key = ? AND expires_ms > ?",
                               (key, _now_ms())).fetchone()
        return int(row[0]) if row else 0

    def get_expiry(self, key: str) -> float:
        row = self.sql.execute(f"SELECT expires_ms FROM {RATE_COUNTERS.name} WHERE key = ? AND expires_ms > ?",
                               (key, _now_ms())).fetchone()
        return row[0] / 1000 if row else time.time()

    def check(self) -> bool:
        return self.sql.execute("SELECT 1").fetchone() is not None

    def reset(self) -> int | None:
        self.sql.execute(f"DELETE FROM {RATE_COUNTERS.name}")
        return None

    def clear(self, key: str) -> None:
        self.sql.execute(f"DELETE FROM {RATE_COUNTERS.name} WHERE key = ?", (key,))


def _now_ms() -> int:
    return int(time.time() * 1000)


class Limits:
    """Named limits (`per_key`, `signin`) over one storage: `hit` says whether a request may
    go on, `stats` what is left of each limit."""

    def __init__(self, limiter: RateLimiter, **named: str):
        self.limiter = limiter
        self.items: dict[str, list[RateLimitItem]] = {name: parse_many(text) for name, text in named.items()}

    @classmethod
    def build(cls, sql: SqlSession | None, **named: str) -> "Limits":
        """Shared counters in `sql` when given (PostgreSQL), else in this process's memory."""
        if sql is None:
            return cls(MovingWindowRateLimiter(MemoryStorage()), **named)
        sql.create_table(RATE_COUNTERS)
        return cls(FixedWindowRateLimiter(SqlCounterStorage(sql)), **named)

    def hit(self, name: str, who: str) -> tuple[RateLimitItem, int] | None:
        """None when allowed; else the limit crossed and the seconds until it lets one through."""
        for item in self.items[name]:
            if not self.limiter.hit(item, who):
                reset, _ = self.limiter.get_window_stats(item, who)
                return item, max(1, int(reset - time.time() + 0.999))
        return None

    def stats(self, name: str, who: str) -> list[tuple[RateLimitItem, float, int]]:
        """(limit, reset time, requests left) of each of the named limits."""
        return [(item, *self.limiter.get_window_stats(item, who)) for item in self.items[name]]

"""Dashboard sessions: signing in exchanges the admin token or an API key for a random
session id. The browser keeps only that id (an HttpOnly cookie); the store keeps its
SHA-256, who it signed in as, and when it expires (absolute lifetime and idle timeout).
Signing out deletes the row, so a copied cookie dies with it; a changed admin token or a
revoked key ends its sessions at the next request.

The session never holds the secret it was opened with: an admin session holds a keyed
digest of the admin token it was opened with (a new token, and it no longer matches); a
key session holds the key's id, checked against the account's stream on every request.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from projections.base import Table
from projections.sql import SqlSession

SESSIONS = Table("dashboard_sessions",
                 ("sid_sha256", "kind", "account_id", "key_id", "admin_mark", "created_ms", "seen_ms", "expires_ms"),
                 ("sid_sha256",), frozenset({"created_ms", "seen_ms", "expires_ms"}), indexes=(("expires_ms",),))
SEEN_WRITE_EVERY_MS = 60_000  # the idle clock is moved at most once a minute: no write per page view


class SessionSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VEC_", env_file=".env", extra="ignore")

    dashboard_session_ttl_s: float = Field(8 * 3600.0, gt=0, le=30 * 86400, description="a dashboard session's "
                                           "whole life")
    dashboard_session_idle_s: float = Field(30 * 60.0, gt=0, le=30 * 86400, description="a dashboard session "
                                            "unused this long ends")
    dashboard_signin_limit: str = Field("10/minute;100/hour", description="sign-in attempts per client address "
                                        "(the `limits` notation); more: 429")


@dataclass(frozen=True)
class Session:
    sid_sha256: str
    kind: str  # admin | key
    account_id: str | None
    key_id: str | None
    admin_mark: str | None


def admin_mark(admin_token: str) -> str:
    """What an admin session remembers of the token it was opened with (never the token)."""
    return hmac.new(admin_token.encode(), b"vec-dashboard-session-v1", hashlib.sha256).hexdigest()


def _digest(sid: str) -> str:
    return hashlib.sha256(sid.encode("utf-8", "replace")).hexdigest()


class SessionStore:
    """The sessions table in the read models' database (shared by every API process)."""

    def __init__(self, sql: SqlSession, settings: SessionSettings):
        self.sql, self.settings = sql, settings
        sql.create_table(SESSIONS)

    def open(self, kind: str, account_id: str | None, key_id: str | None, mark: str | None) -> str:
        """A new session; returns its id (shown once, to the browser)."""
        sid = secrets.token_urlsafe(32)
        now_ms = _now_ms()
        expires_ms = now_ms + int(self.settings.dashboard_session_ttl_s * 1000)
        with self.sql.transaction():
            self.sql.execute(f"DELETE FROM {SESSIONS.name} WHERE expires_ms <= ?", (now_ms,))
            self.sql.execute(
                f"INSERT INTO {SESSIONS.name} (sid_sha256, kind, account_id, key_id, admin_mark, created_ms,"
                " seen_ms, expires_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (_digest(sid), kind, account_id or "", key_id or "", mark or "", now_ms, now_ms, expires_ms))
        return sid

    def find(self, sid: str) -> Session | None:
        """The live session of this id (not expired, not idle too long), its idle clock moved."""
        digest, now_ms = _digest(sid), _now_ms()
        row = self.sql.execute(
            f"SELECT kind, account_id, key_id, admin_mark, seen_ms, expires_ms FROM {SESSIONS.name}"
            " WHERE sid_sha256 = ?", (digest,)).fetchone()
        if row is None:
            return None
        kind, account_id, key_id, mark, seen_ms, expires_ms = row
        if expires_ms <= now_ms or seen_ms + self.settings.dashboard_session_idle_s * 1000 <= now_ms:
            self.close(sid)
            return None
        if now_ms - seen_ms >= SEEN_WRITE_EVERY_MS:
            self.sql.execute(f"UPDATE {SESSIONS.name} SET seen_ms = ? WHERE sid_sha256 = ?", (now_ms, digest))
        return Session(digest, kind, account_id or None, key_id or None, mark or None)

    def close(self, sid: str) -> None:
        self.sql.execute(f"DELETE FROM {SESSIONS.name} WHERE sid_sha256 = ?", (_digest(sid),))


def _now_ms() -> int:
    return int(time.time() * 1000)

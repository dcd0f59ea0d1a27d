"""Reads of the read models, for the CLI, the API and dashboards: the same SQL on every
backend (through a SqlSession)."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Iterator, cast

from projections.base import Row
from projections.read_models import (ACTIVITY, API_KEYS, BALANCES, FAILED_CHUNK, HISTORY, NOTIFICATIONS, RESULTS, TASKS,
                                     results_taxonomy)
from projections.sql import Rows, SqlSession
from projections import taxonomy
from projections.exports import BlockOpener, open_in_process, templated_csv_blocks

TASK_FIELDS = ("task_id", "account_id", "kind", "status", "partial_failure", "total", "verified", "unknown",
               "failed", "refunded", "consumed", "debited", "late", "created_at", "finished_at", "created_by",
               "results_deleted_at", "name")
RESULT_FIELDS = ("address", "status", "reason", "detail", "tier", "reply", "mx_host", "flags",
                 *taxonomy.COLUMNS)  # result taxonomy: projections/taxonomy.py


def _task_json(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: row[k] for k in TASK_FIELDS}
    out["account"] = out.pop("account_id")
    out["partial_failure"] = bool(out["partial_failure"])
    return out


def active_task_counts(rows: Rows) -> dict[str, int]:
    """Tasks pending and processing, by status."""
    return {status: int(n) for status, n in rows(
        f"SELECT status, COUNT(*) FROM {TASKS.name} WHERE status IN ('pending', 'processing') GROUP BY status")}


def notification_settings(rows: Rows, account_id: str) -> dict[str, Any] | None:
    """An account's e-mail notification settings as the read model holds them (None: never set)."""
    found = rows(f"SELECT email, on_completion, low_balance_threshold, set_at, set_by FROM {NOTIFICATIONS.name}"
                 " WHERE account_id = ?", (account_id,))
    if not found:
        return None
    email, on_completion, threshold, set_at, set_by = found[0]
    return {"email": email, "on_completion": bool(on_completion), "low_balance_threshold": threshold,
            "set_at": set_at, "set_by": set_by}


def first_notification_position(rows: Rows) -> int | None:
    """The log position of the earliest settings the read model holds (None: none)."""
    found = rows(f"SELECT MIN(position) FROM {NOTIFICATIONS.name}")
    return found[0][0] if found else None


def _result_json(row: dict[str, Any]) -> dict[str, Any]:
    """A results row with its taxonomy flags as booleans (stored 0/1)."""
    for name in taxonomy.FLAG_COLUMNS:
        row[name] = bool(row[name])
    return row


def _result_filter(task_id: str, status: str | None, result: str | None,
                   reason: str | None) -> tuple[str, tuple[Any, ...]]:
    """The WHERE clause of a task's results with the filters given (None: any)."""
    where, params = "task_id = ?", cast(tuple[Any, ...], (task_id,))
    for column, value in (("status", status), ("result", result), ("reason", reason)):
        if value:  # "" is no filter, as None
            where, params = where + f" AND {column} = ?", params + (value,)
    return where, params


class ReadModelQueries:
    def __init__(self, sql: SqlSession, row_opener: Callable[[str], Callable[[Row], Row]] | None = None,
                 blocks_opener: Callable[[str], BlockOpener] | None = None):
        self.sql = sql
        # task id -> (row -> the row with its personal columns opened), engine/keyring.py
        self.row_opener = row_opener or (lambda task_id: lambda row: row)
        # task id -> (blocks of sealed values -> opened), for exports
        self.blocks_opener = blocks_opener or (lambda task_id: open_in_process(lambda value: value))

    def open_row(self, task_id: str, row: Row) -> Row:
        return self.row_opener(task_id)(row)

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        cursor = self.sql.execute(sql, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def task(self, task_id: str) -> dict[str, Any] | None:
        rows = self._rows(f"SELECT * FROM {TASKS.name} WHERE task_id = ? AND deleted = 0", (task_id,))
        return _task_json(rows[0]) if rows else None

    def tasks(self, account_id: str, created_by: str | None = None) -> list[dict[str, Any]]:
        sql = f"SELECT * FROM {TASKS.name} WHERE account_id = ? AND deleted = 0"
        params: tuple[Any, ...] = (account_id,)
        if created_by:
            sql, params = sql + " AND created_by = ?", params + (created_by,)
        return [_task_json(r) for r in self._rows(sql + " ORDER BY created_at, task_id", params)]

    def finished_not_erased(self, before: str) -> list[tuple[str, str, str]]:
        """(task, account, finished at) of tasks finished before `before` whose data is kept."""
        return [tuple(r) for r in self.sql.execute(
            f"SELECT task_id, account_id, finished_at FROM {TASKS.name} WHERE status IN ('completed', 'cancelled',"
            " 'failed') AND finished_at < ? ORDER BY finished_at", (before,)).fetchall()]

    def task_ids_of(self, account_id: str) -> list[str]:
        """Every task of an account, deleted (hidden) ones too."""
        return [r[0] for r in self.sql.execute(
            f"SELECT task_id FROM {TASKS.name} WHERE account_id = ? ORDER BY created_at, task_id",
            (account_id,)).fetchall()]

    def active_task_ids(self) -> list[str]:
        return [r[0] for r in self.sql.execute(
            f"SELECT task_id FROM {TASKS.name} WHERE status IN ('pending', 'processing') ORDER BY created_at"
        ).fetchall()]

    def tasks_reading_inputs(self) -> list[str]:
        """Tasks that still read their staged inputs: active ones (chunks to submit) and failed
        ones whose data is kept (their unprocessed addresses; erasure drops the inputs)."""
        return [r[0] for r in self.sql.execute(
            f"SELECT task_id FROM {TASKS.name} WHERE status IN ('pending', 'processing', 'failed')").fetchall()]

    def balances(self, account_id: str) -> dict[str, Any] | None:
        rows = self._rows(f"SELECT account_id, monthly, payg, total, monthly_expires_at FROM {BALANCES.name}"
                          " WHERE account_id = ?", (account_id,))
        if not rows:
            return None
        row = rows[0]
        return {"account": row["account_id"], "monthly": row["monthly"], "payg": row["payg"], "total": row["total"],
                "monthly_expires_at": row["monthly_expires_at"]}

    def expired_monthly_accounts(self, now: datetime) -> list[str]:
        return [r[0] for r in self.sql.execute(
            f"SELECT account_id FROM {BALANCES.name} WHERE monthly > 0 AND monthly_expires_at <= ?",
            (now.isoformat(),)).fetchall()]

    def history(self, account_id: str, kind: str | None = None, actor: str | None = None) -> list[dict[str, Any]]:
        sql = (f"SELECT seq, occurred_at AS time, type, bucket, amount, balance_after, description, task_id, actor"
               f" FROM {HISTORY.name} WHERE account_id = ?")
        params: tuple[Any, ...] = (account_id,)
        if kind:
            sql += " AND type = ?"
            params += (kind,)
        if actor:
            sql += " AND actor = ?"
            params += (actor,)
        return self._rows(sql + " ORDER BY seq", params)

    def results(self, task_id: str, status: str | None = None) -> Iterator[dict[str, Any]]:
        """Streamed: a task may hold a million results."""
        sql = f"SELECT {', '.join(RESULT_FIELDS)} FROM {RESULTS.name} WHERE task_id = ?"
        params: tuple[Any, ...] = (task_id,)
        if status:
            sql += " AND status = ?"
            params += (status,)
        open_row = self.row_opener(task_id)
        for row in self.sql.stream(sql + " ORDER BY position, address", params):
            yield open_row(_result_json(dict(zip(RESULT_FIELDS, row))))

    # --- the dashboard's overview -----------------------------------------------------------

    def recent_tasks(self, account_id: str | None, limit: int) -> list[dict[str, Any]]:
        """The newest tasks (deleted ones hidden), newest first."""
        sql, params = f"SELECT * FROM {TASKS.name} WHERE deleted = 0", cast(tuple[Any, ...], ())
        if account_id is not None:
            sql, params = sql + " AND account_id = ?", (account_id,)
        return self._rows(sql + " ORDER BY created_at DESC, task_id DESC LIMIT ?", params + (limit,))

    def results_by_status_since(self, account_id: str | None, since: str) -> list[dict[str, Any]]:
        """Results of the tasks created since `since`, counted by status and reason (`n`)."""
        sql = (f"SELECT r.status AS status, r.reason AS reason, COUNT(*) AS n FROM {RESULTS.name} r"
               f" JOIN {TASKS.name} t ON t.task_id = r.task_id WHERE t.created_at >= ? AND t.deleted = 0")
        params: tuple[Any, ...] = (since,)
        if account_id is not None:
            sql, params = sql + " AND t.account_id = ?", params + (account_id,)
        return self._rows(sql + " GROUP BY r.status, r.reason", params)

    def refunds_since(self, account_id: str | None, since: str) -> dict[str, tuple[int, int]]:
        """Credits History refund and cancel rows since `since`: type -> (rows, credits)."""
        sql = (f"SELECT type, COUNT(*), SUM(amount) FROM {HISTORY.name}"
               " WHERE type IN ('refund', 'cancel') AND occurred_at >= ?")
        params: tuple[Any, ...] = (since,)
        if account_id is not None:
            sql, params = sql + " AND account_id = ?", params + (account_id,)
        return {kind: (int(rows), int(credits or 0))
                for kind, rows, credits in self.sql.execute(sql + " GROUP BY type", params).fetchall()}

    def unknown_reasons(self, task_id: str) -> list[dict[str, Any]]:
        """A task's Unknowns by reason (`n`), the commonest first."""
        return self._rows(f"SELECT reason, COUNT(*) AS n FROM {RESULTS.name} WHERE task_id = ? AND status = 'unknown'"
                          " GROUP BY reason ORDER BY n DESC, reason", (task_id,))

    def result_csv(self, task_id: str, columns: tuple[str, ...], status: str | None = None) -> Iterator[str]:
        """The results in export order as CSV (the header, then blocks of lines), streamed:
        what csv_lines makes of the rows. A million rows: the taxonomy columns are not read but
        rendered once per distinct status, reason and flags by the function that wrote them
        (read_models.results_taxonomy), a seven-column read instead of thirteen."""
        fetched = ("address", "status", "reason", "detail", "tier", "reply", "flags")
        sql = f"SELECT {', '.join(fetched)} FROM {RESULTS.name} WHERE task_id = ?"
        params: tuple[Any, ...] = (task_id,)
        if status:
            sql, params = sql + " AND status = ?", params + (status,)

        def cells_of(stored: dict[str, Any]) -> dict[str, Any]:
            derived = results_taxonomy(stored["status"], stored["reason"], stored["flags"])
            return stored | {c: bool(v) if c in taxonomy.FLAG_COLUMNS else v for c, v in derived.items()}

        rows = self.sql.stream(sql + " ORDER BY position, address", params)
        return templated_csv_blocks(rows, columns, fetched, RESULTS.personal, cells_of, self.blocks_opener(task_id))

    def api_key_account(self, key_id: str) -> str | None:
        row = self.sql.execute(f"SELECT account_id FROM {API_KEYS.name} WHERE key_id = ?", (key_id,)).fetchone()
        return row[0] if row else None

    def api_keys(self, account_id: str) -> list[dict[str, Any]]:
        return self._rows(f"SELECT key_id, scopes, label, created_at, revoked_at FROM {API_KEYS.name}"
                          " WHERE account_id = ? ORDER BY created_at, key_id", (account_id,))

    # --- pages (keyset pagination: a page costs the same on the first or the millionth row) ---

    def tasks_page(self, account_id: str | None, status: str | None, after: tuple[str, str] | None,
                   limit: int, created_by: str | None = None) -> list[dict[str, Any]]:
        sql, params = f"SELECT * FROM {TASKS.name} WHERE deleted = 0", cast(tuple[Any, ...], ())
        if account_id is not None:
            sql, params = sql + " AND account_id = ?", params + (account_id,)
        if status:
            sql, params = sql + " AND status = ?", params + (status,)
        if created_by:
            sql, params = sql + " AND created_by = ?", params + (created_by,)
        if after:
            sql, params = sql + " AND (created_at > ? OR (created_at = ? AND task_id > ?))", params + (
                after[0], after[0], after[1])
        return [_task_json(r) for r in self._rows(sql + " ORDER BY created_at, task_id LIMIT ?", params + (limit,))]

    def history_page(self, account_id: str, kind: str | None, after_seq: int, limit: int,
                     actor: str | None = None) -> list[dict[str, Any]]:
        sql = (f"SELECT seq, occurred_at AS time, type, bucket, amount, balance_after, description, task_id, actor"
               f" FROM {HISTORY.name} WHERE account_id = ? AND seq > ?")
        params: tuple[Any, ...] = (account_id, after_seq)
        if kind:
            sql, params = sql + " AND type = ?", params + (kind,)
        if actor:
            sql, params = sql + " AND actor = ?", params + (actor,)
        return self._rows(sql + " ORDER BY seq LIMIT ?", params + (limit,))

    def failed_chunk_addresses(self, task_id: str) -> Iterator[str]:
        """The addresses whose chunk failed (no answer, refunded), opened."""
        open_row = self.row_opener(task_id)
        for row in self.sql.stream(f"SELECT address FROM {RESULTS.name} WHERE task_id = ? AND tier = ?"
                                   " ORDER BY position, address", (task_id, FAILED_CHUNK)):
            yield open_row({"address": row[0]})["address"]

    def results_page(self, task_id: str, status: str | None, after: tuple[int, str] | None,
                     limit: int, result: str | None = None,
                     reason: str | None = None) -> tuple[list[dict[str, Any]], tuple[int, str] | None]:
        """A page of results and the key of its last row (pass it back as `after`); filtered by
        money status, detailed result (projections/taxonomy.py) and reason when given."""
        where, params = _result_filter(task_id, status, result, reason)
        sql = f"SELECT position, {', '.join(RESULT_FIELDS)} FROM {RESULTS.name} WHERE {where}"
        if after:
            sql, params = sql + " AND (position > ? OR (position = ? AND address > ?))", params + (
                after[0], after[0], after[1])
        rows = self._rows(sql + " ORDER BY position, address LIMIT ?", params + (limit,))
        last = (rows[-1]["position"], rows[-1]["address"]) if rows else None  # as stored: the key sorts on it
        return [self.open_row(task_id, _result_json({k: v for k, v in r.items() if k != "position"}))
                for r in rows], last

    def results_count(self, task_id: str, status: str | None = None, result: str | None = None,
                      reason: str | None = None) -> int:
        where, params = _result_filter(task_id, status, result, reason)
        row = self.sql.execute(f"SELECT COUNT(*) FROM {RESULTS.name} WHERE {where}", params).fetchone()
        return int(row[0]) if row else 0

    def results_by(self, task_id: str, column: str) -> list[tuple[str, int]]:
        """(value, count) of a task's results per detailed result, money status or reason."""
        if column not in ("result", "status", "reason"):
            raise ValueError(f"not a column to count results by: {column}")
        return [(r[0] or "", r[1]) for r in self.sql.execute(
            f"SELECT {column}, COUNT(*) FROM {RESULTS.name} WHERE task_id = ? GROUP BY {column}"
            f" ORDER BY {column}", (task_id,)).fetchall()]

    def activity(self, account_id: str | None, since_minute: str) -> list[tuple[str, int, int]]:
        """(UTC minute, results, Unknowns) of the shown tasks (of one account, or all) since
        `since_minute` (`YYYY-MM-DDTHH:MM`), oldest first."""
        sql = (f"SELECT a.minute, SUM(a.results), SUM(a.unknown) FROM {ACTIVITY.name} a"
               f" JOIN {TASKS.name} t ON t.task_id = a.task_id WHERE a.minute >= ? AND t.deleted = 0")
        params: tuple[Any, ...] = (since_minute,)
        if account_id is not None:
            sql, params = sql + " AND t.account_id = ?", params + (account_id,)
        return [(r[0], int(r[1]), int(r[2])) for r in self.sql.execute(
            sql + " GROUP BY a.minute ORDER BY a.minute", params).fetchall()]

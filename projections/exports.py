"""Exports of a task's results, rendered as they stream (never held whole in memory).

CSV cells are made safe for spreadsheets the way OWASP recommends ("CSV Injection"): a
cell that starts with `=`, `+`, `-`, `@`, TAB or CR would be read as a formula, so it gets
a leading single quote (and the csv module quotes and doubles any `"`). The JSON export
keeps every value exactly as it is.
"""
from __future__ import annotations

import csv
import io
from typing import Any, Iterable, Iterator

import orjson

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
RESULT_COLUMNS = ("address", "status", "reason", "detail", "tier", "reply",
                  # result taxonomy (projections/taxonomy.py): the detailed result, its score, the flags
                  "result", "score", "is_disposable", "is_role_account", "is_catch_all", "is_free_email", "mx_found")


LINES_PER_BLOCK = 1000  # rows rendered per string handed to the writer: few writes, little memory


def spreadsheet_safe(value: Any) -> str:
    if value.__class__ is str:  # most cells: the fast path
        return "'" + value if value.startswith(FORMULA_STARTS) else value
    if isinstance(value, bool):  # result taxonomy flags: true/false, as in the JSON export
        return "true" if value else "false"
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_lines(rows: Iterable[dict[str, Any]], columns: Iterable[str] = RESULT_COLUMNS) -> Iterator[str]:
    """The header alone, then blocks of CSV lines (up to LINES_PER_BLOCK rows each)."""
    columns = tuple(columns)
    return csv_blocks(([row.get(c) for c in columns] for row in rows), columns)


def csv_blocks(values: Iterable[list[Any]], columns: tuple[str, ...]) -> Iterator[str]:
    """csv_lines of rows given as lists of values in `columns` order (no dict per row)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)  # RFC 4180 line ends: a CR or LF inside a cell is quoted

    def taken() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(columns)
    yield taken()
    pending = 0
    for row in values:
        writer.writerow([spreadsheet_safe(v) for v in row])
        pending += 1
        if pending == LINES_PER_BLOCK:
            yield taken()
            pending = 0
    if pending:
        yield taken()


def txt_lines(addresses: Iterable[str]) -> Iterator[str]:
    """Addresses only, one per line (an address holds no line break: the reader refuses it)."""
    for address in addresses:
        yield address + "\n"


def json_lines(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    for row in rows:
        yield orjson.dumps(row).decode() + "\n"

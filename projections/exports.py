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


def spreadsheet_safe(value: Any) -> str:
    if isinstance(value, bool):  # result taxonomy flags: true/false, as in the JSON export
        return "true" if value else "false"
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_lines(rows: Iterable[dict[str, Any]], columns: Iterable[str] = RESULT_COLUMNS) -> Iterator[str]:
    """The header, then one CSV line per row."""
    columns = tuple(columns)
    buffer = io.StringIO()
    writer = csv.writer(buffer)  # RFC 4180 line ends: a CR or LF inside a cell is quoted

    def line(cells: Iterable[Any]) -> str:
        writer.writerow(cells)
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    yield line(columns)
    for row in rows:
        yield line(spreadsheet_safe(row.get(c)) for c in columns)


def txt_lines(addresses: Iterable[str]) -> Iterator[str]:
    """Addresses only, one per line (an address holds no line break: the reader refuses it)."""
    for address in addresses:
        yield address + "\n"


def json_lines(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    for row in rows:
        yield orjson.dumps(row).decode() + "\n"

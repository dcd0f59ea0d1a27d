"""Exports of a task's results, rendered as they stream (never held whole in memory).

CSV cells are made safe for spreadsheets the way OWASP recommends ("CSV Injection"): a
cell that starts with `=`, `+`, `-`, `@`, TAB or CR would be read as a formula, so it gets
a leading single quote (and the csv module quotes and doubles any `"`). The JSON export
keeps every value exactly as it is.
"""
from __future__ import annotations

import collections
import csv
import io
import itertools
import operator
from typing import AbstractSet, Any, Callable, Iterable, Iterator, Sequence

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


def csv_cell(text: str) -> str:
    """One cell as csv.writer writes it (excel dialect, QUOTE_MINIMAL): quoted only when it
    holds a comma, a quote or a line break, its quotes doubled."""
    if '"' in text:
        return '"' + text.replace('"', '""') + '"'
    return '"' + text + '"' if "," in text or "\n" in text or "\r" in text else text


LINE_TEMPLATES = 4096  # distinct sets of a row's other cells remembered by an export


# blocks of a task's personal values (None or "" where a row has none) -> each block opened,
# in order; it may read blocks ahead (a worker opens them: engine/sealing_pool.py)
BlockOpener = Callable[[Iterator[list[Any]]], Iterator[list[Any]]]


def templated_csv_blocks(rows: Iterable[Sequence[Any]], columns: tuple[str, ...], fetched: tuple[str, ...],
                         personal: AbstractSet[str], cells_of: Callable[[dict[str, Any]], dict[str, Any]],
                         open_blocks: BlockOpener) -> Iterator[str]:
    """CSV of `columns` (the header, then blocks of lines, as csv_lines writes them) from rows
    fetched as `fetched`: the personal values sealed (opened here, a block at a time), every
    other cell given by `cells_of` from the row's other fetched values. A million rows: those
    repeat (a chunk's results share a status, a reason, a tier and flags), so each distinct set
    is rendered, made safe and quoted once, into a line template the personal cells are put in."""
    key_names = [name for name in fetched if name not in personal]
    key_at = [fetched.index(name) for name in key_names]
    personal_at = [fetched.index(column) for column in columns if column in personal]
    key_of, personal_of = _picker(key_at), _picker(personal_at)
    templates: dict[tuple[Any, ...], str] = {}

    def template(key: tuple[Any, ...]) -> str:
        cells = cells_of(dict(zip(key_names, key)))
        return ",".join("{}" if column in personal
                        else csv_cell(spreadsheet_safe(cells[column])).replace("{", "{{").replace("}", "}}")
                        for column in columns)

    def personal_cell(value: str | None) -> str:
        return csv_cell(spreadsheet_safe(value)) if value else ""

    held: collections.deque[list[Sequence[Any]]] = collections.deque()  # blocks whose values are opening

    def sealed_values() -> Iterator[list[Any]]:
        for block in _blocks(rows, LINES_PER_BLOCK):
            held.append(block)
            yield [value for row in block for value in personal_of(row)]

    yield ",".join(csv_cell(column) for column in columns) + "\r\n"
    width = len(personal_at)
    for opened in open_blocks(sealed_values()):
        lines: list[str] = []
        for n, row in enumerate(held.popleft()):
            key = key_of(row)
            line = templates.get(key)
            if line is None:
                if len(templates) >= LINE_TEMPLATES:
                    templates.clear()
                line = templates[key] = template(key)
            lines.append(line.format(*map(personal_cell, opened[n * width:(n + 1) * width])))
        yield "\r\n".join(lines) + "\r\n"


def _blocks(rows: Iterable[Sequence[Any]], size: int) -> Iterator[list[Sequence[Any]]]:
    it = iter(rows)
    while block := list(itertools.islice(it, size)):
        yield block


def open_in_process(open_: Callable[[str], str]) -> BlockOpener:
    """A BlockOpener that opens each value here, one call a value."""
    return lambda blocks: ([open_(value) if value else value for value in block] for block in blocks)


def _picker(positions: list[int]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """The values at `positions` of a row, as a tuple (itemgetter, in C, whatever their number)."""
    if len(positions) == 1:
        return lambda row: (row[positions[0]],)
    return operator.itemgetter(*positions) if positions else (lambda row: ())


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

"""Exports: CSV safe for spreadsheets (OWASP CSV injection), JSON exact."""
from __future__ import annotations

import csv
import io

import orjson
from hypothesis import given, strategies as st

from projections.exports import (FORMULA_STARTS, csv_cell, csv_lines, json_lines, open_in_process, spreadsheet_safe,
                                templated_csv_blocks)


def test_cells_that_a_spreadsheet_would_run_get_a_leading_quote():
    for start in FORMULA_STARTS:
        assert spreadsheet_safe(f"{start}cmd|' /C calc'!A0@x.com") == f"'{start}cmd|' /C calc'!A0@x.com"
    assert spreadsheet_safe("alice@example.com") == "alice@example.com"
    assert spreadsheet_safe(None) == ""
    assert spreadsheet_safe(550) == "550"


def test_csv_export_neutralises_every_column_and_keeps_quotes_parseable():
    rows = [{"address": "=HYPERLINK(\"http://evil\")@x.com", "status": "safe", "reason": "", "tier": "smtp",
             "detail": "-1+1"}]
    text = "".join(csv_lines(rows))
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert parsed[0]["address"] == "'=HYPERLINK(\"http://evil\")@x.com"
    assert parsed[0]["detail"] == "'-1+1"


@given(st.text())
def test_json_export_keeps_the_exact_value(address):
    [line] = list(json_lines([{"address": address}]))
    assert orjson.loads(line) == {"address": address}


@given(st.text())
def test_no_csv_cell_starts_like_a_formula(value):
    text = "".join(csv_lines([{"address": value}], columns=("address",)))
    [row] = list(csv.reader(io.StringIO(text, newline="")))[1:]
    assert not row[0].startswith(FORMULA_STARTS)
    assert row[0] == spreadsheet_safe(value)


@given(st.lists(st.text(), min_size=2, max_size=4))
def test_a_cell_is_quoted_as_the_csv_module_quotes_it(cells):
    """csv_cell writes what csv.writer writes (rows of two cells or more: a lone empty cell
    is a case of its own, which an export never has)."""
    buffer = io.StringIO()
    csv.writer(buffer).writerow(cells)
    assert ",".join(csv_cell(cell) for cell in cells) + "\r\n" == buffer.getvalue()


CELL = st.one_of(st.none(), st.sampled_from(["", "safe", "=1+1", "a,b", 'say "hi"', "{x}", "}{", "{0}", "-", "x\ny"]),
                 st.text(max_size=8))


@given(st.lists(st.fixed_dictionaries({"address": st.text(min_size=1, max_size=8), "status": CELL, "detail": CELL,
                                       "tier": CELL, "flag": st.sampled_from([0, 1])}), max_size=30))
def test_templated_lines_are_the_lines_csv_lines_writes(rows):
    """An export renders each distinct set of a row's other cells once, as a line template
    (braces in a cell must not be read as fields) with the personal cells put in: the same
    text as csv_lines of the rows, opened, with their flags as booleans."""
    columns = ("address", "status", "detail", "tier", "flag")
    fetched = ("tier", "detail", "address", "status", "flag")  # any order: fetched by name
    sealed = [tuple("~" + r[c] if c in ("address", "detail") and r[c] else r[c] for c in fetched) for r in rows]
    templated = "".join(templated_csv_blocks(
        sealed, columns, fetched, {"address", "detail"}, lambda stored: stored | {"flag": bool(stored["flag"])},
        open_in_process(lambda value: value.removeprefix("~"))))
    assert templated == "".join(csv_lines([r | {"flag": bool(r["flag"])} for r in rows], columns))

"""Exports: CSV safe for spreadsheets (OWASP CSV injection), JSON exact."""
from __future__ import annotations

import csv
import io

import orjson
from hypothesis import given, strategies as st

from projections.exports import FORMULA_STARTS, csv_lines, json_lines, spreadsheet_safe


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

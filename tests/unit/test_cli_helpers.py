"""Small pure helpers of the CLI."""
from __future__ import annotations

from datetime import datetime, timezone

from entrypoints.cli import _cell, end_of_month


def test_end_of_month_in_utc_across_a_year_end():
    assert end_of_month(datetime(2026, 12, 2, 5, tzinfo=timezone.utc)) == datetime(2026, 12, 31, 23, 59, 59,
                                                                                     tzinfo=timezone.utc)
    assert end_of_month(datetime(2028, 2, 10, tzinfo=timezone.utc)) == datetime(2028, 2, 29, 23, 59, 59,
                                                                                  tzinfo=timezone.utc)


def test_cells_of_a_list_are_short_and_times_readable():
    assert _cell("2026-12-02T05:36:44.125274+00:00", 28) == "2026-12-02 05:36:44"
    assert _cell("550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown", 28).endswith("…")
    assert len(_cell("x" * 100, 28)) == 28
    assert _cell(None, 28) == "" and _cell("x" * 100, None) == "x" * 100

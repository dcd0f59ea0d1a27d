"""The dashboard's pictures, as pure functions: the activity read model (results and Unknowns
per task and minute), the binning of minutes into a chart's bins, and the SVG marks (one per
bar or point, labelled, every text escaped)."""
from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from entrypoints.api import charts
from entrypoints.api.dashboard import Problem, _bin_start, result_filter
from events import AddressVerified, ChunkFailed, RecordedEvent, ResultUnknown
from projections.base import InMemoryView
from projections.read_models import ACTIVITY, ActivityProjection

T0 = datetime(2026, 1, 1, 12, 0, 30, tzinfo=timezone.utc)


def at(position: int, seconds: float, event, stream: str = "task-t1") -> RecordedEvent:
    return RecordedEvent(position, stream, position, uuid.uuid4(), T0 + timedelta(seconds=seconds), event)


def test_activity_counts_shown_results_and_unknowns_per_task_and_minute():
    events = [
        at(1, 0, AddressVerified("a@x.test", "safe", "", 0, "smtp")),
        at(2, 10, ResultUnknown("b@x.test", "greylisted", "", 0, "smtp")),
        at(3, 40, AddressVerified("c@x.test", "invalid", "user_unknown", 0, "smtp")),  # the next minute
        at(4, 41, AddressVerified("d@x.test", "safe", "", 0, "smtp", late=True)),  # not shown: not counted
        at(5, 42, ChunkFailed(2, "down", ("e@x.test", "f@x.test"))),  # shown as Unknown rows
        at(6, 43, AddressVerified("g@x.test", "safe", "", 0, "smtp"), stream="task-t2"),
    ]
    view = InMemoryView([ActivityProjection()]).fold(events)
    assert sorted(view.tables[ACTIVITY.name].values(), key=lambda r: (r["task_id"], r["minute"])) == [
        {"task_id": "t1", "minute": "2026-01-01T12:00", "results": 2, "unknown": 1},
        {"task_id": "t1", "minute": "2026-01-01T12:01", "results": 3, "unknown": 2},
        {"task_id": "t2", "minute": "2026-01-01T12:01", "results": 1, "unknown": 0},
    ]


def test_bins_sum_minutes_and_drop_what_lies_outside_the_window():
    start = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    minutes = {start - timedelta(minutes=1): (9, 9), start: (2, 1), start + timedelta(minutes=4): (3, 0),
               start + timedelta(minutes=5): (5, 5), start + timedelta(minutes=10): (7, 7)}
    assert charts.bins(minutes, start, timedelta(minutes=5), 2) == [
        (start, 5, 1), (start + timedelta(minutes=5), 5, 5)]


def test_the_last_bin_holds_now_and_bins_start_on_their_width():
    now = datetime(2026, 1, 1, 12, 7, 13, tzinfo=timezone.utc)
    start = _bin_start(now, timedelta(minutes=5), 12)
    assert start == datetime(2026, 1, 1, 11, 10, tzinfo=timezone.utc)
    assert start + 11 * timedelta(minutes=5) <= now < start + 12 * timedelta(minutes=5)


def test_bar_chart_marks_every_bar_scaled_to_the_largest_and_escapes_labels():
    svg = str(charts.bar_chart([charts.Bar("safe", 40, "r-safe", "/x?result=safe&a=<b>"),
                                charts.Bar("<script>", 10), charts.Bar("none", 0)], "c", "Results & more"))
    marks = re.findall(r'<rect class="bar[^"]*" x="\d+" y="[\d.]+" width="([\d.]+)"[^>]*data-label="([^"]*)"'
                       r' data-value="([^"]*)"', svg)
    assert [(label, value) for _, label, value in marks] == [("safe", "40"), ("&lt;script&gt;", "10"), ("none", "0")]
    widths = [float(w) for w, _, _ in marks]
    assert widths[0] == pytest.approx(4 * widths[1]) and widths[2] == 0
    assert "<script>" not in svg and "Results &amp; more" in svg and 'href="/x?result=safe&amp;a=&lt;b&gt;"' in svg


def test_series_chart_draws_bars_or_a_line_with_gaps_and_says_when_empty():
    t = [T0 + timedelta(minutes=i) for i in range(4)]
    line = str(charts.series_chart([charts.Point(t[0], 10.0), charts.Point(t[1], None), charts.Point(t[2], 50.0),
                                    charts.Point(t[3], 20.0)], "u", "Unknown rate", kind="line", unit="%",
                                   top=100.0))
    assert re.findall(r'<circle[^>]*data-value="([^"]*)"', line) == ["10", "50", "20"]
    assert len(re.findall("<polyline", line)) == 1  # the gap splits the line: a lone dot has none
    assert "100%" in line and "no results" not in line
    empty = str(charts.series_chart([charts.Point(x, 0) for x in t], "b", "Throughput"))
    assert "no results in this window" in empty


@pytest.mark.parametrize("status, result, reason, message", [
    ("maybe", None, None, "no such status: maybe"),
    (None, "great", None, "no such result type: great"),
    (None, None, "x" * 101, "at most 100 characters"),
])
def test_a_bad_filter_is_a_422_naming_what_is_allowed(status, result, reason, message):
    with pytest.raises(Problem) as refused:
        result_filter(status, result, reason, None)
    assert refused.value.status == 422 and message in refused.value.detail


def test_filters_keep_their_values_in_the_next_page_link_and_empty_ones_are_no_filter():
    shown = result_filter("unknown", "", " greylisted ", None)
    assert (shown.status, shown.result, shown.reason) == ("unknown", None, "greylisted")
    assert shown.query(cursor="abc") == "status=unknown&reason=greylisted&cursor=abc"

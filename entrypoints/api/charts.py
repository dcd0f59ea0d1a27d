"""The dashboard's charts: inline SVG built on the server, so a page shows its pictures with
no network, no script and no library. Pure functions: numbers in, markup out (every text
escaped). Colours come from classes styled in static/dashboard.css (the page's CSP allows no
inline style).

Every mark carries `data-label` and `data-value`, and a <title> a browser shows on hover,
so a reader (or a test) can tell what each bar or point stands for.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from markupsafe import Markup, escape

BAR_HEIGHT_PX, BAR_GAP_PX, LABEL_WIDTH_PX, CHART_WIDTH_PX = 22, 6, 120, 640
SERIES_HEIGHT_PX, AXIS_PX = 160, 40


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    css: str = ""  # a class of static/dashboard.css (the bar's colour)
    href: str | None = None  # where a click on the bar leads (a filtered list, say)


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)


def bar_chart(bars: list[Bar], chart_id: str, title: str, unit: str = "") -> Markup:
    """Horizontal bars, one per label, longest = the largest value (an empty chart says so)."""
    rows = len(bars)
    height = max(1, rows) * (BAR_HEIGHT_PX + BAR_GAP_PX) + BAR_GAP_PX
    top = max((b.value for b in bars), default=0) or 1
    span = CHART_WIDTH_PX - LABEL_WIDTH_PX - 70
    parts = [f'<svg class="chart bars" id="{escape(chart_id)}" role="img" viewBox="0 0 {CHART_WIDTH_PX} {height}"'
             f' width="{CHART_WIDTH_PX}" height="{height}" aria-label="{escape(title)}">',
             f"<title>{escape(title)}</title>"]
    for i, bar in enumerate(bars):
        y = BAR_GAP_PX + i * (BAR_HEIGHT_PX + BAR_GAP_PX)
        width = round(span * bar.value / top, 1)
        text = f"{bar.label}: {_num(bar.value)}{unit}"
        mark = (f'<rect class="bar {escape(bar.css)}" x="{LABEL_WIDTH_PX}" y="{y}" width="{width}"'
                f' height="{BAR_HEIGHT_PX}" data-label="{escape(bar.label)}" data-value="{_num(bar.value)}">'
                f"<title>{escape(text)}</title></rect>")
        if bar.href:
            mark = f'<a href="{escape(bar.href)}">{mark}</a>'
        parts += [f'<text class="label" x="{LABEL_WIDTH_PX - 8}" y="{y + BAR_HEIGHT_PX * 0.7}"'
                  f' text-anchor="end">{escape(bar.label)}</text>', mark,
                  f'<text class="value" x="{LABEL_WIDTH_PX + width + 6}" y="{y + BAR_HEIGHT_PX * 0.7}">'
                  f"{_num(bar.value)}{escape(unit)}</text>"]
    if not bars:
        parts.append(f'<text class="empty" x="{CHART_WIDTH_PX / 2}" y="{height / 2 + 4}" text-anchor="middle">'
                     "no data</text>")
    parts.append("</svg>")
    return Markup("".join(parts))


@dataclass(frozen=True)
class Point:
    start: datetime  # the bin's start (UTC)
    value: float | None  # None: nothing to measure in this bin (a gap in a line)


def _x(i: int, count: int) -> float:
    return round(AXIS_PX + (CHART_WIDTH_PX - AXIS_PX - 8) * (i + 0.5) / max(1, count), 1)


def _axis(points: list[Point], top: float, unit: str) -> list[str]:
    bottom = SERIES_HEIGHT_PX - AXIS_PX
    parts = [f'<line class="axis" x1="{AXIS_PX}" y1="{bottom}" x2="{CHART_WIDTH_PX - 8}" y2="{bottom}"/>',
             f'<text class="tick" x="{AXIS_PX - 4}" y="12" text-anchor="end">{_num(top)}{escape(unit)}</text>',
             f'<text class="tick" x="{AXIS_PX - 4}" y="{bottom}" text-anchor="end">0</text>']
    ticks = sorted({0, len(points) // 2, len(points) - 1}) if points else []
    for i in ticks:
        anchor = "start" if i == 0 and len(points) > 1 else "end" if i == len(points) - 1 else "middle"
        parts.append(f'<text class="tick" x="{_x(i, len(points))}" y="{SERIES_HEIGHT_PX - 8}" text-anchor="{anchor}">'
                     f"{points[i].start.strftime('%m-%d %H:%M')}</text>")
    return parts


def series_chart(points: list[Point], chart_id: str, title: str, kind: str = "bars", unit: str = "",
                 top: float | None = None) -> Markup:
    """Values over time, one mark per bin: bars (counts) or a line with dots (rates);
    `top` fixes the scale (100 for a percentage), else the largest value sets it."""
    bottom = SERIES_HEIGHT_PX - AXIS_PX
    scale = top or max((p.value for p in points if p.value is not None), default=0) or 1
    step = (CHART_WIDTH_PX - AXIS_PX - 8) / max(1, len(points))
    parts = [f'<svg class="chart series {escape(kind)}" id="{escape(chart_id)}" role="img"'
             f' viewBox="0 0 {CHART_WIDTH_PX} {SERIES_HEIGHT_PX}" width="{CHART_WIDTH_PX}" height="{SERIES_HEIGHT_PX}"'
             f' aria-label="{escape(title)}">', f"<title>{escape(title)}</title>", *_axis(points, scale, unit)]
    line: list[str] = []
    for i, point in enumerate(points):
        if point.value is None:
            if len(line) > 1:
                parts.append(f'<polyline class="line" points="{" ".join(line)}"/>')
            line = []
            continue
        x, h = _x(i, len(points)), round((bottom - 14) * point.value / scale, 1)
        label = f"{point.start.strftime('%Y-%m-%d %H:%M')} UTC"
        tip = f"<title>{escape(label)}: {_num(point.value)}{escape(unit)}</title>"
        data = f'data-label="{escape(label)}" data-value="{_num(point.value)}"'
        if kind == "bars":
            parts.append(f'<rect class="bar" x="{round(x - step * 0.4, 1)}" y="{bottom - h}" width="{round(step * 0.8, 1)}"'
                         f' height="{h}" {data}>{tip}</rect>')
        else:
            line.append(f"{x},{bottom - h}")
            parts.append(f'<circle class="dot" cx="{x}" cy="{bottom - h}" r="3" {data}>{tip}</circle>')
    if len(line) > 1:
        parts.append(f'<polyline class="line" points="{" ".join(line)}"/>')
    if all(p.value is None or (kind == "bars" and p.value == 0) for p in points):
        parts.append(f'<text class="empty" x="{CHART_WIDTH_PX / 2}" y="{bottom / 2}" text-anchor="middle">'
                     "no results in this window</text>")
    parts.append("</svg>")
    return Markup("".join(parts))


def bins(counts: dict[datetime, tuple[int, int]], start: datetime, width: timedelta,
         count: int) -> list[tuple[datetime, int, int]]:
    """Per-minute (results, unknown) summed into `count` bins of `width` from `start`
    (minutes outside the window are dropped)."""
    results_in = [0] * count
    unknown_in = [0] * count
    for minute, (results, unknown) in counts.items():
        i = int((minute - start) // width)
        if 0 <= i < count:
            results_in[i] += results
            unknown_in[i] += unknown
    return [(start + i * width, results_in[i], unknown_in[i]) for i in range(count)]

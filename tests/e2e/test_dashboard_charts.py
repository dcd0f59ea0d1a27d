"""The ops dashboard's results pages and charts in a real browser (Debian's Chromium, headless,
driven by playwright) against `vec serve` started as a real process (embedded SQLite store,
engine in the same process) with the instant provider: the local part decides the result
(safe*, invalid*, risky* = catch-all, unknown* = greylisted), so the counts are known.

The admin uploads 130 addresses, pages through the results 50 at a time, filters them by
status, result type and reason, reads the chart of results by type (and clicks a bar to get
that type's list), then reads the overview's throughput and Unknown-rate charts over the last
hour. Charts are inline SVG rendered by the server: nothing is fetched to draw them.
"""
from __future__ import annotations

import re

import pytest

from tests.e2e.cli import Vec
from tests.e2e.test_dashboard import _free_port, browser_session, serving

ADMIN_TOKEN = "dashboard-charts-admin-token"
COUNTS = {"safe": 40, "invalid": 30, "risky": 30, "unknown": 30}  # local-part prefix -> addresses
TOTAL = sum(COUNTS.values())
RESULT_OF = {"safe": "safe", "invalid": "invalid", "risky": "catch_all", "unknown": "unknown"}


@pytest.fixture
def served_instant(tmp_path):
    port = _free_port()
    env = {"VEC_STORE": f"sqlite:///{tmp_path}/vec.db", "VEC_PROVIDER": "instant", "VEC_ALLOW_TEST_DOMAINS": "true",
           "VEC_LOOPBACK_ONLY": "true", "VEC_HEARTBEAT_INTERVAL": "0.3", "VEC_POLL_INTERVAL": "0.1",
           "VEC_CHUNK_SIZE": "20", "VEC_RESULTS_FLUSH_INTERVAL": "0.3", "VEC_API_HOST": "127.0.0.1",
           "VEC_API_PORT": str(port), "VEC_ADMIN_TOKEN": ADMIN_TOKEN}
    vec = Vec(env, tmp_path)
    vec.run("account", "open", "acme")
    with serving(vec, tmp_path, port) as (url, log):
        yield url, log


def _marks(page, chart: str, mark: str) -> dict[str, float]:
    return page.eval_on_selector_all(
        f"#{chart} {mark}", "els => Object.fromEntries(els.map(e => [e.dataset.label, Number(e.dataset.value)]))")


def _column(page, attribute: str) -> list[str]:
    return page.eval_on_selector_all("#results tbody tr", f"rs => rs.map(r => r.getAttribute('{attribute}'))")


def _addresses(page) -> list[str]:
    return page.eval_on_selector_all("#results tbody tr td:first-child", "tds => tds.map(t => t.textContent)")


@pytest.mark.timeout(180)
def test_results_page_filter_and_charts_in_chromium(served_instant, tmp_path):
    from playwright.sync_api import expect

    url, log = served_instant
    upload = tmp_path / "mixed.csv"
    upload.write_text("email\n" + "\n".join(f"{kind}{i:03d}@example.test" for kind, n in COUNTS.items()
                                            for i in range(n)) + "\n")
    with browser_session(tmp_path, log) as (context, page, shots):
        requests: list[str] = []
        context.on("request", lambda request: requests.append(request.url))
        page.goto(url + "/dashboard/signin")
        page.fill("#token", ADMIN_TOKEN)
        page.click("#signin")
        expect(page.locator("#who")).to_contain_text("admin")
        page.goto(url + "/dashboard/account?id=acme")
        page.set_input_files("#file", str(upload))
        page.click("#upload")
        expect(page).to_have_url(re.compile(r".*/dashboard/tasks/[0-9a-f]{32}$"))
        task_page = page.url
        # the page reloads itself when the task ends: then its results are final
        expect(page.locator("#task .badges")).to_contain_text("completed", timeout=60_000)
        shots.take(page, "task-completed")
        _pages_through_the_results(page, expect)
        _filters_the_results(page, expect, task_page)
        shots.take(page, "task-filtered")
        _reads_the_type_chart(page, expect, task_page)
        _reads_the_overview_charts(page, expect, url)
        shots.take(page, "overview-charts")
        # nothing fetched from elsewhere: the charts are in the pages
        assert all(r.startswith(url) for r in requests), [r for r in requests if not r.startswith(url)]


def _pages_through_the_results(page, expect) -> None:
    expect(page.locator("#results-range")).to_contain_text(f"1–50 of {TOTAL}")
    expect(page.locator("#results thead")).to_contain_text("Score")
    seen = _addresses(page)
    assert len(seen) == 50
    assert page.locator("#page-first").count() == 0
    page.click("#page-next")
    expect(page.locator("#results-range")).to_contain_text(f"51–100 of {TOTAL}")
    seen += _addresses(page)
    page.click("#page-next")
    expect(page.locator("#results-range")).to_contain_text(f"101–{TOTAL} of {TOTAL}")
    seen += _addresses(page)
    assert page.locator("#page-next").count() == 0  # the last page
    assert sorted(seen) == sorted(f"{kind}{i:03d}@example.test" for kind, n in COUNTS.items() for i in range(n))
    page.click("#page-first")
    expect(page.locator("#results-range")).to_contain_text(f"1–50 of {TOTAL}")


def _filters_the_results(page, expect, task_page: str) -> None:
    page.select_option("#filter-status", "unknown")  # applies on change (the page's JavaScript)
    expect(page.locator("#results-range")).to_contain_text(f"1–30 of 30 matching (of {TOTAL})")
    assert set(_column(page, "data-status")) == {"unknown"}
    assert all(a.startswith("unknown") for a in _addresses(page))
    assert page.locator("#page-next").count() == 0
    page.select_option("#filter-reason", "greylisted")
    expect(page).to_have_url(re.compile(r".*status=unknown&result=&reason=greylisted.*"))
    expect(page.locator("#results-range")).to_contain_text("1–30 of 30 matching")
    page.click("#filter-clear")
    expect(page.locator("#results-range")).to_contain_text(f"1–50 of {TOTAL}")
    page.select_option("#filter-result", "catch_all")
    expect(page.locator("#results-range")).to_contain_text("1–30 of 30 matching")
    assert set(_column(page, "data-result")) == {"catch_all"}
    row = page.locator("#results tbody tr").first
    expect(row).to_contain_text("71")  # Catch-All's score (projections/taxonomy.py)
    expect(row.locator("td.flags")).to_contain_text("catch-all")
    page.select_option("#filter-status", "safe")  # catch-all and safe: nothing is both
    expect(page.locator("#results tbody")).to_contain_text("no results match these filters")
    page.goto(task_page + "?status=maybe")
    expect(page.locator(".error")).to_contain_text("no such status: maybe")


def _reads_the_type_chart(page, expect, task_page: str) -> None:
    page.goto(task_page)
    bars = _marks(page, "chart-types", "rect")
    expected = {result: 0 for result in ("safe", "role_account", "catch_all", "disposable", "inbox_full",
                                         "disabled", "invalid", "unknown")}
    expected.update({RESULT_OF[kind]: n for kind, n in COUNTS.items()})
    assert bars == expected
    page.click('#chart-types rect[data-label="invalid"]')
    expect(page.locator("#results-range")).to_contain_text("1–30 of 30 matching")
    assert set(_column(page, "data-result")) == {"invalid"}


def _reads_the_overview_charts(page, expect, url: str) -> None:
    page.goto(url + "/dashboard/")
    expect(page.locator("#spans strong")).to_have_text("24h")
    page.click('#spans a:text("1h")')
    expect(page.locator("#spans strong")).to_have_text("1h")
    expect(page.locator("#activity")).to_contain_text(f"{TOTAL} results, {COUNTS['unknown']} Unknown")
    throughput = _marks(page, "chart-throughput", "rect")
    assert sum(throughput.values()) == TOTAL, throughput
    rates = _marks(page, "chart-unknown-rate", "circle")
    assert rates and all(0 <= v <= 100 for v in rates.values()), rates
    # each minute's rate times its results gives back the Unknowns (rates are rounded to 0.1 %)
    unknown = sum(rates[label] * throughput[label] / 100 for label in rates)
    assert abs(unknown - COUNTS["unknown"]) < 1, (rates, throughput)
    assert set(rates) == {label for label, n in throughput.items() if n}  # a minute without results: no dot

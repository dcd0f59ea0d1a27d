"""The Grafana dashboard (ops/grafana/vec-dashboard.json) against a real Prometheus: `scripts/stack`
starts the distributed mode on loopback (its own PostgreSQL, the broker, the control process
and two workers) and Debian's `prometheus` scraping every one of them each second; a mixed
bulk runs against the loopback mail world; then every PromQL expression of every panel is
evaluated through Prometheus's /api/v1/query (Grafana's variables expanded as Grafana would)
and must succeed, and every panel must show data (a sample that is a number, not NaN).
`promtool check metrics` must pass on every process's /metrics, `scripts/stack status` prints
Prometheus's URL, and `scripts/stack stop` stops it by PID.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.cli import Vec

pytestmark = [pytest.mark.mailworld, pytest.mark.postgres, pytest.mark.kafka, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "scripts" / "stack"
DASHBOARD = ROOT / "ops" / "grafana" / "vec-dashboard.json"
PROMTOOL = os.environ.get("VEC_PROMTOOL_BIN", "/usr/bin/promtool")
SCRAPE_INTERVAL_S = 1
# Grafana's built-in variables, as Grafana would set them for a 1 s scrape and the last 5 minutes
GRAFANA_VARIABLES = {"__rate_interval": "1m", "__interval": "15s", "__interval_ms": "15000", "__range": "5m",
                     "__range_s": "300", "__range_ms": "300000"}
MIXED = ["alice@example.test", "bob@example.test", "nobody@example.test", "full@example.test",
         "disabled@example.test", "anyone@catchall.test", "alice@nx.test", "victim@spamblock.test",
         "alice@closed.test", "carol@example.test", "info@example.test", "dave@example.test"]


def expand(expr: str) -> str:
    """A panel's PromQL with Grafana's variables ($__rate_interval, ${__range}, …) filled in."""
    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in GRAFANA_VARIABLES:
            raise AssertionError(f"the dashboard uses a variable this test cannot expand: ${name} in {expr}")
        return GRAFANA_VARIABLES[name]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def panels(dashboard: dict) -> list[dict]:
    found = []
    for panel in dashboard["panels"]:
        found += panels(panel) if "panels" in panel else []
        if panel.get("targets"):
            found.append(panel)
    return found


def query(url: str, expr: str) -> dict:
    """Prometheus's answer to an instant query (its JSON, errors included)."""
    try:
        with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}",
                                    timeout=10) as answer:
            return json.load(answer)
    except urllib.error.HTTPError as error:  # a bad query is a 400 with a JSON body saying why
        return json.load(error)


def numbers(answer: dict) -> list[float]:
    data = answer.get("data", {})
    if data.get("resultType") == "scalar":
        return [float(data["result"][1])]
    return [float(r["value"][1]) for r in data.get("result", [])]


def evaluate(url: str, dashboard: dict) -> tuple[list[str], list[str]]:
    """(errors, titles of panels with no number) of every panel's expressions."""
    errors, empty = [], []
    for panel in panels(dashboard):
        seen = []
        for target in panel["targets"]:
            answer = query(url, expand(target["expr"]))
            if answer.get("status") != "success":
                errors.append(f"{panel['title']}: {target['expr']}: {answer.get('error')}")
            seen += [v for v in numbers(answer) if not math.isnan(v)]
        if not seen:
            empty.append(f"{panel['title']} ({'; '.join(t['expr'] for t in panel['targets'])})")
    return errors, empty


def wait_for(what: str, check, timeout_s: float = 90.0, last=lambda: ""):
    """Polls `check` until it is true; on timeout, fails saying what `last()` saw."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}{last()}", pytrace=False)
        time.sleep(0.5)


def stack(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(STACK), *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture
def running_stack(mailworld, tmp_path):
    """`scripts/stack start` (two workers, the SMTP provider against the mail world, a scrape
    each second) in a directory user postgres can reach; stopped by `scripts/stack stop`."""
    directory = Path(tempfile.mkdtemp(prefix="vec-stack-", dir="/tmp"))
    directory.chmod(0o755)
    env = {**os.environ, **mailworld.env(), "VEC_ALLOW_TEST_DOMAINS": "true", "VEC_LOOPBACK_ONLY": "true",
           "VEC_SMTP_TIMEOUT": "3", "VEC_RETRY_WINDOW": "1", "VEC_RETRY_BACKOFF": "0.5",
           "VEC_ADDRESS_DEADLINE": "10", "VEC_CHUNK_SIZE": "3", "VEC_RESULTS_FLUSH_INTERVAL": "0.2"}
    started = stack("start", str(directory), "--workers", "2", "--provider", "smtp",
                    "--scrape-interval", str(SCRAPE_INTERVAL_S), env=env)
    try:
        assert started.returncode == 0, started.stderr
        exports = dict(line.removeprefix("export ").split("=", 1) for line in started.stdout.splitlines()
                       if line.startswith("export "))
        state = json.loads((directory / "stack.json").read_text())
        yield Vec({**env, **exports}, tmp_path), state, directory
    finally:
        stopped = stack("stop", str(directory))
        assert stopped.returncode == 0, stopped.stderr
        shutil.rmtree(directory, ignore_errors=True)


def test_every_dashboard_panel_has_data_on_real_prometheus_after_a_bulk(running_stack, tmp_path):
    vec, state, directory = running_stack
    url = state["prometheus"]["url"]
    processes = state["processes"]
    # every process scraped before the bulk: its counters start from a sample at 0
    wait_for("Prometheus to scrape every process", lambda: numbers(query(url, 'count(up{job="vec-roles"} == 1)'))
             == [len(processes)])
    status = stack("status", str(directory))
    assert status.returncode == 0 and f"prometheus pid {state['prometheus']['pid']}" in status.stdout
    assert url in status.stdout

    vec.run("account", "open", "acme")
    (tmp_path / "mixed.csv").write_text("email\n" + "\n".join(MIXED) + "\n")
    task_id = vec.json("bulk", "acme", str(tmp_path / "mixed.csv"))["task_id"]
    task = vec.wait_for(task_id, lambda t: t["status"] not in ("pending", "processing"), timeout=120)
    assert task["status"] == "completed" and task["debited"] == task["consumed"] + task["refunded"], task
    wait_for("Prometheus to see every address settled",
             lambda: numbers(query(url, "sum(max by (status, reason) (vec_addresses_total))")) == [len(MIXED)])

    dashboard = json.loads(DASHBOARD.read_text())
    errors, empty = evaluate(url, dashboard)
    assert not errors, "\n".join(errors)
    # rates need a second sample after the bulk: wait for them, then no panel may be empty
    wait_for("every panel to show data", lambda: not evaluate(url, dashboard)[1], timeout_s=30,
             last=lambda: ": no data in\n" + "\n".join(evaluate(url, dashboard)[1]))
    assert len(panels(dashboard)) > 20

    for process in processes:
        with urllib.request.urlopen(f"http://127.0.0.1:{process['port']}/metrics", timeout=10) as answer:
            exposition = answer.read()
        checked = subprocess.run([PROMTOOL, "check", "metrics"], input=exposition, capture_output=True)
        assert checked.returncode == 0, (process["name"], checked.stdout.decode(), checked.stderr.decode())


def test_grafana_variables_are_expanded_and_an_unknown_one_is_reported():
    assert expand("rate(x[$__rate_interval]) + rate(y[${__range}])") == "rate(x[1m]) + rate(y[5m])"
    with pytest.raises(AssertionError, match="cannot expand"):
        expand("rate(x[$custom])")

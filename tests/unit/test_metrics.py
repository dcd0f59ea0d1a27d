"""Prometheus metrics (consumers/metrics/exporter.py), the verifier's observer hook, JSON logs
(entrypoints/logs.py), and the Grafana dashboard: every metric it queries is exported by a
real scrape of the API and of a runtime after a small bulk."""
from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from consumers.metrics import exporter as metrics
from consumers.providers import InstantProvider
from consumers.runtime import Runtime
from consumers.scheduling import schedule
from consumers.verification import OutageClock, verify_chunk
from entrypoints.settings import EngineSettings
from engine.domain.tasks import Result
from engine.service import Engine
from engine.store import open_database
from verifier import ProviderError, ProviderUnavailable

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "ops" / "grafana" / "vec-dashboard.json"
# families the dashboard shows that may have no sample on an embedded store after one bulk:
# the distributed mode's, the engine's heartbeat (no engine holds the lease once the bulk is
# done), the webhooks consumer's checkpoint (none before it ran), open SMTP sessions (none
# with the instant provider)
MAY_BE_EMPTY = {"vec_relay_lag_events", "vec_fleet_processes", "vec_chunks_claimed",
                "vec_engine_heartbeat_age_seconds", "vec_webhook_lag_events", "vec_smtp_sessions_open"}
ADDRESSES = ["a@x.test", "unknown1@x.test", "invalid@x.test", "risky@x.test", "b@x.test", "unknown2@y.test",
             "c@z.test"]


def scrape(registry) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of a registry's exposition."""
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def sample(name: str, **labels) -> float:
    """A process metric's current value (they are global: tests compare deltas)."""
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def store(tmp_path):
    """A SQLite store after a small bulk (run by the embedded runtime with the instant
    provider) and a second bulk cancelled after one result, then given a late one."""
    settings = EngineSettings(store=f"sqlite:///{tmp_path}/vec.db", provider="instant", chunk_size=3,
                              metrics_cache=0)
    db = open_database(settings.store)
    engine = Engine(db, settings)
    engine.open_account("acme")
    (tmp_path / "list.csv").write_text("\n".join(ADDRESSES) + "\n")
    done = engine.create_bulk("acme", str(tmp_path / "list.csv")).task_id
    asyncio.run(Runtime(engine, InstantProvider(), only_task=done).run())
    (tmp_path / "other.csv").write_text("x@x.test\ny@x.test\n")
    cancelled = engine.create_bulk("acme", str(tmp_path / "other.csv")).task_id
    schedule(engine, cancelled, "instant", "instant", 1)
    engine.record_results(cancelled, 0, [Result("x@x.test", "safe")])
    engine.cancel_task(cancelled)
    engine.record_results(cancelled, 0, [Result("y@x.test", "invalid", "user_unknown")])  # late
    db.catch_up()
    yield settings, engine, done
    db.close()


def test_state_metrics_count_what_the_log_says(store):
    settings, engine, _ = store
    registry = metrics.scrape_registry(settings)
    got = scrape(registry)
    assert value(got, "vec_metrics_store_up") == 1
    assert value(got, "vec_log_head_position") == engine.db.events.head()
    assert value(got, "vec_tasks", status="completed") == 1
    assert value(got, "vec_tasks", status="cancelled") == 1
    assert value(got, "vec_tasks", status="processing") == value(got, "vec_tasks", status="pending") == 0
    assert value(got, "vec_tasks_created_total", kind="bulk") == 2
    assert value(got, "vec_addresses_total", status="safe", reason="") == 4
    assert value(got, "vec_addresses_late_total") == 1
    assert value(got, "vec_addresses_total", status="invalid", reason="") == 1
    assert value(got, "vec_addresses_total", status="risky", reason="") == 1
    assert value(got, "vec_addresses_total", status="unknown", reason="greylisted") == 2
    assert value(got, "vec_credits_debited_total") == 9
    assert value(got, "vec_credits_consumed_total") == 6
    assert value(got, "vec_credits_refunded_total", reason="unknown") == 2
    assert value(got, "vec_credits_refunded_total", reason="cancelled") == 1
    assert value(got, "vec_credits_granted_total", bucket="payg", reason="welcome") == 200
    assert all(value(got, "vec_projection_lag_events", projection=p) == 0
               for p in ("tasks", "credits", "results", "api_keys"))
    # the same as the read models say
    task = engine.db.read.task(store[2])
    assert (task["consumed"], task["refunded"]) == (5, 2)
    # no label of the free-text details (a safe result's "reason" is its detail)
    assert not [k for k in got if k[0] == "vec_addresses_total" and dict(k[1])["reason"] == "instant"]
    registry.store_state.close()


def test_the_log_is_folded_incrementally_a_window_at_a_time(store, monkeypatch):
    settings, engine, _ = store
    monkeypatch.setattr(metrics, "FOLD_WINDOW", 4)
    state = metrics.StoreState(settings.store, cache=0, budget=0)  # one window per scrape
    head = engine.db.events.head()
    folded = []
    for _ in range(head):
        got = {f.name: f for f in state.collect()}
        folded.append(got["vec_metrics_folded_position"].samples[0].value)
        if folded[-1] == head:
            break
    assert folded[:2] == [4, 8] and folded[-1] == head
    engine.open_account("beta")  # new events: only they are folded
    got = {f.name: f for f in state.collect()}
    granted = {tuple(s.labels.values()): s.value for s in got["vec_credits_granted"].samples}
    assert granted[("payg", "welcome")] == 400
    state.close()


def test_a_store_that_is_away_is_a_zero_not_an_error(tmp_path):
    for url in (f"sqlite:///{tmp_path}/no/such/dir/vec.db", f"sqlite:///{tmp_path}/not-yet.db"):
        state = metrics.StoreState(url, cache=0)
        got = {f.name: f for f in state.collect()}
        assert got["vec_metrics_store_up"].samples[0].value == 0
        assert "vec_tasks" not in got
    assert not (tmp_path / "not-yet.db").exists()  # a scrape never creates a store


def test_chunk_latency_outcomes_and_provider_errors():
    settings = EngineSettings(retry_backoff=0, chunk_retries=1)

    class Sink:
        task_id, chunk_no = "t1", 0

        def __init__(self, addresses):
            self.todo = list(addresses)
            self.failed = None

        async def pending(self):
            return list(self.todo)

        async def record(self, results):
            self.todo = [a for a in self.todo if a not in {r.address for r in results}]

        async def fail_chunk(self, error):
            self.failed, self.todo = error, []

        async def fail_task(self, reason):
            self.failed, self.todo = reason, []

    class Flaky:
        name = "flaky"

        def __init__(self, errors):
            self.errors = list(errors)

        async def verify(self, addresses, on_result=None):
            if self.errors:
                raise self.errors.pop(0)
            return [Result(a, "safe") for a in addresses[:-1]]  # the last one: no answer

    before = {k: sample("vec_provider_errors_total", kind=k) for k in metrics.PROVIDER_ERRORS}
    verified, failed = (sample("vec_chunk_seconds_count", outcome=o) for o in ("verified", "chunk_failed"))
    pauses = sample("vec_provider_outage_pauses_total")

    async def main():
        slots = asyncio.Semaphore(1)
        ok = Sink(["a@x.test", "b@x.test"])
        await verify_chunk(Flaky([ProviderUnavailable("down")]), settings, ok, OutageClock(metrics.CHUNK_METRICS), slots)
        assert ok.todo == [] and ok.failed is None
        assert sample("vec_provider_unavailable") == 0  # the call after the pause went through
        bad = Sink(["c@x.test"])
        await verify_chunk(Flaky([ProviderError("no"), ProviderError("no")]), settings, bad, OutageClock(metrics.CHUNK_METRICS), slots)
        assert bad.failed

    asyncio.run(main())
    assert sample("vec_chunk_seconds_count", outcome="verified") == verified + 1
    assert sample("vec_chunk_seconds_count", outcome="chunk_failed") == failed + 1
    assert sample("vec_provider_outage_pauses_total") == pauses + 1
    assert sample("vec_provider_errors_total", kind="unavailable") == before["unavailable"] + 1
    assert sample("vec_provider_errors_total", kind="rejected") == before["rejected"] + 2
    assert sample("vec_provider_errors_total", kind="no_answer") == before["no_answer"] + 1
    assert sample("vec_chunks_in_flight") == 0


def test_the_smtp_prober_reports_through_its_observer():
    from tests.verifier.fakes import FakeDNS, FakeSMTP, free_port, postfix_like
    from verifier import VerifierSettings, build_provider

    mx, dead = "127.0.1.1", "127.0.1.7"
    zone = {"a.test": {"MX": ["10 mx.a.test."]}, "mx.a.test": {"A": [mx]},
            "closed.test": {"MX": ["10 mx.closed.test."]}, "mx.closed.test": {"A": [dead]}}
    metrics.install()
    rcpt = {c: sample("vec_smtp_replies_total", stage="rcpt", **{"class": c}) for c in ("2xx", "5xx")}
    refused = sample("vec_smtp_connect_failures_total", kind="refused")
    sessions = sample("vec_smtp_sessions_total")
    probed = {s: sample("vec_probe_seconds_count", status=s) for s in ("safe", "invalid", "unknown")}
    open_before = dict(metrics.PROBES.open)

    async def main():
        port = free_port([mx, dead])
        dns = FakeDNS(zone)
        server = await FakeSMTP(mx, port).start()
        server.respond = postfix_like({"alice"})
        try:
            settings = VerifierSettings(dns_servers=await dns.start(), smtp_port=port, helo_name="vec.test",
                                        mail_from="probe@vec.test", allow_test_domains=True, loopback_only=True,
                                        smtp_timeout=1.0, dns_timeout=1.0, address_deadline=5.0)
            return await build_provider(settings).verify(["alice@a.test", "nobody@a.test", "x@closed.test"])
        finally:
            server.close()
            dns.close()

    results = {r.address: r.status for r in asyncio.run(main())}
    assert results == {"alice@a.test": "safe", "nobody@a.test": "invalid", "x@closed.test": "unknown"}
    assert sample("vec_smtp_replies_total", stage="rcpt", **{"class": "2xx"}) >= rcpt["2xx"] + 1
    assert sample("vec_smtp_replies_total", stage="rcpt", **{"class": "5xx"}) >= rcpt["5xx"] + 1
    assert sample("vec_smtp_connect_failures_total", kind="refused") == refused + 1
    assert sample("vec_smtp_sessions_total") >= sessions + 1
    assert all(sample("vec_probe_seconds_count", status=s) == probed[s] + 1 for s in probed)
    assert dict(metrics.PROBES.open) == open_before  # every session closed again


def test_open_sessions_per_mx_are_capped():
    probes = metrics.ProbeMetrics(cap=2)
    for mx, n in (("mx1.test", 3), ("mx2.test", 2), ("mx3.test", 1), ("mx4.test", 1)):
        for _ in range(n):
            probes.session_opened(mx)
    probes.session_closed("mx2.test")
    (family,) = probes.collect()
    assert {s.labels["mx"]: s.value for s in family.samples} == {"mx1.test": 3, "mx2.test": 1, "other": 2}


def test_an_observer_that_fails_never_fails_a_probe():
    from verifier import prober

    class Broken:
        def __getattr__(self, name):
            raise RuntimeError("broken observer")

    prober.set_observer(Broken())
    try:
        prober._observe("smtp_reply", "rcpt", 250)
        release = prober.SmtpProber(prober.VerifierSettings())._session_opened(("127.0.0.1", 25), "mx.test")
        release()
    finally:
        metrics.install()


def test_reasons_and_outcomes_outside_the_closed_sets_are_bounded():
    before = sample("vec_smtp_connect_failures_total", kind="other")
    metrics.PROBES.connect_failed("a brand new kind")
    metrics.PROBES.smtp_reply("rcpt", None)
    assert sample("vec_smtp_connect_failures_total", kind="other") == before + 1
    state = metrics.StoreState("sqlite:///unused.db")
    state._count("ResultUnknown", None, "made_up_reason", None, None, False, 2, 0)
    state._count("CreditsRefunded", None, "made_up", None, None, False, 1, 7)
    assert state.counts[("address", "unknown", "other")] == 2
    assert state.counts[("refunded", "other")] == 7


def test_json_log_lines_carry_the_ids():
    from entrypoints.logs import JsonFormatter, log_context

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("vec.test.json")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    try:
        log.info("driving task %s", "T1", extra=metrics.task_ids(None, "T1", account_id="acme", chunk_no=3))
        with log_context(worker_id="w-1", task_id="T2"):
            log.warning("bound")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "driving task T1" and first["level"] == "INFO" and first["logger"] == "vec.test.json"
    assert (first["task_id"], first["account_id"], first["correlation_id"], first["chunk_no"]) == ("T1", "acme",
                                                                                                  "T1", 3)
    assert first["time"].endswith("+00:00") and first["pid"]
    assert (second["worker_id"], second["task_id"]) == ("w-1", "T2")
    assert "ValueError: boom" in third["exc"]


def test_task_ids_name_the_account(store):
    _, engine, task_id = store
    assert metrics.task_ids(engine, task_id) == {"task_id": task_id, "correlation_id": task_id, "account_id": "acme"}
    assert metrics.task_ids(engine, "no-such-task")["account_id"] is None


# --- the dashboard ---------------------------------------------------------------------------

def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert panels and all(p.get("targets") for p in panels), "every panel queries something"
    return [t["expr"] for p in panels for t in p["targets"]]


def queried_metrics() -> set[str]:
    names = set()
    for expr in dashboard_exprs():
        bare = re.sub(r'"[^"]*"', '""', expr)  # label values are not metric names
        names |= set(re.findall(r"\bvec_[a-z0-9_]+\b", bare))
    return names


def test_every_metric_the_dashboard_queries_is_exported(store):
    from fastapi.testclient import TestClient

    from entrypoints.api.app import create_app

    settings, _, _ = store
    with TestClient(create_app(settings)) as client:
        answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    api = list(text_string_to_metric_families(answer.text))
    registry = metrics.scrape_registry(settings)  # what `vec run` serves on VEC_METRICS_PORT
    runtime = list(text_string_to_metric_families(generate_latest(registry).decode()))
    registry.store_state.close()

    declared = {f.name for f in api + runtime} | {s.name for f in api + runtime for s in f.samples}
    with_samples = {s.name for f in api + runtime for s in f.samples}
    queried = queried_metrics()
    assert len(queried) >= 30
    assert queried - declared == set(), "the dashboard queries metrics nobody exports"
    empty = {name for name in queried - with_samples}
    assert {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in empty} <= MAY_BE_EMPTY
    # the API's own scrape has the state: tasks after the bulk
    tasks = next(f for f in api if f.name == "vec_tasks")
    assert {s.labels["status"]: s.value for s in tasks.samples}["completed"] == 1
    # state metrics are the same in every process that exports them: max(), never sum()
    probe = metrics.StoreState(settings.store)
    state = {f.name for f in probe.collect()}
    probe.close()
    for expr in dashboard_exprs():
        for name in state:
            summed = r"\bsum\b(?:\s*(?:by|without)\s*\([^)]*\))?\s*\(\s*(?:(?:rate|increase)\()?\s*"
            assert not re.search(summed + name + r"(?:_total)?\b", expr), expr


def test_the_dashboard_is_valid_promql_shaped_and_provisioned():
    for expr in dashboard_exprs():
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
    board = json.loads(DASHBOARD.read_text())
    datasource = yaml.safe_load((ROOT / "ops/grafana/provisioning/datasources/prometheus.yml").read_text())
    (source,) = datasource["datasources"]
    assert board["templating"]["list"][0]["current"]["value"] == source["uid"]
    assert source["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((ROOT / "ops/grafana/provisioning/dashboards/vec.yml").read_text())["providers"][0]
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in compose["grafana"]["volumes"] if v.startswith("./"))
    assert mounts["./ops/grafana/vec-dashboard.json"].startswith(provider["options"]["path"] + "/")
    assert mounts["./ops/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert any(v.startswith("./ops/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml")
               for v in compose["prometheus"]["volumes"])
    scrape = yaml.safe_load((ROOT / "ops/prometheus/prometheus.yml").read_text())["scrape_configs"]
    roles = next(j for j in scrape if j["job_name"] == "vec-roles")["dns_sd_configs"][0]
    assert set(roles["names"]) == {"relay", "worker", "projector", "watchdog"}
    for role in roles["names"]:
        env = compose[role]["environment"]
        assert int(env["VEC_METRICS_PORT"]) == roles["port"] and env["VEC_METRICS_HOST"] == "0.0.0.0"
    api = next(j for j in scrape if j["job_name"] == "vec-api")["static_configs"][0]["targets"]
    assert api == ["api:8000"] and compose["api"]["command"] == ["vec", "serve"]

"""/metrics of real processes: `vec serve` (the API, engine in the same process) and
`vec run` (VEC_METRICS_PORT) on SQLite with the instant provider, after a bulk; their JSON
logs name the task, its account and its correlation id; and the state metrics on
PostgreSQL (relay lag, the fleet's live processes)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.timeout(90)

VEC = str(Path(sys.executable).parent / "vec")
HOST = "127.0.0.1"
ADDRESSES = ["a@x.test", "unknown1@x.test", "invalid@x.test", "risky@x.test", "b@x.test", "unknown2@y.test",
             "c@z.test"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def environment(tmp_path: Path, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VEC_")}
    return {**env, "VEC_STORE": f"sqlite:///{tmp_path}/vec.db", "VEC_PROVIDER": "instant", "VEC_CHUNK_SIZE": "3",
            "VEC_POLL_INTERVAL": "0.05", "VEC_METRICS_CACHE": "0", **more}


def vec(env: dict, cwd: Path, *args: str) -> str:
    done = subprocess.run([VEC, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"vec {' '.join(args)}: {done.stdout}\n{done.stderr}"
    return done.stdout


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(url, timeout=5) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain")
        text = answer.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def get(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def wait_for_completed(url: str, process: subprocess.Popen, log: Path, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, f"the process stopped:\n{log.read_text()}"
        try:
            samples = scrape(url)
            # the task completes when its last results are recorded, a moment before its chunk is
            # observed and leaves "in flight"
            if get(samples, "vec_tasks", status="completed") == 1 and get(samples, "vec_chunks_in_flight") == 0:
                return samples
        except OSError:
            pass  # not listening yet
        assert time.monotonic() < deadline, f"no completed task at {url}:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def bulk(env: dict, tmp_path: Path) -> str:
    vec(env, tmp_path, "account", "open", "acme")
    (tmp_path / "list.csv").write_text("\n".join(ADDRESSES) + "\n")
    return json.loads(vec(env, tmp_path, "bulk", "acme", "list.csv", "--json"))["task_id"]


def json_lines(log: Path) -> list[dict]:
    lines = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def assert_state_after_the_bulk(samples: dict) -> None:
    assert get(samples, "vec_metrics_store_up") == 1
    assert get(samples, "vec_tasks", status="completed") == 1
    assert get(samples, "vec_tasks_created_total", kind="bulk") == 1
    assert get(samples, "vec_addresses_total", status="safe", reason="") == 3
    assert get(samples, "vec_addresses_total", status="invalid", reason="") == 1
    assert get(samples, "vec_addresses_total", status="risky", reason="") == 1
    assert get(samples, "vec_addresses_total", status="unknown", reason="greylisted") == 2
    assert get(samples, "vec_credits_debited_total") == 7
    assert get(samples, "vec_credits_consumed_total") == 5
    assert get(samples, "vec_credits_refunded_total", reason="unknown") == 2
    assert get(samples, "vec_credits_granted_total", bucket="payg", reason="welcome") == 200
    # the process that ran the bulk counted it where it happened
    assert get(samples, "vec_chunk_seconds_count", outcome="verified") == 3  # 7 addresses, chunks of 3
    assert get(samples, "vec_chunks_in_flight") == 0
    assert get(samples, "vec_engine_commands_total") > 0
    assert get(samples, "vec_engine_conflicts_total") is not None
    assert get(samples, "process_resident_memory_bytes") > 0


def test_vec_serve_exposes_metrics_on_the_api(tmp_path):
    port = free_port()
    env = environment(tmp_path, VEC_API_PORT=str(port), VEC_LOG_FORMAT="json")
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen([VEC, "-v", "serve"], env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        task_id = bulk(env, tmp_path)
        samples = wait_for_completed(f"http://{HOST}:{port}/metrics", server, log)
        assert_state_after_the_bulk(samples)
        assert all(get(samples, "vec_projection_lag_events", projection=p) is not None
                   for p in ("tasks", "credits", "results", "api_keys"))
        assert get(samples, "vec_engine_heartbeat_age_seconds") < 30  # the engine runs in this process
    finally:
        stop(server)
    lines = json_lines(log)
    driving = [line for line in lines if line["message"] == f"driving task {task_id}"]
    assert driving and driving[0]["task_id"] == task_id and driving[0]["account_id"] == "acme"
    assert driving[0]["correlation_id"] == task_id and driving[0]["logger"] == "vec.runtime"


def test_vec_run_serves_metrics_on_its_port_and_logs_json_lines(tmp_path):
    port = free_port()
    env = environment(tmp_path, VEC_METRICS_PORT=str(port))
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        engine = subprocess.Popen([VEC, "--log-format", "json", "-v", "run"], env=env, cwd=tmp_path, stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        task_id = bulk(env, tmp_path)
        samples = wait_for_completed(f"http://{HOST}:{port}/metrics", engine, log)
        assert_state_after_the_bulk(samples)
        assert get(samples, "vec_tasks_driven") == 0  # driven, then done
    finally:
        stop(engine)
    assert engine.returncode == 0, log.read_text()
    lines = json_lines(log)
    assert lines and all({"time", "level", "logger", "message", "pid"} <= set(line) for line in lines)
    mine = [line for line in lines if line.get("task_id") == task_id]
    messages = [line["message"] for line in mine]
    assert f"driving task {task_id}" in messages and f"task {task_id}: completed" in messages
    assert all(line["account_id"] == "acme" and line["correlation_id"] == task_id for line in mine)
    assert f"metrics on http://{HOST}:{port}/metrics" in log.read_text()


def test_vec_run_refuses_a_metrics_port_in_use(tmp_path):
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        env = environment(tmp_path, VEC_METRICS_PORT=str(busy.getsockname()[1]))
        done = subprocess.run([VEC, "run"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "cannot serve metrics on 127.0.0.1" in done.stderr


def test_state_metrics_on_postgresql(pg_url, tmp_path):
    from datetime import datetime, timezone

    from consumers.metrics import exporter as metrics
    from consumers.scheduling import schedule
    from entrypoints.settings import EngineSettings
    from engine.domain.tasks import Result
    from engine.service import Engine
    from engine.store import open_database

    db = open_database(pg_url, migrate=True)
    try:
        settings = EngineSettings(store=pg_url, kafka_bootstrap="127.0.0.1:1", metrics_cache=0)
        engine = Engine(db, settings)
        engine.open_account("acme")
        (tmp_path / "list.csv").write_text("\n".join(ADDRESSES) + "\n")
        task_id = engine.create_bulk("acme", str(tmp_path / "list.csv")).task_id
        schedule(engine, task_id, "instant", "instant", 1)
        engine.record_results(task_id, 0, [Result("a@x.test", "safe"), Result("unknown1@x.test", "unknown",
                                                                              "greylisted")])
        engine.cancel_task(task_id)
        engine.record_results(task_id, 0, [Result("invalid@x.test", "invalid", "user_unknown")])  # late
        db.catch_up()
        now = datetime.now(timezone.utc)
        db.fleet.beat("w-1", "worker", "host", 1, now, "ready")
        db.fleet.beat("w-2", "projector,relay,watchdog", "host", 2, now, "ready")
        db.fleet.claim(task_id, 0, "w-1", now, now)
        with db.events.pool.connection() as conn:
            conn.execute("INSERT INTO relay_position (id, position) VALUES (1, 2)"
                         " ON CONFLICT (id) DO UPDATE SET position = excluded.position")
        head = db.events.head()
        state = metrics.StoreState.of(settings)
        got = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in state.collect() for s in f.samples}
        state.close()
    finally:
        db.close()
    assert got[("vec_metrics_store_up", ())] == 1
    assert got[("vec_log_head_position", ())] == head
    assert got[("vec_relay_lag_events", ())] == head - 2
    assert {role: got[("vec_fleet_processes", (("role", role),))] for role in metrics.ROLES} == {
        "worker": 1, "projector": 1, "relay": 1, "watchdog": 1}
    assert got[("vec_chunks_claimed", ())] == 1
    assert got[("vec_tasks", (("status", "cancelled"),))] == 1
    assert got[("vec_credits_debited_total", ())] == 7
    assert got[("vec_credits_refunded_total", (("reason", "cancelled"),))] == 5
    assert got[("vec_credits_refunded_total", (("reason", "unknown"),))] == 1
    assert got[("vec_credits_consumed_total", ())] == 1
    assert got[("vec_addresses_total", (("reason", ""), ("status", "safe")))] == 1
    assert got[("vec_addresses_total", (("reason", "greylisted"), ("status", "unknown")))] == 1
    assert got[("vec_addresses_late_total", ())] == 1
    assert got[("vec_credits_granted_total", (("bucket", "payg"), ("reason", "welcome")))] == 200
    assert got[("vec_projection_lag_events", (("projection", "tasks"),))] == 0

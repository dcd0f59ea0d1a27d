"""Traces (engine/tracing.py) in one process, with the SDK's in-memory exporter: one bulk
uploaded through the HTTP API and run by the embedded runtime is one trace (its id is the
task's id) from the upload to its last result, linked to the upload's HTTP request span;
the Kafka-header helpers carry a context across; and with tracing off (the default) no
part of the OpenTelemetry SDK is even imported."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest

from engine import tracing

ADMIN = "tracing-test-admin"
ADDRESSES = ["a@x.test", "unknown1@x.test", "invalid@x.test", "risky@x.test", "b@x.test", "c@y.test",
             "unknown2@y.test", "d@z.test", "e@z.test", "f@z.test"]
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def spans():
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tracing.install(SimpleSpanProcessor(exporter), "vec-test")
    yield exporter
    tracing.uninstall()


def _run_bulk(tmp_path) -> str:
    """Uploads ADDRESSES through the API (the client sends its own traceparent), then runs
    the embedded engine until the task is done; returns the task id."""
    from fastapi.testclient import TestClient

    from consumers.providers import InstantProvider
    from consumers.runtime import Runtime
    from entrypoints.settings import EngineSettings
    from engine.service import Engine
    from engine.store import open_database
    from entrypoints.api.app import create_app

    settings = EngineSettings(store=f"sqlite:///{tmp_path}/vec.db", provider="instant", chunk_size=4,
                              admin_token=ADMIN, api_single_wait=0.5)
    with TestClient(create_app(settings)) as client:
        engine = client.app.state.services.engine
        engine.open_account("acme")
        _, key = engine.issue_api_key("acme")
        answer = client.post("/v1/tasks/bulk", content="email\n" + "\n".join(ADDRESSES) + "\n",
                             headers={"Authorization": f"Bearer {key}", "Content-Type": "text/csv",
                                      "traceparent": f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01"})
        assert answer.status_code == 201, answer.text
        task_id = answer.json()["task"]["task_id"]
    db = open_database(settings.store)
    try:
        engine = Engine(db, settings)
        asyncio.run(Runtime(engine, InstantProvider(), only_task=task_id).run())
        assert engine.task(task_id).status == "completed"
    finally:
        db.close()
    return task_id


def test_one_bulk_is_one_trace_from_the_upload_to_its_last_result(tmp_path, spans):
    task_id = _run_bulk(tmp_path)
    finished = spans.get_finished_spans()
    trace = [s for s in finished if s.context.trace_id == int(task_id, 16)]
    by_id = {s.context.span_id: s for s in trace}

    # the upload's HTTP request: the client's trace, tagged with the task it created
    [request] = [s for s in finished if s.kind.name == "SERVER" and s.attributes.get("http.route") == "/v1/tasks/bulk"]
    assert format(request.context.trace_id, "032x") == CLIENT_TRACE
    assert request.attributes["vec.task_id"] == task_id

    # the task's root: trace id = task id, a span id every process can derive, linked to the request
    [root] = [s for s in trace if s.parent is None]
    assert (root.name, root.context.span_id) == ("vec.task.create", tracing.root_span_id(task_id))
    assert [link.context.span_id for link in root.links] == [request.context.span_id]
    assert root.resource.attributes["service.name"] == "vec-test"

    # every span of the trace hangs from the root (a connected tree, nothing orphaned)
    for span in trace:
        if span is not root:
            assert span.parent.span_id in by_id, f"{span.name} has a parent outside the trace"
    appends = [s for s in trace if s.name == "vec.engine.append"]
    created = [s for s in appends if "TaskCreated" in s.attributes["vec.events"]]
    assert [s.parent.span_id for s in created] == [root.context.span_id]
    chunks = [s for s in trace if s.name == "vec.verify_chunk"]
    assert sorted(s.attributes["vec.chunk_no"] for s in chunks) == [0, 1, 2]  # 10 addresses, 4 per chunk
    recorded = [s for s in appends if {"ResultsRecorded"} & set(s.attributes["vec.events"])]
    assert recorded and all(by_id[s.parent.span_id].name == "vec.verify_chunk" for s in recorded)
    last_result = max(recorded, key=lambda s: s.end_time)
    completed = [s for s in appends if "TaskCompleted" in s.attributes["vec.events"]]
    assert completed and completed[0].end_time >= last_result.end_time >= root.start_time


def test_kafka_headers_carry_the_context_and_the_relay_names_work_events(spans):
    task_id = "0123456789abcdef0123456789abcdef"
    assert tracing.event_headers("TaskCreated", None, 1) == []  # an account's event: no task, no trace
    assert tracing.event_headers("TaskCreated", "acme", 1) == []
    quiet = dict(tracing.event_headers("ResultsRecorded", task_id, 7))
    assert quiet["traceparent"] == f"00-{task_id}-{tracing.root_span_id(task_id):016x}-01".encode()
    assert not spans.get_finished_spans()  # results ride on the root: no span each
    work = dict(tracing.event_headers("ChunkSubmitted", task_id, 8))
    [publish] = spans.get_finished_spans()
    assert (publish.name, publish.kind.name, publish.parent.span_id) == ("vec.relay.publish", "PRODUCER",
                                                                        tracing.root_span_id(task_id))
    assert work["traceparent"] == f"00-{task_id}-{publish.context.span_id:016x}-01".encode()
    # a consumer continues it, from headers as a mapping or as (key, value) pairs
    for carrier in (work, list(work.items())):
        with tracing.span("vec.fleet.verify_chunk", task_id, carrier, kind="consumer") as child:
            assert child.parent.span_id == publish.context.span_id
    assert tracing.extract([("traceparent", b"garbage")]) is None


@pytest.mark.parametrize("env, on", [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "VEC_TRACING": "off"}, False),
    ({"VEC_TRACING": "otlp"}, True),
])
def test_tracing_is_on_only_when_configured(env, on):
    assert tracing.wanted(env=env) is on


def test_off_by_default_nothing_of_the_sdk_is_imported(tmp_path):
    """A bulk through the API and the embedded engine, tracing off: no SDK module loaded."""
    code = textwrap.dedent(f"""
        import os, sys
        for name in [n for n in os.environ if n.startswith("OTEL_") or n == "VEC_TRACING"]:
            del os.environ[name]
        from pathlib import Path
        from tests.integration.test_tracing import _run_bulk
        from engine import tracing
        _run_bulk(Path({str(tmp_path)!r}))
        assert not tracing.enabled()
        loaded = sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk", "opentelemetry.exporter",
                                                                "opentelemetry.instrumentation")))
        assert not loaded, loaded
        print("no sdk")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "no sdk" in done.stdout, done.stderr

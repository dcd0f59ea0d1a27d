"""One bulk's trace across processes: `vec serve` (the API alone, distributed mode), the
control process (relay, projector, watchdog) and a worker (`vec run --role ...`), on
PostgreSQL and the broker, each exporting its spans by OTLP/HTTP (the standard
OTEL_EXPORTER_OTLP_ENDPOINT) to a small OTLP receiver in this test, which decodes them with
the OTLP protobuf classes. The trace (its id: the task's id) runs from the upload's root
span in the API process, through the relay's publish of TaskCreated, the scheduler's first
window and the settler's next chunks (each dispatch under the verification that made room),
each chunk's verification (the context read from the Kafka headers each time), back to the
settler's record of the results (from the results topic's headers).
"""
from __future__ import annotations

import gzip
import socket
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from engine import tracing
from tests.e2e.cli import VEC, Vec
from tests.e2e.fleet import fleet, fleet_env

pytestmark = [pytest.mark.postgres, pytest.mark.kafka, pytest.mark.timeout(240)]

ADDRESSES = [f"user{i}@x.test" for i in range(7)] + ["unknown1@x.test", "invalid1@y.test"]  # 9: 3 chunks of 3
CHUNKS = 3


class OtlpReceiver:
    """POST /v1/traces (OTLP/HTTP, protobuf): every span received, as plain dicts."""

    def __init__(self):
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest, ExportTraceServiceResponse)

        self.spans: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.add(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, request) -> None:
        found = []
        for resource_spans in request.resource_spans:
            service = next(a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name")
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    found.append({
                        "service": service, "name": span.name, "trace": span.trace_id.hex(), "id": span.span_id.hex(),
                        "parent": span.parent_span_id.hex(), "links": [link.span_id.hex() for link in span.links],
                        "attrs": {a.key: _value(a.value) for a in span.attributes}})
        with self.lock:
            self.spans += found

    def of_trace(self, trace_id: str) -> list[dict]:
        with self.lock:
            return [s for s in self.spans if s["trace"] == trace_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(value):
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, check, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.2)
    return found


@pytest.fixture
def receiver():
    otlp = OtlpReceiver()
    yield otlp
    otlp.close()


def test_one_bulk_is_one_trace_across_the_api_the_relay_and_the_workers(tmp_path, pg_url, kafka_broker, receiver):
    port = _free_port()
    env = {**fleet_env(pg_url, kafka_broker.bootstrap), "VEC_PROVIDER": "instant", "VEC_ALLOW_TEST_DOMAINS": "true",
           "VEC_CHUNK_SIZE": "3", "VEC_CHUNK_WINDOW": "1", "VEC_RESULTS_FLUSH_INTERVAL": "0.2",
           "VEC_API_HOST": "127.0.0.1", "VEC_API_PORT": str(port), "VEC_ADMIN_TOKEN": "tracing-fleet-admin-token-4x9Kq",
           "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    vec = Vec(env, tmp_path)
    vec.run("migrate")
    vec.run("account", "open", "acme")
    key = vec.json("apikey", "create", "acme")["key"]
    url = f"http://127.0.0.1:{port}"
    with fleet(vec, tmp_path) as running:
        running.start("control", "relay", "projector", "watchdog")
        running.start("worker", "worker")
        running.wait_ready(1)
        api = running.processes["api"] = subprocess.Popen([VEC, "serve"], env=vec.env, cwd=tmp_path,
                                                          stdout=(tmp_path / "api.log").open("ab"),
                                                          stderr=subprocess.STDOUT)
        _wait("the API", lambda: api.poll() is None and _answers(url + "/healthz"))
        request = urllib.request.Request(url + "/v1/tasks/bulk", data=("email\n" + "\n".join(ADDRESSES)).encode(),
                                         headers={"Authorization": f"Bearer {key}", "Content-Type": "text/csv"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            task_id = __import__("json").load(answer)["task"]["task_id"]
        task = vec.wait_for(task_id, lambda t: t["status"] not in ("pending", "processing"), timeout=120)
        assert task["status"] == "completed", task
        # the settler's spans are exported a moment after the task completed
        _wait("the settles of every chunk", lambda: len([s for s in receiver.of_trace(task_id)
                                                         if s["name"] == "vec.fleet.settle"]) >= CHUNKS)
    trace = receiver.of_trace(task_id)
    by_id = {s["id"]: s for s in trace}
    parent_of = lambda span: by_id.get(span["parent"])  # noqa: E731

    [root] = [s for s in trace if s["name"] == "vec.task.create"]
    assert (root["service"], root["parent"], root["id"]) == ("vec-api", "", f"{tracing.root_span_id(task_id):016x}")
    http = [s for s in receiver.spans if s["id"] in root["links"]]
    assert http and http[0]["service"] == "vec-api" and http[0]["attrs"].get("vec.task_id") == task_id
    assert {s["service"] for s in trace} == {"vec-api", "vec-projector+relay+watchdog", "vec-worker"}

    publishes = {s["attrs"]["vec.position"]: s for s in trace if s["name"] == "vec.relay.publish"}
    assert publishes and all(s["parent"] == root["id"] for s in publishes.values())
    verifies = [s for s in trace if s["name"] == "vec.fleet.verify_chunk"]
    assert sorted(s["attrs"]["vec.chunk_no"] for s in verifies) == list(range(CHUNKS))
    first_window = 0
    for verify in verifies:  # the chunk's work item carried the dispatch's context
        dispatch = parent_of(verify)
        assert dispatch["name"] == "vec.fleet.dispatch", dispatch
        # sent by whoever submitted the chunk: the scheduler, the new task's first window (after
        # the relayed TaskCreated), the settler, under the verification whose results made room,
        # or the watchdog, under the task's root, when its pass saw the room first
        submitter = parent_of(dispatch)
        if dispatch["service"] != "vec-worker":
            assert (dispatch["service"], submitter["id"]) == ("vec-projector+relay+watchdog", root["id"])
            continue
        assert submitter["name"] in ("vec.fleet.schedule", "vec.fleet.verify_chunk"), submitter
        if submitter["name"] == "vec.fleet.schedule":
            first_window += 1
            assert parent_of(submitter)["name"] == "vec.relay.publish"  # relay -> worker
            assert parent_of(submitter)["attrs"]["vec.event_type"] == "TaskCreated"
    assert first_window <= 1  # a window of one chunk (the watchdog's pass may take it first)
    settles = [s for s in trace if s["name"] == "vec.fleet.settle"]
    assert {parent_of(s)["name"] for s in settles} == {"vec.fleet.verify_chunk"}  # worker -> settler: and back
    recorded = [s for s in trace if s["name"] == "vec.engine.append" and parent_of(s)
                and parent_of(s)["name"] == "vec.fleet.settle"]
    assert sum("ResultsRecorded" in s["attrs"]["vec.events"] for s in recorded) >= CHUNKS
    orphans = [s["name"] for s in trace if s is not root and s["parent"] not in by_id]
    assert not orphans, f"spans whose parent was not exported: {orphans}"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def test_receiver_reads_what_the_sdk_exporter_sends(receiver, monkeypatch):
    """The receiver itself, against the real OTLP/HTTP exporter (so a failure above is the
    engine's, not the receiver's)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    tracing.install(SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.url + "/v1/traces")), "vec-check")
    try:
        with tracing.task_root("0123456789abcdef0123456789abcdef", kind="bulk"):
            pass
    finally:
        tracing.uninstall()
    [span] = receiver.of_trace("0123456789abcdef0123456789abcdef")
    assert (span["service"], span["name"], span["attrs"]["vec.kind"]) == ("vec-check", "vec.task.create", "bulk")

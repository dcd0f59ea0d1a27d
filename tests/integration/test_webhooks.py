"""Signed webhooks on task end (consumers/webhooks/delivery.py), against real receivers: HTTP servers
on loopback that verify every signature with the `standardwebhooks` library.

At least once and never twice per endpoint and task end: retried with backoff, every attempt
recorded, nothing lost when the engine is killed (kill -9) while a request is in flight,
nothing doubled when the consumer reads the log again; the egress guard refuses loopback
without the test allowance, before any connection. On SQLite, and on PostgreSQL for the
store and the fleet's single, elected sender.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from consumers.providers import InstantProvider
from consumers.runtime import EngineCrashed, Runtime
from consumers.webhooks.delivery import SECRETS_SCOPE, WebhookConsumer, WebhookStore, validate_url, webhook_id
from engine.domain.errors import InvalidCommand
from engine.service import Engine, utcnow
from engine.store import open_database
from tests.e2e.cli import Vec
from tests.integration.test_runtime import addresses, settings, write_csv

FAST = dict(webhook_allow_loopback=True, webhook_retry_schedule="0.2", webhook_poll_interval=0.02,
            webhook_timeout=5)


# --------------------------------------------------------------------------- the receiver

class Receiver:
    """A real HTTP server on 127.0.0.1. Every POST is checked with standardwebhooks' own
    `Webhook(secret).verify` and recorded; answers follow `answers` (a status code, or
    "hang": hold the request until `release` is set), the last one repeating."""

    def __init__(self, answers=(200,)):
        self.answers = list(answers)
        self.secret: str | None = None
        self.requests: list[dict] = []
        self.connections = 0
        self.release = threading.Event()
        receiver = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request, client_address):
                receiver.connections += 1
                return True

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    Webhook(receiver.secret).verify(body, headers)
                    verified = True
                except WebhookVerificationError as error:
                    verified = f"refused: {error}"
                answer = receiver.answers[min(len(receiver.requests), len(receiver.answers) - 1)]
                receiver.requests.append({"id": headers.get("webhook-id"), "body": body.decode(),
                                          "timestamp": headers.get("webhook-timestamp"), "verified": verified,
                                          "at": time.monotonic(), "host": headers.get("host")})
                if answer == "hang":
                    receiver.release.wait(30)
                    answer = 200
                with contextlib.suppress(OSError):  # the sender may be gone (killed)
                    self.send_response(answer)
                    self.send_header("content-type", "text/plain")
                    self.end_headers()
                    self.wfile.write(b"ok" if answer < 300 else b"receiver says no")

            def log_message(self, *args):
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/vec"

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------- helpers

@pytest.fixture
def engine(db):
    e = Engine(db, settings(**FAST))
    e.open_account("acme")
    e.grant_credits("acme", "payg", 1000)
    return e


def register(engine: Engine, account: str, receiver: Receiver, url: str | None = None) -> dict:
    store = WebhookStore(engine.db.projector.sql, keyring=engine.db.keyring).ensure_schema()
    endpoint = store.add_endpoint(account, url or receiver.url, "", engine.db.events.head(), "test",
                                  allow_loopback=True)
    receiver.secret = endpoint["secret"]
    return endpoint


def deliveries(engine: Engine, **where) -> list[dict]:
    return WebhookStore(engine.db.projector.sql, keyring=engine.db.keyring).ensure_schema().deliveries(with_attempts=True, **where)


async def run_until(engine: Engine, done, linger: float = 0.0, timeout: float = 20.0) -> None:
    """The embedded runtime (instant provider) until `done()`, then `linger` seconds more."""
    stop = asyncio.Event()
    runtime = asyncio.create_task(Runtime(engine, InstantProvider()).run(stop))
    try:
        async with asyncio.timeout(timeout):
            while not done():
                if runtime.done():
                    await runtime  # it crashed: say why
                await asyncio.sleep(0.02)
            await asyncio.sleep(linger)
    finally:
        stop.set()
        await runtime


def bulk(engine: Engine, tmp_path: Path, emails: list[str]) -> str:
    return engine.create_bulk("acme", write_csv(tmp_path / f"f{len(emails)}.csv", emails)).task_id


# --------------------------------------------------------------------------- embedded (SQLite)

def test_a_task_end_is_posted_once_per_endpoint_signed_per_standard_webhooks(engine, db, tmp_path):
    engine.open_account("zeta")
    with Receiver() as first, Receiver() as second, Receiver() as elsewhere:
        a = register(engine, "acme", first)
        b = register(engine, "acme", second)
        register(engine, "zeta", elsewhere)
        task_id = bulk(engine, tmp_path, addresses(3) + addresses(2, "unknown") + addresses(1, "invalid"))
        asyncio.run(run_until(engine, lambda: len(deliveries(engine, status="delivered")) == 2, linger=0.3))

    assert elsewhere.requests == [] and elsewhere.connections == 0  # another account's endpoint
    for receiver, endpoint in ((first, a), (second, b)):
        [request] = receiver.requests
        assert request["verified"] is True
        end = next(r for r in db.events.read_stream(f"task-{task_id}") if r.type == "TaskCompleted")
        assert request["id"] == webhook_id(str(end.event_id), endpoint["endpoint_id"])
        assert request["host"] == receiver.url.split("/")[2]
        body = json.loads(request["body"])
        assert body["type"] == "task.completed"
        data = body["data"]
        assert (data["task_id"], data["account"], data["status"], data["kind"]) == (
            task_id, "acme", "completed", "bulk")
        assert (data["total"], data["consumed"], data["refunded"], data["verified"]) == (6, 4, 2, 6)
        assert data["counts"] == {"safe": 3, "invalid": 1, "risky": 0, "unknown": 2, "failed": 0}
        assert data["event_id"] == str(end.event_id) and data["position"] == end.position
    rows = deliveries(engine)
    assert sorted(r["endpoint_id"] for r in rows) == sorted([a["endpoint_id"], b["endpoint_id"]])
    assert all(r["attempts"] == 1 and r["last_status_code"] == 200 for r in rows)
    assert all([x["outcome"] for x in r["attempt_log"]] == ["delivered"] for r in rows)


def test_a_receiver_failing_twice_gets_exactly_one_more_attempt_each_time(engine, db, tmp_path):
    with Receiver(answers=(500, 503, 200)) as receiver:
        register(engine, "acme", receiver)
        task_id = bulk(engine, tmp_path, addresses(2))
        engine.cancel_task(task_id)  # a task end without a provider: task.cancelled
        asyncio.run(run_until(engine, lambda: len(deliveries(engine, status="delivered")) == 1, linger=0.6))

    assert len(receiver.requests) == 3
    assert all(r["verified"] is True for r in receiver.requests)  # each attempt signed afresh
    assert len({r["id"] for r in receiver.requests}) == 1 and len({r["body"] for r in receiver.requests}) == 1
    assert json.loads(receiver.requests[0]["body"])["type"] == "task.cancelled"
    gaps = [b["at"] - a["at"] for a, b in zip(receiver.requests, receiver.requests[1:])]
    assert all(gap >= 0.18 for gap in gaps), gaps  # the schedule's backoff, between attempts
    [row] = deliveries(engine)
    assert (row["status"], row["attempts"], row["last_status_code"], row["last_error"]) == ("delivered", 3, 200, None)
    log = row["attempt_log"]
    assert [(x["attempt"], x["outcome"], x["status_code"]) for x in log] == [
        (1, "failed", 500), (2, "failed", 503), (3, "delivered", 200)]
    assert log[0]["error"] == "HTTP 500: receiver says no" and all(x["duration_ms"] >= 0 for x in log)


def test_a_delivery_fails_for_good_after_the_last_attempt(db, tmp_path):
    engine = Engine(db, settings(**{**FAST, "webhook_max_attempts": 3, "webhook_retry_schedule": "0.05,0.1"}))
    engine.open_account("acme")
    with Receiver(answers=(500,)) as receiver:
        register(engine, "acme", receiver)
        task_id = bulk(engine, tmp_path, addresses(1))
        engine.cancel_task(task_id)
        asyncio.run(run_until(engine, lambda: len(deliveries(engine, status="failed")) == 1, linger=0.4))
    assert len(receiver.requests) == 3
    [row] = deliveries(engine)
    assert (row["attempts"], row["last_status_code"], row["next_attempt_at"]) == (3, 500, None)
    assert [x["outcome"] for x in row["attempt_log"]] == ["failed"] * 3


def secret_at_rest(engine: Engine, endpoint_id: str) -> str:
    return engine.db.projector.sql.execute("SELECT secret FROM webhook_endpoints WHERE endpoint_id = ?",
                                           (endpoint_id,)).fetchone()[0]


def test_signing_secrets_are_sealed_at_rest_and_a_plain_one_of_before_is_used_then_sealed(engine, tmp_path):
    with Receiver() as sealed, Receiver() as plain:
        a = register(engine, "acme", sealed)
        b = register(engine, "acme", plain)
        for endpoint in (a, b):
            stored = secret_at_rest(engine, endpoint["endpoint_id"])
            assert stored.startswith("§") and endpoint["secret"] not in stored
            assert endpoint["secret"].removeprefix("whsec_") not in stored
        # a row kept before secrets were sealed: plain text in the table
        engine.db.projector.sql.execute("UPDATE webhook_endpoints SET secret = ? WHERE endpoint_id = ?",
                                        (b["secret"], b["endpoint_id"]))
        assert secret_at_rest(engine, b["endpoint_id"]) == b["secret"]
        bulk(engine, tmp_path, addresses(1))
        asyncio.run(run_until(engine, lambda: len(deliveries(engine, status="delivered")) == 2))
    assert [r["verified"] for r in sealed.requests + plain.requests] == [True, True]  # both signed right
    # a store that starts on that table seals the plain row in place, and still signs with it
    WebhookStore(engine.db.projector.sql, keyring=engine.db.keyring).ensure_schema()
    stored = secret_at_rest(engine, b["endpoint_id"])
    assert stored.startswith("§") and b["secret"] not in stored
    assert engine.db.keyring.sealer(SECRETS_SCOPE).open(stored) == b["secret"]


def test_the_egress_guard_refuses_loopback_without_the_allowance_before_any_connection(db, tmp_path):
    engine = Engine(db, settings(**{**FAST, "webhook_allow_loopback": False, "webhook_max_attempts": 2,
                                    "webhook_retry_schedule": "0.05"}))
    engine.open_account("acme")
    with Receiver() as receiver:
        port = receiver.server.server_address[1]
        register(engine, "acme", receiver, url=f"http://localhost:{port}/hooks")  # a name: checked when sent
        task_id = bulk(engine, tmp_path, addresses(1))
        engine.cancel_task(task_id)
        asyncio.run(run_until(engine, lambda: len(deliveries(engine, status="failed")) == 1))
    assert receiver.connections == 0 and receiver.requests == []
    [row] = deliveries(engine)
    assert [x["outcome"] for x in row["attempt_log"]] == ["refused", "refused"]
    # the tenant reads the attempt log: no word of what an internal name resolves to
    assert row["last_error"] == "refused: not a public address"
    assert [x["error"] for x in row["attempt_log"]] == [row["last_error"]] * 2
    assert "127.0.0.1" not in str(row) and "loopback" not in str(row)
    assert row["last_status_code"] is None


def test_a_failing_webhooks_loop_stops_the_whole_runtime_loudly(engine, monkeypatch):
    def broken(self, batch=0):
        raise RuntimeError("webhook bug")

    monkeypatch.setattr(WebhookConsumer, "step", broken)

    async def main() -> None:
        async with asyncio.timeout(10):
            await Runtime(engine, InstantProvider()).run()

    with pytest.raises(EngineCrashed) as crashed:
        asyncio.run(main())
    assert "webhooks failed" in str(crashed.value) and "webhook bug" in str(crashed.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1/hook", "http://[::1]:8080/", "http://10.1.2.3/",
                                 "http://169.254.169.254/latest/meta-data", "http://192.168.1.1/", "http://[fe80::1]/",
                                 "http://[::ffff:10.0.0.1]/", "http://100.100.100.200/", "ftp://example.org/",
                                 "http:///no-host", "https://user:pw@example.org/", "https://example.org/#frag",
                                 "https://exa mple.org/", "example.org/hook", "http://example.org:0/", ""])
def test_registration_refuses_urls_no_webhook_may_reach(url):
    with pytest.raises(InvalidCommand):
        validate_url(url)


def test_registration_takes_public_urls_and_loopback_only_with_the_allowance():
    assert validate_url("https://hooks.example.org:8443/vec?x=1") == "https://hooks.example.org:8443/vec?x=1"
    assert validate_url("http://93.184.216.34/in")
    assert validate_url("http://127.0.0.1:9/in", allow_loopback=True)
    with pytest.raises(InvalidCommand):
        validate_url("http://10.0.0.1/in", allow_loopback=True)  # the allowance is loopback, nothing else


def test_reading_the_log_again_enqueues_nothing_twice(engine, db, tmp_path):
    store = WebhookStore(db.projector.sql, keyring=db.keyring).ensure_schema()
    with Receiver() as receiver:
        first = register(engine, "acme", receiver)
        second = register(engine, "acme", receiver)
        task_ids = [bulk(engine, tmp_path, addresses(n + 1)) for n in range(3)]
        for task_id in task_ids:
            engine.cancel_task(task_id)
        late = register(engine, "acme", receiver)  # registered after those ends: it gets none of them
        consumers = [WebhookConsumer(engine, store), WebhookConsumer(Engine(db, engine.settings), store)]
        assert consumers[0].step() > 0
        assert len(deliveries(engine)) == 6  # three task ends, two endpoints
        for _ in range(3):  # read again from the start, by either consumer
            db.projector.sql.execute("UPDATE webhook_checkpoint SET position = 0")
            for consumer in consumers:
                consumer.step()
        rows = deliveries(engine)
        assert len(rows) == 6 and len({r["delivery_id"] for r in rows}) == 6
        assert {r["endpoint_id"] for r in rows} == {first["endpoint_id"], second["endpoint_id"]}
        assert late["endpoint_id"] not in {r["endpoint_id"] for r in rows}
        assert sorted(r["task_id"] for r in rows) == sorted(task_ids * 2)


def test_enqueue_and_checkpoint_commit_together(engine, db, tmp_path):
    """A crash between the deliveries and the checkpoint leaves neither: read again, once."""
    store = WebhookStore(db.projector.sql, keyring=db.keyring).ensure_schema()
    with Receiver() as receiver:
        register(engine, "acme", receiver)
        engine.cancel_task(bulk(engine, tmp_path, addresses(2)))
        consumer = WebhookConsumer(engine, store)
        real = db.projector.sql.execute

        def crash_at_checkpoint(sql, params=()):
            if sql.startswith("UPDATE webhook_checkpoint"):
                raise OSError("killed")
            return real(sql, params)

        db.projector.sql.execute = crash_at_checkpoint
        try:
            with pytest.raises(OSError):
                consumer.step()
        finally:
            del db.projector.sql.execute
        assert deliveries(engine) == []
        before = store.checkpoint()
        consumer.step()
        assert len(deliveries(engine)) == 1 and store.checkpoint() > before


def test_removing_an_endpoint_stops_its_deliveries(engine, db, tmp_path):
    store = WebhookStore(db.projector.sql, keyring=db.keyring).ensure_schema()
    with Receiver(answers=(500,)) as receiver:
        endpoint = register(engine, "acme", receiver)
        engine.cancel_task(bulk(engine, tmp_path, addresses(1)))
        WebhookConsumer(engine, store).step()
        store.remove_endpoint(endpoint["endpoint_id"])
        engine.cancel_task(bulk(engine, tmp_path, addresses(2)))
        WebhookConsumer(engine, store).step()
    [row] = deliveries(engine)
    assert (row["status"], row["last_error"], row["attempts"]) == ("failed", "endpoint removed", 0)
    assert store.endpoints("acme") == [] and store.endpoints("acme", include_removed=True)[0]["disabled_at"]


def test_nothing_is_lost_when_the_engine_is_killed_with_a_request_in_flight(tmp_path):
    """`vec run` killed (SIGKILL) while the receiver holds the first request: the attempt
    stays `sending`; the next `vec run` marks it interrupted and sends again (at least
    once), with the same webhook-id, so the receiver can tell it is the same message."""
    env = {"VEC_STORE": f"sqlite:///{tmp_path}/vec.db", "VEC_PROVIDER": "instant", "VEC_POLL_INTERVAL": "0.05",
           "VEC_HEARTBEAT_INTERVAL": "0.2", "VEC_WEBHOOK_ALLOW_LOOPBACK": "true", "VEC_WEBHOOK_POLL_INTERVAL": "0.05",
           "VEC_WEBHOOK_RETRY_SCHEDULE": "0.1"}
    vec = Vec(env, tmp_path)
    with Receiver(answers=("hang", 200)) as receiver:
        vec.run("account", "open", "acme")
        endpoint = vec.json("webhooks", "add", "acme", receiver.url)
        receiver.secret = endpoint["secret"]
        engine = vec.start_engine(tmp_path / "engine-1.log")
        try:
            vec.run("verify", "acme", "alice@example.com")
            _wait(lambda: len(receiver.requests) == 1, "the first attempt", tmp_path / "engine-1.log")
            os.kill(engine.pid, signal.SIGKILL)
            engine.wait(timeout=10)
        finally:
            _stop(engine)
        [row] = vec.lines("webhooks", "deliveries", "acme", "--json")
        assert (row["status"], row["attempts"]) == ("pending", 1)
        assert [x["outcome"] for x in row["attempt_log"]] == ["sending"]
        receiver.release.set()  # the first request is answered, to a process that is gone

        with vec.engine_running(tmp_path / "engine-2.log"):
            _wait(lambda: vec.lines("webhooks", "deliveries", "--json")[0]["status"] == "delivered",
                  "the delivery after the restart", tmp_path / "engine-2.log")
    assert len(receiver.requests) == 2 and all(r["verified"] is True for r in receiver.requests)
    assert receiver.requests[0]["id"] == receiver.requests[1]["id"] == row["delivery_id"]
    assert receiver.requests[0]["body"] == receiver.requests[1]["body"]
    [row] = vec.lines("webhooks", "deliveries", "--json")
    assert [(x["attempt"], x["outcome"]) for x in row["attempt_log"]] == [(1, "interrupted"), (2, "delivered")]
    attempts = vec.lines("webhooks", "attempts", row["delivery_id"], "--json")
    assert [(x["outcome"], x["status_code"]) for x in attempts] == [("interrupted", None), ("delivered", 200)]


def _wait(condition, what: str, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never saw {what}:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_the_cli_registers_lists_and_removes(tmp_path):
    vec = Vec({"VEC_STORE": f"sqlite:///{tmp_path}/vec.db"}, tmp_path)
    vec.run("account", "open", "acme")
    for args, message in ((("nobody", "https://hooks.example.org/in"), "no such account"),
                          (("acme", "http://127.0.0.1:9/in"), "not globally routable")):
        refused = vec.run("webhooks", "add", *args, ok=False)
        assert refused.returncode == 1 and message in refused.stderr
    added = vec.json("webhooks", "add", "acme", "https://hooks.example.org/in", "--description", "billing")
    assert added["secret"].startswith("whsec_") and added["url"] == "https://hooks.example.org/in"
    [listed] = vec.lines("webhooks", "list", "acme", "--json")
    assert listed["endpoint_id"] == added["endpoint_id"] and "secret" not in listed
    vec.run("webhooks", "remove", added["endpoint_id"])
    assert vec.lines("webhooks", "list", "acme", "--json") == []


# --------------------------------------------------------------------------- PostgreSQL

def test_on_postgresql_one_elected_sender_delivers_once_with_its_retries(pg_url, tmp_path):
    """Two fleet processes' watchdog roles (no Kafka needed): one leads the webhooks; the
    receiver gets the failed attempt and its retry, nothing more; the store dedupes re-reads."""
    from entrypoints import bootstrap

    open_database(pg_url, migrate=True).close()
    config = settings(**FAST, store=pg_url)
    dbs = [open_database(pg_url) for _ in range(2)]
    try:
        engine = Engine(dbs[0], config)
        engine.open_account("acme")
        with Receiver(answers=(500, 200)) as receiver:
            endpoint = register(engine, "acme", receiver)
            task_id = engine.create_bulk("acme", write_csv(tmp_path / "f.csv", addresses(3))).task_id
            engine.cancel_task(task_id)

            async def main() -> None:
                stop = asyncio.Event()
                fleets = [asyncio.create_task(bootstrap.fleet(Engine(db, config), {"watchdog"}).run(stop)) for db in dbs]
                try:
                    async with asyncio.timeout(30):
                        while not deliveries(engine, status="delivered"):
                            for fleet in fleets:
                                if fleet.done():
                                    await fleet
                            await asyncio.sleep(0.05)
                        await asyncio.sleep(0.5)
                        leaders = [m for m in dbs[0].fleet.members(utcnow() - timedelta(minutes=1))
                                   if "webhooks" in m["leads"].split(",")]
                        assert len(leaders) == 1, leaders  # one sender in the whole fleet
                finally:
                    stop.set()
                    await asyncio.gather(*fleets)

            asyncio.run(main())
        assert len(receiver.requests) == 2 and all(r["verified"] is True for r in receiver.requests)
        [row] = deliveries(engine)
        assert row["endpoint_id"] == endpoint["endpoint_id"] and row["task_id"] == task_id
        assert [(x["outcome"], x["status_code"]) for x in row["attempt_log"]] == [("failed", 500), ("delivered", 200)]
        store = WebhookStore(dbs[0].projector.sql, keyring=dbs[0].keyring)
        dbs[0].projector.sql.execute("UPDATE webhook_checkpoint SET position = 0")
        assert WebhookConsumer(engine, store).step() > 0
        assert len(deliveries(engine)) == 1
    finally:
        for db in dbs:
            with contextlib.suppress(Exception):
                db.close()


"""The engine (`vec run`, embedded) verifying through an egress pool of real SOCKS5 servers
(pproxy) against the loopback mail world, asserted on the log's events (`vec events`):

- a proxy that dies mid-bulk is that egress's outage: the bulk fails over to the next
  route and completes, no address settled Unknown because of it;
- every egress down is our outage: the chunk pauses (no Unknowns), and past
  VEC_PROVIDER_DEADLINE the task fails with SystemFailure and the unverified are refunded.
"""
from __future__ import annotations

import time

import pytest

from tests.e2e.cli import Vec, settled
from tests.e2e.test_cli_mailworld import mailworld_env
from tests.verifier.test_egress_mailworld import free_port, start_proxy

pytestmark = [pytest.mark.mailworld, pytest.mark.timeout(240)]

OPEN = "open=socks5://127.0.0.1:10801"  # the world's proxy, leaves from 127.0.0.21


@pytest.fixture
def vec(tmp_path, mailworld) -> Vec:
    env = {**mailworld_env(mailworld, tmp_path), "VEC_RETRY_BACKOFF": "0.3", "VEC_ADDRESS_DEADLINE": "20",
           "VEC_CHUNK_SIZE": "4", "VEC_CHUNK_WINDOW": "2", "VEC_RESULTS_FLUSH_INTERVAL": "0.2",
           "VEC_PER_MX_CONCURRENCY": "2"}
    v = Vec(env, tmp_path)
    v.run("account", "open", "acme")
    return v


def bulk(vec: Vec, tmp_path, rows: list[str]) -> str:
    path = tmp_path / "bulk.csv"
    path.write_text("email\n" + "\n".join(rows) + "\n")
    return vec.json("bulk", "acme", str(path))["task_id"]


def wait_events(vec: Vec, stream: str | None, predicate, timeout_s: float = 120.0) -> list[dict]:
    """The log's events (of `stream`, or all), once `predicate(events)` holds."""
    args = ("events", "--stream", stream) if stream else ("events",)
    deadline = time.monotonic() + timeout_s
    while True:
        events = vec.lines(*args)
        if predicate(events):
            return events
        assert time.monotonic() < deadline, f"the log never got there: {[e['type'] for e in events][-20:]}"
        time.sleep(0.2)


def of_type(events: list[dict], *types: str) -> list[dict]:
    return [e for e in events if e["type"] in types]


def bulk_killing(vec: Vec, tmp_path, rows: list[str], proxies: list) -> tuple[list[dict], list[dict]]:
    """A bulk under `vec run`; `proxies` are killed on its first verified address. Returns
    (the task's events, its refunds) once it ended and, if it failed, was refunded."""
    def ended(events: list[dict]) -> bool:
        mine = [e for e in events if e["stream"] == stream]
        refunded = [e for e in of_type(events, "CreditsRefunded") if e["data"]["task_id"] == task_id]
        return bool(of_type(mine, "TaskCompleted") or (of_type(mine, "SystemFailure", "TaskFailed") and refunded))
    try:
        with vec.engine_running(tmp_path / "engine.log"):
            task_id = bulk(vec, tmp_path, rows)
            stream = f"task-{task_id}"
            wait_events(vec, stream, lambda ev: of_type(settled(ev), "AddressVerified"))
            for p in proxies:
                p.kill()
                p.wait()
            events = wait_events(vec, None, ended)
    finally:
        for p in proxies:
            p.kill()
            p.wait()
    mine = [e for e in events if e["stream"] == stream]  # each address's result as its own fact (settled)
    return (settled(mine) + [e for e in mine if e["type"] not in ("AddressVerified", "ResultUnknown")],
            [e for e in of_type(events, "CreditsRefunded") if e["data"]["task_id"] == task_id])


def test_a_proxy_that_dies_mid_bulk_fails_over_and_the_bulk_completes(vec: Vec, tmp_path):
    """slow.test holds each RCPT 1 s: the bulk is in flight when the preferred proxy is
    killed (on the first verified address); the rest goes through the next egress."""
    port = free_port()
    vec.env["VEC_EGRESS_POOL"] = f"mine=socks5://127.0.0.1:{port},{OPEN}"
    rows = [f"u{300 + i}@slow.test" for i in range(12)]
    events, refunds = bulk_killing(vec, tmp_path, rows, [start_proxy(port, "127.0.0.44")])
    assert of_type(events, "TaskCompleted") and not of_type(events, "ResultUnknown", "SystemFailure")
    assert refunds == []
    verified = of_type(events, "AddressVerified")
    assert sorted(e["data"]["address"] for e in verified) == sorted(rows)
    assert {e["data"]["status"] for e in verified} == {"safe"}
    details = [e["data"]["detail"] for e in verified]
    assert any(" via mine said: 250" in d for d in details)  # used before it died
    assert any(" via open said: 250" in d for d in details)  # and the rest failed over
    assert vec.run("audit").returncode == 0


def test_every_egress_down_pauses_then_fails_the_task_with_a_refund(vec: Vec, tmp_path):
    """Both proxies killed mid-bulk: no address settles Unknown (the chunk pauses: our
    outage), and past VEC_PROVIDER_DEADLINE the task fails with SystemFailure and its
    unverified addresses are refunded."""
    ports = [free_port(), free_port()]
    vec.env.update({"VEC_EGRESS_POOL": f"a=socks5://127.0.0.1:{ports[0]},b=socks5://127.0.0.1:{ports[1]}",
                    "VEC_PROVIDER_DEADLINE": "6", "VEC_EGRESS_DOWN_TTL": "1"})
    rows = [f"u{400 + i}@slow.test" for i in range(12)]
    proxies = [start_proxy(ports[0], "127.0.0.44"), start_proxy(ports[1], "127.0.0.45")]
    events, refunds = bulk_killing(vec, tmp_path, rows, proxies)
    [failure] = of_type(events, "SystemFailure")
    reason = failure["data"]["reason"]
    assert reason.startswith("provider_unreachable"), failure
    assert "egress a is down: proxy unreachable" in reason and "egress b is down: proxy unreachable" in reason
    assert not of_type(events, "ResultUnknown"), "our outage settled as Unknowns"
    verified = len(of_type(events, "AddressVerified"))
    assert 1 <= verified < len(rows)
    assert [(r["data"]["reason"], r["data"]["amount"]) for r in refunds] == [("system_failure", len(rows) - verified)]
    assert vec.run("audit").returncode == 0

"""Webhooks over HTTP, against `vec serve` as a real process (a server of this module's own:
the loopback allowance is on, so its engine may deliver to the receiver of these tests).

An account registers an endpoint with its key and gets the secret once; its task's end
reaches a real receiver that verifies the signature with the `standardwebhooks` library;
the deliveries, each attempt and the body sent are visible over the API. Another account's
endpoint is a 404; bad input is a 4xx problem and registers nothing.
"""
from __future__ import annotations

import json
import time

import pytest

from tests.api.server import base_env, problem, running, start_server
from tests.integration.test_webhooks import Receiver


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("api-webhooks")
    env = base_env(VEC_STORE=f"sqlite:///{workdir}/vec.db", VEC_WEBHOOK_ALLOW_LOOPBACK="true",
                   VEC_WEBHOOK_POLL_INTERVAL="0.05", VEC_WEBHOOK_RETRY_SCHEDULE="0.1")
    with running(start_server("embedded", workdir, env, name="webhooks")) as server:
        yield server


def wait_for(fetch, until, what: str, api, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if until(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"never saw {what}: {value}\n{api.tail()}")
        time.sleep(0.05)


def test_an_account_registers_an_endpoint_and_sees_every_delivery_and_attempt(api):
    account = api.new_account("hooks")
    client = api.client(api.new_key(account)["key"])
    with Receiver(answers=(500, 200)) as receiver:
        r = client.post("/v1/webhooks", json={"url": receiver.url, "description": "billing"},
                        headers={"Idempotency-Key": "hook-1"})
        assert r.status_code == 201, r.text
        endpoint = r.json()
        assert endpoint["secret"].startswith("whsec_") and endpoint["account"] == account
        receiver.secret = endpoint["secret"]
        again = client.post("/v1/webhooks", json={"url": receiver.url, "description": "billing"},
                            headers={"Idempotency-Key": "hook-1"})
        assert again.status_code == 201 and again.json() == endpoint and again.headers["Idempotent-Replayed"] == "true"
        problem(client.post("/v1/webhooks", json={"url": receiver.url}, headers={"Idempotency-Key": "hook-1"}), 409)
        listed = client.get("/v1/webhooks").json()["items"]
        assert [e["endpoint_id"] for e in listed] == [endpoint["endpoint_id"]] and "secret" not in listed[0]

        r = client.post("/v1/tasks/single", json={"address": "alice@example.com"})
        assert r.status_code == 200 and r.json()["status"] == "safe", r.text
        task_id = r.json()["task"]["task_id"]
        deliveries = f"/v1/webhooks/{endpoint['endpoint_id']}/deliveries"
        [delivery] = wait_for(lambda: client.get(deliveries).json()["items"],
                              lambda items: items and items[0]["status"] == "delivered", "the delivery", api)

    assert len(receiver.requests) == 2 and all(r["verified"] is True for r in receiver.requests)
    assert {r["id"] for r in receiver.requests} == {delivery["delivery_id"]}
    assert (delivery["task_id"], delivery["account"], delivery["event_type"]) == (task_id, account, "TaskCompleted")
    assert [(a["attempt"], a["outcome"], a["status_code"]) for a in delivery["attempt_log"]] == [
        (1, "failed", 500), (2, "delivered", 200)]
    detail = client.get(f"{deliveries}/{delivery['delivery_id']}").json()
    assert detail["payload"] == json.loads(receiver.requests[-1]["body"])
    assert detail["payload"]["type"] == "task.completed" and detail["payload"]["data"]["task_id"] == task_id
    assert client.get(deliveries, params={"status": "failed"}).json()["items"] == []

    assert client.delete(f"/v1/webhooks/{endpoint['endpoint_id']}").status_code == 204
    assert client.get("/v1/webhooks").json()["items"] == []
    [removed] = client.get("/v1/webhooks", params={"include_removed": "true"}).json()["items"]
    assert removed["disabled_at"] is not None


def test_endpoints_are_their_accounts_own_and_bad_input_registers_nothing(api):
    account, other = api.new_account("hooks"), api.new_account("other")
    mine = api.client(api.new_key(account)["key"])
    theirs = api.client(api.new_key(other)["key"])
    reader = api.client(api.new_key(account, ("read",))["key"])
    r = api.admin.post("/v1/webhooks", params={"account": account}, json={"url": "https://hooks.example.org/vec"})
    assert r.status_code == 201, r.text
    endpoint_id = r.json()["endpoint_id"]

    for path in (f"/v1/webhooks/{endpoint_id}", f"/v1/webhooks/{endpoint_id}/deliveries"):
        problem(theirs.get(path), 404)
    problem(theirs.delete(f"/v1/webhooks/{endpoint_id}"), 404)
    problem(theirs.get("/v1/webhooks", params={"account": account}), 404)
    problem(mine.get("/v1/webhooks/ep_unknown"), 404)
    problem(mine.get(f"/v1/webhooks/{endpoint_id}/deliveries/msg_unknown"), 404)
    problem(reader.post("/v1/webhooks", json={"url": "https://hooks.example.org/x"}), 403)
    problem(api.admin.post("/v1/webhooks", json={"url": "https://hooks.example.org/x"}), 422)  # which account?
    problem(api.admin.post("/v1/webhooks", params={"account": "nobody-here"},
                           json={"url": "https://hooks.example.org/x"}), 404)
    problem(api.client(None).get("/v1/webhooks"), 401)
    for body in ({"url": "http://10.0.0.1/in"}, {"url": "http://169.254.169.254/latest"}, {"url": "ftp://x.org/"},
                 {"url": "https://hooks.example.org/x", "secret": "mine"}, {"url": ""}, {}):
        problem(mine.post("/v1/webhooks", json=body), 422)
    problem(mine.get(f"/v1/webhooks/{endpoint_id}/deliveries", params={"cursor": "bm9wZQ"}), 422)
    assert [e["endpoint_id"] for e in mine.get("/v1/webhooks").json()["items"]] == [endpoint_id]
    assert theirs.get("/v1/webhooks").json()["items"] == []

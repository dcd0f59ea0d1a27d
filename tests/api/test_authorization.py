"""The authorization matrix: every route of the API (method, path, a valid request) against
every kind of caller, in both modes, with the status each cell must give.

Callers: no key at all; another account's key (every scope); a revoked key of the account;
the account's own key (every scope), and a read-only one of it; the admin token.
- admin routes (opening accounts, credits, keys): 401 / 403 / 401 / 403 / 403 / 2xx;
- an account's routes: 401 / 404 (another account's account or task is not found, never a
  403: nothing to enumerate) / 401 / 2xx / 403 for a write or the log without the scope / 2xx;
- the whole log is the admin's; an audit key reads its own streams only.

Every cell targets a resource on which the request would succeed (a fresh running task for
a cancel, a fresh finished one for a delete, a fresh key for a revoke), and every refused
cell changes nothing: no command event on the account's or task's streams, and no event at
all attributed to the caller.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Callable

import httpx
import pytest

from tests.api.server import ADMIN_TOKEN, BOTH_MODES, Api

PRINCIPALS = ("none", "other", "revoked", "own", "read_only", "admin")
# What the engine appends as a task runs; everything else is a command's (a refused request
# appends none of those).
ENGINE_PROGRESS = {"ChunkSubmitted", "ResultsRecorded", "AddressVerified", "ResultUnknown", "ChunkFailed", "TaskCompleted", "TaskFailed",
                   "SystemFailure"}

ADMIN_ONLY = {"none": 401, "other": 403, "revoked": 401, "own": 403, "read_only": 403}
ACCOUNT_READ = {"none": 401, "other": 404, "revoked": 401}
ACCOUNT_WRITE = {"none": 401, "other": 404, "revoked": 401, "read_only": 403}
ACCOUNT_AUDIT = {"none": 401, "other": 404, "revoked": 401, "read_only": 403}
ADMIN_LOG = {"none": 401, "other": 403, "revoked": 401, "own": 403, "read_only": 403}
PUBLIC: dict[str, int] = {}


@dataclass
class World:
    """Account A (the target) with its keys and a finished task with Unknowns; account B with
    a key of its own."""

    api: Api
    a: str
    b: str
    task: str
    clients: dict[str, httpx.Client]
    actors: dict[str, str]

    def bulk(self, addresses: list[str]) -> str:
        body = "email\n" + "".join(f"{a}\n" for a in addresses)
        r = self.api.admin.post("/v1/tasks/bulk", params={"account": self.a, "allow_duplicate": "true"},
                                content=body.encode(), headers={"Content-Type": "text/csv"})
        assert r.status_code == 201, r.text
        return r.json()["task"]["task_id"]


@pytest.fixture(scope="module")
def world(request) -> World:
    api: Api = request.getfixturevalue(f"{request.param}_api")
    a, b = api.new_account("victim", payg=1_000_000), api.new_account("other")
    keys = {"own": api.new_key(a, ("read", "write", "audit")), "read_only": api.new_key(a, ("read",)),
            "revoked": api.new_key(a, ("read", "write", "audit")), "other": api.new_key(b, ("read", "write", "audit"))}
    assert api.admin.delete(f"/v1/accounts/{a}/keys/{keys['revoked']['key_id']}").status_code == 204
    clients = {name: api.client(key["key"]) for name, key in keys.items()}
    clients.update(none=api.client(None), admin=api.client(ADMIN_TOKEN))
    task = World(api, a, b, "", clients, {}).bulk(["ok@example.com", "unknown1@example.com", "unknown2@example.com"])
    api.wait_task(task)
    return World(api, a, b, task, clients, {name: f"apikey:{key['key_id']}" for name, key in keys.items()})


# ------------------------------------------------------------------------------ the routes

@dataclass
class Route:
    name: str
    method: str
    path: str  # {a}: account A, {b}: account B, {task}: A's finished task, others from `setup`
    expect: dict[str, int]  # refusals per caller; the others get `ok`
    ok: int
    body: Callable[[World, dict], dict] = lambda world, made: {}
    setup: Callable[[World], dict] = lambda world: {}  # fresh resources for this cell
    settle: Callable[[World, dict, httpx.Response], None] = lambda world, made, r: None  # after a success
    cleanup: Callable[[World, dict], None] = lambda world, made: None
    streams: Callable[[World, dict], list[str]] = lambda world, made: []  # watched beside A's and B's
    stream: bool = False  # Server-Sent Events: read the headers, then disconnect

    def status(self, principal: str) -> int:
        return self.expect.get(principal, self.ok)


def fresh_key(world: World) -> dict:
    return {"key_id": world.api.new_key(world.a, ("read",))["key_id"]}


def running_task(world: World) -> dict:
    return {"task_id": world.bulk([f"run{i}.{uuid.uuid4().hex[:6]}@example.com" for i in range(3000)])}


def finished_task(world: World) -> dict:
    task_id = world.bulk([f"done.{uuid.uuid4().hex[:6]}@example.com"])
    world.api.wait_task(task_id)
    return {"task_id": task_id}


def stop_task(world: World, made: dict) -> None:
    r = world.api.admin.post(f"/v1/tasks/{made['task_id']}/cancel")
    assert r.status_code in (200, 409), r.text


def wait_created(world: World, made: dict, response: httpx.Response) -> None:
    world.api.wait_task(response.json()["task"]["task_id"])


CSV = "email\nmatrix@example.com\n"

ROUTES = [
    Route("open account", "POST", "/v1/accounts", ADMIN_ONLY, 201,
          setup=lambda w: {"id": f"new-{uuid.uuid4().hex[:10]}"}, body=lambda w, m: {"json": {"account_id": m["id"]}},
          streams=lambda w, m: [f"account-{m['id']}"]),
    Route("grant credits", "POST", "/v1/accounts/{a}/credits", ADMIN_ONLY, 200,
          body=lambda w, m: {"json": {"bucket": "payg", "amount": 5}}),
    Route("balance", "GET", "/v1/accounts/{a}/credits", ACCOUNT_READ, 200),
    Route("history", "GET", "/v1/accounts/{a}/history", ACCOUNT_READ, 200),
    Route("set retention", "PUT", "/v1/accounts/{a}/retention", ADMIN_ONLY, 200,
          body=lambda w, m: {"json": {"data_retention_days": 30}}),
    Route("create key", "POST", "/v1/accounts/{a}/keys", ADMIN_ONLY, 201,
          body=lambda w, m: {"json": {"scopes": ["read"]}}),
    Route("revoke key", "DELETE", "/v1/accounts/{a}/keys/{key_id}", ADMIN_ONLY, 204, setup=fresh_key),
    Route("single task", "POST", "/v1/tasks/single?account={a}", ACCOUNT_WRITE, 200,
          body=lambda w, m: {"json": {"address": "matrix@example.com"}}),
    Route("bulk task", "POST", "/v1/tasks/bulk?account={a}&allow_duplicate=true", ACCOUNT_WRITE, 201,
          body=lambda w, m: {"content": CSV.encode(), "headers": {"Content-Type": "text/csv"}}, settle=wait_created),
    Route("list tasks", "GET", "/v1/tasks?account={a}", ACCOUNT_READ, 200),
    Route("show task", "GET", "/v1/tasks/{task}", ACCOUNT_READ, 200),
    Route("cancel task", "POST", "/v1/tasks/{task_id}/cancel", ACCOUNT_WRITE, 200, setup=running_task,
          cleanup=stop_task, streams=lambda w, m: [f"task-{m['task_id']}"]),
    Route("delete task", "DELETE", "/v1/tasks/{task_id}", ACCOUNT_WRITE, 204, setup=finished_task,
          streams=lambda w, m: [f"task-{m['task_id']}"]),
    Route("erase task", "POST", "/v1/tasks/{task_id}/erase", ACCOUNT_WRITE, 200, setup=finished_task,
          streams=lambda w, m: [f"task-{m['task_id']}"]),
    Route("results", "GET", "/v1/tasks/{task}/results", ACCOUNT_READ, 200),
    Route("unprocessed addresses", "GET", "/v1/tasks/{task}/unprocessed", ACCOUNT_READ, 200),
    Route("retry unknown", "POST", "/v1/tasks/{task}/retry-unknown", ACCOUNT_WRITE, 201, settle=wait_created,
          streams=lambda w, m: [f"task-{w.task}"]),
    Route("account's stream", "GET", "/v1/events?stream=account-{a}", ACCOUNT_AUDIT, 200),
    Route("task's stream", "GET", "/v1/events?stream=task-{task}", ACCOUNT_AUDIT, 200),
    Route("whole log", "GET", "/v1/events", ADMIN_LOG, 200),
    Route("follow a stream", "GET", "/v1/events/follow?stream=account-{a}", ACCOUNT_AUDIT, 200, stream=True),
    Route("follow the log", "GET", "/v1/events/follow", ADMIN_LOG, 200, stream=True),
    Route("health", "GET", "/healthz", PUBLIC, 200),
    Route("OpenAPI document", "GET", "/openapi.json", PUBLIC, 200),
]
# Routes of this app that the matrix leaves to their own routers' tests: the webhooks
# (tests/api/test_webhooks_api.py) and the help center's API with its own error shape
# (tests/api/test_compat.py).
ELSEWHERE = ("/v1/webhooks", "/api/")


def command_events(world: World, streams: list[str]) -> list[tuple[int, str]]:
    seen = []
    for stream in streams:
        r = world.api.admin.get("/v1/events", params={"stream": stream, "limit": 1000})
        assert r.status_code == 200, r.text
        seen += [(e["position"], e["type"]) for e in r.json()["items"] if e["type"] not in ENGINE_PROGRESS]
    return seen


@pytest.mark.parametrize("world", BOTH_MODES, indirect=True, scope="module")
@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.parametrize("route", ROUTES, ids=[route.name for route in ROUTES])
def test_every_route_answers_every_caller_as_it_must(world: World, route: Route, principal: str):
    made = route.setup(world)
    watched = [f"account-{world.a}", f"account-{world.b}", *route.streams(world, made)]
    url = route.path.format(a=world.a, b=world.b, task=world.task, **made)
    client = world.clients[principal]
    expected = route.status(principal)
    head = world.api.head()
    before = command_events(world, watched)
    try:
        if route.stream and expected == 200:
            with client.stream(route.method, url) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
        else:
            response = client.request(route.method, url, **route.body(world, made))
        assert response.status_code == expected, \
            f"{route.method} {url} as {principal}: expected {expected}, got {response.status_code}: {response.text}"
        if expected >= 400:
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json()["status"] == expected
            if expected == 401:
                assert response.headers["www-authenticate"] == "Bearer"
            assert command_events(world, watched) == before, f"a refused {route.name} changed {watched}"
            actor = world.actors.get(principal)
            if actor:
                assert not [e for e in world.api.events_after(head) if e["metadata"]["actor"] == actor], \
                    f"a refused {route.name} appended events as {actor}"
        else:
            route.settle(world, made, response)
    finally:
        route.cleanup(world, made)


@pytest.mark.xdist_group("api-embedded")
def test_the_matrix_covers_every_route_of_the_document(embedded_api: Api):
    document = embedded_api.admin.get("/openapi.json").json()
    documented = {(method.upper(), path) for path, operations in document["paths"].items()
                  for method in operations if not path.startswith(ELSEWHERE)}
    covered = {(route.method, route.path.split("?")[0].replace("{a}", "{account_id}").replace(
        "{task}", "{task_id}")) for route in ROUTES}
    assert documented - covered == set(), "routes without a row in the authorization matrix"

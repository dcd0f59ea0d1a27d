"""The contract where it was loose (issue 17, items 7 and 8), against `vec serve` on loopback:

- a retried single verification (same Idempotency-Key) whose task was erased since is a
  410, on /v1 and on the product's /api, never "still running";
- retry-unknown with nothing to retry is a 409 about the task, an erased task a 410;
- a 405 names every method of the path in Allow (RFC 9110);
- the OpenAPI document's patterns and the server agree on names, labels, account ids and
  Idempotency-Keys (the engine's one "printable" rule, engine/domain/text.py);
- a follower of /v1/events/follow that leaves during catch-up stops the stream at once and
  quietly (no "socket.send() raised exception" in the server's log);
- an audit key never reads an API key's secret digest in the log (the admin does);
- /docs and /redoc load nothing from a third-party origin.
"""
from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
import uuid
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests.api.server import ADMIN_TOKEN, BOTH_MODES, MODE_MARKS, Api, problem
from tests.api.test_contract import account_with_key, bulk, csv_file, read_sse, unique_addresses

both = pytest.mark.parametrize("api", BOTH_MODES, indirect=True)
embedded = pytest.mark.parametrize("api", [pytest.param("embedded", marks=MODE_MARKS["embedded"],
                                                        id="embedded")], indirect=True)


# ------------------------------------------------------------------------------ 410 and 409

def _answered_then_erased(api: Api, path: str, body: dict) -> tuple[httpx.Client, dict, str]:
    """A single verification answered (200) with an Idempotency-Key, then its task erased:
    (the key's client, the retry's headers, the task id)."""
    _, key = account_with_key(api)
    retry = {"Idempotency-Key": f"single-{uuid.uuid4().hex}"}
    first = key.post(path, json=body, headers=retry)
    assert first.status_code == 200, first.text
    answer = first.json()
    task_id = answer["task"]["task_id"] if "task" in answer else answer["task_id"]
    again = key.post(path, json=body, headers=retry)
    assert again.status_code == 200 and again.json() == answer  # kept: the first answer
    assert key.post(f"/v1/tasks/{task_id}/erase").status_code == 200
    return key, retry, task_id


@both
def test_a_retried_single_whose_task_was_erased_since_is_410_gone(api: Api):
    key, retry, task_id = _answered_then_erased(api, "/v1/tasks/single", {"address": "alice@example.com"})
    gone = problem(key.post("/v1/tasks/single", json={"address": "alice@example.com"}, headers=retry), 410)
    assert task_id in gone["detail"] and "deleted" in gone["detail"]
    assert key.get(f"/v1/tasks/{task_id}").json()["status"] == "deleted"  # nothing ran again


@both
def test_a_retried_compat_single_whose_task_was_erased_since_is_410_gone(api: Api):
    key, retry, task_id = _answered_then_erased(api, "/api/verify-single", {"email": "bob@example.com"})
    gone = key.post("/api/verify-single", json={"email": "bob@example.com"}, headers=retry)
    assert gone.status_code == 410, gone.text  # the product's error shape, as its other errors
    assert gone.json()["error"] == "Results deleted" and task_id in gone.json()["message"]


@both
def test_retry_unknown_with_nothing_to_retry_is_409_and_on_an_erased_task_410(api: Api):
    account, key = account_with_key(api)
    clean = bulk(key, csv_file(*unique_addresses(2))).json()["task"]["task_id"]
    assert api.wait_task(clean, key)["unknown"] == 0
    conflict = problem(key.post(f"/v1/tasks/{clean}/retry-unknown"), 409)
    assert clean in conflict["detail"] and "no Unknown" in conflict["detail"]
    assert "file" not in conflict["detail"]  # not an internal temporary file's message

    unknowns = bulk(key, csv_file("unknown-x@example.com", *unique_addresses(1))).json()["task"]["task_id"]
    assert api.wait_task(unknowns, key)["unknown"] == 1
    assert key.post(f"/v1/tasks/{unknowns}/erase").status_code == 200
    before = api.admin.get(f"/v1/accounts/{account}/credits").json()
    assert "deleted" in problem(key.post(f"/v1/tasks/{unknowns}/retry-unknown"), 410)["detail"]
    assert api.admin.get(f"/v1/accounts/{account}/credits").json() == before  # nothing charged


# ------------------------------------------------------------------------------ 405 Allow

@both
def test_a_405_allow_names_every_method_of_the_path(api: Api):
    task_id = uuid.uuid4().hex
    cases = {f"/v1/tasks/{task_id}": {"GET", "DELETE"},  # two routes: get_task and delete_task
             "/v1/accounts/acme/keys/k1": {"DELETE"},
             "/v1/accounts/acme/credits": {"GET", "POST"},
             "/docs-assets/swagger-ui.css": {"GET", "HEAD"},  # static files
             "/dashboard/static/dashboard.css": {"GET", "HEAD"}}
    for path, methods in cases.items():
        r = api.admin.put(path, json={})
        problem(r, 405)
        assert set(re.split(r",\s*", r.headers["allow"])) == methods, (path, r.headers["allow"])


# ------------------------------------------------------------------------------ one printable rule

SAMPLES = ["Zoë's list ☕", "名前", "emoji \U0001F600", "unassigned \u0378 yet", "variation \U000E0100",
           "nbsp\u00a0", "zero\u200bwidth", "bidi \u202e", "line\u2028sep", "c1 \x85", "tab\t", "ideographic\u3000"]


def _pattern(schema: dict) -> re.Pattern:
    return re.compile(schema["pattern"])


def _accepted(pattern: re.Pattern, text: str) -> bool:
    return pattern.fullmatch(text) is not None


@both
def test_the_documents_patterns_and_the_server_agree_on_printable_text(api: Api):
    document = api.admin.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    single = document["paths"]["/v1/tasks/single"]["post"]
    header = next(p for p in single["parameters"] if p["name"] == "Idempotency-Key")
    name, label, account_id = (_pattern(schemas["SingleIn"]["properties"]["name"]),
                               _pattern(schemas["KeyIn"]["properties"]["label"]),
                               _pattern(schemas["AccountIn"]["properties"]["account_id"]))
    idempotency_key = _pattern(header["schema"])
    account, key = account_with_key(api, payg=100)
    assert {_accepted(name, s) for s in SAMPLES} == {True, False}  # the samples try both sides
    for text in SAMPLES:
        r = key.post("/v1/tasks/single", json={"address": "alice@example.com", "name": text})
        assert (r.status_code == 200) == _accepted(name, text), (text, r.status_code, r.text)
        r = api.admin.post(f"/v1/accounts/{account}/keys", json={"scopes": ["read"], "label": text})
        assert (r.status_code == 201) == _accepted(label, text), (text, r.status_code, r.text)
        r = api.admin.post("/v1/accounts", json={"account_id": f"{text}-{uuid.uuid4().hex[:6]}"})
        assert (r.status_code == 201) == _accepted(account_id, text), (text, r.status_code, r.text)
    # a header value is Latin-1 on the wire
    for raw in (b"retry caf\xe9 1", b"plain-ascii-key", b"nbsp\xa0key", b"c1\x85key", b"soft\xadhyphen"):
        text = raw.decode("latin-1")
        r = key.post("/v1/tasks/single", json={"address": "alice@example.com"},
                     headers={"Idempotency-Key": raw + uuid.uuid4().hex.encode()})
        assert (r.status_code == 200) == _accepted(idempotency_key, text), (raw, r.status_code, r.text)


# ------------------------------------------------------------------------------ the follower leaves

def _stream_positions(api: Api, stream: str) -> list[int]:
    positions: list[int] = []
    while True:
        page = api.admin.get("/v1/events", params={"stream": stream, "after": positions[-1] if positions else 0,
                                                   "limit": 1000}).json()["items"]
        if not page:
            return positions
        positions += [e["position"] for e in page]


def _events_to_catch_up(api: Api, at_least: int) -> tuple[str, int]:
    """A finished task whose stream holds at least `at_least` events (a catch-up of several
    pages), and the position of its last one."""
    _, key = account_with_key(api, payg=2000)
    task_id = bulk(key, csv_file(*unique_addresses(at_least))).json()["task"]["task_id"]
    api.wait_task(task_id, key, timeout=120)
    positions = _stream_positions(api, f"task-{task_id}")
    assert len(positions) >= at_least, len(positions)
    return task_id, positions[-1]


def _leave_abruptly(api: Api, path: str) -> None:
    """GET `path` on a raw socket, read the first bytes of the body, then reset the connection."""
    host, port = urlsplit(api.url).hostname, urlsplit(api.url).port
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
                     "Accept: text/event-stream\r\n\r\n".encode())
        received = b""
        while b"data: " not in received:
            chunk = sock.recv(4096)
            assert chunk, received
            received += chunk
        assert received.startswith(b"HTTP/1.1 200")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN


@embedded
def test_a_follower_that_leaves_during_catch_up_leaves_the_servers_log_quiet(api: Api):
    task_id, last = _events_to_catch_up(api, 1200)
    logged = api.log.stat().st_size
    for _ in range(3):
        _leave_abruptly(api, f"/v1/events/follow?stream=task-{task_id}")
    # another follower reads the whole catch-up: the engine thread served every page the
    # ones that left could still ask for, and the event loop ran past their writes
    with api.admin.stream("GET", "/v1/events/follow", params={"stream": f"task-{task_id}"}) as follow:
        lines = follow.iter_lines()
        while read_sse(lines)["position"] < last:
            pass
    assert api.admin.get("/healthz").status_code == 200
    with api.log.open("rb") as log:
        log.seek(logged)
        text = log.read().decode(errors="replace")
    assert "socket.send() raised exception" not in text, text[-2000:]
    assert "Traceback" not in text, text[-2000:]


def test_the_follow_stream_stops_at_the_first_item_after_the_client_left(tmp_path):
    """In-process, on a real SQLite store: the client leaves once the first event is sent;
    the stream sends nothing more (not the rest of a 500-event catch-up page) and ends."""
    from entrypoints.settings import EngineSettings
    from entrypoints.api.app import create_app

    settings = EngineSettings(_env_file=None, store=f"sqlite:///{tmp_path}/vec.db", admin_token=ADMIN_TOKEN)
    app = create_app(settings)

    async def scenario() -> list[bytes]:
        async with app.router.lifespan_context(app):
            services = app.state.services
            for n in range(300):  # 600 events: more than a catch-up page
                await services.call(services.engine.open_account, f"acct-{n}")
            sent: list[bytes] = []
            left = asyncio.Event()
            requested = []

            async def receive():
                if not requested:
                    requested.append(True)
                    return {"type": "http.request", "body": b"", "more_body": False}
                await left.wait()
                return {"type": "http.disconnect"}

            async def send(message):
                if message["type"] == "http.response.body" and message.get("body"):
                    sent.append(message["body"])
                    left.set()  # the client is gone once the first event reached it

            scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
                     "method": "GET", "scheme": "http", "path": "/v1/events/follow", "raw_path": b"/v1/events/follow",
                     "root_path": "", "query_string": b"after=0", "server": ("127.0.0.1", 80),
                     "client": ("127.0.0.1", 1234), "app": app,
                     "headers": [(b"authorization", f"Bearer {ADMIN_TOKEN}".encode()), (b"host", b"test")]}
            await asyncio.wait_for(app(scope, receive, send), timeout=30)  # it ends: the generator stopped
            return sent

    sent = asyncio.run(scenario())
    assert 1 <= len(sent) <= 2, f"{len(sent)} events sent after the client left"


# ------------------------------------------------------------------------------ secrets in the log

@both
def test_an_audit_key_never_reads_a_keys_secret_digest_the_admin_does(api: Api):
    account, audit = account_with_key(api, scopes=("audit",))
    api.new_key(account, ("read",))
    stream = {"stream": f"account-{account}"}
    admins = [e for e in api.admin.get("/v1/events", params=stream).json()["items"] if e["type"] == "ApiKeyIssued"]
    assert len(admins) == 2 and all(len(e["data"]["secret_sha256"]) == 64 for e in admins)
    keys = [e for e in audit.get("/v1/events", params=stream).json()["items"] if e["type"] == "ApiKeyIssued"]
    assert [e["position"] for e in keys] == [e["position"] for e in admins]
    assert all("secret_sha256" not in e["data"] and e["data"]["key_id"] for e in keys)
    with audit.stream("GET", "/v1/events/follow", params=stream) as follow:
        lines = follow.iter_lines()
        followed = [read_sse(lines) for _ in api.admin.get("/v1/events", params=stream).json()["items"]]
    issued = [e for e in followed if e["type"] == "ApiKeyIssued"]
    assert len(issued) == 2 and all("secret_sha256" not in e["data"] for e in issued)
    for digest in (e["data"]["secret_sha256"] for e in admins):
        assert digest not in json.dumps(followed)


# ------------------------------------------------------------------------------ /docs

class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str, bool]] = []  # (tag, url, has integrity)

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        for name in ("src", "href"):
            if values.get(name):
                self.refs.append((tag, values[name], bool(values.get("integrity"))))


@both
def test_the_docs_pages_load_nothing_from_a_third_party_origin(api: Api):
    anonymous = api.client(token=None)
    for page in ("/docs", "/redoc"):
        r = anonymous.get(page)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        parser = _Refs()
        parser.feed(r.text)
        assert any(tag == "script" for tag, _, _ in parser.refs), parser.refs
        for tag, ref, integrity in parser.refs:
            url = urljoin(api.url + page, ref)
            if urlsplit(url).netloc != urlsplit(api.url).netloc:
                assert integrity, f"{page} loads {ref} from another origin without an integrity hash"
                continue
            asset = anonymous.get(url)
            assert asset.status_code == 200 and asset.content, (page, ref)
        assert "cdn." not in r.text and "fonts.googleapis" not in r.text

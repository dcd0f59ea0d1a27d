"""The product's public API (POST /api/verify-single, POST /api/verify-bulk, GET
/api/get-results/{task_id}) against a real `vec serve`: the documented request and response
fields, error bodies (402 with current_balance, 429 with retry_after_seconds) and rate-limit
headers, with the same Bearer keys, limiter and money rules as /v1.

The server's provider is the instant one (tests/api/server.py): a local part starting with
unknown/invalid/risky gives that money status (risky: catch_all), anything else is safe. It
records no provider flags (mx_found, free_email...): those are the provider's, tested with
`to_result` in tests/unit/test_taxonomy.py.
"""
from __future__ import annotations

import csv
import io
import re
import time
import uuid

import httpx
import pytest

from tests.api.server import BOTH_MODES, Api

both = pytest.mark.parametrize("api", BOTH_MODES, indirect=True)
both_limited = pytest.mark.parametrize("limited_api", BOTH_MODES, indirect=True)

RESULT_FIELDS = {"email", "status", "is_valid", "is_disposable", "is_role_account", "is_catch_all", "is_free_email",
                 "mx_found", "domain", "risk_score", "deliverability", "credits_used", "verified_at", "reason",
                 "task_id"}
BULK_FIELDS = {"task_id", "name", "status", "total_emails", "is_chunked", "total_chunks", "partial_failure",
               "failed_emails_count", "credits_refunded", "duplicates", "message"}
RESULTS_FIELDS = {"task_id", "name", "status", "progress", "total_emails", "processed_emails", "failed_emails_count",
                  "partial_failure", "credits_used", "credits_refunded", "created_at", "completed_at", "results"}
MISSING_KEY = "Missing or invalid Authorization header. Use: Authorization: Bearer YOUR_API_KEY"
INVALID_KEY = "Invalid or inactive API key"
UTC_MILLIS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def account_with_key(api: Api, payg: int = 0, scopes=("read", "write")) -> tuple[str, httpx.Client]:
    account = api.new_account("compat", payg=payg)
    return account, api.client(api.new_key(account, scopes)["key"])


def balance(api: Api, account: str) -> int:
    r = api.admin.get(f"/v1/accounts/{account}/credits")
    assert r.status_code == 200, r.text
    return r.json()["total"]


def emails(n: int, prefix: str = "u") -> list[str]:
    tag = uuid.uuid4().hex[:6]
    return [f"{prefix}{i:04d}.{tag}@example.com" for i in range(n)]


def rate_headers(response: httpx.Response) -> tuple[int, int, int]:
    h = response.headers
    return int(h["x-ratelimit-limit"]), int(h["x-ratelimit-remaining"]), int(h["x-ratelimit-reset"])


def error(response: httpx.Response, status: int) -> dict:
    """Asserts an error of the documented shape (plain JSON, not problem details)."""
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text}"
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body["error"], str) and body["error"], body
    return body


def results_when_finished(api: Api, client: httpx.Client, task_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"/api/get-results/{task_id}")
        assert r.status_code == 200, r.text
        body = r.json()
        if body["status"] not in ("pending", "processing"):
            return body
        assert body["results"] == [], "results are shown once the task finished"
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id} never finished: {body}\n{api.tail()}")
        time.sleep(0.05)


# ------------------------------------------------------------------------------ verify-single

@both
def test_verify_single_answers_every_documented_field(api: Api):
    account, key = account_with_key(api)
    expected = {  # local part -> (status, is_valid, risk_score, deliverability, credits_used)
        "alice": ("safe", True, 2, "high", 1),
        "risky.one": ("catch_all", False, 29, "medium", 1),
        "invalid.one": ("invalid", False, 97, "low", 1),
        "unknown.one": ("unknown", False, 100, "unknown", 0),
    }
    for local, (status, valid, risk, deliverability, used) in expected.items():
        address = f"{local}@Example.com"
        r = key.post("/api/verify-single", json={"email": address})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/json")
        body = r.json()
        assert set(body) == RESULT_FIELDS, body
        assert body["email"] == address and body["domain"] == "Example.com"
        assert (body["status"], body["is_valid"], body["risk_score"], body["deliverability"],
                body["credits_used"]) == (status, valid, risk, deliverability, used), body
        assert body["is_catch_all"] == (status == "catch_all")
        assert body["is_disposable"] is False and body["is_role_account"] is False
        assert body["is_free_email"] is False and body["mx_found"] is False  # the instant provider records none
        assert isinstance(body["reason"], str) and body["reason"]
        assert UTC_MILLIS.match(body["verified_at"]), body["verified_at"]
        limit, remaining, reset = rate_headers(r)
        assert limit >= 1 and 0 <= remaining < limit and reset >= int(time.time())
        task = api.wait_task(body["task_id"], key)
        assert (task["kind"], task["account"]) == ("single", account)
    # the money rules, unchanged: three consumed, the unknown one refunded
    assert balance(api, account) == 200 - 3
    assert "refunded" in key.post("/api/verify-single", json={"email": "unknown.two@example.com"}).json()["reason"]


@both
def test_verify_single_refuses_a_body_without_an_email(api: Api):
    account, key = account_with_key(api)
    for body in ({}, {"email": ""}, {"address": "a@example.com"}, [], "a@example.com"):
        r = key.post("/api/verify-single", json=body)
        assert error(r, 400)["error"] == "Email is required", body
    assert error(key.post("/api/verify-single", content=b"{not json", headers={"Content-Type": "application/json"}),
                 400)["error"] == "Invalid JSON"
    assert error(key.post("/api/verify-single", json={"email": "no-at-sign"}), 400)["error"] == "Invalid email format"
    assert error(key.post("/api/verify-single", json={"email": 42}), 400)["error"] == "Invalid request"
    assert balance(api, account) == 200  # nothing charged


# ------------------------------------------------------------------------------ verify-bulk and get-results

@both
def test_verify_bulk_creates_a_task_and_get_results_returns_every_result(api: Api):
    account, key = account_with_key(api)
    good = emails(3, "ok")
    listed = [*good, good[0], "risky.x@example.com", "invalid.x@example.com", "unknown.x@example.com"]
    r = key.post("/api/verify-bulk", json={"emails": listed, "name": "Q2 newsletter cleanup"})
    assert r.status_code == 200, r.text
    created = r.json()
    assert set(created) == BULK_FIELDS, created
    assert created["name"] == "Q2 newsletter cleanup"
    assert created["status"] in ("pending", "processing", "completed")
    assert (created["total_emails"], created["duplicates"]) == (6, 1)  # a duplicate is charged once
    assert (created["is_chunked"], created["total_chunks"]) == (True, 3)  # the test server's chunks hold 2
    # the task as it is now: the engine may already have refunded the unknown one
    assert (created["partial_failure"], created["failed_emails_count"]) == (False, 0)
    assert created["credits_refunded"] in (0, 1)
    assert created["task_id"] in created["message"]
    assert rate_headers(r)[0] >= 1
    assert key.get(f"/v1/tasks/{created['task_id']}").json()["debited"] == 6  # debited at creation, as /v1

    done = results_when_finished(api, key, created["task_id"])
    assert set(done) == RESULTS_FIELDS, done
    assert (done["task_id"], done["name"], done["status"]) == (created["task_id"], "Q2 newsletter cleanup", "completed")
    assert (done["progress"], done["total_emails"], done["processed_emails"]) == (100, 6, 6)
    assert (done["credits_used"], done["credits_refunded"], done["failed_emails_count"]) == (5, 1, 0)
    assert UTC_MILLIS.match(done["created_at"]) and UTC_MILLIS.match(done["completed_at"])
    assert done["partial_failure"] is False
    by_email = {item["email"]: item for item in done["results"]}
    assert len(done["results"]) == 6 and set(by_email) == {*good, "risky.x@example.com", "invalid.x@example.com",
                                                             "unknown.x@example.com"}
    for item in done["results"]:
        assert set(item) == RESULT_FIELDS, item
        assert item["task_id"] == created["task_id"] and item["verified_at"] is None
        assert item["domain"] == "example.com" and 0 <= item["risk_score"] <= 100
    assert {e: by_email[e]["status"] for e in by_email if e not in good} == {
        "risky.x@example.com": "catch_all", "invalid.x@example.com": "invalid", "unknown.x@example.com": "unknown"}
    assert {by_email[e]["status"] for e in good} == {"safe"}
    assert by_email["unknown.x@example.com"]["credits_used"] == 0
    assert balance(api, account) == 200 - 5  # the unknown one refunded

    # the same task through /v1: its exports carry the taxonomy columns too
    exported = key.get(f"/v1/tasks/{created['task_id']}/results", params={"format": "json"}).json()
    assert {row["address"]: (row["status"], row["result"], row["score"]) for row in exported
            if row["address"] not in good} == {
        "risky.x@example.com": ("risky", "catch_all", 71), "invalid.x@example.com": ("invalid", "invalid", 3),
        "unknown.x@example.com": ("unknown", "unknown", 0)}
    assert all(isinstance(row[f], bool) for row in exported for f in (
        "is_disposable", "is_role_account", "is_catch_all", "is_free_email", "mx_found"))
    table = list(csv.DictReader(io.StringIO(key.get(f"/v1/tasks/{created['task_id']}/results").text)))
    assert {row["address"]: (row["result"], row["score"], row["is_catch_all"]) for row in table
            if row["address"].startswith("risky")} == {"risky.x@example.com": ("catch_all", "71", "true")}


@both
def test_verify_bulk_refuses_what_is_not_a_list_of_emails(api: Api):
    account, key = account_with_key(api)
    for body in ({}, {"emails": []}, {"emails": None}, {"name": "x"}):
        assert error(key.post("/api/verify-bulk", json=body), 400)["error"] == "Emails are required", body
    assert error(key.post("/api/verify-bulk", json={"emails": "a@example.com"}), 400)["error"] == "Invalid request"
    assert error(key.post("/api/verify-bulk", json={"emails": ["a@example.com", 7]}), 400)["error"] == "Invalid request"
    for bad in ("a,b@example.com", "a\nb@example.com", 'a"b@example.com'):
        assert error(key.post("/api/verify-bulk", json={"emails": [bad]}), 400)["error"] == "Invalid email format"
    assert error(key.post("/api/verify-bulk", json={"emails": ["nobody"]}), 422)["error"] == "Bad upload"
    assert balance(api, account) == 200


@both
def test_a_retried_verify_bulk_with_its_idempotency_key_is_the_same_task(api: Api):
    account, key = account_with_key(api)
    body = {"emails": emails(2)}
    first = key.post("/api/verify-bulk", json=body, headers={"Idempotency-Key": "compat-1"})
    again = key.post("/api/verify-bulk", json=body, headers={"Idempotency-Key": "compat-1"})
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert first.json()["task_id"] == again.json()["task_id"]
    other = key.post("/api/verify-bulk", json={"emails": emails(1)}, headers={"Idempotency-Key": "compat-1"})
    assert error(other, 409)["error"] == "Idempotency conflict"
    assert balance(api, account) == 200 - 2
    # without a key, the same list again is a new task (the product's API refuses no duplicate list)
    assert key.post("/api/verify-bulk", json=body).json()["task_id"] != first.json()["task_id"]


# ------------------------------------------------------------------------------ 402

@both
def test_402_with_the_current_balance_once_the_welcome_credits_are_spent(api: Api):
    account, key = account_with_key(api)
    assert balance(api, account) == 200  # the welcome credits, opened with the admin token
    too_many = key.post("/api/verify-bulk", json={"emails": emails(201)})
    assert error(too_many, 402) == {"error": "Insufficient credits", "current_balance": 200,
                                    "message": "Please purchase more credits to continue"}
    assert rate_headers(too_many)[0] >= 1
    assert balance(api, account) == 200  # the whole bulk refused, nothing deducted

    spent = key.post("/api/verify-bulk", json={"emails": emails(200)})
    assert spent.status_code == 200, spent.text
    assert balance(api, account) == 0
    single = key.post("/api/verify-single", json={"email": "late@example.com"})
    assert error(single, 402) == {"error": "Insufficient credits", "current_balance": 0,
                                  "message": "Please purchase more credits to continue"}
    assert error(key.post("/api/verify-bulk", json={"emails": emails(1)}), 402)["current_balance"] == 0
    results_when_finished(api, key, spent.json()["task_id"])
    assert balance(api, account) == 0  # all 200 safe: all consumed


# ------------------------------------------------------------------------------ who may ask

@both
def test_401_without_a_valid_key_and_another_accounts_task_is_a_404(api: Api):
    account, key = account_with_key(api)
    other_account, other = account_with_key(api)
    read_only = api.client(api.new_key(account, ("read",))["key"])
    task_id = key.post("/api/verify-bulk", json={"emails": emails(1)}).json()["task_id"]
    nobody, mistyped = api.client(None), api.client("vec_nope_nope")
    calls = [("POST", "/api/verify-single", {"json": {"email": "a@example.com"}}),
             ("POST", "/api/verify-bulk", {"json": {"emails": ["a@example.com"]}}),
             ("GET", f"/api/get-results/{task_id}", {})]
    for method, path, kwargs in calls:
        r = nobody.request(method, path, **kwargs)
        assert error(r, 401)["error"] == MISSING_KEY and r.headers["www-authenticate"] == "Bearer"
        assert "x-ratelimit-limit" not in r.headers  # no key, no key's window
        assert error(mistyped.request(method, path, **kwargs), 401)["error"] == INVALID_KEY
    assert error(api.client("").get(f"/api/get-results/{task_id}"), 401)["error"] == MISSING_KEY

    mine = key.get(f"/api/get-results/{task_id}")
    assert mine.status_code == 200 and mine.json()["task_id"] == task_id
    theirs = other.get(f"/api/get-results/{task_id}")
    assert error(theirs, 404)["error"] == "Not found"
    assert error(other.get("/api/get-results/no-such-task"), 404) == error(theirs, 404) | {
        "message": "no such task: no-such-task"}
    assert error(other.post("/api/verify-single", params={"account": account}, json={"email": "a@example.com"}),
                 404)["error"] == "Not found"
    # a read-only key reads, and may not spend
    assert read_only.get(f"/api/get-results/{task_id}").status_code == 200
    assert error(read_only.post("/api/verify-bulk", json={"emails": emails(1)}), 403)["error"] == "Forbidden"
    assert error(read_only.post("/api/verify-single", json={"email": "a@example.com"}), 403)["error"] == "Forbidden"
    # the admin names the account
    assert error(api.admin.post("/api/verify-bulk", json={"emails": emails(1)}), 422)["error"] == "Invalid request"
    admin = api.admin.post("/api/verify-single", params={"account": account}, json={"email": "adm@example.com"})
    assert admin.status_code == 200 and admin.json()["status"] == "safe"
    assert api.admin.get(f"/api/get-results/{task_id}").status_code == 200
    assert balance(api, account) == 200 - 2 and balance(api, other_account) == 200


# ------------------------------------------------------------------------------ 429 and the 202

@both_limited
def test_429_with_retry_after_seconds_from_the_same_limiter_as_v1(limited_api: Api):
    api = limited_api  # VEC_API_RATE_LIMIT=5/second
    account, key = account_with_key(api)
    time.sleep(1.1)  # the key's window is clear
    answers = []
    while len(answers) < 50 and (not answers or answers[-1].status_code != 429):
        answers.append(key.get("/api/get-results/none-such"))
    assert [r.status_code for r in answers][:5] == [404] * 5
    assert [rate_headers(r)[:2] for r in answers[:5]] == [(5, 4), (5, 3), (5, 2), (5, 1), (5, 0)]
    limited = answers[-1]
    body = error(limited, 429)
    wait = body["retry_after_seconds"]
    assert body == {"error": "Rate limit exceeded", "limit": 5, "window": "1 second", "current": 6,
                    "retry_after_seconds": wait, "message": body["message"]}
    assert 1 <= wait <= 2 and limited.headers["retry-after"] == str(wait)
    limit, remaining, reset = rate_headers(limited)
    assert (limit, remaining) == (5, 0) and int(time.time()) <= reset <= int(time.time()) + 2
    # one limiter per key, /v1 and /api alike
    assert api.admin.get(f"/v1/accounts/{account}/credits").status_code == 200  # another caller is not slowed
    assert key.get(f"/v1/accounts/{account}/credits").status_code == 429
    time.sleep(wait + 0.1)
    assert key.get("/api/get-results/none-such").status_code == 404


@both_limited
def test_a_single_verification_that_outlasts_the_wait_is_a_202_to_poll(limited_api: Api):
    api = limited_api  # single tasks there cannot finish within VEC_API_SINGLE_WAIT
    account, key = account_with_key(api)
    time.sleep(1.1)
    r = key.post("/api/verify-single", json={"email": "slow@example.com"})
    assert r.status_code == 202, r.text
    body = r.json()
    assert (body["email"], body["status"]) == ("slow@example.com", "processing")
    assert r.headers["location"] == f"/api/get-results/{body['task_id']}"
    polled = key.get(r.headers["location"])
    assert polled.status_code == 200 and polled.json()["status"] in ("pending", "processing")
    assert polled.json()["results"] == []


# ------------------------------------------------------------------------------ the document

@both
def test_the_compat_routes_are_documented_under_the_compat_tag(api: Api):
    document = api.admin.get("/openapi.json").json()
    compat = {(method.upper(), path): op for path, ops in document["paths"].items() for method, op in ops.items()
              if "compat" in op.get("tags", ())}
    assert set(compat) == {("POST", "/api/verify-single"), ("POST", "/api/verify-bulk"),
                           ("GET", "/api/get-results/{task_id}")}
    for label, op in compat.items():
        assert op["security"] == [{"HTTPBearer": []}], label
        assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(
            op["responses"]["200"]["headers"]), label
        assert op["responses"]["429"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/RateLimitedBody"}, label
    for label in (("POST", "/api/verify-single"), ("POST", "/api/verify-bulk")):
        assert compat[label]["responses"]["402"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/InsufficientCreditsBody"}
    schemas = document["components"]["schemas"]
    assert set(schemas["EmailResult"]["properties"]) == RESULT_FIELDS
    assert {"current_balance"} <= set(schemas["InsufficientCreditsBody"]["required"])
    assert {"retry_after_seconds", "limit", "window", "current"} <= set(schemas["RateLimitedBody"]["required"])

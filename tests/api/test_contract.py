"""The HTTP API's contract, route by route, in both modes (embedded: `vec serve` on SQLite
with the engine in the same process; distributed: PostgreSQL, Kafka and a fleet), through
a real uvicorn on loopback (tests/api/conftest.py).

Every refusal is a 4xx problem (RFC 9457) and appends nothing to the streams it concerns;
`vec audit` passes on each mode's store at the end.
"""
from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
import time
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from tests.api.server import BOTH_MODES, CHUNK_SIZE, MAX_UPLOAD_BYTES, Api, jsonl, problem

both = pytest.mark.parametrize("api", BOTH_MODES, indirect=True)
both_limited = pytest.mark.parametrize("limited_api", BOTH_MODES, indirect=True)

CSV = {"Content-Type": "text/csv"}


# ------------------------------------------------------------------------------ helpers

def stream_events(api: Api, stream: str) -> list[dict]:
    r = api.admin.get("/v1/events", params={"stream": stream, "limit": 1000})
    assert r.status_code == 200, r.text
    return r.json()["items"]


@contextlib.contextmanager
def appends_nothing(api: Api, *streams: str, but_late_results: bool = False):
    """The block appends no event to any of `streams` (an account's, a task's; one whose
    name holds a NUL cannot exist, PostgreSQL keeps no NUL). `but_late_results`: a stopped
    task's workers may still log the late results of chunks they were verifying; those are
    theirs, not the block's."""
    def appended(stream: str) -> list[tuple[int, str]]:
        return [(e["position"], e["type"]) for e in stream_events(api, stream)
                if not (but_late_results and (e.get("data") or {}).get("late"))]

    streams = tuple(s for s in streams if "\x00" not in s)
    before = {s: appended(s) for s in streams}
    yield
    after = {s: appended(s) for s in streams}
    assert after == before, f"a refused request appended events: {before} -> {after}"


def csv_file(*addresses: str, header: str = "email") -> str:
    return header + "\n" + "".join(f"{a}\n" for a in addresses)


def unique_addresses(n: int, prefix: str = "u") -> list[str]:
    tag = uuid.uuid4().hex[:6]
    return [f"{prefix}{i:05d}.{tag}@example.com" for i in range(n)]


def bulk(client: httpx.Client, body: str, account: str | None = None, **params) -> httpx.Response:
    if account:
        params["account"] = account
    return client.post("/v1/tasks/bulk", params=params, content=body.encode(), headers=CSV)


def balance(api: Api, account: str) -> dict:
    r = api.admin.get(f"/v1/accounts/{account}/credits")
    assert r.status_code == 200, r.text
    return r.json()


def account_with_key(api: Api, payg: int = 0, scopes=("read", "write", "audit")) -> tuple[str, httpx.Client]:
    account = api.new_account(payg=payg)
    return account, api.client(api.new_key(account, scopes)["key"])


def cursor(values) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def assert_settled(task: dict) -> None:
    assert task["debited"] == task["consumed"] + task["refunded"], task
    assert task["debited"] == task["total"], task


# ------------------------------------------------------------------------------ accounts

@both
def test_accounts_open_with_welcome_credits_and_refuse_a_duplicate(api: Api):
    account = f"acme-{uuid.uuid4().hex[:8]}"
    r = api.admin.post("/v1/accounts", json={"account_id": account})
    assert r.status_code == 201, r.text
    assert r.json() == {"account": account, "monthly": 0, "payg": 200, "total": 200, "monthly_expires_at": None}
    with appends_nothing(api, f"account-{account}"):
        assert problem(api.admin.post("/v1/accounts", json={"account_id": account}), 409)["title"] == "Conflict"
    for bad in ({"account_id": ""}, {"account_id": "a\x00b"}, {"account_id": "x" * 1000}, {},
                {"account_id": account, "extra": 1}, {"account_id": 5}):
        with appends_nothing(api, f"account-{bad.get('account_id')}"):
            problem(api.admin.post("/v1/accounts", json=bad), 422)
    problem(api.admin.post("/v1/accounts", content=b"{not json", headers={"Content-Type": "application/json"}), 422)
    problem(api.admin.post("/v1/accounts", content=b"\xff\xfe{", headers={"Content-Type": "application/json"}), 400)
    assert balance(api, account)["total"] == 200


@both
def test_credits_grant_payg_and_monthly_with_an_expiry(api: Api):
    account = api.new_account()
    r = api.admin.post(f"/v1/accounts/{account}/credits", json={"bucket": "payg", "amount": 500})
    assert r.status_code == 200, r.text
    assert r.json()["payg"] == 700 and r.json()["total"] == 700
    expires = (datetime.now(timezone.utc) + timedelta(days=30)).replace(microsecond=0)
    with appends_nothing(api, f"account-{account}"):
        assert "expires_at" in problem(api.admin.post(f"/v1/accounts/{account}/credits",
                                                      json={"bucket": "monthly", "amount": 100}), 422)["detail"]
        for bad in ({"bucket": "monthly", "amount": 100, "expires_at": expires.replace(tzinfo=None).isoformat()},
                    {"bucket": "monthly", "amount": 100, "expires_at": "2001-01-01T00:00:00+00:00"},
                    {"bucket": "monthly", "amount": 100, "expires_at": "9999-12-31T23:59:59-05:00"},
                    {"bucket": "monthly", "amount": 100, "expires_at": "10000-01-01T00:00:00+00:00"},
                    {"bucket": "payg", "amount": 100, "expires_at": expires.isoformat()},
                    {"bucket": "payg", "amount": 0}, {"bucket": "payg", "amount": -5},
                    {"bucket": "payg", "amount": 10**13}, {"bucket": "payg", "amount": 1.5},
                    {"bucket": "gold", "amount": 5}, {"bucket": "payg", "amount": 5, "reason": "gift"}):
            problem(api.admin.post(f"/v1/accounts/{account}/credits", json=bad), 422)
    r = api.admin.post(f"/v1/accounts/{account}/credits",
                       json={"bucket": "monthly", "amount": 100, "expires_at": expires.isoformat()})
    assert r.status_code == 200, r.text
    assert r.json()["monthly"] == 100 and r.json()["total"] == 800
    assert datetime.fromisoformat(r.json()["monthly_expires_at"]) == expires
    assert balance(api, account) == r.json()
    problem(api.admin.post("/v1/accounts/nobody-here/credits", json={"bucket": "payg", "amount": 5}), 404)
    problem(api.admin.get("/v1/accounts/nobody-here/credits"), 404)


@both
def test_history_pages_with_a_cursor_and_filters_by_type(api: Api):
    account = api.new_account()
    for amount in range(1, 8):
        assert api.admin.post(f"/v1/accounts/{account}/credits",
                              json={"bucket": "payg", "amount": amount}).status_code == 200
    api.admin.post(f"/v1/accounts/{account}/credits", json={"bucket": "payg", "amount": 9, "reason": "support"})
    everything = api.admin.get(f"/v1/accounts/{account}/history", params={"limit": 1000}).json()
    assert [row["type"] for row in everything["items"]] == ["welcome"] + ["purchase"] * 7 + ["support"]
    assert everything["next_cursor"] is None
    assert everything["items"][-1]["balance_after"] == 200 + 28 + 9

    pages, params = [], {"limit": 4}
    while True:
        r = api.admin.get(f"/v1/accounts/{account}/history", params=params)
        assert r.status_code == 200, r.text
        pages.append(r.json()["items"])
        if not r.json()["next_cursor"]:
            break
        params = {"limit": 4, "cursor": r.json()["next_cursor"]}
    assert [len(p) for p in pages][:3] == [4, 4, 1] and len(pages) == 3
    assert [row for page in pages for row in page] == everything["items"]

    purchases = api.admin.get(f"/v1/accounts/{account}/history", params={"type": "purchase", "limit": 3})
    assert [row["type"] for row in purchases.json()["items"]] == ["purchase"] * 3
    rest = api.admin.get(f"/v1/accounts/{account}/history",
                         params={"type": "purchase", "cursor": purchases.json()["next_cursor"]}).json()
    assert [row["amount"] for row in purchases.json()["items"] + rest["items"]] == list(range(1, 8))

    for bad in ({"type": "gift"}, {"limit": 0}, {"limit": 1001}, {"cursor": "%%%"}, {"cursor": "bm9wZQ"},
                {"cursor": cursor(["x"])}, {"cursor": cursor([True])}, {"cursor": cursor([-1])},
                {"cursor": cursor([2**64])}, {"cursor": cursor([None])}, {"cursor": cursor([{}])},
                {"cursor": cursor([1, 2])}, {"cursor": cursor({"seq": 1})}):
        problem(api.admin.get(f"/v1/accounts/{account}/history", params=bad), 422)
    problem(api.admin.get("/v1/accounts/nobody-here/history"), 404)


@both
def test_keys_are_created_used_and_revoked_at_once(api: Api):
    account = api.new_account()
    r = api.admin.post(f"/v1/accounts/{account}/keys", json={"scopes": ["read"], "label": "crm"})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["account"] == account and created["scopes"] == ["read"]
    assert created["key"].startswith(f"vec_{created['key_id']}_")
    key = api.client(created["key"])
    assert key.get(f"/v1/accounts/{account}/credits").json()["total"] == 200
    problem(key.post("/v1/tasks/single", json={"address": "a@example.com"}), 403)  # read only

    r = api.admin.delete(f"/v1/accounts/{account}/keys/{created['key_id']}")
    assert r.status_code == 204, r.text
    assert problem(key.get(f"/v1/accounts/{account}/credits"), 401)
    assert key.get(f"/v1/accounts/{account}/credits").headers["www-authenticate"] == "Bearer"
    with appends_nothing(api, f"account-{account}"):
        problem(api.admin.delete(f"/v1/accounts/{account}/keys/{created['key_id']}"), 409)
        problem(api.admin.delete(f"/v1/accounts/{account}/keys/0123456789abcdef"), 404)
        for bad in ({"scopes": []}, {"scopes": ["admin"]}, {"scopes": ["read"], "label": "x" * 201},
                    {"scopes": ["read"], "label": "a\x07b"}, {"scopes": "read"}):
            problem(api.admin.post(f"/v1/accounts/{account}/keys", json=bad), 422)
    problem(api.admin.post("/v1/accounts/nobody-here/keys", json={"scopes": ["read"]}), 404)
    problem(api.admin.delete(f"/v1/accounts/nobody-here/keys/{created['key_id']}"), 404)
    for token in ("vec_nope_nope", "not-a-key", created["key"][:-1] + "x", ""):
        problem(api.client(token).get(f"/v1/accounts/{account}/credits"), 401)
    problem(httpx.get(f"{api.url}/v1/accounts/{account}/credits", headers={"Authorization": "Basic eDp5"}), 401)


# ------------------------------------------------------------------------------ single tasks

@both
def test_a_single_task_answers_with_its_result(api: Api):
    account, key = account_with_key(api)
    r = key.post("/v1/tasks/single", json={"address": "alice@example.com"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["address"] == "alice@example.com" and body["status"] == "safe"
    assert body["task"]["kind"] == "single" and body["task"]["status"] == "completed"
    assert body["task"]["account"] == account and body["task"]["created_by"].startswith("apikey:")
    assert body["task"]["url"] == f"/v1/tasks/{body['task']['task_id']}"
    unknown = key.post("/v1/tasks/single", json={"address": "unknown7@example.com"}).json()
    assert unknown["status"] == "unknown" and unknown["reason"] == "greylisted"
    assert unknown["task"]["refunded"] == 1 and unknown["task"]["consumed"] == 0
    assert key.post("/v1/tasks/single", json={"address": "invalid@example.com"}).json()["status"] == "invalid"
    assert balance(api, account)["total"] == 200 - 2

    r = api.admin.post("/v1/tasks/single", params={"account": account}, json={"address": "risky@example.com"})
    assert r.status_code == 200 and r.json()["status"] == "risky" and r.json()["task"]["created_by"] == "admin"
    with appends_nothing(api, f"account-{account}"):
        problem(api.admin.post("/v1/tasks/single", json={"address": "bob@example.com"}), 422)  # which account?
        problem(api.admin.post("/v1/tasks/single", params={"account": "nobody-here"},
                               json={"address": "bob@example.com"}), 404)
        for bad in ({"address": "no-at-sign"}, {"address": ""}, {"address": "a@" + "b" * 400}, {},
                    {"address": "nul\x00@example.com"}, {"address": "cr\r\nRCPT@example.com"},
                    {"address": ["a@example.com"]}, {"address": "a@example.com", "more": True}):
            problem(key.post("/v1/tasks/single", json=bad), 422)
    assert balance(api, account)["total"] == 200 - 3


@both_limited
def test_a_single_task_that_cannot_finish_in_time_is_a_202_with_its_location(limited_api: Api):
    api = limited_api
    account = api.new_account()
    r = api.admin.post("/v1/tasks/single", params={"account": account}, json={"address": "slow@example.com"})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] is None and body["address"] == "slow@example.com"
    assert r.headers["location"] == body["task"]["url"] == f"/v1/tasks/{body['task']['task_id']}"
    shown = api.admin.get(r.headers["location"])
    assert shown.status_code == 200 and shown.json()["status"] in ("pending", "processing")
    assert shown.json()["debited"] == 1
    time.sleep(1)  # the rate limit's window (5 a second) is clear for the next test


# ------------------------------------------------------------------------------ bulk tasks

@both
def test_bulk_uploads_as_text_csv_and_as_multipart(api: Api):
    account, key = account_with_key(api)
    addresses = ["Alice@example.com", "alice@example.com", "unknown1@example.com", "risky1@example.com",
                 "invalid1@example.com"]
    r = key.post("/v1/tasks/bulk", content=("name,email\n" + "".join(f"x,{a}\n" for a in addresses)
                                              + "no address,\n").encode(), headers=CSV)
    assert r.status_code == 201, r.text
    upload = r.json()
    assert (upload["addresses"], upload["duplicates"], upload["rows_without_address"], upload["column"]) == \
        (4, 1, 1, "email")
    assert upload["task"]["kind"] == "bulk" and upload["task"]["total"] == 4
    done = api.wait_task(upload["task"]["task_id"], key)
    assert done["status"] == "completed" and (done["verified"], done["unknown"], done["refunded"]) == (4, 1, 1)
    assert_settled(done)

    r = key.post("/v1/tasks/bulk", files={"file": ("list.csv", csv_file(*unique_addresses(3)), "text/csv")})
    assert r.status_code == 201, r.text
    assert r.json()["addresses"] == 3
    assert api.wait_task(r.json()["task"]["task_id"], key)["status"] == "completed"
    r = key.post("/v1/tasks/bulk", content=csv_file(*unique_addresses(2)).encode(),
                 headers={"Content-Type": "text/plain; charset=utf-8"})
    assert r.status_code == 201, r.text
    api.wait_task(r.json()["task"]["task_id"], key)
    assert balance(api, account)["total"] == 200 - 4 + 1 - 3 - 2


@both
def test_the_same_file_twice_is_a_409_unless_allowed(api: Api):
    account, key = account_with_key(api)
    body = csv_file(*unique_addresses(3))
    first = bulk(key, body)
    assert first.status_code == 201, first.text
    with appends_nothing(api, f"account-{account}"):
        assert problem(bulk(key, body), 409)["title"] == "Duplicate upload"
        problem(key.post("/v1/tasks/bulk", files={"file": ("again.csv", body, "text/csv")}), 409)
    again = bulk(key, body, allow_duplicate="true")
    assert again.status_code == 201, again.text
    assert again.json()["task"]["task_id"] != first.json()["task"]["task_id"]
    for task in (first, again):
        api.wait_task(task.json()["task"]["task_id"], key)
    assert balance(api, account)["total"] == 200 - 6


@both
def test_uploads_refused_change_nothing(api: Api):
    account, key = account_with_key(api)
    with appends_nothing(api, f"account-{account}"):
        big = ("email\n" + "x" * 60 + "@example.com\n") * (MAX_UPLOAD_BYTES // 70 + 10)
        assert len(big) > MAX_UPLOAD_BYTES
        problem(bulk(key, big), 413)  # declared length just over the limit: caught while streaming
        problem(bulk(key, big * 2), 413)  # declared far over the limit: refused before reading

        def chunks():  # no Content-Length: chunked transfer, caught while streaming
            for _ in range(MAX_UPLOAD_BYTES // 1000 + 2):
                yield b"a" * 990 + b"@example.com\n"[:10]

        problem(key.post("/v1/tasks/bulk", content=chunks(), headers=CSV), 413)
        problem(key.post("/v1/tasks/bulk", files={"file": ("big.csv", big, "text/csv")}), 413)
        problem(key.post("/v1/tasks/bulk", content=b'{"emails": ["a@example.com"]}',
                         headers={"Content-Type": "application/json"}), 415)
        problem(key.post("/v1/tasks/bulk", content=b"a@example.com", headers={"Content-Type": "image/png"}), 415)
        problem(bulk(key, ""), 422)
        problem(key.post("/v1/tasks/bulk", content=b"email\n\x00\x01\x02a@example.com\n", headers=CSV), 422)
        problem(key.post("/v1/tasks/bulk", content=b"email\n\xff\xfe@example.com\n", headers=CSV), 422)
        problem(bulk(key, "email\nnot an address\n"), 422)
        problem(key.post("/v1/tasks/bulk", files={"other": ("a.csv", "a@example.com\n", "text/csv")}), 422)
        problem(key.post("/v1/tasks/bulk", files={"file": ("empty.csv", "", "text/csv")}), 422)
        problem(key.post("/v1/tasks/bulk", content=b"--xyz\r\nbroken", headers={
            "Content-Type": "multipart/form-data; boundary=xyz"}), 422)
        problem(bulk(key, csv_file(*unique_addresses(201))), 402)  # 200 credits
        problem(bulk(api.admin, csv_file("a@example.com")), 422)  # the admin names the account
        problem(bulk(api.admin, csv_file("a@example.com"), account="nobody-here"), 404)
    assert balance(api, account)["total"] == 200


# ------------------------------------------------------------------------------ tasks

@both
def test_tasks_list_pages_with_a_cursor_and_filters_by_status(api: Api):
    account, key = account_with_key(api, payg=100)
    created = [key.post("/v1/tasks/single", json={"address": f"t{i}@example.com"}).json()["task"]["task_id"]
               for i in range(5)]
    big = bulk(key, csv_file(*unique_addresses(250))).json()["task"]["task_id"]
    assert key.post(f"/v1/tasks/{big}/cancel").status_code == 200
    created.append(big)

    pages, params = [], {"limit": 2}
    while True:
        r = key.get("/v1/tasks", params=params)
        assert r.status_code == 200, r.text
        pages.append([t["task_id"] for t in r.json()["items"]])
        if not r.json()["next_cursor"]:
            break
        params = {"limit": 2, "cursor": r.json()["next_cursor"]}
    assert [tid for page in pages for tid in page] == created
    assert max(len(p) for p in pages) == 2 and len(pages) >= 3

    cancelled = key.get("/v1/tasks", params={"status": "cancelled"}).json()["items"]
    assert [t["task_id"] for t in cancelled] == [big] and cancelled[0]["status"] == "cancelled"
    assert [t["task_id"] for t in key.get("/v1/tasks", params={"status": "completed"}).json()["items"]] == created[:5]
    admin_view = api.admin.get("/v1/tasks", params={"account": account, "limit": 1000}).json()["items"]
    assert [t["task_id"] for t in admin_view] == created
    everyone = api.admin.get("/v1/tasks", params={"limit": 1000}).json()
    assert everyone["items"] and all(set(t) >= {"task_id", "account", "status"} for t in everyone["items"])

    for bad in ({"status": "done"}, {"limit": 0}, {"limit": 5000}, {"cursor": "x"}, {"cursor": cursor([1, 2])},
                {"cursor": cursor(["a"])}, {"cursor": cursor(["a", "b\x00"])}, {"cursor": cursor(["a", None])}):
        problem(key.get("/v1/tasks", params=bad), 422)
    problem(key.get("/v1/tasks", params={"account": "someone-else"}), 404)


@both
def test_a_task_shows_its_progress_and_unknown_ones_are_404(api: Api):
    account, key = account_with_key(api)
    task_id = bulk(key, csv_file(*unique_addresses(3))).json()["task"]["task_id"]
    shown = api.wait_task(task_id, key)
    assert set(shown) >= {"task_id", "account", "kind", "status", "partial_failure", "total", "verified", "unknown",
                          "failed", "refunded", "consumed", "debited", "late", "created_at", "finished_at",
                          "created_by", "url"}
    assert shown["status"] == "completed" and shown["total"] == shown["verified"] == 3 and shown["finished_at"]
    assert api.admin.get(f"/v1/tasks/{task_id}").json() == shown
    problem(key.get(f"/v1/tasks/{uuid.uuid4().hex}"), 404)
    problem(key.get("/v1/tasks/nothing%00here"), 422)  # a NUL names nothing (and PostgreSQL keeps none)


@both
def test_cancel_refunds_a_bulk_at_once_and_a_running_task_cannot_be_deleted(api: Api):
    account, key = account_with_key(api, payg=10_000)
    upload = bulk(key, csv_file(*unique_addresses(6000)))
    assert upload.status_code == 201, upload.text
    task_id = upload.json()["task"]["task_id"]
    assert upload.json()["task"]["total"] == 6000 > CHUNK_SIZE * 100
    with appends_nothing(api, f"account-{account}"):
        assert problem(key.delete(f"/v1/tasks/{task_id}"), 409)["title"] == "Conflict"  # still running
        problem(key.post(f"/v1/tasks/{task_id}/retry-unknown"), 409)  # its Unknowns once it finished
    r = key.post(f"/v1/tasks/{task_id}/cancel")
    assert r.status_code == 200, r.text
    cancelled = r.json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"]
    assert cancelled["refunded"] > 0 and cancelled["consumed"] < 6000
    assert_settled(cancelled)
    assert balance(api, account)["total"] == 10_200 - cancelled["consumed"]
    history = api.admin.get(f"/v1/accounts/{account}/history", params={"type": "cancel"}).json()["items"]
    assert len(history) == 1 and history[0]["task_id"] == task_id

    with appends_nothing(api, f"account-{account}", f"task-{task_id}", but_late_results=True):
        problem(key.post(f"/v1/tasks/{task_id}/cancel"), 409)
    single = key.post("/v1/tasks/single", json={"address": "s@example.com"}).json()["task"]["task_id"]
    with appends_nothing(api, f"account-{account}", f"task-{single}"):
        problem(key.post(f"/v1/tasks/{single}/cancel"), 409)  # a single task is not cancellable
        problem(key.post(f"/v1/tasks/{uuid.uuid4().hex}/cancel"), 404)
    time.sleep(0.5)  # late results of the cancelled task's chunks in flight are logged, never charged
    later = api.admin.get(f"/v1/tasks/{task_id}").json()
    assert (later["consumed"], later["refunded"]) == (cancelled["consumed"], cancelled["refunded"])


@both
def test_delete_hides_a_finished_task(api: Api):
    account, key = account_with_key(api)
    task_id = bulk(key, csv_file(*unique_addresses(2))).json()["task"]["task_id"]
    api.wait_task(task_id, key)
    r = key.delete(f"/v1/tasks/{task_id}")
    assert r.status_code == 204 and r.content == b""
    problem(key.get(f"/v1/tasks/{task_id}"), 404)
    problem(key.get(f"/v1/tasks/{task_id}/results"), 404)
    assert task_id not in [t["task_id"] for t in key.get("/v1/tasks").json()["items"]]
    problem(key.delete(f"/v1/tasks/{task_id}"), 404)
    assert any(e["type"] == "TaskDeleted" for e in stream_events(api, f"task-{task_id}"))  # the log keeps it
    assert balance(api, account)["total"] == 198


@both
def test_an_erased_task_keeps_its_counts_and_its_results_are_410_gone(api: Api):
    account, key = account_with_key(api)
    task_id = bulk(key, csv_file(*unique_addresses(3))).json()["task"]["task_id"]
    api.wait_task(task_id, key)
    r = key.post(f"/v1/tasks/{task_id}/erase")
    assert r.status_code == 200, r.text
    task = key.get(f"/v1/tasks/{task_id}").json()
    assert (task["status"], task["total"], task["consumed"]) == ("deleted", 3, 3) and task["results_deleted_at"]
    for route in ("results", "unprocessed"):  # not an empty list: the data is gone, and the answer says so
        assert "deleted" in problem(key.get(f"/v1/tasks/{task_id}/{route}"), 410)["detail"]
    assert balance(api, account)["total"] == 197


@both
def test_tasks_and_history_filter_by_who_issued_them_and_erased_tasks_by_status(api: Api):
    account, key = account_with_key(api)
    key_actor = f"apikey:{api.new_key(account, ('read',))['key_id']}"  # a second key issues nothing
    by_key = key.post("/v1/tasks/single", json={"address": "k@example.com"}).json()["task"]
    by_admin = api.admin.post("/v1/tasks/single", params={"account": account}, json={"address": "a@example.com"})
    by_admin = by_admin.json()["task"]
    mine = by_key["created_by"]
    assert mine.startswith("apikey:") and by_admin["created_by"] == "admin"

    def tasks(**params) -> list[str]:
        r = api.admin.get("/v1/tasks", params={"account": account, **params})
        assert r.status_code == 200, r.text
        return [t["task_id"] for t in r.json()["items"]]

    assert tasks(by=mine) == [by_key["task_id"]] and tasks(by="admin") == [by_admin["task_id"]]
    assert tasks(by=key_actor) == [] and tasks(by="cli:nobody") == []
    history = api.admin.get(f"/v1/accounts/{account}/history", params={"by": mine}).json()["items"]
    assert [(r["type"], r["task_id"], r["actor"]) for r in history] == [("debit", by_key["task_id"], mine)]
    assert [r["type"] for r in key.get(f"/v1/accounts/{account}/history", params={"by": "admin"}).json()["items"]] \
        == ["welcome", "debit"]  # the admin opened the account
    problem(api.admin.get("/v1/tasks", params={"by": ""}), 422)
    problem(api.admin.get("/v1/tasks", params={"by": "x" * 201}), 422)

    assert key.post(f"/v1/tasks/{by_key['task_id']}/erase").status_code == 200
    assert tasks(status="deleted") == [by_key["task_id"]]
    assert tasks(status="completed") == [by_admin["task_id"]]


@both
def test_results_as_spreadsheet_safe_csv_and_exact_json(api: Api):
    account, key = account_with_key(api)
    addresses = ["=1+2@example.com", "+cmd@example.com", "-x@example.com", "@at@example.com",
                 "unknown2@example.com", "plain@example.com"]
    task_id = key.post("/v1/tasks/bulk", files={"file": ("f.csv", csv_file(*addresses), "text/csv")}).json()
    task_id = task_id["task"]["task_id"]
    api.wait_task(task_id, key)

    r = key.get(f"/v1/tasks/{task_id}/results")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert f'filename="{task_id}.csv"' in r.headers["content-disposition"]
    lines = r.text.splitlines()
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert lines[0].split(",")[:6] == ["address", "status", "reason", "detail", "tier", "reply"]
    assert {row["address"] for row in table} == {"'=1+2@example.com", "'+cmd@example.com", "'-x@example.com",
                                                 "'@at@example.com", "unknown2@example.com", "plain@example.com"}
    assert not [cell for row in table for cell in row.values() if cell and cell[0] in "=+-@\t\r"]

    rows = key.get(f"/v1/tasks/{task_id}/results", params={"format": "json"})
    assert rows.status_code == 200 and rows.headers["content-type"].startswith("application/json")
    assert {row["address"]: row["status"] for row in rows.json()} == {
        **{a: "safe" for a in addresses if not a.startswith("unknown")}, "unknown2@example.com": "unknown"}
    only = key.get(f"/v1/tasks/{task_id}/results", params={"format": "json", "status": "unknown"}).json()
    assert [row["address"] for row in only] == ["unknown2@example.com"]
    assert key.get(f"/v1/tasks/{task_id}/results", params={"status": "invalid"}).text.splitlines() == [lines[0]]
    problem(key.get(f"/v1/tasks/{task_id}/results", params={"format": "xlsx"}), 422)
    problem(key.get(f"/v1/tasks/{task_id}/results", params={"status": "great"}), 422)


@both
def test_retry_unknown_is_a_new_charged_task_of_exactly_the_unknowns(api: Api):
    account, key = account_with_key(api)
    unknowns = ["unknown-a@example.com", "unknown-b@example.com"]
    source = bulk(key, csv_file("ok1@example.com", *unknowns, "ok2@example.com")).json()["task"]["task_id"]
    assert api.wait_task(source, key)["unknown"] == 2
    before = balance(api, account)["total"]
    r = key.post(f"/v1/tasks/{source}/retry-unknown")
    assert r.status_code == 201, r.text
    retry = r.json()
    assert retry["addresses"] == 2 and retry["task"]["total"] == 2 and retry["task"]["debited"] == 2
    assert retry["task"]["task_id"] != source
    done = api.wait_task(retry["task"]["task_id"], key)
    results = key.get(f"/v1/tasks/{done['task_id']}/results", params={"format": "json"}).json()
    assert sorted(row["address"] for row in results) == unknowns
    assert done["refunded"] == 2 and balance(api, account)["total"] == before  # debited 2, Unknown again: refunded
    debits = api.admin.get(f"/v1/accounts/{account}/history", params={"type": "debit"}).json()["items"]
    assert debits[-1]["task_id"] == done["task_id"] and abs(debits[-1]["amount"]) == 2

    clean = bulk(key, csv_file(*unique_addresses(2))).json()["task"]["task_id"]
    api.wait_task(clean, key)
    with appends_nothing(api, f"account-{account}"):
        assert clean in problem(key.post(f"/v1/tasks/{clean}/retry-unknown"), 409)["detail"]  # nothing to retry
        problem(key.post(f"/v1/tasks/{uuid.uuid4().hex}/retry-unknown"), 404)


# ------------------------------------------------------------------------------ the log

@both
def test_events_pages_and_streams_and_the_sse_follow(api: Api):
    account, key = account_with_key(api)
    r = api.admin.get("/v1/events", params={"after": 0, "limit": 3})
    assert r.status_code == 200
    page = r.json()
    assert [e["position"] for e in page["items"]] == [1, 2, 3] and page["next_after"] == 3
    assert set(page["items"][0]) == {"position", "stream", "version", "type", "data", "metadata"}
    mine = api.admin.get("/v1/events", params={"stream": f"account-{account}"}).json()["items"]
    assert [e["type"] for e in mine][:2] == ["AccountOpened", "CreditsGranted"]
    assert all(e["stream"] == f"account-{account}" for e in mine)
    after = api.admin.get("/v1/events", params={"stream": f"account-{account}", "after": mine[0]["position"]})
    assert after.json()["items"] == mine[1:]
    # the audit scope reads the same, less the keys' secret digests (the admin's alone)
    assert key.get("/v1/events", params={"stream": f"account-{account}"}).json()["items"] == [
        {**e, "data": {k: v for k, v in e["data"].items() if k != "secret_sha256"}} for e in mine]
    empty = api.admin.get("/v1/events", params={"after": 2**62}).json()
    assert empty == {"items": [], "next_after": 2**62}
    for bad in ({"limit": 0}, {"limit": 1001}, {"after": -1}, {"after": 2**64}, {"after": "x"}):
        problem(api.admin.get("/v1/events", params=bad), 422)

    with api.admin.stream("GET", "/v1/events/follow", params={"stream": f"account-{account}"}) as follow:
        assert follow.status_code == 200 and follow.headers["content-type"].startswith("text/event-stream")
        lines = follow.iter_lines()
        seen = [read_sse(lines) for _ in mine]
        assert [e["position"] for e in seen] == [e["position"] for e in mine]
        granted = api.admin.post(f"/v1/accounts/{account}/credits", json={"bucket": "payg", "amount": 3})
        assert granted.status_code == 200
        new = read_sse(lines)
        assert new["type"] == "CreditsGranted" and new["data"]["amount"] == 3
    # disconnected: the server goes on
    assert api.admin.get("/healthz").status_code == 200
    with key.stream("GET", "/v1/events/follow", params={"stream": f"account-{account}", "after": new["position"]}) as r:
        assert r.status_code == 200
    problem(api.admin.get("/v1/events/follow", params={"after": -1}), 422)
    for params in ({"stream": "account-a\x00b"}, {"stream\x00": "x"}):
        problem(api.admin.get("/v1/events", params=params), 422)
    problem(api.admin.get("/v1/accounts/a%00b/credits"), 422)
    problem(api.admin.get("/v1/tasks", params={"account": "a\x00b"}), 422)


def read_sse(lines, timeout: float = 30) -> dict:
    """The next event of a Server-Sent Events stream (skipping comments)."""
    deadline = time.monotonic() + timeout
    frame: dict[str, str] = {}
    for line in lines:
        if time.monotonic() > deadline:
            break
        if line.startswith(":"):
            continue
        if not line:
            if "data" in frame:
                event = json.loads(frame["data"])
                assert frame["id"] == str(event["position"]) and frame["event"] == event["type"]
                return event
            continue
        name, _, value = line.partition(": ")
        frame[name] = value
    raise AssertionError("no event on the stream")


# ------------------------------------------------------------------------------ idempotency

def kept_answers(api: Api) -> list[str]:
    """The answers the API keeps for Idempotency-Key retries, as stored."""
    from engine.store import open_database

    db = open_database(api.env["VEC_STORE"])
    try:
        return [row[0] for row in db.projector.sql.execute("SELECT body FROM api_requests").fetchall()]
    finally:
        db.close()


@both
def test_a_retried_post_with_its_idempotency_key_gets_the_original_answer(api: Api):
    account, key = account_with_key(api)
    grant = {"bucket": "payg", "amount": 50}
    headers = {"Idempotency-Key": f"grant-{uuid.uuid4().hex}"}
    first = api.admin.post(f"/v1/accounts/{account}/credits", json=grant, headers=headers)
    again = api.admin.post(f"/v1/accounts/{account}/credits", json=grant, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    with appends_nothing(api, f"account-{account}"):
        assert problem(api.admin.post(f"/v1/accounts/{account}/credits", json={**grant, "amount": 51},
                                      headers=headers), 409)["title"] == "Idempotency conflict"
        problem(api.admin.post(f"/v1/accounts/{account}/credits", json=grant, headers={"Idempotency-Key": "k" * 201}),
                422)
    assert balance(api, account)["total"] == 250

    body = csv_file(*unique_addresses(3))
    headers = {"Idempotency-Key": "upload-1", **CSV}
    first = key.post("/v1/tasks/bulk", content=body.encode(), headers=headers)
    again = key.post("/v1/tasks/bulk", content=body.encode(), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    with appends_nothing(api, f"account-{account}"):
        problem(key.post("/v1/tasks/bulk", content=csv_file(*unique_addresses(3)).encode(), headers=headers), 409)
    other = api.client(api.new_key(account)["key"])  # keys are per principal: the same key is another request
    assert other.post("/v1/tasks/bulk", content=body.encode(), headers=headers).status_code == 409  # duplicate file

    single = {"Idempotency-Key": "single-1"}
    first = key.post("/v1/tasks/single", json={"address": "idem@example.com"}, headers=single)
    again = key.post("/v1/tasks/single", json={"address": "idem@example.com"}, headers=single)
    assert first.status_code == again.status_code == 200 and again.json() == first.json()
    api.wait_task(first.json()["task"]["task_id"], key)
    assert balance(api, account)["total"] == 250 - 3 - 1

    # Kept answers hold no address and no secret in plain text, and erasing a task erases its answer.
    created = api.admin.post(f"/v1/accounts/{account}/keys", json={"scopes": ["read"]},
                             headers={"Idempotency-Key": "key-1"})
    assert created.status_code == 201
    kept = kept_answers(api)
    assert kept and not [b for b in kept if "idem@example.com" in b or created.json()["key"] in b]
    task_id = first.json()["task"]["task_id"]
    assert key.post(f"/v1/tasks/{task_id}/erase").status_code == 200
    after = key.post("/v1/tasks/single", json={"address": "idem@example.com"}, headers=single)
    assert "idempotent-replayed" not in after.headers, after.text  # the first answer is gone with the task
    assert task_id in problem(after, 410)["detail"]  # its result is gone for good: not "still running"
    assert balance(api, account)["total"] == 250 - 3 - 1  # the same task, not a second charge

    for _ in range(2):  # a refusal is not kept: the retry is refused again, for the same reason
        refused = api.admin.post("/v1/accounts", json={"account_id": account}, headers={"Idempotency-Key": "open-1"})
        assert problem(refused, 409)["title"] == "Conflict"


# ------------------------------------------------------------------------------ fair use

@both_limited
def test_a_key_past_its_rate_limit_gets_429_and_others_do_not(limited_api: Api):
    api = limited_api
    account = api.new_account()
    busy, calm = (api.client(api.new_key(account)["key"]) for _ in range(2))
    time.sleep(1.1)  # the admin's and every key's window is clear
    statuses = []
    while len(statuses) < 50 and (not statuses or statuses[-1].status_code != 429):
        statuses.append(busy.get(f"/v1/accounts/{account}/credits"))
    assert [r.status_code for r in statuses][:5] == [200] * 5
    limited = statuses[-1]
    body = problem(limited, 429)
    wait = int(limited.headers["retry-after"])
    assert 1 <= wait <= 2 and body["retry_after_seconds"] == wait
    assert calm.get(f"/v1/accounts/{account}/credits").status_code == 200  # another key is not slowed
    time.sleep(wait + 0.1)
    assert busy.get(f"/v1/accounts/{account}/credits").status_code == 200


# ------------------------------------------------------------------------------ the end

@both
def test_other_routes_and_methods_are_problems_too(api: Api):
    problem(api.admin.get("/v1/nothing-here"), 404)
    problem(api.admin.put("/v1/accounts"), 405)
    problem(api.admin.post("/v1/tasks/single", content=b"address=x", headers={
        "Content-Type": "application/x-www-form-urlencoded"}), 422)
    r = api.admin.get("/healthz")
    assert r.status_code == 200 and r.json()["ok"] is True and r.json()["head"] > 0


@both
def test_vec_audit_passes_on_the_store(api: Api):
    """Runs last in each mode: every money rule holds on the log the tests above wrote."""
    done = api.vec().run("audit", "--json", ok=False, timeout=300)
    assert done.returncode == 0, f"vec audit failed:\n{done.stdout}\n{done.stderr}"
    report = jsonl(done.stdout)[0]
    assert report["events"] > 0 and not report.get("violations"), report

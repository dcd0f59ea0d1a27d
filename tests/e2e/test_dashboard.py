"""The ops dashboard in a real browser: Debian's Chromium, headless, driven by playwright,
against `vec serve` started as a real process (embedded SQLite store, engine in the same
process) verifying against the loopback mail world, whose `slow.test` MX answers each
RCPT after a second, so that a bulk runs long enough to be watched.

An account key signs in through the form (the cookie is HttpOnly, SameSite=Strict, scoped
to /dashboard), uploads a file on the account page, sees the task's progress bar move
without a reload (the page's JavaScript polls), is refused a cancel with a forged CSRF
token, presses the cancel button, sees the task cancelled and the `cancel` row in the
Credits History filtered by type, and signs out. The admin, signed in beside it, sees the
task among every account's and the embedded engine's health. Screenshots of every step go to the
test's tmp dir, and to $VEC_TEST_ARTIFACTS/dashboard/ when that is set.

No silent skip: without /usr/bin/chromium the test fails and says how to install it
(scripts/test does, through scripts/browser install).

The other tests here run the app in-process (no browser, no mail world): the dashboard
stays out of the OpenAPI document, escapes what it shows, refuses cross-site and
token-less POSTs, and never redirects off-site after a sign-in.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.cli import VEC, Vec


CHROMIUM = os.environ.get("VEC_CHROMIUM", "/usr/bin/chromium")
# What works on these machines (.library/env/machines/python.md); playwright adds --headless
# and a fresh profile directory of its own (it refuses --user-data-dir in `args`).
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ADMIN_TOKEN = "dashboard-test-admin-token"
ADDRESSES = 30  # on slow.test, two per chunk, one chunk at a time: about a minute of work if not cancelled


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, proc: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"vec serve exited with {proc.returncode}:\n{log.read_text()}", pytrace=False)
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"vec serve did not answer {url}/healthz within {timeout:.0f}s:\n{log.read_text()}", pytrace=False)


@pytest.fixture
def served(tmp_path, mailworld):
    """`vec serve` on a free loopback port, an account `acme` and an API key of it."""
    port = _free_port()
    env = {
        **mailworld.env(),
        "VEC_STORE": f"sqlite:///{tmp_path}/vec.db",
        "VEC_PROVIDER": "smtp",
        "VEC_ALLOW_TEST_DOMAINS": "true",
        "VEC_LOOPBACK_ONLY": "true",
        "VEC_SMTP_TIMEOUT": "5",
        "VEC_RETRY_WINDOW": "1",
        "VEC_RETRY_BACKOFF": "0.5",
        "VEC_ADDRESS_DEADLINE": "10",
        "VEC_HEARTBEAT_INTERVAL": "0.3",
        "VEC_POLL_INTERVAL": "0.1",
        "VEC_CHUNK_SIZE": "2",
        "VEC_CHUNK_WINDOW": "1",
        "VEC_RESULTS_FLUSH_INTERVAL": "0.3",
        "VEC_API_HOST": "127.0.0.1",
        "VEC_API_PORT": str(port),
        "VEC_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    vec = Vec(env, tmp_path)
    vec.run("account", "open", "acme")
    key = vec.json("apikey", "create", "acme", "--label", "dashboard e2e")["key"]
    with serving(vec, tmp_path, port) as (url, log):
        yield vec, url, key, log


@contextlib.contextmanager
def serving(vec: Vec, tmp_path: Path, port: int):
    """`vec serve` until the block ends (stopped by its PID): (its URL, its log)."""
    log = tmp_path / "serve.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([VEC, "serve"], env=vec.env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, proc, log)
        yield url, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class Shots:
    """Screenshots in the test's tmp dir, copied to $VEC_TEST_ARTIFACTS/dashboard/ at the end
    (also when the test fails, with the server's log)."""

    def __init__(self, tmp_path: Path):
        self.dir = tmp_path / "screenshots"
        self.dir.mkdir()
        self.taken: list[Path] = []

    def take(self, page, name: str) -> Path:
        path = self.dir / f"{len(self.taken) + 1:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)
        return path

    def publish(self, *extra: Path) -> None:
        target = os.environ.get("VEC_TEST_ARTIFACTS")
        if not target:
            return
        out = Path(target) / "dashboard"
        out.mkdir(parents=True, exist_ok=True)
        for path in [*self.taken, *extra]:
            if path.exists():
                shutil.copy2(path, out / path.name)


@contextlib.contextmanager
def browser_session(tmp_path: Path, log: Path):
    """(context, page, shots) of a headless Chromium; a failure is screenshot, and the
    screenshots and the server's log are published, whatever happens."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"Debian's chromium is missing ({CHROMIUM}): run `scripts/browser install` "
                    "(scripts/test does) or `apt-get install chromium`", pytrace=False)
    from playwright.sync_api import sync_playwright

    shots = Shots(tmp_path)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        context.set_default_timeout(20_000)
        page = context.new_page()
        try:
            yield context, page, shots
        except BaseException:
            try:
                shots.take(page, "failure")
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
            raise
        finally:
            browser.close()
            shots.publish(log)


def _progress(page) -> float:
    return page.eval_on_selector("#task progress", "el => el.value")


@pytest.mark.mailworld
@pytest.mark.timeout(180)
def test_sign_in_upload_watch_progress_cancel_and_see_the_cancel_row(served, tmp_path):
    from playwright.sync_api import expect

    vec, url, key, log = served
    upload = tmp_path / "slow.csv"
    upload.write_text("email\n" + "\n".join(f"dash{i}@slow.test" for i in range(ADDRESSES)) + "\n")

    with browser_session(tmp_path, log) as (context, page, shots):
        # --- sign in with the account's key ------------------------------------------
        page.goto(url + "/")
        expect(page).to_have_url(url + "/dashboard/signin?next=%2Fdashboard%2F")
        page.fill("#token", "vec_not_a_key_at_all")
        page.click("#signin")
        expect(page.locator(".error")).to_contain_text("not valid")
        page.fill("#token", key)
        page.click("#signin")
        expect(page).to_have_url(url + "/dashboard/")
        expect(page.locator("#who")).to_contain_text("acme")
        [cookie] = [c for c in context.cookies() if c["name"] == "vec_dashboard"]
        assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/dashboard")
        assert page.evaluate("document.cookie") == ""  # the page's scripts cannot read the key
        shots.take(page, "overview-signed-in")

        # --- upload a file on the account page ----------------------------------------
        page.click("text=Account acme")
        expect(page.locator("h1")).to_contain_text("acme")
        page.set_input_files("#file", str(upload))
        page.click("#upload")
        expect(page).to_have_url(re.compile(r".*/dashboard/tasks/[0-9a-f]{32}$"))
        task_id = page.url.rsplit("/", 1)[1]
        expect(page.locator("#task .badges")).to_contain_text("processing")
        shots.take(page, "task-uploaded")

        # --- the bar moves without a reload (the page's JavaScript polls) -------------
        page.evaluate("window.__sameDocument = true")
        page.wait_for_function("() => document.querySelector('#task progress').value > 0", timeout=30_000)
        first = _progress(page)
        shots.take(page, "task-progress-1")
        page.wait_for_function("v => document.querySelector('#task progress').value > v", arg=first,
                               timeout=30_000)
        second = _progress(page)
        assert second > first, (first, second)
        assert page.evaluate("window.__sameDocument === true"), "the page reloaded instead of updating"
        expect(page.locator("#task .badges")).to_contain_text("processing")
        shots.take(page, "task-progress-2")
        page.reload()  # the results table is rendered by the server: the first results, readable
        expect(page.locator("#results")).to_contain_text("dash0@slow.test")

        overview = context.new_page()
        overview.goto(url + "/dashboard/")
        expect(overview.locator(f'tr[data-task="{task_id}"] .badges')).to_contain_text("processing")
        shots.take(overview, "overview-in-flight")
        overview.close()

        # --- a forged cancel (no valid CSRF token) is refused ---------------------------
        forged = page.request.post(f"{url}/dashboard/tasks/{task_id}/cancel", form={"csrf": "forged"},
                                   max_redirects=0)
        assert forged.status == 403, forged.status
        assert vec.json("task", "show", task_id)["status"] == "processing"

        # --- cancel -----------------------------------------------------------------------
        page.click("#cancel")
        expect(page.locator("#task .badges")).to_contain_text("cancelled")
        expect(page.locator("#cancel")).to_have_count(0)
        shots.take(page, "task-cancelled")
        task = vec.json("task", "show", task_id)
        assert task["status"] == "cancelled"
        refunded_at_cancel = ADDRESSES - task["consumed"] - task["unknown"]
        assert refunded_at_cancel > 0

        # --- the admin sees every account and the engine's health --------------------------
        admin = context.browser.new_context(viewport={"width": 1360, "height": 900})
        ops = admin.new_page()
        ops.goto(url + "/dashboard/")
        ops.fill("#token", ADMIN_TOKEN)
        ops.click("#signin")
        expect(ops.locator("#who")).to_have_text("admin")
        expect(ops.locator(f'tr[data-task="{task_id}"] .badges')).to_contain_text("cancelled")
        expect(ops.locator("#engine-line")).to_contain_text("alive")
        expect(ops.locator("#projection-lag")).to_be_visible()
        shots.take(ops, "admin-overview")
        admin.close()

        # --- the cancel row in the Credits History, filtered by type --------------------
        page.click("text=Account acme")
        page.select_option("#history-type", "cancel")  # the filter applies on change
        expect(page).to_have_url(re.compile(r".*[?&]type=cancel"))
        rows = page.locator("#history-table tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_have_attribute("data-type", "cancel")
        expect(rows.first).to_contain_text(f"+{refunded_at_cancel}")
        expect(rows.first).to_contain_text(task_id[:8])
        shots.take(page, "history-cancel-row")
        [cli_row] = vec.lines("history", "acme", "--type", "cancel", "--json")
        assert cli_row["amount"] == refunded_at_cancel and cli_row["task_id"] == task_id

        # --- sign out: the cookie is gone, the pages ask for a sign-in again -----------
        page.click("#signout")
        expect(page).to_have_url(url + "/dashboard/signin")
        assert not [c for c in context.cookies() if c["name"] == "vec_dashboard"]
        page.goto(url + "/dashboard/")
        expect(page.locator("#token")).to_be_visible()
        shots.take(page, "signed-out")


# --- in-process: what a browser test would not show -------------------------------------

@pytest.fixture
def app_client(tmp_path):
    from fastapi.testclient import TestClient

    from entrypoints.settings import EngineSettings
    from entrypoints.api.app import create_app

    settings = EngineSettings(store=f"sqlite:///{tmp_path}/vec.db", admin_token=ADMIN_TOKEN, provider="instant",
                              api_single_wait=0.5)  # no engine runs in this process: do not wait for one
    with TestClient(create_app(settings), base_url="http://testserver", follow_redirects=False) as client:
        engine = client.app.state.services.engine
        engine.open_account("acme")
        engine.open_account('<script>alert("x")</script>')
        _, key = engine.issue_api_key("acme")
        yield client, key


def _sign_in(client, token: str) -> str:
    answer = client.post("/dashboard/signin", data={"token": token, "next": "/dashboard/"})
    assert answer.status_code == 303, answer.text
    return answer.headers["set-cookie"]


def test_dashboard_is_not_in_the_openapi_document_and_root_leads_to_it(app_client):
    client, _ = app_client
    assert not [path for path in client.get("/openapi.json").json()["paths"]
                if not path.startswith(("/v1", "/api/", "/healthz", "/metrics"))]
    assert client.get("/").headers["location"] == "/dashboard/"
    signin = client.get("/dashboard/")
    assert (signin.status_code, signin.headers["location"]) == (303, "/dashboard/signin?next=%2Fdashboard%2F")
    assert client.get("/dashboard/progress.json").status_code == 401
    assert client.get("/dashboard/static/dashboard.js").status_code == 200


def test_sign_in_sets_a_strict_http_only_cookie_and_never_redirects_off_site(app_client):
    client, key = app_client
    cookie = _sign_in(client, key).lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/dashboard" in cookie
    for target in ("//evil.example/", "https://evil.example/", "/v1/tasks", "/dashboard\\@evil.example"):
        client.cookies.clear()
        answer = client.post("/dashboard/signin", data={"token": key, "next": target})
        assert answer.headers["location"] == "/dashboard/", target
    refused = client.post("/dashboard/signin", data={"token": "wrong"})
    assert refused.status_code == 401 and "not valid" in refused.text
    assert "set-cookie" not in refused.headers
    cross = client.post("/dashboard/signin", data={"token": key}, headers={"Origin": "http://evil.example"})
    assert cross.status_code == 403


def test_pages_escape_what_they_show_and_send_a_strict_csp(app_client):
    client, _ = app_client
    _sign_in(client, ADMIN_TOKEN)
    page = client.get("/dashboard/account", params={"id": '<script>alert("x")</script>'})
    assert page.status_code == 200
    assert '<script>alert("x")</script>' not in page.text and "&lt;script&gt;alert" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    missing = client.get("/dashboard/account", params={"id": "<img src=x onerror=alert(1)>"})
    assert missing.status_code == 404 and "<img" not in missing.text
    overview = client.get("/dashboard/")
    assert overview.status_code == 200 and "embedded: one process" in overview.text


def test_posts_need_the_csrf_token_and_a_key_sees_only_its_account(app_client, tmp_path):
    client, key = app_client
    _sign_in(client, key)
    upload = {"file": ("list.csv", b"email\nalice@example.com\n", "text/csv")}
    # the token is checked from the URL (or X-VEC-CSRF) before the file is read: in the form's body it is too late
    assert client.post("/dashboard/account/upload?id=acme&csrf=forged", files=upload).status_code == 403
    account = client.get("/dashboard/account")
    assert account.status_code == 200 and "no rows" not in account.text
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', account.text).group(1)
    assert client.post("/dashboard/account/upload?id=acme", files=upload, data={"csrf": csrf}).status_code == 403
    other = client.post(f"/dashboard/account/upload?id=<script>&csrf={csrf}", files=upload)
    assert other.status_code == 404  # another account: not found, as in /v1
    created = client.post("/dashboard/account/upload?id=acme", files=upload, data={"name": "March list"},
                          headers={"X-VEC-CSRF": csrf})
    assert created.status_code == 303, created.text
    task_page = created.headers["location"]
    assert '<span id="task-name">March list</span>' in client.get(task_page).text
    task_id = task_page.rsplit("/", 1)[1]
    assert client.post(f"/dashboard/tasks/{task_id}/cancel").status_code == 403
    assert client.post(f"/dashboard/tasks/{task_id}/cancel", headers={"X-VEC-CSRF": "forged"}).status_code == 403
    answer = client.post(f"/dashboard/tasks/{task_id}/cancel", headers={"X-VEC-CSRF": csrf})
    assert answer.status_code in (200, 409), answer.text  # cancelled, or already finished (instant provider)
    assert client.get(task_page).status_code == 200
    client.post("/dashboard/signout", data={"csrf": csrf})
    client.cookies.clear()
    assert client.get(task_page).status_code == 303


def test_badges_say_partial_failure_and_bars_count_consumed_plus_refunded():
    from entrypoints.api.dashboard import progress, templates

    task = {"task_id": "t" * 32, "account": "acme", "kind": "bulk", "status": "failed", "partial_failure": True,
            "total": 8, "verified": 3, "unknown": 1, "failed": 4, "refunded": 5, "consumed": 2, "debited": 8, "late": 0,
            "created_at": "2026-12-01T10:00:00+00:00", "finished_at": None, "created_by": None}
    shown = progress(task)
    assert (shown["settled"], shown["percent"], shown["active"]) == (7, 87.5, False)
    ui = templates.env.get_template("macros.html").make_module({"prefix": "/dashboard"})
    html = str(ui.badges(shown)) + str(ui.bar(shown))
    assert "s-failed" in html and "Partial failure" in html and 'value="87.5"' in html
    assert "Partial failure" not in str(ui.badges(progress({**task, "status": "completed", "partial_failure": False})))


def test_an_erased_task_page_says_its_results_were_deleted_and_offers_no_export(app_client):
    client, key = app_client
    bearer = {"Authorization": f"Bearer {key}"}
    single = client.post("/v1/tasks/single", json={"address": "erased.page@example.com"}, headers=bearer)
    assert single.status_code in (200, 202), single.text
    task_id = single.json()["task"]["task_id"]
    _drive_to_the_end(client, task_id)
    _sign_in(client, key)
    page = client.get(f"/dashboard/tasks/{task_id}")
    assert page.status_code == 200 and "erased.page@example.com" in page.text and 'id="csv"' in page.text
    assert client.post(f"/v1/tasks/{task_id}/erase", headers=bearer).status_code == 200
    page = client.get(f"/dashboard/tasks/{task_id}")
    assert page.status_code == 200 and 'id="results-deleted"' in page.text
    assert "erased.page@example.com" not in page.text and 'id="csv"' not in page.text
    assert client.get(f"/dashboard/tasks/{task_id}/results.csv").status_code == 410


def _drive_to_the_end(client, task_id: str) -> None:
    """The in-process app runs no engine: a runtime of its own, on its own connection, does."""
    import asyncio

    from consumers.providers import InstantProvider
    from consumers.runtime import Runtime
    from engine.service import Engine
    from engine.store import open_database

    settings = client.app.state.services.settings
    db = open_database(settings.store)
    try:
        asyncio.run(Runtime(Engine(db, settings), InstantProvider(), only_task=task_id).run())
    finally:
        db.close()

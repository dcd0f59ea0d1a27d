"""Dashboard sessions: the cookie is a random session id, never the token; signing out,
a revoked key, a changed admin token, the lifetime and the idle timeout each end it on the
server; sign-in is throttled per client address; cookies are Secure by configuration; a
weak admin token is refused at start. The app runs in-process (TestClient) on a real
SQLite store; `vec serve` itself runs for the start-up refusal."""
from __future__ import annotations

import re
import subprocess

import pytest

from tests.e2e.cli import VEC

ADMIN_TOKEN = "sessions-test-admin-token-7Qk2"


def _app(tmp_path, admin_token: str = ADMIN_TOKEN, behind_proxy: bool = False, **guard):
    """The app on a store in tmp_path; `behind_proxy`: wrapped as uvicorn does when the
    client's address is one of VEC_API_TRUSTED_PROXIES."""
    from fastapi.testclient import TestClient
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    from entrypoints.settings import EngineSettings
    from entrypoints.api.app import create_app
    from entrypoints.api.guard import GuardSettings

    settings = EngineSettings(store=f"sqlite:///{tmp_path}/vec.db", admin_token=admin_token, provider="instant",
                              api_single_wait=0.5)
    app = create_app(settings, GuardSettings(**guard))
    served = ProxyHeadersMiddleware(app, trusted_hosts="testclient") if behind_proxy else app
    client = TestClient(served, base_url="http://testserver", follow_redirects=False)
    client.vec_app = app
    return client


def _sign_in(client, token: str):
    return client.post("/dashboard/signin", data={"token": token, "next": "/dashboard/"})


def _cookie(answer) -> str:
    return re.search(r"vec_dashboard=([^;]+)", answer.headers["set-cookie"]).group(1)


def _signed_in(client, cookie: str) -> bool:
    client.cookies.clear()
    client.cookies.set("vec_dashboard", cookie, path="/dashboard")
    return client.get("/dashboard/").status_code == 200


def test_the_cookie_is_a_session_id_and_signing_out_ends_it_on_the_server(tmp_path):
    with _app(tmp_path) as client:
        answer = _sign_in(client, ADMIN_TOKEN)
        assert answer.status_code == 303
        cookie = _cookie(answer)
        assert ADMIN_TOKEN not in answer.headers["set-cookie"] and len(cookie) >= 40
        assert _signed_in(client, cookie)
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', client.get("/dashboard/").text).group(1)
        assert client.post("/dashboard/signout", data={"csrf": csrf}).status_code == 303
        assert not _signed_in(client, cookie)  # a copy of the cookie kept elsewhere is dead too
        stored = client.vec_app.state.services.db.projector.sql.execute(
            "SELECT COUNT(*) FROM dashboard_sessions").fetchone()[0]
        assert stored == 0


def test_a_revoked_key_or_a_new_admin_token_ends_the_sessions_opened_with_them(tmp_path):
    with _app(tmp_path) as client:
        engine = client.vec_app.state.services.engine
        engine.open_account("acme")
        key_id, key = engine.issue_api_key("acme")
        key_cookie = _cookie(_sign_in(client, key))
        admin_cookie = _cookie(_sign_in(client, ADMIN_TOKEN))
        assert _signed_in(client, key_cookie) and _signed_in(client, admin_cookie)
        engine.revoke_api_key("acme", key_id)
        assert not _signed_in(client, key_cookie)
        assert _signed_in(client, admin_cookie)
    with _app(tmp_path, admin_token="another-admin-token-for-the-same-store") as client:
        assert not _signed_in(client, admin_cookie)


def test_sessions_end_after_their_lifetime_and_when_idle(tmp_path, monkeypatch):
    from entrypoints.api import sessions

    now_ms = [1_800_000_000_000]
    monkeypatch.setattr(sessions, "_now_ms", lambda: now_ms[0])
    monkeypatch.setenv("VEC_DASHBOARD_SESSION_IDLE_S", "600")
    monkeypatch.setenv("VEC_DASHBOARD_SESSION_TTL_S", "3600")
    with _app(tmp_path) as client:
        idle = _cookie(_sign_in(client, ADMIN_TOKEN))
        busy = _cookie(_sign_in(client, ADMIN_TOKEN))
        for _ in range(6):  # busy is used every 9 minutes, idle is not
            now_ms[0] += 540_000
            assert _signed_in(client, busy)
        assert not _signed_in(client, idle)
        now_ms[0] += 540_000 * 2  # past the hour since sign-in, used or not
        assert not _signed_in(client, busy)


def test_failed_sign_ins_are_throttled_per_client_address(tmp_path, monkeypatch):
    monkeypatch.setenv("VEC_DASHBOARD_SIGNIN_LIMIT", "5/minute")
    with _app(tmp_path) as client:
        answers = [_sign_in(client, f"wrong-token-{i}").status_code for i in range(8)]
        assert answers[:5] == [401] * 5 and answers[5:] == [429] * 3
        limited = _sign_in(client, ADMIN_TOKEN)  # the right token too: this address waits
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert "set-cookie" not in limited.headers


@pytest.mark.parametrize(("public_url", "forwarded", "trusted", "secure"), [
    ("", None, False, False),
    ("https://vec.example", None, False, True),
    ("", "https", True, True),
    ("", "https", False, False),  # anyone can send the header: only a trusted proxy is believed
], ids=["plain", "public-url", "trusted-proxy", "untrusted-proxy"])
def test_cookies_are_secure_by_configuration(tmp_path, public_url, forwarded, trusted, secure):
    with _app(tmp_path, behind_proxy=trusted, public_url=public_url) as client:
        headers = {"X-Forwarded-Proto": forwarded} if forwarded else {}
        answer = client.post("/dashboard/signin", data={"token": ADMIN_TOKEN}, headers=headers)
        assert answer.status_code == 303
        assert ("secure" in answer.headers["set-cookie"].lower()) is secure


def test_a_weak_admin_token_is_refused_at_start_with_one_line(tmp_path):
    import os

    env = {**os.environ, "VEC_STORE": f"sqlite:///{tmp_path}/vec.db", "VEC_ADMIN_TOKEN": "admin", "VEC_API_PORT": "1"}
    done = subprocess.run([VEC, "serve"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "VEC_ADMIN_TOKEN is too weak" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "vec.db").exists() or done.stdout == ""

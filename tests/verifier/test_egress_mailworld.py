"""The egress pool against the real loopback mail world (tests/MAILWORLD.md): Postfix
listeners that refuse chosen client addresses with a block-list text, and real SOCKS5
servers (pproxy) with and without username/password, each leaving from its own 127.0.0.x."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from verifier import ProviderUnavailable, build_provider

from .test_probe_mailworld import (
    _env,
    _vec,
    log_size,
    log_tail,
    make_settings,
    postfix_sessions_logged,
    verify,
)

pytestmark = [pytest.mark.mailworld, pytest.mark.timeout(120)]

OPEN = "open=socks5://127.0.0.1:10801"  # leaves from 127.0.0.21
AUTH = "auth=socks5://vec:mailworld-socks-pw@127.0.0.1:10802"  # leaves from 127.0.0.23
BURNT = "burnt=socks5://127.0.0.1:10803"  # leaves from 127.0.0.22, refused by mx.blocklisted.test
DIRECT = "direct=direct"  # 127.0.0.1: refused by mx.blocklisted.test
CLEAN = "clean=direct://127.0.0.20"


def by_address(results):
    return {r.address: r for r in results}


def test_blocklisted_direct_path_settles_through_a_clean_egress(mailworld):
    """mx.blocklisted.test refuses 127.0.0.1 (our direct path) and the burnt proxy's
    address: the bulk still settles Safe/Invalid, each result naming the egress that
    decided it; blockall.test refuses every egress: Unknown (antispam_block), as before."""
    start = log_size(mailworld)
    users = ["alice", "bob", "carol"] + [f"nobody{i}" for i in range(12)]
    addrs = [f"{u}@blocklisted.test" for u in users] + ["alice@blockall.test", "bob@blockall.test"]
    settings = make_settings(mailworld, egress_pool=f"{DIRECT},{BURNT},{CLEAN}")
    r = by_address(verify(settings, addrs)[0])
    for u in users:
        got = r[f"{u}@blocklisted.test"]
        want = ("safe", None) if u in ("alice", "bob", "carol") else ("invalid", "user_unknown")
        assert (got.status, got.reason) == want, got.detail
        assert got.smtp_host == "mx.blocklisted.test[127.0.0.11] via clean"
        assert "via clean said: " in got.detail
    for a in ("alice@blockall.test", "bob@blockall.test"):
        assert (r[a].status, r[a].reason) == ("unknown", "antispam_block"), r[a].detail
        assert "blocked using zen.spamhaus.org" in r[a].detail
    log = log_tail(mailworld, start)
    # the refusals really happened, on the direct path and the burnt proxy's address
    assert "reject: RCPT from unknown[127.0.0.1]: 554 5.7.1" in log
    assert "reject: RCPT from unknown[127.0.0.22]: 554 5.7.1" in log
    assert "Client host rejected: blocked using zen.spamhaus.org" in log


def test_a_blocked_egress_is_spared_for_that_mx(mailworld):
    """Once refused, the direct path is not used for that MX again (cool-down), while
    other MX hosts still get it (its block is per MX)."""
    settings = make_settings(mailworld, egress_pool=f"{DIRECT},{CLEAN}", per_mx_concurrency=1)
    provider = build_provider(settings)

    async def main():
        first = await provider.verify(["alice@blocklisted.test"])
        start = log_size(mailworld)
        second = await provider.verify(["bob@blocklisted.test", "alice@example.test"])
        return first + second, log_tail(mailworld, start)
    results, log = asyncio.run(main())
    r = by_address(results)
    assert r["alice@blocklisted.test"].smtp_host.endswith("via clean")
    assert r["bob@blocklisted.test"].smtp_host.endswith("via clean")
    assert r["alice@example.test"].smtp_host == "mx.example.test[127.0.0.2] via direct"
    assert "reject: RCPT from unknown[127.0.0.20]" not in log  # nothing refused the clean path
    assert "RCPT from unknown[127.0.0.1]: 554" not in log  # the direct path was not tried again


@pytest.mark.parametrize("route,source", [(OPEN, "127.0.0.21"), (AUTH, "127.0.0.23")])
def test_socks5_end_to_end(mailworld, route, source):
    start = log_size(mailworld)
    results, _ = verify(make_settings(mailworld, egress_pool=route),
                        ["alice@example.test", "nobody@example.test", "alice@blocklisted.test"])
    r = by_address(results)
    name = route.split("=")[0]
    assert (r["alice@example.test"].status, r["nobody@example.test"].reason) == ("safe", "user_unknown")
    assert r["alice@blocklisted.test"].status == "safe"
    assert all(x.smtp_host.endswith(f"via {name}") for x in results)
    # the sessions came through the proxy: Postfix saw the proxy's outgoing address
    assert f"connect from unknown[{source}]" in log_tail(mailworld, start)


def test_socks5_wrong_password_is_that_egress_down(mailworld):
    """The proxy refuses our credentials: an outage of that egress (failed over), never
    a verdict on an address, and its password is never in a message."""
    bad = "bad=socks5://vec:not-the-password@127.0.0.1:10802"
    results, _ = verify(make_settings(mailworld, egress_pool=f"{bad},{OPEN}"), ["alice@example.test"])
    assert results[0].status == "safe" and results[0].smtp_host.endswith("via open")
    with pytest.raises(ProviderUnavailable) as ei:
        verify(make_settings(mailworld, egress_pool=bad), ["alice@example.test"])
    assert "egress bad is down" in str(ei.value) and "not-the-password" not in str(ei.value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_proxy(port: int, source: str) -> subprocess.Popen:
    """A SOCKS5 server of this test's own (pproxy), so that it can be killed mid-bulk."""
    proc = subprocess.Popen([sys.executable, "-m", "pproxy", "-l", f"socks5://127.0.0.1:{port}/@{source}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    proc.kill()
    pytest.fail("the test's SOCKS5 server did not start")


def test_a_proxy_that_dies_mid_bulk_fails_over(mailworld):
    """slow.test answers each RCPT after 1 s, so the bulk is in flight when the first
    proxy is killed (on the first result): the rest settles through the next egress."""
    port = free_port()
    proc = start_proxy(port, "127.0.0.24")
    addrs = [f"u{i}@slow.test" for i in range(10)]
    settings = make_settings(mailworld, egress_pool=f"mine=socks5://127.0.0.1:{port},{OPEN}",
                             rcpts_per_session=4, per_mx_concurrency=3)
    got = []

    def on_result(r):
        got.append(r)
        if len(got) == 1:
            os.kill(proc.pid, signal.SIGKILL)
    try:
        results = asyncio.run(build_provider(settings).verify(addrs, on_result))
    finally:
        proc.kill()
        proc.wait()
    assert [r.status for r in results] == ["safe"] * len(addrs), [r.detail for r in results]
    hosts = [r.smtp_host for r in results]
    assert any(h.endswith("via mine") for h in hosts)  # it was used before it died
    assert any(h.endswith("via open") for h in hosts)  # and the rest went the other way


def most_at_once(log: str) -> dict[str, int]:
    """The most SMTP sessions Postfix had open at once, per client address (its own
    connect/disconnect lines, in the order it wrote them)."""
    now: dict[str, int] = {}
    most: dict[str, int] = {}
    for line in log.splitlines():
        for verb, step in ((": connect from ", 1), (": disconnect from ", -1)):
            if verb in line:
                ip = line.split(verb, 1)[1].split("[", 1)[1].split("]", 1)[0]
                now[ip] = now.get(ip, 0) + step
                most[ip] = max(most.get(ip, 0), now[ip])
    return most


def test_each_egress_keeps_to_its_own_concurrency_cap(mailworld):
    """A direct route capped at 2 sessions and a proxy capped at 1, with room for 5 sessions
    to the MX: Postfix never sees more than 2 sessions at once from the direct route's
    address nor more than 1 from the proxy's, and sees both caps reached (slow.test holds
    each RCPT 1 s, so the bulk wants more sessions than the caps give)."""
    port = free_port()
    proc = start_proxy(port, "127.0.0.43")
    addrs = [f"u{i}@slow.test" for i in range(12)]
    settings = make_settings(
        mailworld, egress_pool=f"a=direct://127.0.0.41?concurrency=2,p=socks5://127.0.0.1:{port}?concurrency=1",
        per_mx_concurrency=5, rcpts_per_transaction=2, rcpts_per_session=2, smtp_timeout=5.0,
        address_deadline=60.0)
    start = log_size(mailworld)
    try:
        results, _ = verify(settings, addrs)
    finally:
        proc.kill()
        proc.wait()
    assert [r.status for r in results] == ["safe"] * len(addrs), [
        (r.status, r.reason, r.detail) for r in results if r.status != "safe"]
    log = postfix_sessions_logged(mailworld, start)
    most = most_at_once(log)
    assert most.get("127.0.0.41") == 2 and most.get("127.0.0.43") == 1, most
    assert {r.smtp_host.rsplit(" via ", 1)[1] for r in results} == {"a", "p"}


def test_all_egresses_down_is_our_outage(mailworld):
    """No proxy answers: ProviderUnavailable with every address unanswered (the engine
    pauses the bulk), not a list of Unknowns; healthy() says so until one is back."""
    port = free_port()
    settings = make_settings(mailworld, egress_pool=f"a=socks5://127.0.0.1:{port},b=socks5://127.0.0.1:{free_port()}")
    provider = build_provider(settings)
    addrs = ["alice@example.test", "bob@example.test"]
    got = []
    with pytest.raises(ProviderUnavailable) as ei:
        asyncio.run(provider.verify(addrs, got.append))
    assert got == [] and ei.value.unanswered == tuple(addrs)
    assert "egress a is down" in str(ei.value) and "egress b is down" in str(ei.value)
    assert asyncio.run(provider.healthy()) is False
    proc = start_proxy(port, "127.0.0.25")
    try:
        assert asyncio.run(provider.healthy()) is True
        results = asyncio.run(provider.verify(addrs))
    finally:
        proc.kill()
        proc.wait()
    assert [r.status for r in results] == ["safe", "safe"]
    assert all(r.smtp_host.endswith("via a") for r in results)


def test_cli_egress_list_never_shows_a_secret(mailworld):
    env = {**_env(mailworld), "VEC_EGRESS_POOL": f"{DIRECT},{AUTH}"}
    proc = subprocess.run([_vec(), "egress", "list", "--json"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line) for line in proc.stdout.splitlines()] == [
        {"name": "direct", "kind": "direct", "route": "direct", "auth": False},
        {"name": "auth", "kind": "socks5", "route": "socks5://vec:***@127.0.0.1:10802", "auth": True}]
    bad = {**env, "VEC_EGRESS_POOL": "x=socks5://vec:mailworld-socks-pw@proxy.test:1080"}
    proc = subprocess.run([_vec(), "egress", "list"], env=bad, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "egress 'x': the proxy host must be an IP address" in proc.stderr
    assert "mailworld-socks-pw" not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr


def test_cli_egress_check(mailworld):
    env = {**_env(mailworld), "VEC_EGRESS_POOL": f"{AUTH},dead=socks5://127.0.0.1:{free_port()}"}
    proc = subprocess.run([_vec(), "egress", "check", "127.0.0.11", "--json"], env=env,
                          capture_output=True, text=True, timeout=60)
    rows = {r["name"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert rows["auth"] == {"name": "auth", "ok": True, "said": "220 mx.blocklisted.test ESMTP"}
    assert rows["dead"]["ok"] is False and "egress dead is down: proxy unreachable" in rows["dead"]["said"]
    assert "mailworld-socks-pw" not in proc.stdout + proc.stderr

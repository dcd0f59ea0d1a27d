"""The verifier against the real loopback mail world (tests/MAILWORLD.md): Postfix,
postgrey and dnsmasq on 127.0.0.x. Short timeouts keep the file well under a minute.

Run alone: .venv/bin/python -m pytest tests/verifier -p tests.mailworld
(once tests/conftest.py registers the plugin, `-p tests.mailworld` is not needed).
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from verifier import ProviderUnavailable, VerifierSettings, build_provider
from verifier.provider import TieredProvider
from verifier.resolver import CANARY_TTL

pytestmark = [pytest.mark.mailworld, pytest.mark.timeout(120)]

# Unique per run: greylisting triplets are (client, sender, recipient), and within one
# world a triplet that waited once passes for good.
RUN = uuid.uuid4().hex[:10]
SENDER = f"probe-{RUN}@vec.test"

FAST = dict(smtp_timeout=2.0, dns_timeout=2.0, retry_window=6.0, retry_backoff=1.0,
            address_deadline=12.0)


def make_settings(mw, **kw) -> VerifierSettings:
    base = dict(
        dns_servers=mw.dns_server, smtp_port=mw.smtp_port, helo_name=mw.helo_name,
        mail_from=SENDER, allow_test_domains=True, loopback_only=True, **FAST,
    )
    base.update(kw)
    return VerifierSettings(**base)


def verify(settings: VerifierSettings, addresses: list[str]):
    provider = build_provider(settings)
    got = []
    t0 = time.monotonic()
    results = asyncio.run(provider.verify(addresses, got.append))
    elapsed = time.monotonic() - t0
    assert len(results) == len(addresses) == len(got)
    assert [r.address for r in results] == addresses
    return results, elapsed


def log_tail(mw, start: int, name: str = "postfix.log") -> str:
    path = mw.log_path(name)
    if not path.exists():
        return ""
    with open(path, "rb") as fh:
        fh.seek(start)
        return fh.read().decode("utf-8", "replace")


def postfix_sessions_logged(mw, start: int, expect: str | None = None, deadline_s: float = 20.0) -> str:
    """The Postfix log since `start`, once every session it shows has ended there (as many
    "disconnect from" lines as "connect from", at least one) and it holds `expect`: Postfix
    writes its log a moment after the client is done."""
    limit = time.monotonic() + deadline_s
    while True:
        tail = log_tail(mw, start)
        connects = tail.count(": connect from ")
        if connects and tail.count(": disconnect from ") >= connects and (expect is None or expect in tail):
            return tail
        assert time.monotonic() < limit, f"the sessions (and {expect!r}) never reached the Postfix log: {tail[-2000:]!r}"
        time.sleep(0.05)


def log_size(mw, name: str = "postfix.log") -> int:
    path = mw.log_path(name)
    return path.stat().st_size if path.exists() else 0


# One mixed batch covers the one-address cases at once (domains are probed in parallel).
BATCH = {
    "alice@example.test": ("safe", None),
    "bob@example.test": ("safe", None),
    "nobody@example.test": ("invalid", "user_unknown"),
    "full@example.test": ("risky", "full_inbox"),
    "disabled@example.test": ("invalid", "disabled"),
    "postmaster@example.test": ("risky", "role"),
    "whoever@catchall.test": ("risky", "catch_all"),
    "alice@spamblock.test": ("unknown", "antispam_block"),
    "alice@greylist.test": ("safe", None),
    "carol@greylist.test": ("invalid", "user_unknown"),
    "alice@greyhard.test": ("unknown", "greylisted"),
    "alice@slow.test": ("safe", None),
    "x@closed.test": ("unknown", "connection_refused"),
    "x@blackhole.test": ("unknown", "smtp_timeout"),
    "x@tarpit.test": ("unknown", "smtp_timeout"),
    "x@nullmx.test": ("invalid", "null_mx"),
    "x@nx.test": ("invalid", "no_domain"),
    "alice@amx.test": ("safe", None),
    "zed@amx.test": ("invalid", "user_unknown"),
    "alice@failover.test": ("safe", None),
    "zed@failover.test": ("invalid", "user_unknown"),
    "alice@noaddr.test": ("safe", None),
    "x@servfail.test": ("unknown", "dns_failure"),
    "not an address@example.test": ("invalid", "syntax"),
    "x@mailinator.com": ("risky", "disposable"),
}


@pytest.fixture(scope="module")
def batch(mailworld):
    results, elapsed = verify(make_settings(mailworld), list(BATCH))
    return {r.address: r for r in results}, elapsed


@pytest.mark.parametrize("address", list(BATCH))
def test_batch_case(batch, address):
    results, _ = batch
    r = results[address]
    assert (r.status, r.reason) == BATCH[address], r.detail
    assert r.tier == "smtp"


def test_batch_details(batch):
    r, elapsed = batch
    # the batch is bounded by its slowest case (the greylisting that never clears)
    assert elapsed < FAST["address_deadline"] + 2
    assert r["alice@example.test"].smtp_code == 250
    assert r["alice@example.test"].smtp_enhanced == "2.1.5"
    assert r["alice@example.test"].smtp_host == "mx.example.test[127.0.0.2]"
    assert r["alice@example.test"].mx == ("mx.example.test",)
    assert r["alice@example.test"].catch_all is False
    assert r["nobody@example.test"].smtp_code == 550
    assert "User unknown" in r["nobody@example.test"].smtp_message
    assert r["whoever@catchall.test"].catch_all is True
    assert r["postmaster@example.test"].role is True
    assert r["x@mailinator.com"].disposable is True
    assert r["alice@spamblock.test"].smtp_code == 554
    assert "spamhaus" in r["alice@spamblock.test"].detail
    assert r["alice@greyhard.test"].smtp_code == 450
    assert r["alice@greylist.test"].duration_ms >= 2000  # it had to wait out the greylisting
    assert r["alice@failover.test"].mx == ("mx1.failover.test", "mx2.failover.test")
    assert r["alice@failover.test"].smtp_host == "mx2.failover.test[127.0.0.2]"
    assert r["alice@noaddr.test"].smtp_host == "mx2.noaddr.test[127.0.0.2]"
    assert r["alice@amx.test"].mx == ("amx.test",)
    assert "connect" in r["x@blackhole.test"].detail
    assert "greeting" in r["x@tarpit.test"].detail
    assert r["x@nullmx.test"].smtp_code is None  # decided without SMTP
    assert "connection refused" in r["x@closed.test"].detail
    # every definitive answer decided by a reply carries it: code, enhanced code, text, host
    main = "mx.example.test[127.0.0.2]"
    decided = {
        "alice@example.test": (250, "2.1.5", main),
        "nobody@example.test": (550, "5.1.1", main),
        "full@example.test": (552, "5.2.2", main),
        "disabled@example.test": (550, "5.2.1", main),
        "postmaster@example.test": (250, "2.1.5", main),  # role
        "whoever@catchall.test": (250, "2.1.5", "mx.catchall.test[127.0.0.2]"),  # catch-all
        "alice@spamblock.test": (554, "5.7.1", "mx.spamblock.test[127.0.0.2]"),
        "alice@greyhard.test": (450, "4.2.0", "mx.greyhard.test[127.0.0.4]"),
        "zed@failover.test": (550, "5.1.1", "mx2.failover.test[127.0.0.2]"),
    }
    for address, (code, enhanced, host) in decided.items():
        x = r[address]
        assert (x.smtp_code, x.smtp_enhanced, x.smtp_host) == (code, enhanced, host), address
        assert x.smtp_message and x.smtp_message.startswith(enhanced), address
    for x in r.values():  # bounded per address
        assert x.duration_ms <= FAST["address_deadline"] * 1000 + 500


def test_dead_dns_server_is_our_outage(mailworld):
    """Our resolver never answers: the batch raises, nothing is reported as unknown."""
    s = make_settings(mailworld, dns_servers=mailworld.dead_dns_server, dns_timeout=1.5)
    addrs = ["alice@example.test", "bob@example.test", "nobody@example.test", "x@catchall.test"]
    got = []
    t0 = time.monotonic()
    with pytest.raises(ProviderUnavailable) as ei:
        asyncio.run(build_provider(s).verify(addrs, got.append))
    assert got == []
    assert ei.value.unanswered == tuple(addrs)
    assert "dns resolver not answering (127.0.0.1:5301)" in str(ei.value)
    # the MX query's 1.5 s timeout, then the canary's (~3 s; 8 s at the default 4 s): a generous margin
    assert time.monotonic() - t0 < 7


def test_servfail_domain_with_a_live_resolver_stays_unknown(mailworld):
    """servfail.test: dnsmasq forwards to a server that never answers, so the look-up
    times out -- but dnsmasq answers the canary: the domain's failure, not ours."""
    s = make_settings(mailworld, dns_timeout=1.5)
    provider = build_provider(s)
    results, _ = verify(s, ["x@servfail.test", "alice@example.test"])
    assert [(r.status, r.reason) for r in results] == [("unknown", "dns_failure"), ("safe", None)]
    assert asyncio.run(provider.healthy()) is True


def test_resolver_stopped_then_back(mailworld):
    """dnsmasq stopped: the batch raises ProviderUnavailable and healthy() says so;
    once it is back (and the canary's verdict has expired) the same prober works."""
    provider = build_provider(make_settings(mailworld, dns_timeout=1.0))
    addrs = ["alice@example.test", "nobody@example.test", "x@catchall.test"]
    with mailworld.dns_stopped():
        got = []
        with pytest.raises(ProviderUnavailable) as ei:
            asyncio.run(provider.verify(addrs, got.append))
        assert got == [] and ei.value.unanswered == tuple(addrs)
        assert asyncio.run(provider.healthy()) is False
    time.sleep(CANARY_TTL + 0.1)
    assert asyncio.run(provider.healthy()) is True
    results = asyncio.run(provider.verify(addrs))
    assert [(r.status, r.reason) for r in results] == [
        ("safe", None), ("invalid", "user_unknown"), ("risky", "catch_all")]


def test_greylisting_clears_inside_window(mailworld):
    s = make_settings(mailworld, mail_from=f"grey-{RUN}@vec.test")
    results, elapsed = verify(s, ["alice@greylist.test", "bob@greylist.test", "zed@greylist.test"])
    assert [(r.status, r.reason) for r in results] == [
        ("safe", None), ("safe", None), ("invalid", "user_unknown")]
    assert elapsed >= 2  # postgrey's delay was waited out (the safe answers above: it cleared in the window)


def test_greylisting_that_never_clears(mailworld):
    s = make_settings(mailworld, retry_window=3.0, address_deadline=40.0)
    results, elapsed = verify(s, ["alice@greyhard.test", "bob@greyhard.test"])
    for r in results:
        assert (r.status, r.reason) == ("unknown", "greylisted")
        assert r.smtp_code == 450
    # retried for the 3 s window, then given up: far from the 40 s deadline (a generous margin)
    assert 2.5 <= elapsed < 20


def test_too_many_recipients(mailworld):
    """limit.test accepts 3 recipients per transaction: 10 users in one batch."""
    addrs = [f"u{i}@limit.test" for i in range(10)] + ["nobody@limit.test"]
    results, _ = verify(make_settings(mailworld), addrs)
    assert [(r.status, r.reason) for r in results] == [("safe", None)] * 10 + [("invalid", "user_unknown")]
    assert all(r.smtp_code in (250, 550) for r in results)


def test_error_limit(mailworld):
    """30 unknown and a few known users in one batch: every answer right, and Postfix
    never has to slow down or drop a session for too many errors."""
    start = log_size(mailworld)
    unknown = [f"nobody{i}-{RUN}@example.test" for i in range(30)]
    known = ["alice@example.test", "bob@example.test", "carol@example.test", "dave@example.test"]
    addrs = unknown[:15] + known + unknown[15:]
    results, elapsed = verify(make_settings(mailworld), addrs)
    r = {x.address: x for x in results}
    assert all((r[a].status, r[a].reason) == ("invalid", "user_unknown") for a in unknown)
    assert all(r[a].status == "safe" for a in known)
    assert all(x.smtp_code != 421 for x in results)
    assert elapsed < 12  # no 1 s error-delay per reply past the 10th error either (~20 s with it)
    tail = postfix_sessions_logged(mailworld, start)  # the sessions' lines are in the log...
    assert "too many errors" not in tail  # ...and none was slowed down or dropped


def test_many_same_domain_addresses_share_sessions(mailworld):
    start = log_size(mailworld)
    addrs = [f"{u}@example.test" for u in ("alice", "bob", "carol", "dave", "erin", "frank")]
    results, _ = verify(make_settings(mailworld, per_mx_concurrency=1), addrs)
    assert all(r.status == "safe" for r in results)
    tail = postfix_sessions_logged(mailworld, start)
    assert tail.count(": connect from ") == 1, tail  # one connection for six recipients
    assert "rcpt=6/7" in tail  # six users accepted + the rejected catch-all probe


def test_fallback_tier_uses_its_own_identity(mailworld):
    start = log_size(mailworld)
    s = make_settings(mailworld, fallback_tier="smtp", fallback_source_address="127.0.0.10",
                      fallback_helo_name="fallback.vec.test", fallback_deadline=4.0)
    provider = build_provider(s)
    assert isinstance(provider, TieredProvider)
    results = asyncio.run(provider.verify(["alice@spamblock.test", "alice@example.test"]))
    assert [(r.status, r.reason, r.tier) for r in results] == [
        ("unknown", "antispam_block", "smtp-fallback"), ("safe", None, "smtp")]
    assert "primary tier smtp" in results[0].detail
    assert "[127.0.0.10]" in postfix_sessions_logged(mailworld, start, "[127.0.0.10]")


def test_cancel_mid_batch(mailworld):
    """slow.test takes 1 s per RCPT: cancel after a few, keep what finished."""
    async def main():
        p = build_provider(make_settings(mailworld, per_mx_concurrency=1))
        got = []
        task = asyncio.create_task(p.verify([f"u{i}@slow.test" for i in range(20)], got.append))
        async with asyncio.timeout(30):  # some answers are in: the session is mid-way
            while len(got) < 2:
                await asyncio.sleep(0.05)
        t0 = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return got, time.monotonic() - t0
    got, stop = asyncio.run(main())
    assert stop < 3  # prompt: the 18 RCPTs left would take 18 s (a generous margin for a loaded machine)
    assert 2 <= len(got) < 20
    assert all((r.status, r.address.startswith("u")) == ("safe", True) for r in got)


def _vec() -> str:
    exe = Path(sys.executable).with_name("vec")
    if not exe.exists():
        pytest.skip("console script `vec` not installed (scripts/install test)")
    return str(exe)


def _env(mw) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VEC_")}
    env.update(mw.env())
    env.update({
        "VEC_MAIL_FROM": f"cli-{RUN}@vec.test", "VEC_ALLOW_TEST_DOMAINS": "true",
        "VEC_LOOPBACK_ONLY": "true", "VEC_SMTP_TIMEOUT": "2", "VEC_DNS_TIMEOUT": "2",
        "VEC_RETRY_WINDOW": "4",
    })
    return env


def test_cli_probe_json(mailworld):
    expected = [
        ("alice@example.test", "safe", None),
        ("nobody@example.test", "invalid", "user_unknown"),
        ("x@catchall.test", "risky", "catch_all"),
        ("a@spamblock.test", "unknown", "antispam_block"),
        ("x@nullmx.test", "invalid", "null_mx"),
        ("x@closed.test", "unknown", "connection_refused"),
        ("alice@example.test", "safe", None),  # duplicates keep their place
    ]
    proc = subprocess.run(
        [_vec(), "probe", "--json", *[e[0] for e in expected[:4]], "-"],
        input="x@nullmx.test\nx@closed.test\n\nalice@example.test\n",
        env=_env(mailworld), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(r["address"], r["status"], r["reason"]) for r in rows] == expected
    for r in rows:
        assert set(r) >= {"address", "normalized", "status", "reason", "mx", "smtp", "catch_all",
                          "disposable", "role", "tier", "duration_ms"}
        assert set(r["smtp"]) == {"code", "enhanced", "message", "host"}
    assert rows[0]["smtp"] == {"code": 250, "enhanced": "2.1.5", "message": "2.1.5 Ok",
                               "host": "mx.example.test[127.0.0.2]"}
    assert rows[1]["smtp"]["enhanced"] == "5.1.1"


def test_cli_probe_outage_is_a_message_not_a_traceback(mailworld):
    proc = subprocess.run(
        [_vec(), "probe", "--json", "alice@example.test"],
        env={**_env(mailworld), "VEC_DNS_SERVERS": mailworld.dead_dns_server, "VEC_DNS_TIMEOUT": "1"},
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    assert "verifier unavailable: dns resolver not answering" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_cli_probe_table(mailworld):
    proc = subprocess.run(
        [_vec(), "probe", "alice@example.test", "nobody@example.test"],
        env={**_env(mailworld), "COLUMNS": "200"}, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "alice@example.test" in proc.stdout and "safe" in proc.stdout
    assert "invalid" in proc.stdout and "user_unknown" in proc.stdout

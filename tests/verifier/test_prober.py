"""The SMTP tier end to end against in-process fakes (fake DNS + scriptable SMTP
servers on 127.0.1.x): session reuse, error and recipient limits, concurrency limits,
deadlines, cancellation, tiers. Fast; no mail world needed."""
from __future__ import annotations

import asyncio
import collections
import json
import time

import pytest

from verifier import ProviderError, ProviderUnavailable, VerifierSettings, build_provider
from verifier.prober import SmtpProber
from verifier.provider import HttpApiProvider, TieredProvider
from verifier.resolver import DnsResolver

from .fakes import Blackhole, FakeDNS, FakeSMTP, count_open_sessions, free_port, postfix_like

pytestmark = pytest.mark.timeout(60)

A, B, C, D, DEAD, HOLE, TARPIT = (f"127.0.1.{i}" for i in (1, 2, 3, 4, 7, 6, 5))
IPS = [A, B, C, D, DEAD, HOLE, TARPIT]

ZONE = {
    "a.test": {"MX": ["10 mx.a.test."]},
    "mx.a.test": {"A": [A]},
    "b.test": {"MX": ["10 mx.b.test."]},
    "mx.b.test": {"A": [B]},
    "c.test": {"MX": ["10 mx.c.test."]},
    "mx.c.test": {"A": [C]},
    "failover.test": {"MX": ["10 mx1.failover.test.", "20 mx2.failover.test."]},
    "mx1.failover.test": {"A": [DEAD]},
    "mx2.failover.test": {"A": [A]},
    "noaddr.test": {"MX": ["10 ghost.noaddr.test.", "20 mx.a.test."]},
    "alldead.test": {"MX": ["10 ghost.noaddr.test."]},
    "nullmx.test": {"MX": ["0 ."]},
    "amx.test": {"A": [A]},
    "nothing.test": {"TXT": ['"v=spf1 -all"']},
    "hole.test": {"MX": ["10 mx.hole.test."]},
    "mx.hole.test": {"A": [HOLE]},
    "tarpit.test": {"MX": ["10 mx.tarpit.test."]},
    "mx.tarpit.test": {"A": [TARPIT]},
    "far.test": {"MX": ["10 mx.far.test."]},
    "mx.far.test": {"A": ["192.0.2.25"]},  # TEST-NET: must never be contacted
    "closed.test": {"MX": ["10 mx.closed.test."]},
    "mx.closed.test": {"A": [DEAD]},  # nothing listens: connection refused
    "refusedfirst.test": {"MX": ["10 mx.closed.test.", "20 mx.hole.test."]},
    "timeoutfirst.test": {"MX": ["10 mx.hole.test.", "20 mx.closed.test."]},
    "mailinator.com": {"MX": ["10 mx.a.test."]},
}


def settings(dns: str, port: int, **kw) -> VerifierSettings:
    base = dict(
        dns_servers=dns, smtp_port=port, helo_name="vec.test", mail_from="probe@vec.test",
        allow_test_domains=True, loopback_only=True, smtp_timeout=1.0, dns_timeout=1.0,
        retry_window=2.0, retry_backoff=0.3, address_deadline=6.0, host_failure_ttl=30,
    )
    base.update(kw)
    return VerifierSettings(**base)


class World:
    def __init__(self) -> None:
        self.port = free_port(IPS)
        self.dns = FakeDNS(ZONE, silent={"slowdns.test"}, servfail={"servfail.test"})
        self.servers: dict[str, FakeSMTP] = {}
        self.dns_addr = ""

    async def __aenter__(self) -> "World":
        self.dns_addr = await self.dns.start()
        for ip in (A, B, C):
            self.servers[ip] = await FakeSMTP(ip, self.port).start()
        self.servers[TARPIT] = await FakeSMTP(TARPIT, self.port, banner=None).start()
        self.hole = Blackhole(HOLE, self.port)
        return self

    async def __aexit__(self, *exc) -> None:
        for s in self.servers.values():
            s.close()
        self.hole.close()
        self.dns.close()

    def prober(self, **kw) -> SmtpProber:
        return build_provider(settings(self.dns_addr, self.port, **kw))  # type: ignore[return-value]


def run(coro):
    return asyncio.run(coro)


def by_addr(results):
    return {r.address: r for r in results}


def test_basic_outcomes():
    async def main():
        async with World() as w:
            w.servers[A].respond = postfix_like({"alice", "bob", "info"})
            p = w.prober()
            got = []
            res = await p.verify([
                "alice@a.test", "nobody@a.test", "bad address@a.test", "x@nullmx.test",
                "x@nx.test", "alice@amx.test", "x@nothing.test", "alice@noaddr.test",
                "x@alldead.test", "alice@failover.test", "x@servfail.test", "x@mailinator.com",
                "info@a.test", "x@far.test", "x@closed.test",
            ], got.append)
            return w, res, got
    w, res, got = run(main())
    assert len(got) == len(res) == 15
    r = by_addr(res)
    assert [x.address for x in res][0] == "alice@a.test"  # input order
    expect = {
        "alice@a.test": ("safe", None),
        "nobody@a.test": ("invalid", "user_unknown"),
        "bad address@a.test": ("invalid", "syntax"),
        "x@nullmx.test": ("invalid", "null_mx"),
        "x@nx.test": ("invalid", "no_domain"),
        "alice@amx.test": ("safe", None),
        "x@nothing.test": ("invalid", "no_mx"),
        "alice@noaddr.test": ("safe", None),
        "x@alldead.test": ("invalid", "no_mx"),
        "alice@failover.test": ("safe", None),
        "x@servfail.test": ("unknown", "dns_failure"),
        "x@mailinator.com": ("risky", "disposable"),
        "info@a.test": ("risky", "role"),
        "x@far.test": ("unknown", "provider_error"),  # loopback_only refused 192.0.2.25
        "x@closed.test": ("unknown", "connection_refused"),
    }
    assert {a: (x.status, x.reason) for a, x in r.items()} == expect
    assert r["alice@a.test"].smtp_code == 250
    assert r["alice@a.test"].smtp_enhanced == "2.1.5"
    assert r["alice@a.test"].smtp_host == f"mx.a.test[{A}]"
    assert (r["nobody@a.test"].smtp_code, r["nobody@a.test"].smtp_enhanced) == (550, "5.1.1")
    assert "User unknown" in r["nobody@a.test"].smtp_message
    # failover.test's first MX is the same dead host: whichever domain tried it first
    assert r["x@closed.test"].detail.startswith(f"no MX host reachable: mx.closed.test[{DEAD}]: connection refused")
    assert r["x@closed.test"].smtp_code is None and r["x@closed.test"].smtp_enhanced is None
    assert r["alice@a.test"].catch_all is False
    assert r["alice@amx.test"].mx == ("amx.test",)
    assert r["alice@failover.test"].mx == ("mx1.failover.test", "mx2.failover.test")
    assert r["x@mailinator.com"].disposable and r["info@a.test"].role
    assert not any(s.data for srv in w.servers.values() for s in srv.sessions)  # never DATA
    assert all(s.helo == "vec.test" and s.mail_from == "<probe@vec.test>"
               for srv in w.servers.values() for s in srv.sessions if s.helo)


def test_one_session_for_many_rcpts():
    async def main():
        async with World() as w:
            w.servers[A].respond = postfix_like({f"u{i}" for i in range(10)})
            p = w.prober()
            res = await p.verify([f"u{i}@a.test" for i in range(10)])
            return w, res
    w, res = run(main())
    assert all(r.status == "safe" for r in res)
    sessions = w.servers[A].sessions
    assert len(sessions) == 1
    assert len(sessions[0].rcpts) == 11  # catch-all probe + 10
    assert sessions[0].quit


def test_duplicates_probed_once():
    async def main():
        async with World() as w:
            res = await w.prober().verify(["alice@a.test", "bob@a.test", "alice@a.test", "Alice@A.TEST"])
            return w, res
    w, res = run(main())
    assert [r.address for r in res] == ["alice@a.test", "bob@a.test", "alice@a.test", "Alice@A.TEST"]
    assert all(r.status == "safe" for r in res)
    rcpts = [rc for s in w.servers[A].sessions for rc, _ in s.rcpts]
    assert rcpts.count("alice@a.test") == 1
    assert rcpts.count("Alice@a.test") == 1  # local parts may be case-sensitive: probed as given


def test_error_budget_keeps_clear_of_server_limits():
    """30 unknown + 3 known: no session sees more than max_errors_per_session rejections,
    so a server that drops clients after 10 errors never gets to."""
    async def main():
        async with World() as w:
            w.servers[A].hard_error_limit = 10
            p = w.prober(max_errors_per_session=7)
            addrs = [f"nobody{i}@a.test" for i in range(30)] + ["alice@a.test", "bob@a.test"]
            return w, await p.verify(addrs)
    w, res = run(main())
    r = by_addr(res)
    assert all(r[f"nobody{i}@a.test"].status == "invalid" for i in range(30))
    assert r["alice@a.test"].status == r["bob@a.test"].status == "safe"
    for s in w.servers[A].sessions:
        assert sum(1 for _, code in s.rcpts if code >= 400) <= 7
    assert all(x.smtp_code != 421 for x in res)


def test_too_many_recipients_opens_new_sessions_and_learns_limit():
    async def main():
        async with World() as w:
            srv = w.servers[A]
            srv.rcpt_limit = 3
            srv.respond = postfix_like({f"u{i}" for i in range(20)})
            p = w.prober()
            res = await p.verify([f"u{i}@a.test" for i in range(10)])
            return w, p, res
    w, p, res = run(main())
    assert all(r.status == "safe" for r in res), [(r.address, r.status, r.detail) for r in res]
    assert p.host_limits[(A, w.port)] == 3
    sessions = w.servers[A].sessions
    assert sum(1 for s in sessions for _, c in s.rcpts if c == 452) == 1  # learned after one


def test_per_mx_concurrency_and_rcpts_per_session():
    async def main():
        async with World() as w:
            w.servers[A].respond = postfix_like({f"u{i}" for i in range(200)})
            w.servers[A].rcpt_delay = 0.01
            p = w.prober(per_mx_concurrency=2, rcpts_per_session=5)
            return w, await p.verify([f"u{i}@a.test" for i in range(60)])
    w, res = run(main())
    assert all(r.status == "safe" for r in res)
    srv = w.servers[A]
    assert srv.max_concurrent <= 2
    assert all(len(s.rcpts) <= 5 for s in srv.sessions)


def test_global_concurrency(monkeypatch):
    live = count_open_sessions(monkeypatch)

    async def main():
        async with World() as w:
            for ip in (A, B, C):
                w.servers[ip].rcpt_delay = 0.05
            p = w.prober(max_concurrency=1)
            return await p.verify([f"alice@{d}.test" for d in "abc"] + [f"bob@{d}.test" for d in "abc"])
    res = run(main())
    assert all(r.status == "safe" for r in res)
    assert live["max"] == 1


def test_each_egress_keeps_to_its_caps(monkeypatch):
    """Two direct routes from their own source addresses: x capped at 2 sessions and at 1
    per MX, y at 1; the per-MX limit (4) leaves room for more. The servers never see more
    than 1 session of x per MX, 2 of x in all, 1 of y -- and see each cap reached."""
    X, Y = "127.0.2.1", "127.0.2.2"
    live: collections.Counter = collections.Counter()
    most: collections.Counter = collections.Counter()
    handle = FakeSMTP._handle

    async def counting(self, reader, writer):
        source = writer.get_extra_info("peername")[0]
        keys = [(self.ip, source), source]
        for k in keys:
            live[k] += 1
            most[k] = max(most[k], live[k])
        try:
            await handle(self, reader, writer)
        finally:
            for k in keys:
                live[k] -= 1
    monkeypatch.setattr(FakeSMTP, "_handle", counting)

    async def main():
        async with World() as w:
            for ip in (A, B):
                w.servers[ip].rcpt_delay = 0.05
            p = w.prober(egress_pool=f"x=direct://{X}?concurrency=2&per_mx=1,y=direct://{Y}?concurrency=1",
                         per_mx_concurrency=4, rcpts_per_transaction=2, rcpts_per_session=2, smtp_timeout=3.0)
            return await p.verify([f"user{i}@{d}.test" for d in "ab" for i in range(12)])
    res = run(main())
    assert {r.status for r in res} == {"invalid"}, [r.detail for r in res if r.status != "invalid"]
    assert (most[X], most[(A, X)], most[(B, X)], most[Y]) == (2, 1, 1, 1), most


def test_catch_all_detected_and_cached():
    async def main():
        async with World() as w:
            w.servers[B].respond = lambda rcpt: (250, "2.1.5 Ok")
            p = w.prober()
            r1 = await p.verify(["anything@b.test"])
            r2 = await p.verify(["other@b.test"])
            return w, r1[0], r2[0]
    w, r1, r2 = run(main())
    assert (r1.status, r1.reason, r1.catch_all) == ("risky", "catch_all", True)
    assert (r2.status, r2.reason, r2.catch_all) == ("risky", "catch_all", True)
    rcpts = [rc for s in w.servers[B].sessions for rc, _ in s.rcpts]
    assert len(rcpts) == 3  # one random probe, then the two addresses


def test_connection_failures_are_unknown_and_bounded():
    async def main():
        async with World() as w:
            # every other stage and the address deadline far away: only the two timeouts under
            # test can end the hole's and the tarpit's sessions early
            p = w.prober(connect_timeout=0.5, banner_timeout=0.5, smtp_timeout=30, address_deadline=60)
            t0 = time.monotonic()
            res = await p.verify(["x@hole.test", "y@hole.test", "x@tarpit.test", "x@closed.test"])
            return res, time.monotonic() - t0
    res, elapsed = run(main())
    assert [(r.status, r.reason) for r in res] == [("unknown", "smtp_timeout")] * 3 + [
        ("unknown", "connection_refused")]
    assert "connect timed out" in res[0].detail
    assert "no greeting" in res[2].detail
    assert "connection refused" in res[3].detail
    assert elapsed < 15  # bounded by the 0.5 s timeouts (~1 s), far below the 30 s of every other stage


@pytest.mark.parametrize("domain,reason", [
    ("refusedfirst.test", "connection_refused"),  # MX 10 refuses, MX 20 times out
    ("timeoutfirst.test", "smtp_timeout"),  # MX 10 times out, MX 20 refuses
])
def test_mixed_failures_take_the_most_preferred_hosts_reason(domain, reason):
    async def main():
        async with World() as w:
            return (await w.prober(connect_timeout=0.4).verify([f"x@{domain}"]))[0]
    r = run(main())
    assert (r.status, r.reason) == ("unknown", reason)
    assert "connection refused" in r.detail and "connect timed out" in r.detail


def test_recently_failed_host_keeps_its_reason():
    """The second batch skips the host that refused (host_failure_ttl): still
    connection_refused, not a generic timeout."""
    async def main():
        async with World() as w:
            p = w.prober()
            first = (await p.verify(["x@closed.test"]))[0]
            second = (await p.verify(["y@closed.test"]))[0]
            return first, second
    first, second = run(main())
    assert first.reason == second.reason == "connection_refused"
    assert "skipped, recently failed" in second.detail


def test_definitive_results_carry_the_deciding_reply():
    """safe, catch-all, role, full inbox, disabled, unknown user: code, enhanced code,
    text and host of the reply that decided each."""
    replies = {
        "alice": (250, "2.1.5 Ok"),
        "info": (250, "2.1.5 Ok"),
        "full": (552, "5.2.2 <full@a.test>: Recipient address rejected: Mailbox full"),
        "disabled": (550, "5.2.1 <disabled@a.test>: Recipient address rejected: The email account that you tried to reach is disabled"),
        "grey": (450, "4.2.0 <grey@a.test>: Recipient address rejected: Greylisted"),
    }

    def respond(rcpt):
        return replies.get(rcpt.split("@")[0], (550, f"5.1.1 <{rcpt}>: Recipient address rejected: User unknown"))

    async def main():
        async with World() as w:
            w.servers[A].respond = respond
            w.servers[B].respond = lambda rcpt: (250, "2.1.5 Ok")  # catch-all
            p = w.prober(retry_window=0.5, retry_backoff=0.2)
            return by_addr(await p.verify([
                "alice@a.test", "info@a.test", "full@a.test", "disabled@a.test", "zed@a.test",
                "grey@a.test", "anyone@b.test", "info@b.test"]))
    r = run(main())
    expect = {
        "alice@a.test": ("safe", None, 250, "2.1.5", f"mx.a.test[{A}]"),
        "info@a.test": ("risky", "role", 250, "2.1.5", f"mx.a.test[{A}]"),
        "full@a.test": ("risky", "full_inbox", 552, "5.2.2", f"mx.a.test[{A}]"),
        "disabled@a.test": ("invalid", "disabled", 550, "5.2.1", f"mx.a.test[{A}]"),
        "zed@a.test": ("invalid", "user_unknown", 550, "5.1.1", f"mx.a.test[{A}]"),
        "grey@a.test": ("unknown", "greylisted", 450, "4.2.0", f"mx.a.test[{A}]"),
        "anyone@b.test": ("risky", "catch_all", 250, "2.1.5", f"mx.b.test[{B}]"),
        "info@b.test": ("risky", "catch_all", 250, "2.1.5", f"mx.b.test[{B}]"),
    }
    got = {a: (x.status, x.reason, x.smtp_code, x.smtp_enhanced, x.smtp_host) for a, x in r.items()}
    assert got == expect
    assert all(x.smtp_message for x in r.values())
    assert r["full@a.test"].smtp_message.endswith("Mailbox full")


def test_greylisting_retried_inside_window():
    async def main():
        async with World() as w:
            seen: dict[str, float] = {}

            def grey(rcpt):
                first = seen.setdefault(rcpt, time.monotonic())
                if time.monotonic() - first < 0.5:
                    return 450, f"4.2.0 <{rcpt}>: Recipient address rejected: Greylisted, see http://postgrey"
                return postfix_like({"alice"})(rcpt)
            w.servers[C].respond = grey
            p = w.prober(retry_window=3.0, retry_backoff=0.3)
            return await p.verify(["alice@c.test", "zed@c.test"])
    res = run(main())
    assert [(r.status, r.reason) for r in res] == [("safe", None), ("invalid", "user_unknown")]
    assert res[0].catch_all is False


def test_greylisting_that_never_clears_and_the_deadline():
    async def main():
        async with World() as w:
            w.servers[C].respond = lambda rcpt: (450, "4.2.0 Greylisted, see http://postgrey")
            p = w.prober(retry_window=60.0, retry_backoff=0.2, address_deadline=2.0)
            t0 = time.monotonic()
            res = await p.verify(["alice@c.test"])
            return res[0], time.monotonic() - t0, [rc for s in w.servers[C].sessions for rc, _ in s.rcpts]
    r, elapsed, rcpts = run(main())
    assert (r.status, r.reason) == ("unknown", "greylisted")
    assert len(rcpts) >= 2  # it did retry inside the window...
    assert elapsed < 30  # ...and the 2 s address deadline ended the 60 s retry window (generous margin)


def test_slow_server_bounded_by_deadline():
    async def main():
        async with World() as w:
            w.servers[C].rcpt_delay = 60
            p = w.prober(command_timeout=0.5, address_deadline=40.0)
            t0 = time.monotonic()
            res = await p.verify(["alice@c.test"])
            return res[0], time.monotonic() - t0
    r, elapsed = run(main())
    assert (r.status, r.reason) == ("unknown", "smtp_timeout")
    assert elapsed < 20  # the 0.5 s command timeout, not the server's 60 s nor the 40 s deadline


def test_dns_timeout_bounded():
    async def main():
        async with World() as w:
            p = w.prober(dns_timeout=0.5, address_deadline=120)
            t0 = time.monotonic()
            res = await p.verify(["x@slowdns.test"])
            return res[0], time.monotonic() - t0
    r, elapsed = run(main())
    assert (r.status, r.reason) == ("unknown", "dns_failure")
    # a DNS server that never answers: the 0.5 s timeout ends it (~0.5 s), not the default 4 s
    # timeout nor the deadline (a generous margin that still tells them apart)
    assert elapsed < 3


def test_dns_cache():
    async def main():
        async with World() as w:
            p = w.prober()
            await p.verify(["alice@a.test"])
            n = len(w.dns.queries)
            await p.verify(["bob@a.test", "x@nx.test"])
            n2 = len(w.dns.queries)
            await p.verify(["x@nx.test"])
            return n, n2, len(w.dns.queries)
    n, n2, n3 = run(main())
    assert n2 == n + 1  # only nx.test was new
    assert n3 == n2  # negative answers are cached too


def test_dns_cache_ttl_zero_disables():
    async def main():
        async with World() as w:
            r = DnsResolver(settings(w.dns_addr, w.port, dns_cache_ttl=0))
            await r.lookup_mx("a.test")
            n = len(w.dns.queries)
            await r.lookup_mx("a.test")
            return n, len(w.dns.queries)
    n, n2 = run(main())
    assert n2 > n


def test_ehlo_refused_falls_back_to_helo():
    async def main():
        async with World() as w:
            w.servers[A].ehlo_reply = (502, "5.5.2 Error: command not recognized")
            return w, await w.prober().verify(["alice@a.test"])
    w, res = run(main())
    assert res[0].status == "safe"
    assert w.servers[A].sessions[0].helo == "vec.test"


def test_mail_from_refused_is_policy_for_the_whole_domain():
    async def main():
        async with World() as w:
            w.servers[A].mail_reply = (553, "5.1.8 <probe@vec.test>: Sender address rejected: Domain not found")
            return w, await w.prober().verify([f"u{i}@a.test" for i in range(30)])
    w, res = run(main())
    assert all((r.status, r.reason) == ("unknown", "antispam_block") for r in res)
    assert len(w.servers[A].sessions) <= 5  # one refusal settles the domain, no hammering


def test_smtputf8():
    async def main():
        async with World() as w:
            w.servers[A].respond = lambda rcpt: (250, "2.1.5 Ok")
            w.servers[B].smtputf8 = False
            p = w.prober(catch_all_cache_ttl=0)
            return w, await p.verify(["jörg@a.test", "jörg@b.test"])
    w, res = run(main())
    assert res[0].status == "risky" and res[0].reason == "catch_all"
    assert (res[1].status, res[1].reason) == ("invalid", "smtputf8_unsupported")
    assert any(rc == "jörg@a.test" for s in w.servers[A].sessions for rc, _ in s.rcpts)


def test_cancellation_is_prompt_and_keeps_finished():
    async def main():
        async with World() as w:
            srv = w.servers[A]
            srv.respond = postfix_like({f"u{i}" for i in range(100)})
            srv.rcpt_delay = 0.2
            p = w.prober(per_mx_concurrency=2, rcpts_per_session=50, command_timeout=2)
            got = []
            task = asyncio.create_task(p.verify([f"u{i}@a.test" for i in range(100)], got.append))
            await until(lambda: len(got) >= 2)  # results came in: sessions are mid-way
            t0 = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            stop = time.monotonic() - t0
            await until(lambda: srv._live == 0)  # the server saw every session close
            return got, stop, srv
    got, stop, srv = run(main())
    # the 100 RCPTs at 0.2 s over two sessions need ~10 s; a cancel that waited for them would
    # take seconds more: a prompt one takes a few ms (a generous margin for a loaded machine)
    assert stop < 3.0
    assert 2 <= len(got) < 100
    assert all(r.status == "safe" for r in got)


async def until(condition, deadline_s: float = 20.0) -> None:
    """Waits for `condition()` (polled), failing the test past a generous deadline."""
    async with asyncio.timeout(deadline_s):
        while not condition():
            await asyncio.sleep(0.01)


def test_tiered_fallback_uses_other_identity():
    """The primary identity (127.0.0.1) is blocked; the fallback binds 127.0.0.10."""
    async def main():
        async with World() as w:
            srv = w.servers[A]
            peers = []

            def respond(rcpt):
                return postfix_like({"alice"})(rcpt)
            srv.respond = respond
            orig = srv._handle

            async def handle(reader, writer):
                peer = writer.get_extra_info("peername")[0]
                peers.append(peer)
                if peer == "127.0.0.1":
                    srv.respond = lambda rcpt: (554, f"5.7.1 Service unavailable; Client host [{peer}] blocked using zen.spamhaus.org")
                else:
                    srv.respond = respond
                await orig(reader, writer)
            srv._handle = handle  # type: ignore[method-assign]
            srv.close()
            await srv.start()
            p = build_provider(settings(
                w.dns_addr, w.port, fallback_tier="smtp", fallback_source_address="127.0.0.10",
                fallback_helo_name="fallback.vec.test", fallback_deadline=3.0,
            ))
            assert isinstance(p, TieredProvider)
            got = []
            res = await p.verify(["alice@a.test", "zed@a.test", "x@nx.test"], got.append)
            return res, got, peers
    res, got, peers = run(main())
    assert [(r.status, r.reason, r.tier) for r in res] == [
        ("safe", None, "smtp-fallback"),
        ("invalid", "user_unknown", "smtp-fallback"),
        ("invalid", "no_domain", "smtp"),
    ]
    assert "primary tier smtp: antispam_block" in res[0].detail
    assert len(got) == 3 and all(r.tier for r in got)
    assert "127.0.0.10" in peers and "127.0.0.1" in peers


class _FakeAPI:
    def __init__(self, status: int = 200, body: dict | None = None) -> None:
        self.status, self.body, self.requests = status, body, []

    async def handle(self, reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        length = int([h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")][0].split(b":")[1])
        req = json.loads(await reader.readexactly(length))
        self.requests.append(req)
        body = self.body or {"results": [{"address": a, "status": "safe", "detail": "api says ok"}
                                         for a in req["addresses"]]}
        payload = json.dumps(body).encode()
        writer.write(f"HTTP/1.0 {self.status} X\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload)
        await writer.drain()
        writer.close()


def test_http_fallback_adapter():
    async def main():
        api = _FakeAPI()
        srv = await asyncio.start_server(api.handle, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        try:
            ok = await HttpApiProvider(f"http://127.0.0.1:{port}/verify").verify(["a@x.test", "b@x.test"])
            api.status = 503
            with pytest.raises(ProviderError):
                await HttpApiProvider(f"http://127.0.0.1:{port}/verify").verify(["a@x.test"])
            api.status, api.body = 200, {"results": []}
            with pytest.raises(ProviderError):
                await HttpApiProvider(f"http://127.0.0.1:{port}/verify").verify(["a@x.test"])
        finally:
            srv.close()
        with pytest.raises(ProviderUnavailable):
            await HttpApiProvider(f"http://127.0.0.1:{port}/verify", timeout=1).verify(["a@x.test"])
        return ok, api.requests
    ok, reqs = run(main())
    assert [(r.address, r.status, r.tier) for r in ok] == [("a@x.test", "safe", "http-fallback"),
                                                          ("b@x.test", "safe", "http-fallback")]
    assert reqs[0] == {"addresses": ["a@x.test", "b@x.test"]}


def test_tiered_keeps_primary_when_fallback_fails():
    async def main():
        async with World() as w:
            p = build_provider(settings(w.dns_addr, w.port, fallback_tier="http",
                                        fallback_url=f"http://127.0.0.1:{free_port(['127.0.0.1'])}/v",
                                        fallback_deadline=2.0, connect_timeout=0.3))
            got = []
            res = await p.verify(["x@hole.test", "alice@a.test"], got.append)
            return res, got
    res, got = run(main())
    assert [(r.status, r.reason, r.tier) for r in res] == [("unknown", "smtp_timeout", "smtp"), ("safe", None, "smtp")]
    assert len(got) == 2


def test_waiting_for_a_slot_does_not_eat_the_deadline():
    """max_concurrency=1: b.test waits ~2 s for a.test's session; its own budget (1.5 s)
    starts when it gets the slot."""
    async def main():
        async with World() as w:
            w.servers[A].respond = postfix_like({f"u{i}" for i in range(10)})
            w.servers[A].rcpt_delay = 0.4
            p = w.prober(max_concurrency=1, address_deadline=1.5, command_timeout=1.0)
            t0 = time.monotonic()
            res = await p.verify([f"u{i}@a.test" for i in range(4)] + ["alice@b.test"])
            return res, time.monotonic() - t0
    res, elapsed = run(main())
    assert [r.status for r in res] == ["safe"] * 5, [r.detail for r in res]
    assert elapsed > 1.5


def test_unusable_source_address_fails_the_batch(no_smtp_connect):
    """Binding 192.0.2.1 (not on this machine) fails before any packet is sent; the MX
    is a global address (the egress guard lets it through), never contacted."""
    from verifier.resolver import MxHost, MxLookup

    from .fakes import StubResolver

    async def main():
        async with World() as w:
            s = settings(w.dns_addr, w.port, loopback_only=False, source_address="192.0.2.1")
            stub = StubResolver({"a.test": MxLookup("a.test", "ok", (MxHost("mx.a.test", 10, ("1.1.1.1",)),))})
            got = []
            with pytest.raises(ProviderUnavailable) as ei:
                await SmtpProber(s, resolver=stub).verify(["alice@a.test", "bad address"], got.append)
            return ei.value, got
    exc, got = run(main())
    assert "cannot bind source address 192.0.2.1" in str(exc)
    assert exc.unanswered == ("alice@a.test",)
    assert [(r.address, r.reason) for r in got] == [("bad address", "syntax")]
    assert no_smtp_connect == []


def test_callback_errors_surface():
    class Boom(Exception):
        pass

    def cb(r):
        raise Boom(r.address)

    async def main():
        async with World() as w:
            with pytest.raises(Boom):
                await w.prober().verify(["alice@a.test", "bob@b.test"], cb)
            with pytest.raises(Boom):
                await w.prober().verify(["bad address"], cb)
    run(main())


def test_passing_connect_failures_while_other_sessions_work():
    """Every 3rd connection is dropped before the greeting: the domain is not declared
    unreachable while other sessions to it work, and every address gets its answer."""
    async def main():
        async with World() as w:
            srv = w.servers[A]
            srv.drop_every = 3
            srv.respond = postfix_like({f"u{i}" for i in range(100)})
            srv.rcpt_delay = 0.005
            p = w.prober(per_mx_concurrency=3, rcpts_per_session=5)
            res = await p.verify([f"u{i}@a.test" for i in range(60)])
            return srv, res
    srv, res = run(main())
    assert all(r.status == "safe" for r in res), {r.detail for r in res if r.status != "safe"}
    assert len(srv.sessions) >= 14

"""RSET between transactions (RFC 5321 4.1.1.5): a full transaction -- our per-transaction
figure, or the server's 452 -- goes on in the same session with RSET and a new MAIL FROM,
while the session's budgets (RCPTs, rejected RCPTs: Postfix counts errors per session)
still close it. In-process fakes, no mail world."""
from __future__ import annotations

import collections

from verifier import build_provider

from .fakes import FakeDNS, FlushingSMTP, free_port, postfix_like
from .test_prober import A, World, by_addr, run, settings

FLUSH = "127.0.1.9"


def commands(srv, verb: bytes) -> int:
    return sum(1 for line in srv.received.split(b"\r\n") if line.upper().startswith(verb))


def test_full_transactions_go_on_in_the_same_session():
    async def main():
        async with World() as w:
            w.servers[A].respond = postfix_like({f"u{i}" for i in range(100)})
            p = w.prober(per_mx_concurrency=1, rcpts_per_transaction=5, rcpts_per_session=100)
            return w.servers[A], await p.verify([f"u{i}@a.test" for i in range(60)])
    srv, res = run(main())
    assert all(r.status == "safe" for r in res), {r.detail for r in res if r.status != "safe"}
    assert len(srv.sessions) == 1
    rcpts, mails, rsets = commands(srv, b"RCPT"), commands(srv, b"MAIL"), commands(srv, b"RSET")
    assert rcpts == 61  # 60 addresses and the catch-all probe
    assert rsets == mails - 1 >= 12 and rcpts <= 5 * mails


def test_a_server_recipient_limit_starts_a_new_transaction_not_a_session():
    async def main():
        async with World() as w:
            srv = w.servers[A]
            srv.rcpt_limit = 3  # 452 once 3 are accepted in a transaction
            srv.respond = postfix_like({f"u{i}" for i in range(20)})
            p = w.prober(per_mx_concurrency=1)
            return srv, p, await p.verify([f"u{i}@a.test" for i in range(12)])
    srv, p, res = run(main())
    assert all(r.status == "safe" for r in res), [(r.address, r.detail) for r in res]
    assert len(srv.sessions) == 1 and commands(srv, b"RSET") >= 3
    assert sum(1 for _, c in srv.sessions[0].rcpts if c == 452) == 1  # learned after one


def test_rejections_still_close_the_session():
    """RSET does not reset the server's error count: the session ends at 7 rejections."""
    async def main():
        async with World() as w:
            srv = w.servers[A]
            srv.respond = postfix_like(set())
            srv.hard_error_limit = 20
            p = w.prober(per_mx_concurrency=1, rcpts_per_transaction=3, max_errors_per_session=7)
            return srv, await p.verify([f"nobody{i}@a.test" for i in range(30)])
    srv, res = run(main())
    assert all(r.reason == "user_unknown" for r in res)
    assert commands(srv, b"RSET") > 0
    assert all(sum(1 for _, c in s.rcpts if c >= 400) <= 7 for s in srv.sessions)
    assert len(srv.sessions) >= 5


def test_pipelining_where_advertised_within_the_error_budget():
    """RCPTs are pipelined (RFC 2920) once the host took a transaction without a 452, and
    a batch never holds more than the session's error budget: even when every RCPT of a
    batch is refused, the session stays within max_errors_per_session."""
    async def main():
        async with World() as w:
            srv = w.servers[A]
            users = {f"u{i}" for i in range(0, 200, 2)}  # every other address is unknown
            srv.respond = postfix_like(users)
            srv.hard_error_limit = 20
            p = w.prober(per_mx_concurrency=1, max_errors_per_session=7, pipeline_depth=10)
            return srv, await p.verify([f"u{i}@a.test" for i in range(200)])
    srv, res = run(main())
    assert [r.status for r in res] == ["safe" if i % 2 == 0 else "invalid" for i in range(200)]
    assert srv.max_pipelined > 1  # batches were sent
    assert srv.max_pipelined <= 7  # never beyond the error budget
    assert all(sum(1 for _, c in s.rcpts if c >= 400) <= 7 for s in srv.sessions)
    assert all(r.smtp_code != 421 for r in res)


def test_no_pipelining_when_not_advertised():
    async def main():
        async with World() as w:
            srv = w.servers[A]
            srv.pipelining = False
            srv.respond = postfix_like({f"u{i}" for i in range(100)})
            p = w.prober(per_mx_concurrency=1, pipeline_depth=10)
            return srv, await p.verify([f"u{i}@a.test" for i in range(60)])
    srv, res = run(main())
    assert all(r.status == "safe" for r in res)
    assert srv.max_pipelined == 1


def test_each_pipelined_reply_has_its_own_wait():
    """A server slow on every RCPT (0.2 s each, well inside the 1 s command timeout) and
    silent on one: each pipelined reply is waited for one command timeout after the reply
    before it, so the slow server is answered; the silent RCPT times out alone, and the
    RCPTs pipelined behind it are asked again in a new session, not reported with it."""
    stalled = "u12@a.test"

    async def main():
        async with World() as w:
            srv = w.servers[A]
            srv.respond = postfix_like({f"u{i}" for i in range(100)})
            srv.rcpt_delay = 0.2
            srv.rcpt_delays = {stalled: 30.0}
            p = w.prober(per_mx_concurrency=1, rcpts_per_transaction=4, pipeline_depth=10,
                         smtp_timeout=1.0, address_deadline=60.0)
            return srv, await p.verify([f"u{i}@a.test" for i in range(24)])
    srv, res = run(main())
    assert srv.queued_at[stalled] > 1  # RCPTs were pipelined behind the silent one
    r = by_addr(res)
    assert (r[stalled].status, r[stalled].reason) == ("unknown", "smtp_timeout")
    others = [x for x in res if x.address != stalled]
    assert all(x.status == "safe" for x in others), [(x.address, x.detail) for x in others if x.status != "safe"]
    assert len(srv.sessions) == 2


def test_pipelined_replies_in_separate_reads_are_not_lost():
    """aiosmtplib drops bytes that arrive while a reply it parsed waits to be picked up;
    a server that writes each pipelined reply at once (its own thread here) makes that
    happen now and then: such a reply must not be lost (before the fix, its address and
    the rest of its batch timed out in roughly one run of 1,000 addresses in five)."""
    port = free_port([FLUSH])
    zone = {"s.test": {"MX": ["10 mx.s.test."]}, "mx.s.test": {"A": [FLUSH]}}

    async def main():
        dns = FakeDNS(zone)
        srv = FlushingSMTP(FLUSH, port)
        try:
            p = build_provider(settings(await dns.start(), port, smtp_timeout=1.0, address_deadline=60.0,
                                        per_mx_concurrency=2))
            results = []
            for _ in range(8):
                results += await p.verify([f"u{i}@s.test" for i in range(1000)])
            return results
        finally:
            srv.close()
            dns.close()
    res = run(main())
    assert len(res) == 8000
    assert {(r.status, r.reason) for r in res} == {("risky", "catch_all")}, \
        collections.Counter((r.status, r.reason) for r in res)

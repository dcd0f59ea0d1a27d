"""RSET between transactions (RFC 5321 4.1.1.5): a full transaction -- our per-transaction
figure, or the server's 452 -- goes on in the same session with RSET and a new MAIL FROM,
while the session's budgets (RCPTs, rejected RCPTs: Postfix counts errors per session)
still close it. In-process fakes, no mail world."""
from __future__ import annotations

from .fakes import postfix_like
from .test_prober import A, World, run


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

"""Our outage is not a list of Unknowns: the prober raises ProviderUnavailable (with
the unanswered addresses) when our resolver or our network is down, and keeps
answering ``unknown`` per address when only remote hosts are down. In-process fakes."""
from __future__ import annotations

import asyncio
import errno
import time

import pytest

from verifier import ProviderUnavailable, VerificationResult
from verifier.prober import SmtpProber
from verifier.provider import TieredProvider
from verifier.resolver import CANARY_TTL, MxHost, MxLookup

from .fakes import FakeDNS, StubResolver
from .test_prober import ZONE, A, World, settings

pytestmark = pytest.mark.timeout(60)

CANARY = (".", "SOA")

# Ten dead MX hosts (nothing listens: refused at once) for five domains.
DEAD_HOSTS = [f"127.0.2.{i}" for i in range(1, 11)]
DEAD_ZONE = {}
for n in range(5):
    DEAD_ZONE[f"dead{n}.test"] = {"MX": [f"10 mx1.dead{n}.test.", f"20 mx2.dead{n}.test."]}
    DEAD_ZONE[f"mx1.dead{n}.test"] = {"A": [DEAD_HOSTS[2 * n]]}
    DEAD_ZONE[f"mx2.dead{n}.test"] = {"A": [DEAD_HOSTS[2 * n + 1]]}
DEAD_ADDRS = [f"x@dead{n}.test" for n in range(5)]


class DeadWorld(World):
    def __init__(self) -> None:
        super().__init__()
        self.dns = FakeDNS({**ZONE, **DEAD_ZONE}, silent={"slowdns.test"}, servfail={"servfail.test"})


def run(coro):
    return asyncio.run(coro)


def canaries(dns: FakeDNS) -> int:
    return sum(1 for q in dns.queries if q == CANARY)


# ----------------------------------------------------------------------- resolver down

def test_dead_resolver_raises_with_the_unanswered_addresses():
    async def main():
        async with World() as w:
            w.dns.dead = True
            p = w.prober(dns_timeout=0.5)
            got: list[VerificationResult] = []
            t0 = time.monotonic()
            with pytest.raises(ProviderUnavailable) as ei:
                await p.verify(["alice@a.test", "bob@b.test", "bad address@a.test", "carol@c.test",
                                "alice@a.test"], got.append)
            return w, ei.value, got, time.monotonic() - t0
    w, exc, got, elapsed = run(main())
    assert exc.unanswered == ("alice@a.test", "bob@b.test", "carol@c.test")  # once each, in order
    assert [(r.address, r.reason) for r in got] == [("bad address@a.test", "syntax")]  # genuine
    assert str(exc).startswith("dns resolver not answering")
    assert canaries(w.dns) == 1  # one canary for the three concurrent look-ups
    # MX timeout + canary timeout at 0.5 s each (~1 s; 8 s at the default 4 s DNS timeout): the
    # resolver's death ends the batch at once (a generous margin for a loaded machine)
    assert elapsed < 6
    assert not any(srv.sessions for srv in w.servers.values())


def test_canary_verdict_is_cached_then_asked_again():
    async def main():
        async with World() as w:
            w.dns.dead = True
            p = w.prober(dns_timeout=0.4)
            for _ in range(2):
                with pytest.raises(ProviderUnavailable):
                    await p.verify(["alice@a.test"])
            cached = canaries(w.dns)
            healthy_while_dead = await p.healthy()
            w.dns.dead = False
            still_cached = await p.healthy()  # the "down" verdict holds ~2 s
            await asyncio.sleep(CANARY_TTL + 0.1)
            back = await p.healthy()
            res = await p.verify(["alice@a.test"])
            return cached, healthy_while_dead, still_cached, back, res[0], canaries(w.dns)
    cached, while_dead, still_cached, back, r, total = run(main())
    assert cached == 1
    assert (while_dead, still_cached, back) == (False, False, True)
    assert r.status == "safe"
    assert total == 2


def test_a_live_resolver_keeps_domain_failures_unknown():
    """servfail.test (SERVFAIL: an answer) needs no canary; slowdns.test (no answer)
    does, and the canary's NXDOMAIN proves the resolver alive."""
    async def main():
        async with World() as w:
            p = w.prober(dns_timeout=0.5)
            res = await p.verify(["x@servfail.test"])
            before = canaries(w.dns)
            res += await p.verify(["x@slowdns.test"])
            return res, before, canaries(w.dns), await p.healthy()
    res, before, after, healthy = run(main())
    assert [(r.status, r.reason) for r in res] == [("unknown", "dns_failure")] * 2
    assert (before, after) == (0, 1)
    assert healthy


class BackAtTheCanary(FakeDNS):
    """A resolver that is down until the canary asks: it comes back just after a look-up
    went unanswered (the end of an outage of ours, as the CI machine once timed it)."""

    def datagram_received(self, data: bytes, addr) -> None:  # noqa: ANN001
        import dns.message
        import dns.rdatatype

        question = dns.message.from_wire(data).question[0]
        if (question.name.to_text().lower(), dns.rdatatype.to_text(question.rdtype)) == CANARY:
            self.dead = False
        super().datagram_received(data, addr)


def test_a_resolver_back_by_the_canary_answers_the_look_up_again():
    """Before: the canary's answer made the silent look-up the domain's DNS failure, and an
    outage of ours that had just ended settled as an Unknown (dns_failure)."""
    class ComingBack(World):
        def __init__(self) -> None:
            super().__init__()
            self.dns = BackAtTheCanary(ZONE)

    async def main():
        async with ComingBack() as w:
            w.dns.dead = True
            p = w.prober(dns_timeout=0.5)
            return await p.verify(["alice@a.test"]), w.dns
    [result], fake = run(main())
    assert (result.status, result.reason) == ("safe", None), result
    assert canaries(fake) == 1
    assert [q for q in fake.queries if q == ("a.test.", "MX")] == [("a.test.", "MX")] * 2


def test_a_refusing_resolver_is_alive():
    """REFUSED to everything: the resolver answers, so the failures are unknowns."""
    async def main():
        async with World() as w:
            w.dns.refuse_all = True
            res = await w.prober(dns_timeout=0.5).verify(["alice@a.test", "bob@b.test"])
            return res, canaries(w.dns)
    res, n = run(main())
    assert [(r.status, r.reason) for r in res] == [("unknown", "dns_failure")] * 2
    assert n == 0


# ----------------------------------------------------------------------- network unreachable

def _fail_connects(monkeypatch, err: int, log: list | None = None) -> None:
    async def fail(self, sock, address):  # noqa: ANN001
        if log is not None:
            log.append(tuple(address[:2]))
        raise OSError(err, "simulated: " + errno.errorcode[err])
    monkeypatch.setattr(asyncio.selector_events.BaseSelectorEventLoop, "sock_connect", fail)


def test_network_unreachable_raises(monkeypatch):
    async def main():
        async with World() as w:
            p = w.prober()
            _fail_connects(monkeypatch, errno.ENETUNREACH)
            got = []
            with pytest.raises(ProviderUnavailable) as ei:
                await p.verify(["alice@a.test", "x@nx.test", "bob@b.test"], got.append)
            healthy = await p.healthy()  # re-probes a failed host: still unreachable
            monkeypatch.undo()
            return ei.value, got, healthy, await p.healthy()
    exc, got, healthy, healthy_after = run(main())
    assert "network unreachable" in str(exc)
    assert set(exc.unanswered) == {"alice@a.test", "bob@b.test"}
    assert [(r.address, r.reason) for r in got] == [("x@nx.test", "no_domain")]
    assert (healthy, healthy_after) == (False, True)


def test_host_unreachable_stays_per_host(monkeypatch):
    async def main():
        async with World() as w:
            p = w.prober()
            _fail_connects(monkeypatch, errno.EHOSTUNREACH)
            return await p.verify(["alice@a.test"])
    r = run(main())[0]
    assert (r.status, r.reason) == ("unknown", "smtp_timeout")
    assert "connect failed" in r.detail


def test_no_ipv6_route_is_per_host(monkeypatch):
    """A machine without IPv6 routes gets ENETUNREACH for v6 MX hosts: their problem
    only (the v4 host of the same domain is still tried), not an outage."""
    tried: list = []

    async def main():
        s = settings("127.0.0.1:9", 25, loopback_only=False)
        stub = StubResolver({"v6.test": MxLookup("v6.test", "ok", (
            MxHost("mx6.v6.test", 10, ("2001:4860:4860::8888",)),
            MxHost("mx4.v6.test", 20, ("8.8.8.8",)),
        ))})
        _fail_connects(monkeypatch, errno.ENETUNREACH, tried)

        async def v4_refused(self, sock, address):  # noqa: ANN001
            tried.append(tuple(address[:2]))
            code = errno.ENETUNREACH if ":" in address[0] else errno.ECONNREFUSED
            raise OSError(code, "simulated")
        monkeypatch.setattr(asyncio.selector_events.BaseSelectorEventLoop, "sock_connect", v4_refused)
        return await SmtpProber(s, resolver=stub).verify(["x@v6.test"])
    r = run(main())[0]
    assert (r.status, r.reason) == ("unknown", "smtp_timeout")  # the preferred host's failure
    assert "no IPv6 route" in r.detail and "connection refused" in r.detail
    assert [a for a, _ in tried] == ["2001:4860:4860::8888", "8.8.8.8"]


# ----------------------------------------------------------------------- no MX reachable

def test_ten_dead_hosts_of_five_domains_mean_our_network_is_down():
    async def main():
        async with DeadWorld() as w:
            p = w.prober()
            got = []
            t0 = time.monotonic()
            with pytest.raises(ProviderUnavailable) as ei:
                await p.verify(DEAD_ADDRS + ["y@nx.test"], got.append)
            return ei.value, got, time.monotonic() - t0, await p.healthy()
    exc, got, elapsed, healthy = run(main())
    assert exc.unanswered == tuple(DEAD_ADDRS)
    assert [r.address for r in got] == ["y@nx.test"]  # no Unknown was reported
    assert "no MX host reachable" in str(exc) and "10 distinct MX hosts of 5 domains" in str(exc)
    assert elapsed < 10  # one confirmation second, far below the 15 s address deadline (generous margin)
    assert healthy is False  # the hosts still refuse


def test_dead_domains_among_live_ones_stay_unknown():
    async def main():
        async with DeadWorld() as w:
            w.servers[A].respond = lambda rcpt: (550, "5.1.1 User unknown")
            p = w.prober()
            got = []
            res = await p.verify(DEAD_ADDRS + ["alice@b.test"] + [f"u{i}@a.test" for i in range(5)],
                                 got.append)
            return res, got
    res, got = run(main())
    assert len(got) == len(res) == 11
    assert [(r.status, r.reason) for r in res[:5]] == [("unknown", "connection_refused")] * 5
    assert res[5].status == "safe"
    assert all(r.reason == "user_unknown" for r in res[6:])


def test_a_few_dead_domains_stay_unknown():
    async def main():
        async with DeadWorld() as w:
            got = []
            res = await w.prober().verify(DEAD_ADDRS[:3], got.append)
            return res, got
    res, got = run(main())
    assert [(r.status, r.reason) for r in res] == [("unknown", "connection_refused")] * 3
    assert {r.address for r in got} == set(DEAD_ADDRS[:3])  # reported at the end of the batch


def test_thresholds_are_settings_and_count_across_batches():
    async def main():
        async with DeadWorld() as w:
            p = w.prober(unreachable_hosts=4, unreachable_domains=2)
            first = await p.verify(DEAD_ADDRS[:1])  # 2 hosts, 1 domain: not enough
            with pytest.raises(ProviderUnavailable) as ei:
                await p.verify(DEAD_ADDRS[1:2])  # 4 hosts of 2 domains, nothing alive between
            return first, ei.value
    first, exc = run(main())
    assert (first[0].status, first[0].reason) == ("unknown", "connection_refused")
    assert exc.unanswered == (DEAD_ADDRS[1],)


def test_tiered_provider_reports_primary_answers_before_an_outage():
    class Primary:
        name = "p"

        async def verify(self, addresses, on_result=None):
            on_result(VerificationResult(addresses[0], None, "unknown", "smtp_timeout", "t", "p"))
            on_result(VerificationResult(addresses[1], None, "safe", None, "ok", "p"))
            raise ProviderUnavailable("down", unanswered=addresses[2:])

        async def healthy(self):
            return False

    class Fallback:
        name = "f"

        async def verify(self, addresses, on_result=None):
            raise AssertionError("no fallback during an outage")

    async def main():
        t = TieredProvider(Primary(), Fallback(), frozenset({"smtp_timeout"}))
        got = []
        with pytest.raises(ProviderUnavailable) as ei:
            await t.verify(["a@x.test", "b@x.test", "c@x.test"], got.append)
        return got, ei.value, await t.healthy()
    got, exc, healthy = run(main())
    assert sorted(r.address for r in got) == ["a@x.test", "b@x.test"]
    assert exc.unanswered == ("c@x.test",)
    assert healthy is False

"""The egress guard: outside the loopback test mode, no connection to an address that
is not globally routable, whatever the DNS says. No packet leaves the machine here:
every connect is caught at the socket level."""
from __future__ import annotations

import asyncio

import pytest

from verifier.egress import CLOUD_METADATA_ADDRESSES, egress_detail, egress_refusal
from verifier.prober import SmtpProber
from verifier.resolver import MxHost, MxLookup

from .fakes import FakeDNS, StubResolver
from .test_prober import settings

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("ip,why", [
    ("10.0.0.5", "private"),
    ("172.16.3.4", "private"),
    ("192.168.1.1", "private"),
    ("127.0.0.1", "loopback"),
    ("0.0.0.0", "unspecified"),
    ("169.254.1.1", "link-local"),
    ("169.254.169.254", "cloud metadata address"),
    ("100.100.100.200", "cloud metadata address"),
    ("192.0.0.192", "cloud metadata address"),  # ipaddress calls it global
    ("192.0.0.9", "IETF protocol assignment"),
    ("100.64.0.1", "shared address space"),
    ("100.127.255.254", "shared address space"),
    ("192.0.2.25", "documentation"),
    ("198.51.100.1", "documentation"),
    ("203.0.113.9", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("224.0.0.1", "multicast"),  # ipaddress calls it global
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("fe80::1", "link-local"),
    ("fd00::1", "private (ULA)"),
    ("fc00::1", "private (ULA)"),
    ("fd00:ec2::254", "cloud metadata address"),
    ("fec0::1", "site-local"),  # ipaddress calls it global
    ("ff02::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),  # ipaddress calls it global
    ("2001::1", "IETF protocol assignment"),  # Teredo
    ("100::1", "discard-only"),
    ("::a00:5", "IPv4-compatible (deprecated)"),
    ("64:ff9b:1::a00:5", "NAT64 local-use"),
    ("::ffff:10.0.0.5", "IPv4-mapped of 10.0.0.5: private"),
    ("::ffff:127.0.0.1", "IPv4-mapped of 127.0.0.1: loopback"),
    ("::ffff:169.254.169.254", "IPv4-mapped of 169.254.169.254: cloud metadata address"),
    ("2002:a00:5::1", "6to4 of 10.0.0.5: private"),  # ipaddress calls it global
    ("2002:a9fe:a9fe::", "6to4 of 169.254.169.254: cloud metadata address"),
    ("64:ff9b::a00:5", "NAT64 of 10.0.0.5: private"),  # ipaddress calls it global
    ("64:ff9b::c000:c0", "NAT64 of 192.0.0.192: cloud metadata address"),
    ("not-an-ip", "not an IP address"),
])
def test_refused(ip, why):
    assert egress_refusal(ip) == why


@pytest.mark.parametrize("ip", [
    "8.8.8.8", "1.1.1.1", "142.250.1.27", "100.63.255.255", "100.128.0.0", "192.0.1.1",
    "2001:4860:4860::8888", "2a00:1450:4001::1b", "::ffff:8.8.8.8", "2002:808:808::1",
    "64:ff9b::808:808",
])
def test_allowed(ip):
    assert egress_refusal(ip) is None


def test_metadata_list_and_loopback_mode():
    assert {str(a) for a in CLOUD_METADATA_ADDRESSES} == {
        "169.254.169.254", "fd00:ec2::254", "100.100.100.200", "192.0.0.192"}
    assert egress_refusal("127.0.0.2", loopback_only=True) is None
    assert egress_refusal("8.8.8.8", loopback_only=True) == "not loopback (loopback_only)"
    assert egress_refusal("10.0.0.5", loopback_only=True) == "not loopback (loopback_only)"
    assert egress_detail("mx.x.com", "10.0.0.5", "private") == (
        "mx.x.com resolves to 10.0.0.5 (private), not globally routable: refused by the egress guard")


ZONE = {
    "priv.test": {"MX": ["10 mx.priv.test."]},
    "mx.priv.test": {"A": ["10.0.0.5"]},
    "meta.test": {"A": ["169.254.169.254"]},  # no MX: the implicit MX (A fallback)
    "ula.test": {"MX": ["10 mx.ula.test."]},
    "mx.ula.test": {"AAAA": ["fd00::25"]},
    "mapped.test": {"MX": ["10 mx.mapped.test."]},
    "mx.mapped.test": {"AAAA": ["::ffff:192.168.0.1"]},
    "loop.test": {"MX": ["10 mx.loop.test.", "20 mx.priv.test."]},
    "mx.loop.test": {"A": ["127.0.0.2"]},
    "mixed.test": {"MX": ["10 mx.priv.test.", "20 mx.pub.test."]},
    "mx.pub.test": {"A": ["192.0.2.77", "1.1.1.1"]},  # one refused, one allowed address
}


def test_no_connection_to_refused_addresses(no_smtp_connect):
    async def main():
        dns = FakeDNS(ZONE)
        addr = await dns.start()
        try:
            s = settings(addr, 25, loopback_only=False)  # production rules, DNS on loopback
            p = SmtpProber(s)
            res = await p.verify(["a@priv.test", "a@meta.test", "a@ula.test", "a@mapped.test",
                                  "a@loop.test", "a@mixed.test"])
            return {r.address: r for r in res}
        finally:
            dns.close()
    r = asyncio.run(main())
    for a in ("a@priv.test", "a@meta.test", "a@ula.test", "a@mapped.test", "a@loop.test"):
        assert (r[a].status, r[a].reason) == ("unknown", "policy"), (a, r[a].detail)
    assert r["a@priv.test"].detail == (
        "mx.priv.test resolves to 10.0.0.5 (private), not globally routable: refused by the egress guard")
    assert "meta.test resolves to 169.254.169.254 (cloud metadata address)" in r["a@meta.test"].detail
    assert "fd00::25 (private (ULA))" in r["a@ula.test"].detail
    assert "::ffff:192.168.0.1 (IPv4-mapped of 192.168.0.1: private)" in r["a@mapped.test"].detail
    assert "127.0.0.2 (loopback)" in r["a@loop.test"].detail
    # mixed.test: only 1.1.1.1 was tried (and "failed" at the socket hook)
    mixed = r["a@mixed.test"]
    assert mixed.status == "unknown" and mixed.reason != "policy"
    assert "skipped by the egress guard: mx.priv.test resolves to 10.0.0.5 (private)" in mixed.detail
    assert "192.0.2.77 (documentation)" in mixed.detail
    assert no_smtp_connect == [("1.1.1.1", 25)]


def test_prober_refuses_even_what_a_resolver_lets_through(no_smtp_connect):
    """Last line: a resolver (here a stub) that hands over private addresses still
    gets no connection made to them."""
    stub = StubResolver({"x.test": MxLookup("x.test", "ok", (
        MxHost("mx1.x.test", 10, ("10.0.0.5",)),
        MxHost("mx2.x.test", 20, ("169.254.169.254", "fd00:ec2::254")),
    ))})

    async def main():
        s = settings("127.0.0.1:9", 25, loopback_only=False)
        return (await SmtpProber(s, resolver=stub).verify(["a@x.test"]))[0]
    r = asyncio.run(main())
    assert (r.status, r.reason) == ("unknown", "policy")
    assert "mx1.x.test resolves to 10.0.0.5 (private)" in r.detail
    assert "169.254.169.254 (cloud metadata address)" in r.detail
    assert no_smtp_connect == []


def test_loopback_mode_is_unchanged():
    """loopback_only (tests): loopback allowed, anything else refused as before."""
    async def main():
        dns = FakeDNS(ZONE)
        addr = await dns.start()
        try:
            p = SmtpProber(settings(addr, 9, loopback_only=True, connect_timeout=0.5))
            return {r.address: r for r in await p.verify(["a@priv.test", "a@loop.test"])}
        finally:
            dns.close()
    r = asyncio.run(main())
    assert (r["a@priv.test"].status, r["a@priv.test"].reason) == ("unknown", "provider_error")
    assert "loopback_only" in r["a@priv.test"].detail
    # loop.test's loopback MX was tried (nothing listens on port 9)
    assert r["a@loop.test"].reason == "connection_refused"

"""The egress guard: which addresses the prober may open a connection to. Pure.

An MX record is data published by whoever owns the domain, so a verifier that
connects wherever DNS points can be aimed at our own network: the cloud metadata
service, a database on 10.x, an admin port on loopback. Outside the test-only
``loopback_only`` mode only globally routable unicast addresses are allowed.

``ipaddress.is_global`` alone is not enough: in the Python versions we run it says
True for multicast, for 192.0.0.192 (a metadata address), for 6to4 and NAT64 forms
of private addresses and for 3fff::/20 (documentation). So the ranges are listed
explicitly, embedded IPv4 addresses are unwrapped and checked as IPv4, and
``is_global`` is the last net.
"""
from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Instance metadata services (AWS/GCP/Azure/OpenStack, AWS IPv6, Alibaba, Oracle).
CLOUD_METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",
    "fd00:ec2::254",
    "100.100.100.200",
    "192.0.0.192",
))

_V4 = [(ipaddress.IPv4Network(net), why) for net, why in (
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignment"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
)]

_V6 = [(ipaddress.IPv6Network(net), why) for net, why in (
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible (deprecated)"),
    ("64:ff9b:1::/48", "NAT64 local-use"),
    ("100::/64", "discard-only"),
    ("2001::/23", "IETF protocol assignment"),  # includes Teredo 2001::/32
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("fc00::/7", "private (ULA)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
)]

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _embedded_v4(addr: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 address stands for, if it is such a form."""
    if addr.ipv4_mapped is not None:
        return "IPv4-mapped", addr.ipv4_mapped
    if addr.sixtofour is not None:
        return "6to4", addr.sixtofour
    if addr in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def _why_v4(addr: ipaddress.IPv4Address) -> str | None:
    for net, why in _V4:
        if addr in net:
            return why
    return None if addr.is_global else "not global"


def egress_refusal(ip: str, *, loopback_only: bool = False) -> str | None:
    """None when the prober may connect to ``ip``; otherwise why not, in a few words
    ("private", "cloud metadata address", "6to4 of 10.0.0.5: private"...).

    ``loopback_only`` (tests only) inverts the rule: loopback and nothing else."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return "not an IP address"
    if loopback_only:
        return None if addr.is_loopback else "not loopback (loopback_only)"
    if addr in CLOUD_METADATA_ADDRESSES:
        return "cloud metadata address"
    if isinstance(addr, ipaddress.IPv4Address):
        return _why_v4(addr)
    inner = _embedded_v4(addr)
    if inner is not None:
        form, v4 = inner
        if v4 in CLOUD_METADATA_ADDRESSES:
            return f"{form} of {v4}: cloud metadata address"
        why = _why_v4(v4)
        return f"{form} of {v4}: {why}" if why else None
    for net, why in _V6:
        if addr in net:
            return why
    if addr.is_reserved:
        return "reserved"
    return None if addr.is_global else "not global"


def egress_detail(host: str, ip: str, why: str) -> str:
    """The sentence a result's detail carries for a refused address."""
    return f"{host} resolves to {ip} ({why}), not globally routable: refused by the egress guard"

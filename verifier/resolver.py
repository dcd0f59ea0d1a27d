"""MX look-ups with dnspython's async resolver, cached per domain with a TTL.

Never reads /etc/resolv.conf when servers are configured (``Resolver(configure=False)``).
Outcomes of :meth:`DnsResolver.lookup_mx`:

  ok        hosts to try, by preference (an implicit MX from A/AAAA when there is no MX)
  nxdomain  the domain does not exist                         -> invalid (no_domain)
  null_mx   the domain publishes "MX 0 ." (RFC 7505)           -> invalid (null_mx)
  no_mx     no MX and no A/AAAA, or no MX host has an address  -> invalid (no_mx)
  failure   timeout, SERVFAIL, refused...                       -> unknown (dns_failure)
  blocked   only non-loopback addresses while loopback_only     -> unknown (provider_error)
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from .cache import TTLCache
from .config import VerifierSettings

log = logging.getLogger(__name__)

MxStatus = Literal["ok", "nxdomain", "null_mx", "no_mx", "failure", "blocked"]


@dataclass(frozen=True)
class MxHost:
    name: str  # host name without the trailing dot
    preference: int
    addresses: tuple[str, ...]  # IPv4 first
    implicit: bool = False  # the domain itself (no MX record)


@dataclass(frozen=True)
class MxLookup:
    domain: str
    status: MxStatus
    hosts: tuple[MxHost, ...] = ()
    mx_names: tuple[str, ...] = ()  # every MX name published, in preference order
    detail: str = ""
    elapsed: float = 0.0


@dataclass
class _HostAddrs:
    addresses: list[str] = field(default_factory=list)
    failed: bool = False  # a query failed (timeout/SERVFAIL) rather than answered
    filtered: bool = False  # addresses dropped by loopback_only
    detail: str = ""
    ttl: float = 0.0


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def build_dns_resolver(settings: VerifierSettings) -> dns.asyncresolver.Resolver:
    servers = settings.nameservers
    if servers:
        if settings.loopback_only:
            bad = [h for h, _ in servers if not _is_loopback(h)]
            if bad:
                raise ValueError(f"loopback_only: DNS servers {bad} are not loopback")
        r = dns.asyncresolver.Resolver(configure=False)
        r.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in servers]
    else:
        if settings.loopback_only:
            raise ValueError("loopback_only needs VEC_DNS_SERVERS (the system resolver is refused)")
        r = dns.asyncresolver.Resolver()  # system configuration (production default)
    r.timeout = min(2.0, settings.dns_timeout)  # per try of one server
    r.lifetime = settings.dns_timeout
    r.retry_servfail = False
    r.cache = None  # we cache whole MX outcomes ourselves
    return r


class DnsResolver:
    def __init__(self, settings: VerifierSettings, resolver: dns.asyncresolver.Resolver | None = None) -> None:
        self.settings = settings
        self._r = resolver or build_dns_resolver(settings)
        self._mx_cache: TTLCache[str, MxLookup] = TTLCache()
        self._host_cache: TTLCache[str, _HostAddrs] = TTLCache()
        self._inflight: dict[tuple[asyncio.AbstractEventLoop, str], asyncio.Future[MxLookup]] = {}
        self._sems: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}

    # --- plumbing --------------------------------------------------------------------
    def _sem(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        sem = self._sems.get(loop)
        if sem is None:
            for old in [lp for lp in self._sems if lp.is_closed()]:
                del self._sems[old]
            sem = self._sems[loop] = asyncio.Semaphore(self.settings.dns_concurrency)
        return sem

    async def _query(self, name: str, rdtype: str) -> dns.resolver.Answer:
        qname = dns.name.from_text(name)  # absolute: no search list
        async with self._sem():
            return await self._r.resolve(
                qname, rdtype, raise_on_no_answer=False, search=False,
                lifetime=self.settings.dns_timeout,
            )

    def clear_cache(self) -> None:
        self._mx_cache.clear()
        self._host_cache.clear()

    # --- public ----------------------------------------------------------------------
    async def lookup_mx(self, domain: str) -> MxLookup:
        domain = domain.lower().rstrip(".")
        hit = self._mx_cache.get(domain)
        if hit is not None:
            return hit
        key = (asyncio.get_running_loop(), domain)
        while (fut := self._inflight.get(key)) is not None:
            try:
                return await asyncio.shield(fut)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                # the task that owned the look-up was cancelled: do it ourselves
        fut = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            t0 = time.monotonic()
            res, ttl = await self._lookup_mx(domain)
            res = MxLookup(res.domain, res.status, res.hosts, res.mx_names, res.detail,
                           time.monotonic() - t0)
            if res.status not in ("failure", "blocked"):
                self._mx_cache.set(domain, res, ttl)
            fut.set_result(res)
            return res
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except BaseException as exc:
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # mark retrieved
            raise
        finally:
            self._inflight.pop(key, None)

    async def _lookup_mx(self, domain: str) -> tuple[MxLookup, float]:
        cap = self.settings.dns_cache_ttl
        try:
            ans = await self._query(domain, "MX")
        except dns.resolver.NXDOMAIN:
            return MxLookup(domain, "nxdomain", detail=f"{domain}: no such domain (NXDOMAIN)"), cap
        except dns.exception.Timeout:
            return MxLookup(domain, "failure", detail=f"{domain}: DNS timeout (MX)"), 0
        except dns.exception.DNSException as exc:
            return MxLookup(domain, "failure", detail=f"{domain}: DNS error (MX): {exc}"), 0

        records = list(ans.rrset) if ans.rrset is not None else []
        if not records:
            # RFC 5321 5.1: no MX -> the domain itself is the implicit MX (A/AAAA).
            ha = await self._host_addresses(domain)
            if ha.addresses:
                host = MxHost(domain, 0, tuple(ha.addresses), implicit=True)
                return MxLookup(domain, "ok", (host,), (), "no MX; implicit MX from A/AAAA"), min(cap, ha.ttl)
            if ha.filtered:
                return MxLookup(domain, "blocked", detail=f"{domain}: {ha.detail}"), 0
            if ha.failed:
                return MxLookup(domain, "failure", detail=f"{domain}: {ha.detail}"), 0
            return MxLookup(domain, "no_mx", detail=f"{domain}: no MX and no A/AAAA record"), cap

        ttl = min(cap, float(ans.rrset.ttl))
        real = [r for r in records if r.exchange != dns.name.root]
        if not real:
            return MxLookup(domain, "null_mx", detail=f"{domain}: null MX (RFC 7505), accepts no mail"), ttl
        # by preference; equal preferences in random order (RFC 5321 5.1)
        random.shuffle(real)
        real.sort(key=lambda r: r.preference)
        names = tuple(r.exchange.to_text(omit_final_dot=True).lower() for r in real)
        chosen = real[: self.settings.max_mx_hosts]
        infos = await asyncio.gather(
            *(self._host_addresses(r.exchange.to_text(omit_final_dot=True).lower()) for r in chosen)
        )
        hosts = []
        notes = []
        for r, info in zip(chosen, infos):
            name = r.exchange.to_text(omit_final_dot=True).lower()
            if info.addresses:
                hosts.append(MxHost(name, int(r.preference), tuple(info.addresses)))
                ttl = min(ttl, info.ttl)
            else:
                notes.append(f"{name}: {info.detail}")
        if hosts:
            detail = "; ".join(["skipped " + n for n in notes]) if notes else ""
            return MxLookup(domain, "ok", tuple(hosts), names, detail), ttl
        if any(i.filtered for i in infos):
            return MxLookup(domain, "blocked", mx_names=names, detail="; ".join(notes)), 0
        if any(i.failed for i in infos):
            return MxLookup(domain, "failure", mx_names=names, detail="; ".join(notes)), 0
        return MxLookup(domain, "no_mx", mx_names=names,
                        detail="no MX host has an address: " + "; ".join(notes)), ttl

    async def _host_addresses(self, host: str) -> _HostAddrs:
        hit = self._host_cache.get(host)
        if hit is not None:
            return hit
        results = await asyncio.gather(
            self._query(host, "A"), self._query(host, "AAAA"), return_exceptions=True
        )
        out = _HostAddrs(ttl=self.settings.dns_cache_ttl)
        problems = []
        for rdtype, res in zip(("A", "AAAA"), results):
            if isinstance(res, dns.resolver.NXDOMAIN):
                problems.append(f"{rdtype} NXDOMAIN")
            elif isinstance(res, dns.exception.Timeout):
                out.failed = True
                problems.append(f"{rdtype} timeout")
            elif isinstance(res, dns.exception.DNSException):
                out.failed = True
                problems.append(f"{rdtype} error: {res}")
            elif isinstance(res, BaseException):
                raise res
            elif res.rrset is not None:
                out.ttl = min(out.ttl, float(res.rrset.ttl))
                for rr in res.rrset:
                    out.addresses.append(rr.address)
            else:
                problems.append(f"no {rdtype}")
        if self.settings.loopback_only and out.addresses:
            keep = [a for a in out.addresses if _is_loopback(a)]
            if len(keep) != len(out.addresses):
                out.filtered = not keep
                problems.append("non-loopback addresses refused (loopback_only)")
            out.addresses = keep
        if out.addresses:
            out.failed = False
        out.detail = ", ".join(problems) if problems else ""
        if not out.addresses and not out.detail:
            out.detail = "no address"
        if not out.failed:
            self._host_cache.set(host, out, out.ttl)
        return out

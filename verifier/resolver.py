"""MX look-ups with dnspython's async resolver, cached per domain with a TTL.

Never reads /etc/resolv.conf when servers are configured (``Resolver(configure=False)``).
Outcomes of :meth:`DnsResolver.lookup_mx`:

  ok        hosts to try, by preference (an implicit MX from A/AAAA when there is no MX)
  nxdomain  the domain does not exist                         -> invalid (no_domain)
  null_mx   the domain publishes "MX 0 ." (RFC 7505)           -> invalid (null_mx)
  no_mx     no MX and no A/AAAA, or no MX host has an address  -> invalid (no_mx)
  failure   timeout, SERVFAIL, refused...                       -> unknown (dns_failure)
  policy    every address refused by the egress guard            -> unknown (policy)
  blocked   only non-loopback addresses while loopback_only     -> unknown (provider_error)

Our resolver down is not a domain's failure: when a look-up gets no response at all
(timeout, network error), a canary query (``dns_canary``, type SOA) asks the same
resolver something that always has an answer. Any response, whatever its rcode, proves
the resolver alive: the look-up is asked once more (the resolver may have just come
back), and a second silence stays the domain's (``failure``); no response to the canary
within ``dns_timeout`` raises :class:`ProviderUnavailable`. One canary serves every concurrent
look-up and its verdict is kept ``CANARY_TTL`` seconds.

Addresses that are not globally routable never become MX hosts to try (see
``egress.py``); the DNS servers themselves are the operator's choice and unrestricted.
"""
from __future__ import annotations

import asyncio
import dataclasses
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
from .egress import egress_detail, egress_refusal
from .result import ProviderUnavailable

log = logging.getLogger(__name__)

MxStatus = Literal["ok", "nxdomain", "null_mx", "no_mx", "failure", "policy", "blocked"]
CANARY_TTL = 2.0  # seconds a canary verdict is reused


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
    egress_notes: tuple[str, ...] = ()  # addresses the egress guard refused (skipped)


@dataclass
class _HostAddrs:
    addresses: list[str] = field(default_factory=list)
    failed: bool = False  # a query failed (timeout/SERVFAIL) rather than answered
    silent: bool = False  # ... and got no response at all (timeout, network error)
    filtered: bool = False  # addresses dropped by loopback_only
    refused: list[str] = field(default_factory=list)  # egress guard, one sentence each
    detail: str = ""
    ttl: float = 0.0


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def no_response(exc: BaseException) -> bool:
    """True when a failed query got no response from any server (timeout, network
    error); False when some server answered, even with SERVFAIL or REFUSED."""
    if isinstance(exc, (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.YXDOMAIN)):
        return False
    if isinstance(exc, (dns.exception.Timeout, dns.resolver.NoNameservers)):
        errors = exc.kwargs.get("errors") or []
        return not any(len(e) > 4 and e[4] is not None for e in errors)
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
        self._canary_tasks: dict[asyncio.AbstractEventLoop, asyncio.Task[bool]] = {}
        self._canary_verdict: bool | None = None
        self._canary_until = 0.0  # monotonic

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
        self._canary_verdict = None

    def describe_servers(self) -> str:
        return self.settings.dns_servers or "the system resolver"

    # --- is our resolver alive? --------------------------------------------------------
    async def resolver_alive(self) -> bool:
        """True when the resolver answers the canary query (any rcode) within
        ``dns_timeout``. Concurrent callers share one query; the verdict is kept
        ``CANARY_TTL`` seconds."""
        if self._canary_verdict is not None and time.monotonic() < self._canary_until:
            return self._canary_verdict
        loop = asyncio.get_running_loop()
        task = self._canary_tasks.get(loop)
        if task is None:
            for old in [lp for lp in self._canary_tasks if lp.is_closed()]:
                del self._canary_tasks[old]
            task = self._canary_tasks[loop] = loop.create_task(self._canary(), name="dns-canary")
            task.add_done_callback(lambda _t: self._canary_tasks.pop(loop, None))
        # shielded: one impatient caller must not cancel the query the others wait for
        return await asyncio.shield(task)

    async def _canary(self) -> bool:
        try:
            # not behind the concurrency semaphore: it may be full of look-ups stuck on
            # the very resolver we are asking about
            await self._r.resolve(
                dns.name.from_text(self.settings.dns_canary), "SOA", raise_on_no_answer=False,
                search=False, lifetime=self.settings.dns_timeout,
            )
            alive = True
        except dns.exception.DNSException as exc:
            alive = not no_response(exc)
        except Exception:  # noqa: BLE001 - cannot tell: do not vouch for the resolver
            log.exception("verifier: DNS canary query failed")
            alive = False
        self._canary_verdict = alive
        self._canary_until = time.monotonic() + CANARY_TTL
        if not alive:
            log.warning("verifier: DNS resolver %s does not answer the canary %r",
                        self.describe_servers(), self.settings.dns_canary)
        return alive

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
            res, ttl, silent = await self._lookup_mx(domain)
            if res.status == "failure" and silent:
                self._raise_if_our_outage(res, await self.resolver_alive())
                # The canary answers now, but our resolver may have come back only after this
                # look-up went unanswered (an outage of ours ending): ask once more before
                # calling the silence the domain's.
                res, ttl, silent = await self._lookup_mx(domain)
                if res.status == "failure" and silent:
                    self._raise_if_our_outage(res, await self.resolver_alive())
            res = dataclasses.replace(res, elapsed=time.monotonic() - t0)
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

    def _raise_if_our_outage(self, res: MxLookup, resolver_alive: bool) -> None:
        if not resolver_alive:
            raise ProviderUnavailable(
                f"dns resolver not answering ({self.describe_servers()}): "
                f"no response to the canary {self.settings.dns_canary!r} SOA "
                f"within {self.settings.dns_timeout:g}s after {res.detail}"
            )

    async def _lookup_mx(self, domain: str) -> tuple[MxLookup, float, bool]:
        """(outcome, cache TTL, whether a failure got no response at all)."""
        cap = self.settings.dns_cache_ttl
        try:
            ans = await self._query(domain, "MX")
        except dns.resolver.NXDOMAIN:
            return MxLookup(domain, "nxdomain", detail=f"{domain}: no such domain (NXDOMAIN)"), cap, False
        except dns.exception.Timeout as exc:
            return MxLookup(domain, "failure", detail=f"{domain}: DNS timeout (MX)"), 0, no_response(exc)
        except dns.exception.DNSException as exc:
            return (MxLookup(domain, "failure", detail=f"{domain}: DNS error (MX): {exc}"), 0,
                    no_response(exc))

        records = list(ans.rrset) if ans.rrset is not None else []
        if not records:
            # RFC 5321 5.1: no MX -> the domain itself is the implicit MX (A/AAAA).
            ha = await self._host_addresses(domain)
            refused = tuple(ha.refused)
            if ha.addresses:
                host = MxHost(domain, 0, tuple(ha.addresses), implicit=True)
                return (MxLookup(domain, "ok", (host,), (), "no MX; implicit MX from A/AAAA",
                                 egress_notes=refused), min(cap, ha.ttl), False)
            if ha.filtered:
                return MxLookup(domain, "blocked", detail=f"{domain}: {ha.detail}"), 0, False
            if ha.failed:
                return MxLookup(domain, "failure", detail=f"{domain}: {ha.detail}",
                                egress_notes=refused), 0, ha.silent
            if refused:
                return MxLookup(domain, "policy", detail="no MX; " + "; ".join(refused),
                                egress_notes=refused), 0, False
            return MxLookup(domain, "no_mx", detail=f"{domain}: no MX and no A/AAAA record"), cap, False

        ttl = min(cap, float(ans.rrset.ttl)) if ans.rrset is not None else cap
        real = [r for r in records if r.exchange != dns.name.root]
        if not real:
            return (MxLookup(domain, "null_mx", detail=f"{domain}: null MX (RFC 7505), accepts no mail"),
                    ttl, False)
        # by preference; equal preferences in random order (RFC 5321 5.1)
        random.shuffle(real)
        real.sort(key=lambda r: r.preference)
        names = tuple(r.exchange.to_text(omit_final_dot=True).lower() for r in real)
        chosen = real[: self.settings.max_mx_hosts]
        infos = await asyncio.gather(
            *(self._host_addresses(r.exchange.to_text(omit_final_dot=True).lower()) for r in chosen)
        )
        hosts = []
        notes: list[str] = []
        egress = tuple(n for info in infos for n in info.refused)
        for r, info in zip(chosen, infos):
            name = r.exchange.to_text(omit_final_dot=True).lower()
            if info.addresses:
                hosts.append(MxHost(name, int(r.preference), tuple(info.addresses)))
                ttl = min(ttl, info.ttl)
            elif not info.refused:
                notes.append(f"{name}: {info.detail}")
        if hosts:
            detail = "; ".join(["skipped " + n for n in notes + list(egress)])
            return MxLookup(domain, "ok", tuple(hosts), names, detail, egress_notes=egress), ttl, False
        if any(i.filtered for i in infos):
            return MxLookup(domain, "blocked", mx_names=names, detail="; ".join(notes)), 0, False
        if any(i.failed for i in infos):  # a host we could not resolve might be allowed
            return (MxLookup(domain, "failure", mx_names=names, detail="; ".join(notes),
                             egress_notes=egress), 0, any(i.silent for i in infos))
        if egress:
            return (MxLookup(domain, "policy", mx_names=names, detail="; ".join(egress),
                             egress_notes=egress), 0, False)
        return MxLookup(domain, "no_mx", mx_names=names,
                        detail="no MX host has an address: " + "; ".join(notes)), ttl, False

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
                out.silent = out.silent or no_response(res)
                problems.append(f"{rdtype} timeout")
            elif isinstance(res, dns.exception.DNSException):
                out.failed = True
                out.silent = out.silent or no_response(res)
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
        elif out.addresses:  # the egress guard: never a connection into our own networks
            keep = []
            for a in out.addresses:
                why = egress_refusal(a)
                if why is None:
                    keep.append(a)
                else:
                    out.refused.append(egress_detail(host, a, why))
            out.addresses = keep
        if out.addresses:
            out.failed = False
            out.silent = False
        out.detail = ", ".join(problems) if problems else ""
        if not out.addresses and not out.detail:
            out.detail = "no address"
        if not out.failed:
            self._host_cache.set(host, out, out.ttl)
        return out

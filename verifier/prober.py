"""The SMTP tier: syntax -> DNS -> SMTP sessions -> classification, for a batch.

Shape of one batch:
  * addresses are checked for syntax (invalid ones never reach DNS or SMTP) and grouped
    by domain (duplicates are probed once);
  * each domain is one job: one MX look-up (cached), then a few workers that each keep
    an SMTP session open and feed it the domain's addresses, several RCPTs per MAIL
    transaction. A session ends before it can hurt: after ``rcpts_per_session`` RCPTs,
    after ``max_errors_per_session`` rejected RCPTs (Postfix slows down a client after
    10 and drops it after 20), at "452 too many recipients" (the accepted count is
    remembered as that host's limit), at 421 or a lost connection;
  * the first session of a domain sends one RCPT to a random local part first: if the
    server accepts it the domain is catch-all (cached per domain with a TTL);
  * 4xx answers are retried with exponential backoff inside the retry window, then
    become unknown (greylisted / temporary_failure / antispam_block);
  * sessions are limited globally (``max_concurrency``) and per MX host
    (``per_mx_concurrency``); an MX host that refused or timed out is skipped for
    ``host_failure_ttl`` seconds. A session takes its MX's slot first, then a global
    one (then, in a fleet, the fleet's slot of the MX): a job waiting for a busy MX holds
    no global slot, which other domains' jobs can use meanwhile;
  * every stage has a timeout, and each address has a deadline (its tier's share of
    ``address_deadline``, counted from when its domain's DNS look-up began or when a
    worker first took it): past it, the address is unknown.

Cancelling the calling task stops everything at once: sessions are closed, and
``on_result`` has already been called for each finished address.

Our outage is not the remote's answer. The batch raises
:class:`~verifier.result.ProviderUnavailable` (``unanswered``: the addresses without a
result) instead of answering ``unknown`` when our DNS resolver does not answer (see
resolver.py), when our network is unreachable (ENETUNREACH, source address unusable)
or when the :class:`~verifier.health.ReachabilityTracker` presumes it down. While
failed TCP connects are not yet explained (nothing came back from any server since),
the ``unknown`` answers they produced are held back: reported once a connect or a
reply proves our network alive (or at the end of the batch, below the thresholds),
dropped into ``unanswered`` when the batch raises.

Egress guard: no connection is ever attempted to an address that is not globally
routable (verifier/egress.py; loopback only in the test mode ``loopback_only``).
"""
from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import logging
import math
import secrets
import string
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Protocol, Sequence

from aiosmtplib.errors import SMTPServerDisconnected, SMTPTimeoutError

from .cache import TTLCache
from .classify import Verdict, about_our_address, classify, classify_session_reply
from .config import MAX_HELO_LENGTH, MAX_MAIL_FROM_LENGTH, VerifierSettings, smtp_argument_error
from .egress import egress_detail, egress_refusal
from .health import HostKey, ReachabilityTracker
from .lists import is_disposable, is_role
from .resolver import DnsResolver, MxLookup
from .result import ProviderError, ProviderUnavailable, VerificationResult
from .pipelining import Pipelining
from .routes import (
    EgressesDown,
    EgressPool,
    Route,
    RoutesBusy,
    RouteSlots,
    SlotFreed,
    SharedEgressState,
    open_via,
    probe_route,
)
from .smtp import (
    TCP_FAILURES,
    ConnectFailed,
    Reply,
    Session,
    SessionRefused,
    UnsafeCommand,
    tcp_connect,
)
from .syntax import SyntaxResult, check_syntax

log = logging.getLogger(__name__)

OnResult = Callable[[VerificationResult], None]


# --- observability hook (metrics): the verifier reports, whoever listens ------------------
class ProbeObserver(Protocol):
    """What the prober reports as it works (e.g. consumers/metrics/exporter.py turns it into
    Prometheus metrics). The verifier knows nothing of who listens; an observer that
    raises is logged and ignored, never a probe's failure."""

    def smtp_reply(self, stage: str, code: int | None) -> None:
        """A reply: stage "rcpt", "catch_all" (the random-address RCPT) or "session"
        (refused at banner, HELO or MAIL FROM)."""

    def connect_failed(self, kind: str) -> None:
        """An MX connection failed (ConnectFailed.kind)."""

    def session_opened(self, mx: str) -> None:
        """A session to MX host `mx` (its name) opened."""

    def session_closed(self, mx: str) -> None: ...

    def address_done(self, status: str, seconds: float) -> None:
        """An address got its result, `seconds` after its work began."""


_observer: ProbeObserver | None = None


def set_observer(observer: ProbeObserver | None) -> None:
    """Installs the process's observer (None: none)."""
    global _observer
    _observer = observer


def _observe(what: str, *args: object) -> None:
    if _observer is None:
        return
    try:
        getattr(_observer, what)(*args)
    except Exception:  # noqa: BLE001 - metrics never break a probe
        log.debug("verifier: the observer failed on %s", what, exc_info=True)

# Unknown reason of a domain none of whose MX hosts could be talked to, by how the most
# preferred one failed (ConnectFailed kinds, plus "policy" for the egress guard).
CONNECT_FAILURE_REASONS = {
    "refused": "connection_refused",
    "connect_timeout": "smtp_timeout",
    "connect_error": "smtp_timeout",
    "banner_timeout": "smtp_timeout",
    "timeout": "smtp_timeout",
    "disconnected": "temporary_failure",
    "policy": "policy",
}
HEALTH_PROBES = 3  # failed hosts healthy() tries to reach again


class _HostFailure(NamedTuple):
    label: str  # "mx.example.test[127.0.0.7]"
    kind: str  # a CONNECT_FAILURE_REASONS key
    detail: str

    def __str__(self) -> str:
        return self.detail if self.kind == "policy" else f"{self.label}: {self.detail}"


class _Fatal(NamedTuple):
    """The outcome of a domain none of whose sessions can work: applies to the rest."""
    status: str
    reason: str
    detail: str
    reply: Reply | None = None
    host: str | None = None
    suspect: bool = False  # came from failed TCP connects (maybe our network)


def _random_local_part() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(14))


@dataclass(eq=False)
class _Item:
    syn: SyntaxResult
    indexes: list[int]
    role: bool
    disposable: bool
    started: float | None = None  # budget clock start
    deadline: float = math.inf
    retry_until: float = math.inf
    retries: int = 0
    drops: int = 0  # sessions lost while this address was on the wire
    egress_refusals: int = 0  # egress routes the MX refused for our address
    last: tuple[Verdict, Reply, str] | None = None  # last transient answer
    hosts: list[str] = field(default_factory=list)
    done: bool = False

    @property
    def rcpt(self) -> str:
        return self.syn.rcpt


def connect_failure_reason(failures: Sequence[_HostFailure]) -> str:
    """The reason of the most preferred host's failure (the first tried)."""
    if not failures:
        return "smtp_timeout"
    return CONNECT_FAILURE_REASONS.get(failures[0].kind, "smtp_timeout")


def _first_leaf(eg: BaseExceptionGroup) -> BaseException:
    """The most meaningful exception of a group: callback and provider errors first."""
    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for sub in e.exceptions:
                walk(sub)
        else:
            leaves.append(e)
    walk(eg)
    for kind in (_CallbackError, ProviderError):
        for e in leaves:
            if isinstance(e, kind):
                return e
    return leaves[0]


class _CallbackError(Exception):
    """on_result raised: not ours to swallow."""


class _Batch:
    """The results of one verify() call, and the unknowns held back while our own
    network is in doubt (see ReachabilityTracker)."""

    def __init__(self, addresses: list[str], on_result: OnResult | None,
                 reach: ReachabilityTracker) -> None:
        self.addresses = addresses
        self.on_result = on_result
        self.reach = reach
        self.results: list[VerificationResult | None] = [None] * len(addresses)
        self.held: list[tuple[int, VerificationResult]] = []

    def emit(self, i: int, r: VerificationResult, suspect: bool = False) -> None:
        if suspect and self.reach.unconfirmed:
            self.held.append((i, r))
            return
        self._deliver(i, r)

    def _deliver(self, i: int, r: VerificationResult) -> None:
        self.results[i] = r
        if self.on_result is not None:
            try:
                self.on_result(r)
            except Exception as exc:
                raise _CallbackError(exc) from exc

    def release(self, force: bool = False) -> None:
        """Report the held unknowns once a connect succeeded (or at the end, when the
        tracker did not conclude that the network is down: then they are genuine)."""
        if self.held and (force or not self.reach.unconfirmed):
            held, self.held = self.held, []
            for i, r in held:
                self._deliver(i, r)

    def unavailable(self, cause: ProviderUnavailable) -> ProviderUnavailable:
        """The exception to raise: the cause, with the addresses left without a result."""
        missing = [a for a, r in zip(self.addresses, self.results) if r is None]
        exc = ProviderUnavailable(str(cause), unanswered=missing)
        exc.__cause__ = cause
        return exc


class HostSlots(Protocol):
    """Sessions to one MX host shared with other processes (a fleet of workers): acquire
    waits for one of the host's `per_mx_concurrency` slots and returns its release."""

    async def acquire(self, key: tuple[str, int]) -> Callable[[], None]: ...


class _HostSlot:
    """The per-MX session limit: this process's semaphore (`local`) and, when the prober is
    one of a fleet, a slot of the fleet's (`fleet`: N processes never hold more than the
    limit together). Slots of one host are interchangeable: a release frees any slot this
    process holds.

    The order a session takes its slots in, everywhere: this process's MX slot, then the
    global slot, then the fleet's MX slot (`_open_failover`), then its egress route's slot
    (taken without waiting, in open_via; a wait for an egress at its caps comes before all
    the others, so nothing is held idle meanwhile); never two hosts' slots at once.
    A job waiting for a busy MX thus holds no global slot (other domains use it meanwhile),
    and a fleet slot is never held by a session still waiting for this process's global
    slot (a busy worker would hold the MX's slots idle against the whole fleet). A wait for
    the fleet's slot with a global slot held is a wait for another process's live session,
    which holds everything it needs: the order has no cycle, so no deadlock."""

    def __init__(self, limit: int, key: tuple[str, int], shared: HostSlots | None) -> None:
        self.local = asyncio.Semaphore(limit)
        self.key, self.shared = key, shared
        self.held: deque[Callable[[], None]] = deque()
        self.fleet = _FleetSlot(self) if shared is not None else None

    def release(self) -> None:
        """Gives back the fleet's slot (if any) and this process's."""
        if self.held:
            self.held.popleft()()
        self.local.release()


class _FleetSlot:
    """The fleet's part of an MX's slot, waited for like a semaphore (`_DomainJob._slot`)."""

    def __init__(self, host: _HostSlot) -> None:
        self.host = host

    def locked(self) -> bool:
        return True  # a fleet slot may always mean waiting

    async def acquire(self) -> None:
        shared = self.host.shared
        if shared is None:  # made only for a fleet's host (HostSlots given)
            raise RuntimeError("a fleet slot without the fleet's slots")
        self.host.held.append(await shared.acquire(self.host.key))


class _LoopState:
    """Semaphores live on one event loop; a prober may serve several loops in turn."""

    def __init__(self, settings: VerifierSettings, shared: HostSlots | None, pool: EgressPool) -> None:
        self.settings = settings
        self.shared = shared
        self.global_sem = asyncio.Semaphore(settings.max_concurrency)
        self.host_sems: dict[tuple[str, int], _HostSlot] = {}
        self.route_slots = RouteSlots(pool)  # sessions per egress (and per egress and MX)

    def host_sem(self, key: tuple[str, int]) -> _HostSlot:
        sem = self.host_sems.get(key)
        if sem is None:
            sem = self.host_sems[key] = _HostSlot(self.settings.per_mx_concurrency, key, self.shared)
        return sem


class SmtpProber:
    """A Provider that probes mail servers itself."""

    def __init__(
        self,
        settings: VerifierSettings | None = None,
        *,
        name: str = "smtp",
        tier: str | None = None,
        helo_name: str | None = None,
        mail_from: str | None = None,
        source_address: str | None = None,
        deadline: float | None = None,
        resolver: DnsResolver | None = None,
        host_slots: HostSlots | None = None,
        routes: tuple[Route, ...] | None = None,
    ) -> None:
        """``routes``: the egress pool (None: the settings'; empty: direct from the source
        address, which is also what an empty pool in the settings means)."""
        self.settings = s = settings or VerifierSettings()
        self.host_slots = host_slots
        self.name = name
        self.tier = tier or name
        self.helo_name = helo_name or s.helo_name
        self.mail_from = mail_from if mail_from is not None else s.mail_from
        for value, what, limit in ((self.helo_name, "helo_name", MAX_HELO_LENGTH),
                                   (self.mail_from, "mail_from", MAX_MAIL_FROM_LENGTH)):
            err = smtp_argument_error(value, what, limit) if value else None
            if err:
                raise ValueError(err)
        self.source_address = source_address if source_address is not None else s.source_address
        self.deadline = deadline if deadline is not None else s.primary_deadline
        self.resolver = resolver or DnsResolver(s)
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        self._catch_all: TTLCache[str, bool] = TTLCache()
        self._host_down: TTLCache[HostKey, tuple[str, str]] = TTLCache(10_000)  # kind, detail
        self.reach = ReachabilityTracker(s.unreachable_hosts, s.unreachable_domains)
        self.host_limits: dict[tuple[str, int], int] = {}  # learned RCPT limits per host
        # hosts that took a full transaction without a 452: RCPTs may be pipelined there
        self.pipeline_ok: TTLCache[tuple[str, int], bool] = TTLCache(10_000)
        self._live: dict[tuple[str, int], int] = {}  # open sessions per host
        routes = s.egress_routes if routes is None else routes
        self.egress = EgressPool(
            routes or (Route("direct", "direct", source=self.source_address),),
            block_ttl_s=s.egress_block_ttl, down_ttl_s=s.egress_down_ttl, named=bool(routes),
            shared=host_slots if isinstance(host_slots, SharedEgressState) else None,
            concurrency=s.egress_concurrency, per_mx=s.egress_per_mx_concurrency)
        if s.loopback_only:
            import ipaddress

            for ip in [self.source_address] + [r.source or r.host for r in self.egress.routes]:
                if ip and not ipaddress.ip_address(ip).is_loopback:
                    raise ValueError(f"loopback_only: {ip} (source or proxy address) is not loopback")

    # --- shared state ----------------------------------------------------------------
    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        st = self._loops.get(loop)
        if st is None:
            st = self._loops[loop] = _LoopState(self.settings, self.host_slots, self.egress)
        return st

    def catch_all_cached(self, domain: str) -> bool | None:
        return self._catch_all.get(domain)

    def _remember_catch_all(self, domain: str, value: bool) -> None:
        self._catch_all.set(domain, value, self.settings.catch_all_cache_ttl)

    def host_down(self, key: HostKey) -> tuple[str, str] | None:
        """(kind, detail) of this host's recent failure, while it is skipped."""
        return self._host_down.get(key)

    def _mark_down(self, key: HostKey, kind: str, why: str) -> None:
        """Skip this host for a while -- unless sessions to it are open right now (then
        the failure was a passing one, e.g. a full backlog under load)."""
        if not self._live.get(key):
            self._host_down.set(key, (kind, why), self.settings.host_failure_ttl)

    # --- our own health -----------------------------------------------------------------
    def _alive(self) -> None:
        """A connect succeeded or a server replied: our network works."""
        self.reach.alive(time.monotonic())

    async def _connect_failed(self, key: HostKey, domain: str, detail: str, started: float) -> None:
        """Count a failed TCP connect; raise when our network is presumed down."""
        self.reach.connect_failed(key, domain, detail, started, time.monotonic())
        await self.check_network()

    async def check_network(self) -> None:
        """Raise ProviderUnavailable when the tracker presumes our network down --
        after waiting out its confirmation delay, in which a proof of life clears it."""
        at = self.reach.down_at()
        if at is None:
            return
        wait = at - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        if self.reach.down(time.monotonic()):
            self._presumed_down()
            raise ProviderUnavailable(self.reach.describe())

    def _presumed_down(self) -> None:
        # the hosts' failures were (probably) ours: do not skip them once we are back
        for key in self.reach.failed:
            self._host_down.pop(key)

    async def healthy(self) -> bool:
        """Cheap check the engine can make before resuming work it paused after a
        ProviderUnavailable: our DNS resolver answers the canary (verdict cached ~2 s),
        and our network is not presumed down -- or, when it is, a TCP connect to one of
        the MX hosts that failed (at most HEALTH_PROBES, in parallel, each bounded by
        the connect timeout) now succeeds. Never raises."""
        try:
            if not await self.resolver.resolver_alive():
                return False
            if self.egress.all_down() and not await self._revive_egress():
                return False
            if self.reach.down_at() is None:
                return True
            keys = [k for k in self.reach.sample(HEALTH_PROBES)
                    if egress_refusal(k[0], loopback_only=self.settings.loopback_only) is None]
            ok = await asyncio.gather(*(self._reprobe(k) for k in keys))
        except Exception:  # noqa: BLE001 - a health check answers, it does not raise
            log.exception("verifier: health check failed")
            return False
        if any(ok):
            self._alive()
            return True
        return False

    async def _revive_egress(self) -> bool:
        """Every route was down: those that answer again are used again."""
        timeout_s = self.settings.connect_timeout_s
        ok = await asyncio.gather(*(probe_route(r, timeout_s) for r in self.egress.routes))
        for route, up in zip(self.egress.routes, ok):
            if up:
                self.egress.revive(route)
        return any(ok)

    async def _reprobe(self, key: HostKey) -> bool:
        try:
            sock = await tcp_connect(key[0], key[1], self.source_address,
                                     self.settings.connect_timeout_s)
        except (ConnectFailed, ProviderUnavailable):
            return False
        sock.close()
        return True

    def _session_opened(self, key: tuple[str, int], mx: str = "") -> Callable[[], None]:
        self._live[key] = self._live.get(key, 0) + 1
        _observe("session_opened", mx)

        def closed() -> None:
            self._live[key] -= 1
            if not self._live[key]:
                del self._live[key]
            _observe("session_closed", mx)
        return closed

    def clear_caches(self) -> None:
        self._catch_all.clear()
        self.egress.clear()
        self._host_down.clear()
        self.reach.alive(time.monotonic())
        self.host_limits.clear()
        self.pipeline_ok.clear()
        self.resolver.clear_cache()

    # --- Provider --------------------------------------------------------------------
    async def verify(
        self, addresses: Sequence[str], on_result: OnResult | None = None
    ) -> list[VerificationResult]:
        try:
            return await self._verify(list(addresses), on_result)
        except _CallbackError as exc:
            raise exc.args[0] from None

    async def _verify(
        self, addresses: list[str], on_result: OnResult | None
    ) -> list[VerificationResult]:
        batch = _Batch(addresses, on_result, self.reach)
        groups: dict[str, dict[str, _Item]] = {}
        for i, addr in enumerate(addresses):
            syn = check_syntax(addr, allow_test_domains=self.settings.allow_test_domains)
            if not syn.ok or syn.ascii_domain is None or syn.local_part is None:
                batch.emit(i, VerificationResult(
                    address=addr, normalized=None, status="invalid", reason="syntax",
                    detail=f"syntax: {syn.error}", tier=self.tier,
                ))
                continue
            per_domain = groups.setdefault(syn.ascii_domain, {})
            item = per_domain.get(syn.rcpt)
            if item is None:
                item = per_domain[syn.rcpt] = _Item(
                    syn, [], is_role(syn.local_part), is_disposable(syn.ascii_domain)
                )
            item.indexes.append(i)

        if groups:
            try:
                async with asyncio.TaskGroup() as tg:
                    for domain, items in groups.items():
                        job = _DomainJob(self, domain, list(items.values()), batch)
                        tg.create_task(job.run(), name=f"verify:{domain}")
            except BaseExceptionGroup as eg:  # surface the cause, not the group
                first = _first_leaf(eg)
                if isinstance(first, ProviderUnavailable):
                    raise batch.unavailable(first) from None
                raise first from None
        if batch.held:  # our network in doubt: decide before calling these unknowns genuine
            try:
                await self.check_network()
            except ProviderUnavailable as exc:
                raise batch.unavailable(exc) from None
        batch.release(force=True)
        results = batch.results
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:  # cannot happen; never return holes
            for i in missing:
                batch.emit(i, VerificationResult(
                    address=addresses[i], normalized=None, status="unknown",
                    reason="provider_error", detail="internal error: no result", tier=self.tier,
                ))
        return [r for r in results if r is not None]  # (none is: filled above)


class _DomainJob(Pipelining):
    def __init__(
        self,
        prober: SmtpProber,
        domain: str,
        items: list[_Item],
        batch: _Batch,
    ) -> None:
        self.p = prober
        self.s = prober.settings
        self.domain = domain
        self.items = items
        self.batch = batch
        self.addresses = batch.addresses
        self.t0 = time.monotonic()
        self.dns_elapsed = 0.0
        self.mx = MxLookup(domain, "failure")
        self.ready: deque[_Item] = deque()
        self.delayed: list[tuple[float, int, _Item]] = []
        self.seq = itertools.count()
        self.in_flight = 0
        self.wake = asyncio.Event()
        self.fatal: _Fatal | None = None
        cached = prober.catch_all_cached(domain)
        self.catch_all: bool | None = cached
        self.catch_all_known = cached is not None
        self.catch_all_reply: Reply | None = None
        self.catch_all_lock = asyncio.Lock()
        self.catch_all_gave_up = False  # the server did not answer the probe in time
        self.catch_all_local = _random_local_part()
        self.want_utf8 = any(i.syn.smtputf8 for i in items)  # MAIL FROM ... SMTPUTF8
        self.live = 0  # open sessions of this job
        self.opened = 0  # sessions this job managed to open

    # --- results ---------------------------------------------------------------------
    def _finish(
        self,
        item: _Item,
        status: str,
        reason: str | None,
        detail: str,
        reply: Reply | None = None,
        host: str | None = None,
        suspect: bool = False,
    ) -> None:
        """Report an address. ``suspect``: an unknown that came from failed TCP
        connects, held back while those may be our own network's fault."""
        if item.done:
            return
        item.done = True
        if status == "unknown" and reason != "policy" and self.mx.egress_notes:
            detail = f"{detail}; skipped by the egress guard: " + "; ".join(self.mx.egress_notes)
        now = time.monotonic()
        start = item.started if item.started is not None else self.t0
        _observe("address_done", status, now - start)
        mx = tuple(dict.fromkeys(item.hosts)) if item.hosts else (
            self.mx.mx_names or tuple(h.name for h in self.mx.hosts)
        )
        for i in item.indexes:
            self.batch.emit(i, VerificationResult(
                address=self.addresses[i],
                normalized=item.syn.normalized,
                status=status,
                reason=reason,
                detail=detail,
                tier=self.p.tier,
                mx=mx,
                smtp_code=reply.code if reply else None,
                smtp_message=reply.message if reply else None,
                smtp_enhanced=reply.enhanced if reply else None,
                smtp_host=host if reply else None,
                catch_all=self.catch_all,
                disposable=item.disposable,
                role=item.role,
                duration_ms=int(round((now - start) * 1000)),
            ), suspect=suspect)
        self.wake.set()

    def _finish_verdict(self, item: _Item, v: Verdict, reply: Reply, host: str) -> None:
        said = f"{host} said: {reply}"
        if v.kind == "safe":
            if self.catch_all:
                ca = f" (a random address was accepted too: {self.catch_all_reply})" if self.catch_all_reply else ""
                self._finish(item, "risky", "catch_all", f"accept-all domain{ca}; {said}", reply, host)
            elif item.role:
                self._finish(item, "risky", "role", f"role account; {said}", reply, host)
            else:
                self._finish(item, "safe", None, said, reply, host)
        elif v.kind in ("invalid", "risky", "unknown"):
            self._finish(item, v.kind, v.reason, said, reply, host)
        else:  # retry / too_many that could not be handled: unknown
            self._finish(item, "unknown", v.reason or "temporary_failure", said, reply, host)

    def _expire(self, item: _Item, why: str, suspect: bool = False) -> None:
        if item.last is not None:
            v, reply, host = item.last
            self._finish(item, "unknown", v.reason or "temporary_failure",
                         f"{why}; last answer from {host}: {reply}", reply, host)
        else:
            self._finish(item, "unknown", "smtp_timeout", why, suspect=suspect)

    # --- the job ---------------------------------------------------------------------
    async def run(self) -> None:
        try:
            await self._run()
        except (asyncio.CancelledError, _CallbackError, ProviderError):
            raise
        except BaseExceptionGroup as eg:  # from the workers' task group
            first = _first_leaf(eg)
            if isinstance(first, (asyncio.CancelledError, _CallbackError, ProviderError)):
                raise first from None
            if not isinstance(first, Exception):
                raise
            log.error("verifier: domain job %s failed", self.domain, exc_info=first)
            for item in self.items:
                self._finish(item, "unknown", "provider_error", f"internal error: {first!r}")
        except Exception as exc:  # a bug must not take the batch down
            log.exception("verifier: domain job %s failed", self.domain)
            for item in self.items:
                self._finish(item, "unknown", "provider_error", f"internal error: {exc!r}")

    async def _run(self) -> None:
        try:
            # MX, then A/AAAA, then perhaps the canary: each bounded by dns_timeout
            async with asyncio.timeout(self.s.dns_timeout * 3 + 1):
                self.mx = await self.p.resolver.lookup_mx(self.domain)
        except TimeoutError:
            self.mx = MxLookup(self.domain, "failure", detail=f"{self.domain}: DNS timeout")
        self.dns_elapsed = time.monotonic() - self.t0
        mx = self.mx
        outcome = {
            "nxdomain": ("invalid", "no_domain"),
            "null_mx": ("invalid", "null_mx"),
            "no_mx": ("invalid", "no_mx"),
            "failure": ("unknown", "dns_failure"),
            "policy": ("unknown", "policy"),
            "blocked": ("unknown", "provider_error"),
        }.get(mx.status)
        definitive = mx.status in ("ok", "nxdomain", "null_mx", "no_mx")
        todo = []
        for item in self.items:
            if item.disposable and (mx.status == "ok" or not definitive):
                # known from the list; a domain that takes no mail stays invalid
                self._finish(item, "risky", "disposable",
                             f"{self.domain} is a disposable-address provider (not probed by SMTP)")
            elif outcome is not None:
                self._finish(item, outcome[0], outcome[1], mx.detail or mx.status)
            else:
                todo.append(item)
        if not todo:
            return
        self.ready.extend(todo)
        workers = max(1, min(self.s.per_mx_concurrency,
                             math.ceil(len(todo) / self.s.rcpts_per_transaction_n)))
        async with asyncio.TaskGroup() as tg:
            for _ in range(workers):
                tg.create_task(self._worker())
        for item in todo:  # safety net
            if not item.done:
                self._finish(item, "unknown", "provider_error", "internal error: address left over")

    def _session_closed(self) -> None:
        self.live -= 1

    # --- queue -----------------------------------------------------------------------
    async def _take(self) -> _Item | None:
        while True:
            if self.fatal is not None:
                f = self.fatal
                pending = list(self.ready) + [e[2] for e in self.delayed]
                self.ready.clear()
                self.delayed.clear()
                for item in pending:
                    self._finish(item, f.status, f.reason, f.detail, f.reply, f.host, f.suspect)
            now = time.monotonic()
            while self.delayed and self.delayed[0][0] <= now:
                self.ready.append(heapq.heappop(self.delayed)[2])
            if self.ready:
                self.in_flight += 1
                return self.ready.popleft()
            if not self.delayed and self.in_flight == 0:
                self.wake.set()
                return None
            timeout = self.delayed[0][0] - now if self.delayed else None
            self.wake.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self.wake.wait()
            except TimeoutError:
                pass

    def _release(self) -> None:
        self.in_flight -= 1
        self.wake.set()

    def _requeue_now(self, item: _Item) -> None:
        self.ready.appendleft(item)

    def _retry_later(self, item: _Item, v: Verdict, reply: Reply, host: str) -> None:
        """A 4xx: try again after a backoff, inside the retry window, or give up."""
        item.last = (v, reply, host)
        now = time.monotonic()
        limit = min(item.retry_until, item.deadline - 0.2)
        delay = min(self.s.retry_backoff * (2 ** item.retries), self.s.retry_backoff_max)
        item.retries += 1
        when = now + delay
        if when > limit:
            if limit - now >= min(0.5, delay):
                when = limit  # one last try at the end of the window
            else:
                window = self.s.retry_window
                self._finish(item, "unknown", v.reason or "temporary_failure",
                             f"still refused after {item.retries} tries in {window:g}s; "
                             f"{host} said: {reply}", reply, host)
                return
        heapq.heappush(self.delayed, (when, next(self.seq), item))

    # --- workers ---------------------------------------------------------------------
    async def _worker(self) -> None:
        sess: Session | None = None
        try:
            while True:
                item = await self._take()
                if item is None:
                    return
                try:
                    sess = await self._handle(item, sess)
                finally:
                    self._release()
                self.batch.release()  # once a connect worked, held unknowns are genuine
                if sess is not None:
                    sess = await self._recycle(sess, more=bool(self.ready))
        finally:
            if sess is not None:
                sess.close()

    def _spent(self, sess: Session) -> bool:
        """Nothing more on this session: its RCPT or error budget is used up (Postfix counts
        errors per session: a new transaction does not reset them)."""
        return sess.rcpts >= self.s.rcpts_per_session or sess.errors >= self.s.max_errors_per_session

    def _tx_spent(self, sess: Session) -> bool:
        """This transaction is full: our per-transaction figure, a 452, or the host's limit."""
        if sess.exhausted or sess.tx_rcpts >= self.s.rcpts_per_transaction_n:
            return True
        limit = self.p.host_limits.get(sess.key)
        return limit is not None and sess.accepted >= limit

    async def _recycle(self, sess: Session, more: bool) -> Session | None:
        """The session for the next address: as it is, in a new transaction (RSET) when
        the last one is full, or closed (None) when spent, dead or not needed."""
        if sess.tx_rcpts >= min(self.s.rcpts_per_transaction_n, self.s.max_errors_per_session) \
                and not sess.exhausted:
            # a transaction went that far without "452 too many recipients": pipeline here
            self.p.pipeline_ok.set(sess.key, True, self.s.catch_all_cache_ttl)
        if sess.alive and more and not self._spent(sess):
            if not self._tx_spent(sess) or await sess.reset(self.s.command_timeout_s):
                return sess
        await sess.quit(min(2.0, self.s.command_timeout_s))
        return None

    def _begin(self, item: _Item) -> None:
        if item.started is None:
            now = time.monotonic()
            item.started = max(self.t0, now - self.dns_elapsed)
            item.deadline = item.started + self.p.deadline
            item.retry_until = item.started + self.s.retry_window

    async def _handle(self, item: _Item, sess: Session | None) -> Session | None:
        self._begin(item)
        if item.done:
            return sess
        if time.monotonic() >= item.deadline:
            self._expire(item, f"deadline of {self.p.deadline:g}s reached")
            return sess
        if sess is not None:
            sess = await self._recycle(sess, more=True)
        if sess is None:
            sess = await self._open(item)
            if sess is None:
                return None
        item.hosts.extend(sess.tried)

        if not self.catch_all_known and not self.catch_all_gave_up and not sess.catch_all_tried:
            timed_out = await self._probe_catch_all(sess, item)
            if timed_out:  # the same server would not answer this address's RCPT either
                self.catch_all_gave_up = True
                self._expire(item, f"{sess.label}: no reply to RCPT within {self.s.command_timeout_s:g}s")
                return sess
            if not sess.alive:
                self._dropped(item, sess, "connection lost during the catch-all probe")
                return sess
            if self._spent(sess) or self._tx_spent(sess):
                self._requeue_now(item)
                return sess

        if item.syn.smtputf8 and not sess.smtputf8:
            self._finish(item, "invalid", "smtputf8_unsupported",
                         f"{sess.label} does not support SMTPUTF8, needed for this address")
            return sess

        return await self._send(item, sess)

    async def _send(self, item: _Item, sess: Session) -> Session:
        """RCPT for this address -- and, pipelined, for the next ones there is room for."""
        remaining = item.deadline - time.monotonic()
        if remaining <= 0:
            self._expire(item, f"deadline of {self.p.deadline:g}s reached")
            return sess
        timeout = min(self.s.command_timeout_s, remaining)
        more = self._take_more(sess, item)
        if more:
            try:
                await self._send_pipelined(sess, [item, *more])
            finally:
                self.in_flight -= len(more)
                self.wake.set()
            return sess
        try:
            reply = await sess.rcpt(item.rcpt, item.syn.smtputf8, timeout)
        except UnsafeCommand as exc:  # never sent: the session is still clean
            self._finish(item, "unknown", "provider_error", f"{sess.label}: {exc}")
            return sess
        except SMTPTimeoutError:
            self._expire(item, f"{sess.label}: no reply to RCPT within {timeout:.3g}s")
            return sess
        except (SMTPServerDisconnected, ConnectionError, OSError):
            self._dropped(item, sess, f"{sess.label}: connection lost at RCPT")
            return sess
        self._on_reply(item, sess, reply)
        return sess

    def _on_reply(self, item: _Item, sess: Session, reply: Reply) -> None:
        """What an RCPT reply means for the address (and the session, the egress)."""
        _observe("smtp_reply", "rcpt", reply.code)
        self.p._alive()
        v = classify(reply.code, reply.message)
        if v.reason == "antispam_block" and self._refused_egress(item, sess, v, reply):
            return
        if v.kind == "too_many":
            if sess.accepted > 0:
                self.p.host_limits[sess.key] = sess.accepted
                sess.exhausted = True
                self._requeue_now(item)
            else:
                self._retry_later(item, Verdict("retry", "temporary_failure", v.rule), reply, sess.label)
        elif v.kind == "retry":
            if reply.code == 421:
                sess.dead = True
            self._retry_later(item, v, reply, sess.label)
        else:
            self._finish_verdict(item, v, reply, sess.label)

    def _refused_egress(self, item: _Item, sess: Session, v: Verdict, reply: Reply) -> bool:
        """A refusal about our address: the session's route is blocked for this MX, and the
        address goes back to the queue for another route -- while one is left. True when
        the item was requeued (False: settle it as the refusal says)."""
        pool, route = self.p.egress, sess.route
        if not (pool.can_fail_over and isinstance(route, Route) and about_our_address(reply.message)):
            return False
        pool.block(route, sess.key[0], str(reply))
        sess.dead = True  # its route is refused here: no more RCPTs on it
        item.egress_refusals += 1
        item.last = (v, reply, sess.label)
        left, _ = pool.candidates(sess.key[0], ":" in sess.key[0])
        if not left or item.egress_refusals >= len(pool.routes):
            return False
        self._requeue_now(item)
        return True

    def _dropped(self, item: _Item, sess: Session, why: str) -> None:
        sess.dead = True
        item.drops += 1
        if item.drops <= 2:
            self._requeue_now(item)
        else:
            self._finish(item, "unknown", "temporary_failure", f"{why} ({item.drops} times)")

    async def _probe_catch_all(self, sess: Session, item: _Item) -> bool:
        """RCPT to a random local part. Returns True when the server did not answer."""
        sess.catch_all_tried = True
        async with self.catch_all_lock:
            if self.catch_all_known or self.catch_all_gave_up or not sess.alive:
                return False
            remaining = item.deadline - time.monotonic()
            if remaining <= 0:
                return False
            probe = f"{self.catch_all_local}@{self.domain}"
            try:
                reply = await sess.rcpt(probe, False, min(self.s.command_timeout_s, remaining))
            except SMTPTimeoutError:
                return True
            except (SMTPServerDisconnected, ConnectionError, OSError):
                return False
            _observe("smtp_reply", "catch_all", reply.code)
            self.p._alive()
            v = classify(reply.code, reply.message)
            if v.kind == "safe":
                self.catch_all, self.catch_all_known = True, True
            elif v.kind == "invalid":
                self.catch_all, self.catch_all_known = False, True
            else:
                return False  # transient or policy: try again in a later session
            self.catch_all_reply = reply
            self.p._remember_catch_all(self.domain, self.catch_all)
            return False

    async def _open(self, item: _Item) -> Session | None:
        remaining = item.deadline - time.monotonic()
        try:
            async with asyncio.timeout(remaining) as cm:
                return await self._open_failover(item, cm)
        except TimeoutError:
            self._expire(item, f"deadline of {self.p.deadline:g}s reached while connecting",
                         suspect=True)
            return None

    async def _slot(self, sem: "asyncio.Semaphore | _FleetSlot | SlotFreed", item: _Item, cm: asyncio.Timeout) -> None:
        """Wait for a connection slot. The wait is queueing behind other work, not this
        address's own work: its deadline (and the timeout around opening) move with it."""
        if not sem.locked():
            await sem.acquire()
            return
        t0 = time.monotonic()
        old = cm.when()
        cm.reschedule(None)
        try:
            await sem.acquire()
        finally:
            waited = time.monotonic() - t0
            item.deadline += waited
            item.retry_until += waited
            cm.reschedule(None if old is None else old + waited)

    async def _take_slots(self, st: _LoopState, hsem: _HostSlot, item: _Item, cm: asyncio.Timeout) -> None:
        """A session's slots, in the one order (see _HostSlot): this process's slot of the MX,
        a global one, the fleet's slot of the MX. All of them or none."""
        await self._slot(hsem.local, item, cm)
        try:
            await self._slot(st.global_sem, item, cm)
            try:
                if hsem.fleet is not None:
                    await self._slot(hsem.fleet, item, cm)
            except BaseException:
                st.global_sem.release()
                raise
        except BaseException:
            hsem.local.release()
            raise

    @staticmethod
    def _give_back(st: _LoopState, hsem: _HostSlot) -> None:
        """Releases what _take_slots took."""
        hsem.release()
        st.global_sem.release()

    async def _open_failover(self, item: _Item, cm: asyncio.Timeout) -> Session | None:
        """A session to the first MX address that takes one, by the first egress route that
        works for it; or None once the item (or the whole domain) has its result."""
        o = _Opening()
        src = self.p.source_address
        for host in self.mx.hosts:
            addrs = list(host.addresses)
            if src is not None:  # a bound socket cannot cross address families
                v6 = ":" in src
                addrs = [a for a in addrs if (":" in a) == v6]
            for ip in addrs[:2]:
                sess = await self._try_address(item, cm, o, host.name, ip)
                if sess is not None or o.finished:
                    return sess
        item.hosts.extend(o.tried)
        self._open_failed(item, o)
        return None

    async def _try_address(self, item: _Item, cm: asyncio.Timeout, o: "_Opening",
                           host_name: str, ip: str) -> Session | None:
        """One MX address: the guard, the recent-failure skip, the egress routes, the slots."""
        s, st = self.s, self.p._state()
        key = (ip, s.smtp_port)
        label = f"{host_name}[{ip}]"
        why = egress_refusal(ip, loopback_only=s.loopback_only)
        if why is not None:  # last line: the resolver should have dropped it
            o.failed(_HostFailure(label, "policy", egress_detail(host_name, ip, why)))
            return None
        o.tried.append(host_name)
        down = self.p.host_down(key)
        if down:
            o.failed(_HostFailure(label, down[0], f"{down[1]} (skipped, recently failed)"))
            return None
        await self.p.egress.sync(ip)  # what the fleet learned of this MX
        hsem = st.host_sem(key)
        while True:
            routes = await self._routes_with_room(st, item, cm, o, key, label)
            if not routes:
                return None
            await self._take_slots(st, hsem, item, cm)  # the MX's, then a global one
            try:
                sess = await self._open_routes(item, o, key, label, routes)
            except RoutesBusy:  # another job took the last room meanwhile: wait again
                self._give_back(st, hsem)
                continue
            except BaseException:
                self._give_back(st, hsem)
                raise
            break
        if sess is None:
            self._give_back(st, hsem)
            return None
        sess.releases += [functools.partial(self._give_back, st, hsem), self.p._session_opened(key, host_name)]
        self.live += 1
        self.opened += 1
        sess.releases.append(self._session_closed)
        sess.host_name = host_name
        sess.tried = tuple(dict.fromkeys(o.tried))
        self.p._alive()
        return sess

    async def _routes_with_room(self, st: _LoopState, item: _Item, cm: asyncio.Timeout,
                                o: "_Opening", key: HostKey, label: str) -> list[Route]:
        """The routes to try for this MX address, once one of them is below its caps (the
        wait, before any other slot is taken, moves the address's deadline like a slot's);
        [] when none is left (blocked or down: noted in ``o``)."""
        pool: EgressPool = self.p.egress
        while True:
            routes, notes = pool.candidates(key[0], ":" in key[0])
            if not routes:
                o.egress_notes.extend(f"{label}: {n}" for n in notes)
                return []
            if any(st.route_slots.room(r, key) for r in routes):
                return routes
            await self._slot(st.route_slots.freed, item, cm)

    async def _open_routes(self, item: _Item, o: "_Opening", key: HostKey, label: str,
                           routes: list[Route]) -> Session | None:
        """open_via with this prober's settings; failures are noted in ``o``."""
        s = self.s
        started = time.monotonic()
        try:
            return await open_via(
                self.p.egress, routes, key[0], key[1], label=label, helo_name=self.p.helo_name,
                mail_from=self.p.mail_from, source_address=self.p.source_address,
                connect_timeout=s.connect_timeout_s, banner_timeout=s.banner_timeout_s,
                command_timeout=s.command_timeout_s, want_smtputf8=self.want_utf8,
                slots=self.p._state().route_slots,
            )
        except ConnectFailed as exc:
            _observe("connect_failed", exc.kind)
            if exc.kind != "disconnected":  # no answer at all: skip it for a while
                self.p._mark_down(key, exc.kind, exc.detail)
                o.dropped_only = False
            o.failures.append(_HostFailure(label, exc.kind, exc.detail))
            if exc.tcp_failed:
                await self.p._connect_failed(key, self.domain, exc.detail, started)
            else:
                self.p._alive()
        except SessionRefused as exc:
            _observe("smtp_reply", "session", exc.code)
            self.p._alive()
            o.refusals.append((exc, label))
        except UnsafeCommand as exc:  # HELO/MAIL FROM: nothing was sent
            self.fatal = _Fatal("unknown", "provider_error", f"not connected: {exc}")
            self._finish(item, *self.fatal[:3])
            o.finished = True
        except EgressesDown:  # every route of the pool failed: our outage
            raise
        except ProviderUnavailable as exc:  # no route, source address unusable
            self.p.reach.unusable(key, str(exc))
            self.p._presumed_down()
            raise
        return None

    def _open_failed(self, item: _Item, o: "_Opening") -> None:
        """No session could be opened: a retry, the item's result or the domain's."""
        if o.refusals:
            exc, label = o.refusals[0]  # the most preferred host that answered
            reply = Reply(exc.code, exc.message)
            v = classify_session_reply(exc.code, exc.message)
            if v.kind == "retry":
                self._retry_later(item, v, reply, label)
                return None
            detail = f"refused at {exc.stage}: {label} said: {reply}"
            self.fatal = _Fatal("unknown", v.reason or "antispam_block", detail, reply, label)
            self._finish(item, *self.fatal[:5])
            return None
        if o.egress_notes and not o.failures:
            if self.p.egress.any_down():  # a route that might pass cannot be tried: ours
                raise EgressesDown("no egress route usable: " + "; ".join(o.egress_notes))
            self.fatal = _Fatal("unknown", "antispam_block",
                                "every egress is refused by the MX: " + "; ".join(o.egress_notes))
            self._finish(item, *self.fatal[:3])
            return None
        failures = o.failures
        reason = connect_failure_reason(failures)
        suspect = any(f.kind in TCP_FAILURES for f in failures)
        if failures:
            detail = "no MX host reachable: " + "; ".join(str(f) for f in failures)
        else:
            detail = "no MX host to try"
        if self.live > 0 or self.opened or (o.dropped_only and failures and item.drops == 0):
            # other sessions of this domain work (or did), or the server merely hung up:
            # a passing failure, not an unreachable domain
            item.drops += 1
            if item.drops <= 2:
                self._requeue_now(item)
            else:
                self._finish(item, "unknown", reason, detail)
            return None
        self.fatal = _Fatal("unknown", reason, detail, suspect=suspect)
        self._finish(item, "unknown", reason, detail, suspect=suspect)
        return None


@dataclass
class _Opening:
    """What one attempt to open a session met, host after host."""
    failures: list[_HostFailure] = field(default_factory=list)
    refusals: list[tuple[SessionRefused, str]] = field(default_factory=list)
    tried: list[str] = field(default_factory=list)
    egress_notes: list[str] = field(default_factory=list)  # addresses no route was left for
    dropped_only: bool = True  # every failure so far was a server closing on us
    finished: bool = False  # the item has its result

    def failed(self, failure: _HostFailure) -> None:
        self.failures.append(failure)
        self.dropped_only = False

"""The provider interface the engine uses, its tiers, and the factory.

``build_provider(settings)`` returns the SMTP prober (tier ``smtp``), wrapped in a
:class:`TieredProvider` when a fallback tier is configured (``VEC_FALLBACK_TIER``):

  * ``smtp``: the same prober with another identity (``VEC_FALLBACK_HELO_NAME``,
    ``VEC_FALLBACK_MAIL_FROM``, ``VEC_FALLBACK_SOURCE_ADDRESS``), tier ``smtp-fallback``;
  * ``http``: an adapter to an HTTP verification API (``VEC_FALLBACK_URL``), tier
    ``http-fallback``.

The fallback only sees the addresses the primary answered ``unknown`` with one of the
reasons in ``VEC_FALLBACK_ON`` (greylisting and DNS failures are not worth a second
tier by default). Every result records the tier that produced it.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import ssl
from collections import defaultdict, deque
from typing import Callable, Protocol, Sequence, runtime_checkable
from urllib.parse import urlsplit

from .config import VerifierSettings
from .prober import HostSlots, SmtpProber
from .resolver import DnsResolver
from .result import STATUSES, ProviderError, ProviderUnavailable, VerificationResult

__all__ = [
    "VerificationResult",
    "ProviderError",
    "ProviderUnavailable",
    "Provider",
    "SmtpProber",
    "TieredProvider",
    "HttpApiProvider",
    "build_provider",
]

log = logging.getLogger(__name__)

OnResult = Callable[[VerificationResult], None]


@runtime_checkable
class Provider(Protocol):
    name: str

    async def verify(
        self, addresses: Sequence[str], on_result: OnResult | None = None
    ) -> list[VerificationResult]:
        """Verify a batch. Results in input order. Cancellable: if the calling asyncio
        task is cancelled mid-batch, it must stop promptly (close sessions) — on_result
        has been called for every finished address, so the caller keeps what finished.

        Errors of the whole batch:

        * :class:`ProviderUnavailable` — our side cannot work (resolver not answering,
          network unreachable, no MX host of any domain reachable): a retry later may
          succeed; no ``unknown`` is invented for what could not really be checked.
          Before it is raised, ``on_result`` has been called for every address that got
          a genuine answer, and ``exc.unanswered`` holds the addresses of the batch that
          got no result (each once, in input order). Retry exactly those.
        * :class:`ProviderError` — anything else that failed the batch.

        Optional: ``async def healthy(self) -> bool``, a cheap check (no address is
        probed) the caller can make before resuming work paused after
        ProviderUnavailable; see :meth:`SmtpProber.healthy`. Providers without it are
        assumed healthy."""
        ...


class TieredProvider:
    """Primary tier first; its ``unknown`` answers (selected reasons) go to the fallback."""

    def __init__(self, primary: Provider, fallback: Provider, reasons: frozenset[str]) -> None:
        self.primary = primary
        self.fallback = fallback
        self.reasons = frozenset(reasons)
        self.name = f"{primary.name}+{fallback.name}"

    def _needs_fallback(self, r: VerificationResult) -> bool:
        return r.status == "unknown" and r.reason in self.reasons

    async def healthy(self) -> bool:
        """The primary tier's health: the fallback only ever adds to its answers (a
        failing fallback leaves the primary's results standing)."""
        check = getattr(self.primary, "healthy", None)
        return True if check is None else bool(await check())

    async def verify(
        self, addresses: Sequence[str], on_result: OnResult | None = None
    ) -> list[VerificationResult]:
        addresses = list(addresses)

        held_back: list[VerificationResult] = []

        def primary_cb(r: VerificationResult) -> None:
            if self._needs_fallback(r):
                held_back.append(r)
            elif on_result is not None:
                on_result(r)

        try:
            results = list(await self.primary.verify(addresses, primary_cb))
        except ProviderUnavailable:
            # the primary's unknowns are genuine answers: report them (no fallback
            # during an outage of ours) and keep the primary's ``unanswered``
            if on_result is not None:
                for r in held_back:
                    on_result(r)
            raise
        held = [i for i, r in enumerate(results) if self._needs_fallback(r)]
        if not held:
            return results
        where: dict[str, deque[int]] = defaultdict(deque)
        for i in held:
            where[addresses[i]].append(i)
        settled: set[int] = set()

        def settle(i: int, r2: VerificationResult) -> None:
            first = results[i]
            results[i] = dataclasses.replace(
                r2, detail=f"{r2.detail} [primary tier {first.tier}: {first.reason}: {first.detail}]",
                duration_ms=first.duration_ms + r2.duration_ms,
            )
            settled.add(i)
            if on_result is not None:
                on_result(results[i])

        def fallback_cb(r2: VerificationResult) -> None:
            q = where.get(r2.address)
            if q:
                settle(q.popleft(), r2)

        try:
            second = await self.fallback.verify([addresses[i] for i in held], fallback_cb)
        except ProviderError as exc:
            log.warning("fallback tier %s failed: %s", self.fallback.name, exc)
            for i in held:
                if i not in settled and on_result is not None:
                    on_result(results[i])
            return results
        for i, r2 in zip(held, second):
            if i not in settled:
                settle(i, r2)
        return results


class HttpApiProvider:
    """Adapter to an HTTP verification API (used as a fallback tier).

    Contract: ``POST {url}`` with ``{"addresses": [...]}``; the answer is
    ``{"results": [{"address", "status", "reason"?, "detail"?, ...}, ...]}`` in input
    order. A refused or timed-out connection raises :class:`ProviderUnavailable`; any
    other failure (HTTP status, malformed JSON, wrong length) :class:`ProviderError`.
    Plain asyncio streams: no proxy variables are honoured, nothing else is contacted.
    """

    def __init__(self, url: str, *, timeout: float = 10.0, name: str = "http-fallback") -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"bad fallback URL {url!r}")
        self.url = url
        self._parts = parts
        self.timeout = timeout
        self.name = name

    async def _post(self, body: bytes) -> tuple[int, bytes]:
        p = self._parts
        port = p.port or (443 if p.scheme == "https" else 80)
        ctx = ssl.create_default_context() if p.scheme == "https" else None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(p.hostname, port, ssl=ctx), self.timeout
            )
        except (OSError, TimeoutError) as exc:
            raise ProviderUnavailable(f"{self.url}: cannot connect: {exc!r}") from exc
        try:
            path = (p.path or "/") + (f"?{p.query}" if p.query else "")
            head = (
                f"POST {path} HTTP/1.0\r\nHost: {p.netloc}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                f"Connection: close\r\n\r\n"
            ).encode("ascii")
            writer.write(head + body)
            await writer.drain()
            raw = await asyncio.wait_for(reader.read(), self.timeout)
        except TimeoutError as exc:
            raise ProviderUnavailable(f"{self.url}: no answer within {self.timeout:g}s") from exc
        except OSError as exc:
            raise ProviderError(f"{self.url}: {exc!r}") from exc
        finally:
            writer.close()
        head_b, _, payload = raw.partition(b"\r\n\r\n")
        try:
            status = int(head_b.split(b"\r\n", 1)[0].split()[1])
        except (IndexError, ValueError) as exc:
            raise ProviderError(f"{self.url}: malformed HTTP answer") from exc
        return status, payload

    async def verify(
        self, addresses: Sequence[str], on_result: OnResult | None = None
    ) -> list[VerificationResult]:
        addresses = list(addresses)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            status, payload = await self._post(json.dumps({"addresses": addresses}).encode())
        except ProviderUnavailable as exc:  # nothing was answered
            raise ProviderUnavailable(str(exc), unanswered=addresses) from exc
        if status >= 500 or status == 429:
            raise ProviderError(f"{self.url}: HTTP {status}")
        if status != 200:
            raise ProviderError(f"{self.url}: HTTP {status} (batch rejected)")
        try:
            rows = json.loads(payload)["results"]
            if len(rows) != len(addresses):
                raise ValueError("wrong number of results")
            ms = int((loop.time() - t0) * 1000)
            out = []
            for addr, row in zip(addresses, rows):
                st = row["status"]
                if st not in STATUSES:
                    raise ValueError(f"bad status {st!r}")
                out.append(VerificationResult(
                    address=addr, normalized=row.get("normalized"), status=st,
                    reason=row.get("reason"), detail=str(row.get("detail") or f"{self.name}: {st}"),
                    tier=self.name, catch_all=row.get("catch_all"),
                    disposable=bool(row.get("disposable")), role=bool(row.get("role")),
                    duration_ms=ms,
                ))
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderError(f"{self.url}: malformed results: {exc}") from exc
        if on_result is not None:
            for r in out:
                on_result(r)
        return out


def build_provider(settings: VerifierSettings | None = None, host_slots: HostSlots | None = None) -> Provider:
    """The primary SMTP tier, plus the configured fallback tier (if any). `host_slots` makes
    the per-MX session limit hold across processes (a fleet of workers)."""
    s = settings or VerifierSettings()
    resolver = DnsResolver(s)
    primary = SmtpProber(s, name="smtp", deadline=s.primary_deadline, resolver=resolver, host_slots=host_slots)
    if s.fallback_tier == "none":
        return primary
    fallback: Provider
    if s.fallback_tier == "smtp":
        fallback = SmtpProber(
            s,
            name="smtp-fallback",
            helo_name=s.fallback_helo_name or s.helo_name,
            mail_from=s.fallback_mail_from or s.mail_from,
            source_address=s.fallback_source_address,
            deadline=s.fallback_deadline,
            resolver=resolver,
            host_slots=host_slots,
            routes=(),  # its own source address, not the primary's egress pool
        )
    else:
        if s.fallback_url is None:  # the settings validator makes this impossible
            raise ValueError("fallback_tier=http needs fallback_url")
        if s.loopback_only:
            import ipaddress

            host = urlsplit(s.fallback_url).hostname or ""
            try:
                ok = ipaddress.ip_address(host).is_loopback
            except ValueError:
                ok = False
            if not ok:
                raise ValueError("loopback_only: the fallback URL must use a loopback IP")
        fallback = HttpApiProvider(s.fallback_url, timeout=min(s.fallback_http_timeout, s.fallback_deadline))
    return TieredProvider(primary, fallback, s.fallback_reasons)

"""Egress routes: where the prober's SMTP sessions leave from, and what we learned of each.

A route is ``direct`` (this host, optionally bound to a chosen source address) or a
``socks5`` proxy (RFC 1928), with or without username/password (RFC 1929), reached with
python-socks; the proxy's connected socket is handed to aiosmtplib like a direct one.

The pool (``VEC_EGRESS_POOL``) is a comma-separated list of ``name=uri`` in preference
order::

    direct=direct, clean=direct://192.0.2.10, eu=socks5://user:secret@198.51.100.4:1080

Each route may carry its own limits after ``?`` (the pool's defaults otherwise):
``concurrency`` (sessions at once through it), ``per_mx`` (sessions at once through it to
one MX address) and ``down_ttl`` (seconds it is left out after its proxy failed)::

    eu=socks5://198.51.100.4:1080?concurrency=20&per_mx=2&down_ttl=60

Secrets: a route's password is never logged, printed or put in a result; ``public()``
is what may be shown. Errors about a malformed entry name the entry, not its text.

State (per process; see :class:`EgressPool`): an egress refused by an MX for our
address (block list, reputation, client host: ``classify.about_our_address``) is
*blocked* for that MX for ``egress_block_ttl`` seconds; a proxy that cannot be reached
is *down* for ``egress_down_ttl`` seconds (its outage, not the MX's). With a single
route there is nothing to fail over to: nothing is marked, every address is tried as
before. Sessions open through each route are counted per event loop (:class:`RouteSlots`)
against the route's caps, on top of the shared per-MX limit.
"""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import ipaddress
import logging
import socket
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable
from urllib.parse import parse_qsl, unquote, urlsplit

from .cache import TTLCache
from .classify import about_our_address
from .result import ProviderUnavailable
from .health import HostKey
from .smtp import ConnectFailed, Session, SessionRefused, open_session

log = logging.getLogger(__name__)

DEFAULT_SOCKS_PORT = 1080
MAX_ROUTES = 32


class EgressDown(Exception):
    """The route itself failed (proxy unreachable, refused our credentials...)."""

    def __init__(self, route: "Route", detail: str) -> None:
        super().__init__(f"egress {route.name} is down: {detail}")
        self.route = route
        self.detail = detail


@dataclass(frozen=True)
class Route:
    name: str
    kind: Literal["direct", "socks5"]
    source: str | None = None  # direct: local IP the socket is bound to
    host: str | None = None  # socks5: the proxy's IP
    port: int = DEFAULT_SOCKS_PORT
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    concurrency: int | None = None  # sessions at once through this route (None: the pool's)
    per_mx: int | None = None  # ... to one MX address (None: the pool's)
    down_ttl_s: float | None = None  # left out this long after its proxy failed (None: the pool's)

    def public(self) -> str:
        """What may be shown: never the password (nor whether there is one, beyond ***);
        the route's own limits, if any, as they were given."""
        limits = "&".join(f"{key}={value:g}" for key, value in (
            ("concurrency", self.concurrency), ("per_mx", self.per_mx), ("down_ttl", self.down_ttl_s))
            if value is not None)
        return self._where() + (f"?{limits}" if limits else "")

    def _where(self) -> str:
        if self.kind == "direct":
            return f"direct://{self.source}" if self.source else "direct"
        user = f"{self.username}:***@" if self.username else ""
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"socks5://{user}{host}:{self.port}"

    @property
    def family_v6(self) -> bool | None:
        """The address family the route is tied to (a bound direct socket), or None."""
        return None if self.source is None else ":" in self.source


def _ip(value: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"{what} must be an IP address") from None


ROUTE_LIMITS = {"concurrency": int, "per_mx": int, "down_ttl": float}


def _limits(name: str, query: str) -> dict[str, Any]:
    """A route's own limits from its ``?key=value&...`` part."""
    out: dict[str, Any] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ValueError(f"egress {name!r}: limits are ?KEY=VALUE&...") from None
    for key, value in pairs:
        kind = ROUTE_LIMITS.get(key)
        if kind is None:
            raise ValueError(f"egress {name!r}: unknown limit {key!r} (known: {', '.join(ROUTE_LIMITS)})")
        try:
            number = kind(value)
        except ValueError:
            number = -1
        if not 0 < number < 1e9 and not (kind is float and number == 0):
            raise ValueError(f"egress {name!r}: {key} must be a positive number")
        out["down_ttl_s" if key == "down_ttl" else key] = number
    return out


def parse_route(name: str, uri: str) -> Route:
    """One route from ``uri``; ValueError names the route, never repeats the uri."""
    uri, _, query = uri.strip().partition("?")
    limits = _limits(name, query)
    return dataclasses.replace(_parse_base(name, uri), **limits)


def _parse_base(name: str, uri: str) -> Route:
    if uri == "direct":
        return Route(name, "direct")
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        raise ValueError(f"egress {name!r}: not a route URI") from None
    if parts.scheme == "direct":
        if port is not None or parts.username or not parts.hostname:
            raise ValueError(f"egress {name!r}: direct://SOURCE_IP takes an address only")
        return Route(name, "direct", source=_ip(parts.hostname, f"egress {name!r}: the source"))
    if parts.scheme not in ("socks5", "socks5h"):
        raise ValueError(f"egress {name!r}: the scheme must be direct or socks5")
    if not parts.hostname:
        raise ValueError(f"egress {name!r}: socks5://[USER:PASSWORD@]HOST:PORT needs a host")
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if (user is None) != (password is None):
        raise ValueError(f"egress {name!r}: give both a username and a password, or neither")
    for value in (user, password):
        if value is not None and not 0 < len(value.encode()) <= 255:  # RFC 1929 field sizes
            raise ValueError(f"egress {name!r}: username and password are 1 to 255 bytes")
    return Route(name, "socks5", host=_ip(parts.hostname, f"egress {name!r}: the proxy host"),
                 port=port or DEFAULT_SOCKS_PORT, username=user, password=password)


def parse_pool(spec: str) -> tuple[Route, ...]:
    """The routes of ``VEC_EGRESS_POOL`` (empty: none configured)."""
    routes: list[Route] = []
    for n, entry in enumerate(e.strip() for e in spec.split(",")):
        if not entry:
            continue
        name, sep, uri = entry.partition("=")
        name = name.strip()
        if not sep or not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"egress pool entry {n + 1}: expected NAME=URI (NAME: letters, digits, - and _)")
        if any(r.name == name for r in routes):
            raise ValueError(f"egress pool: the name {name!r} is used twice")
        routes.append(parse_route(name, uri))
    if len(routes) > MAX_ROUTES:
        raise ValueError(f"egress pool: at most {MAX_ROUTES} routes")
    return tuple(routes)


SHARED_SYNC_S = 2.0  # how long blocks read from the fleet are trusted before asking again


@runtime_checkable
class SharedEgressState(Protocol):
    """Blocked routes shared by a fleet of workers (consumers/fleet/slots.py): one worker's
    discovery spares the others the refusals."""

    async def egress_blocks(self, mx_ip: str) -> list[tuple[str, str, float]]:
        """(route name, reply, seconds left) of the routes blocked for this MX address."""

    async def share_egress_block(self, route: str, mx_ip: str, reply: str, ttl_s: float) -> None: ...


class EgressPool:
    """The routes, in preference order, with what this process (and, given ``shared``, the
    fleet) learned of them."""

    def __init__(self, routes: tuple[Route, ...], *, block_ttl_s: float, down_ttl_s: float,
                 named: bool, shared: SharedEgressState | None = None,
                 concurrency: int = 0, per_mx: int = 0) -> None:
        """``concurrency``/``per_mx``: the caps of a route that sets none (0: no cap of its own,
        only the shared per-MX and global limits)."""
        if not routes:
            raise ValueError("an egress pool needs at least one route")
        self.routes = routes
        self.named = named  # configured by the operator: results name the egress
        self.block_ttl_s, self.down_ttl_s = block_ttl_s, down_ttl_s
        self.concurrency, self.per_mx = concurrency, per_mx
        self._blocked: TTLCache[tuple[str, str], str] = TTLCache(10_000)  # (route, MX ip) -> reply
        self._down: TTLCache[str, str] = TTLCache(MAX_ROUTES)
        self.shared = shared if len(routes) > 1 else None
        self._synced: TTLCache[str, bool] = TTLCache(10_000)  # MX addresses read from the fleet
        self._publishing: set[asyncio.Task[None]] = set()

    async def sync(self, mx_ip: str) -> None:
        """Take in the fleet's blocks for this MX address (at most every SHARED_SYNC_S).
        The fleet's store failing costs the sharing only: this process's state goes on."""
        if self.shared is None or self._synced.get(mx_ip):
            return
        self._synced.set(mx_ip, True, SHARED_SYNC_S)
        try:
            rows = await self.shared.egress_blocks(mx_ip)
        except Exception as exc:  # noqa: BLE001 - sharing is an optimisation
            log.warning("verifier: reading the fleet's egress blocks failed: %s", exc)
            return
        known = {r.name for r in self.routes}
        for name, reply, left_s in rows:
            if name in known:
                self._blocked.set((name, mx_ip), reply, min(left_s, self.block_ttl_s))

    async def _publish(self, shared: SharedEgressState, route: str, mx_ip: str, reply: str) -> None:
        try:
            await shared.share_egress_block(route, mx_ip, reply, self.block_ttl_s)
        except Exception as exc:  # noqa: BLE001 - sharing is an optimisation
            log.warning("verifier: sharing an egress block with the fleet failed: %s", exc)

    @property
    def can_fail_over(self) -> bool:
        return len(self.routes) > 1

    def blocked(self, route: Route, mx_ip: str) -> str | None:
        return self._blocked.get((route.name, mx_ip))

    def block(self, route: Route, mx_ip: str, reply: str) -> None:
        """The MX refused our address on this route: spare it (and us) for a while."""
        if not self.can_fail_over or self._blocked.get((route.name, mx_ip)) is not None:
            return
        self._blocked.set((route.name, mx_ip), reply, self.block_ttl_s)
        if self.shared is not None:  # in the background: a probe never waits for the fleet
            task = asyncio.get_running_loop().create_task(self._publish(self.shared, route.name, mx_ip, reply))
            self._publishing.add(task)
            task.add_done_callback(self._publishing.discard)

    def down(self, route: Route) -> str | None:
        return self._down.get(route.name)

    def mark_down(self, route: Route, detail: str) -> None:
        ttl_s = self.down_ttl_s if route.down_ttl_s is None else route.down_ttl_s
        self._down.set(route.name, detail, ttl_s)

    def caps(self, route: Route) -> tuple[int, int]:
        """(sessions at once through the route, ... to one MX address); 0: no cap."""
        return (self.concurrency if route.concurrency is None else route.concurrency,
                self.per_mx if route.per_mx is None else route.per_mx)

    def candidates(self, mx_ip: str, v6: bool) -> tuple[list[Route], list[str]]:
        """Routes to try for this MX address, best first, and why the others are left out."""
        usable: list[Route] = []
        notes: list[str] = []
        for r in self.routes:
            if r.family_v6 is not None and r.family_v6 != v6:
                continue  # a bound socket cannot cross address families
            why = self.down(r)
            if why is None and (reply := self.blocked(r, mx_ip)) is not None:
                why = f"blocked by this MX: {reply}"
            if why is None:
                usable.append(r)
            else:
                notes.append(f"egress {r.name}: {why}")
        return usable, notes

    def all_down(self) -> bool:
        return all(self.down(r) is not None for r in self.routes)

    def any_down(self) -> bool:
        return any(self.down(r) is not None for r in self.routes)

    def revive(self, route: Route) -> None:
        self._down.pop(route.name)

    def clear(self) -> None:
        self._blocked.clear()
        self._down.clear()
        self._synced.clear()


class RouteSlots:
    """Sessions open through each route, and through each (route, MX address), on one event
    loop, against the route's caps (EgressPool.caps). Taking never waits: a route at its cap
    is passed over for the next one (open_via); when every usable route is at its cap the
    opener waits for ``freed`` -- before taking any other slot, so nothing is held idle."""

    def __init__(self, pool: EgressPool) -> None:
        self.pool = pool
        self.open: dict[str, int] = {}
        self.open_mx: dict[tuple[str, HostKey], int] = {}
        self.freed = SlotFreed()

    def room(self, route: Route, key: HostKey) -> bool:
        cap, cap_mx = self.pool.caps(route)
        return ((not cap or self.open.get(route.name, 0) < cap)
                and (not cap_mx or self.open_mx.get((route.name, key), 0) < cap_mx))

    def take(self, route: Route, key: HostKey) -> bool:
        if not self.room(route, key):
            return False
        self.open[route.name] = self.open.get(route.name, 0) + 1
        self.open_mx[route.name, key] = self.open_mx.get((route.name, key), 0) + 1
        return True

    def give(self, route: Route, key: HostKey) -> None:
        self.open[route.name] -= 1
        self.open_mx[route.name, key] -= 1
        if not self.open_mx[route.name, key]:
            del self.open_mx[route.name, key]
        self.freed.notify()


class SlotFreed:
    """Waiting for any route's slot to be given back; shaped like a semaphore for the
    prober's slot wait (which moves the address's deadline by the time waited)."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def locked(self) -> bool:
        return True

    async def acquire(self) -> None:
        if self._event is None:
            self._event = asyncio.Event()
        await self._event.wait()

    def notify(self) -> None:
        event, self._event = self._event, None
        if event is not None:
            event.set()


class RoutesBusy(Exception):
    """Every route left to try is at its cap: wait for one (RouteSlots.freed), try again."""


def routing_label(label: str, route: Route, pool: EgressPool) -> str:
    """The host label a result carries: with the egress named when a pool is configured."""
    return f"{label} via {route.name}" if pool.named else label


async def socks5_connect(route: Route, ip: str, port: int, timeout_s: float) -> socket.socket:
    """A socket connected to ``ip:port`` through the route's SOCKS5 proxy.

    Raises EgressDown when the proxy fails us (unreachable, credentials refused, its
    own failure) and smtp.ConnectFailed when the proxy reports the destination's
    failure (refused, unreachable, timed out)."""
    from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError, ProxyType
    from python_socks.async_.asyncio import Proxy

    proxy = Proxy(ProxyType.SOCKS5, route.host or "", route.port, username=route.username,
                  password=route.password, rdns=False)
    try:
        sock = await proxy.connect(ip, port, timeout=timeout_s)
    except ProxyTimeoutError:
        raise ConnectFailed("connect_timeout", f"connect through {route.name} timed out after {timeout_s:g}s") from None
    except ProxyConnectionError as exc:
        raise EgressDown(route, f"proxy unreachable: {exc}") from None
    except ProxyError as exc:
        code = getattr(exc, "error_code", None)
        if code == 5:  # RFC 1928: connection refused (by the destination)
            raise ConnectFailed("refused", f"connection refused (reported by {route.name})") from None
        if code in (3, 4, 6):  # network / host unreachable, TTL expired
            raise ConnectFailed("connect_error", f"{exc} (reported by {route.name})") from None
        raise EgressDown(route, f"proxy said: {exc}") from None
    except (OSError, EOFError) as exc:  # the proxy broke off the handshake (killed, reset)
        raise EgressDown(route, f"proxy connection lost: {exc!r}") from None
    sock.setblocking(False)
    return sock


async def probe_route(route: Route, timeout_s: float) -> bool:
    """Whether the route can be used again: its proxy accepts a TCP connection."""
    if route.kind == "direct":
        return True
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(route.host, route.port), timeout_s)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


class EgressesDown(ProviderUnavailable):
    """No route of the pool works: our outage (the batch pauses), not the MX's."""


async def open_via(pool: EgressPool, routes: list[Route], ip: str, port: int, *, label: str,
                   source_address: str | None, connect_timeout: float,
                   slots: RouteSlots | None = None, **session_kw: Any) -> Session:
    """An SMTP session to ``ip:port`` through the first of ``routes`` that works (and, given
    ``slots``, has room: the session holds its route's slot until it closes).

    A route whose proxy fails is marked down and the next one is tried; a session refused
    for our address (greeting, EHLO or MAIL FROM) marks the route blocked for this MX and
    the next one is tried. Raises :class:`RoutesBusy` when a route passed over for its cap
    is left, what open_session raises for the last route tried, or :class:`EgressesDown`
    when every route was down."""
    key = (ip, port)
    busy = False
    failures: list[EgressDown | SessionRefused] = []
    for route in routes:
        if slots is not None and not slots.take(route, key):
            busy = True
            continue
        try:
            sess = await _open_one(pool, route, ip, port, label, source_address, connect_timeout,
                                   session_kw)
        except BaseException:
            if slots is not None:
                slots.give(route, key)
            raise
        if isinstance(sess, Session):
            if slots is not None:
                sess.releases.append(functools.partial(slots.give, route, key))
            return sess
        if slots is not None:
            slots.give(route, key)
        failures.append(sess)
    if busy:
        raise RoutesBusy(ip)
    down = [str(f) for f in failures if isinstance(f, EgressDown)]
    refused = next((f for f in reversed(failures) if isinstance(f, SessionRefused)), None)
    if refused is not None and not down:  # every route refused: the MX's answer
        raise refused
    raise EgressesDown("; ".join(down) or "no egress route to try")  # a route that might pass is down


async def _open_one(pool: EgressPool, route: Route, ip: str, port: int, label: str,
                    source_address: str | None, connect_timeout: float,
                    session_kw: dict[str, Any]) -> "Session | EgressDown | SessionRefused":
    """A session through one route, or why this route failed (the next may do)."""
    connect = None
    if route.kind == "socks5":
        connect = functools.partial(socks5_connect, route, ip, port, connect_timeout)
    try:
        sess = await open_session(
            ip, port, label=routing_label(label, route, pool),
            source_address=route.source or source_address, connect_timeout=connect_timeout,
            connect=connect, **session_kw)
    except EgressDown as exc:
        return _went_down(pool, exc)
    except ProviderUnavailable as exc:  # e.g. a route's own source address cannot be bound
        if not (route.source and pool.can_fail_over):
            raise  # the machine's own path: our outage, as before
        return _went_down(pool, EgressDown(route, str(exc)))
    except SessionRefused as exc:
        if not (pool.can_fail_over and about_our_address(exc.message)):
            raise
        pool.block(route, ip, f"{exc.code} {exc.message}")
        return exc
    sess.route = route
    return sess


def _went_down(pool: EgressPool, exc: EgressDown) -> EgressDown:
    log.warning("verifier: %s", exc)
    pool.mark_down(exc.route, exc.detail)
    return exc


async def check_route(route: Route, ip: str, port: int, timeout_s: float) -> tuple[str, bool, str]:
    """(name, works, what happened): connect through the route and read the greeting line."""
    from .smtp import tcp_connect

    try:
        if route.kind == "socks5":
            sock = await socks5_connect(route, ip, port, timeout_s)
        else:
            sock = await tcp_connect(ip, port, route.source, timeout_s)
    except (EgressDown, ConnectFailed, ProviderUnavailable) as exc:
        return route.name, False, str(exc)
    try:
        reader, writer = await asyncio.open_connection(sock=sock)
        line = await asyncio.wait_for(reader.readline(), timeout_s)
        writer.write(b"QUIT\r\n")
        writer.close()
    except (OSError, TimeoutError) as exc:
        return route.name, False, f"no greeting: {exc.__class__.__name__}"
    text = line.decode("ascii", "replace").strip()
    return route.name, text.startswith("220"), text or "closed without a greeting"

"""Egress routes and the pool's state (verifier/routes.py): pure parts, no network."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from verifier.classify import about_our_address
from verifier.config import VerifierSettings
from verifier.routes import EgressPool, Route, parse_pool

SECRET = "s3cr3t-pa55"


def test_pool_forms():
    routes = parse_pool(f"home=direct, clean=direct://127.0.0.20, eu=socks5://vec:{SECRET}@127.0.0.1:10802,"
                        " us=socks5://[::1]:1080, bare=socks5://127.0.0.1")
    assert [(r.name, r.kind, r.source, r.host, r.port, r.username) for r in routes] == [
        ("home", "direct", None, None, 1080, None),
        ("clean", "direct", "127.0.0.20", None, 1080, None),
        ("eu", "socks5", None, "127.0.0.1", 10802, "vec"),
        ("us", "socks5", None, "::1", 1080, None),
        ("bare", "socks5", None, "127.0.0.1", 1080, None),
    ]
    assert routes[2].password == SECRET
    assert [r.public() for r in routes] == [
        "direct", "direct://127.0.0.20", "socks5://vec:***@127.0.0.1:10802",
        "socks5://[::1]:1080", "socks5://127.0.0.1:1080"]
    assert parse_pool("") == () and parse_pool(" , ") == ()
    assert parse_pool("x=socks5://a%40b:p%3Ass@127.0.0.1:1")[0].username == "a@b"


@pytest.mark.parametrize("spec,why", [
    ("nameless", "entry 1: expected NAME=URI"),
    ("a b=direct", "entry 1: expected NAME=URI"),
    ("a=direct,a=direct", "the name 'a' is used twice"),
    ("a=http://127.0.0.1:8080", "egress 'a': the scheme must be direct or socks5"),
    (f"a=socks5://vec:{SECRET}@proxy.example:1080", "egress 'a': the proxy host must be an IP address"),
    (f"a=socks5://vec:{SECRET}@127.0.0.1:99999", "egress 'a': not a route URI"),
    ("a=socks5://vec@127.0.0.1:1080", "give both a username and a password"),
    ("a=direct://example.test", "egress 'a': the source must be an IP address"),
    ("a=direct://127.0.0.1:25", "direct://SOURCE_IP takes an address only"),
])
def test_bad_pool_is_refused_without_repeating_it(spec, why):
    with pytest.raises(ValueError) as err:
        parse_pool(spec)
    assert why in str(err.value)
    with pytest.raises(ValidationError) as err2:
        VerifierSettings(egress_pool=spec)
    assert why in str(err2.value)
    assert SECRET not in str(err.value) + str(err2.value)


def test_settings_never_show_the_secret(monkeypatch):
    monkeypatch.setenv("VEC_EGRESS_POOL", f"eu=socks5://vec:{SECRET}@127.0.0.1:10802")
    s = VerifierSettings()
    assert s.egress_routes[0].password == SECRET
    shown = repr(s) + str(s) + s.model_dump_json() + repr(s.egress_routes)
    assert "egress_pool" in shown and SECRET not in shown


def pool(*names: str) -> EgressPool:
    routes = tuple(Route(n, "direct") for n in names)
    return EgressPool(routes, block_ttl_s=60, down_ttl_s=60, named=True)


def test_blocked_and_down_routes_are_left_out():
    p = pool("a", "b", "c")
    p.block(p.routes[0], "192.0.2.1", "554 5.7.1 blocked using zen")
    p.mark_down(p.routes[1], "proxy unreachable")
    usable, notes = p.candidates("192.0.2.1", False)
    assert [r.name for r in usable] == ["c"]
    assert notes == ["egress a: blocked by this MX: 554 5.7.1 blocked using zen",
                     "egress b: proxy unreachable"]
    # a block is per MX address; down is for every MX
    assert [r.name for r in p.candidates("192.0.2.2", False)[0]] == ["a", "c"]
    assert p.any_down() and not p.all_down()
    p.revive(p.routes[1])
    assert not p.any_down()


def test_one_route_is_never_blocked():
    """Nothing to fail over to: every address is tried, as before the pool existed."""
    p = pool("only")
    p.block(p.routes[0], "192.0.2.1", "554 blocked")
    assert [r.name for r in p.candidates("192.0.2.1", False)[0]] == ["only"]


def test_a_bound_route_keeps_to_its_family():
    p = EgressPool((Route("v4", "direct", source="127.0.0.20"), Route("any", "direct")),
                   block_ttl_s=1, down_ttl_s=1, named=True)
    assert [r.name for r in p.candidates("2001:db8::1", True)[0]] == ["any"]


@pytest.mark.parametrize("text,ours", [
    ("5.7.1 <unknown[127.0.0.1]>: Client host rejected: blocked using zen.spamhaus.org", True),
    ("5.7.1 Service unavailable; Client host [192.0.2.1] blocked using Spamhaus", True),
    ("5.7.606 Access denied, banned sending IP [192.0.2.1]", True),
    ("Your IP 192.0.2.1 is listed in the Barracuda Reputation Block List", True),
    ("5.7.1 Recipient address rejected: Relay access denied", False),
    ("5.1.1 <x@example.test>: Recipient address rejected: User unknown", False),
    ("5.7.1 Message rejected as spam by Content Filtering", False),
    ("5.7.1 Sender address rejected: not owned by user", False),
])
def test_about_our_address(text, ours):
    assert about_our_address(text) is ours


def test_a_route_whose_source_cannot_be_bound_is_that_routes_outage():
    """A source address the socket cannot be bound to (here an IPv6 one for an IPv4
    connection): that route is down (the next one is tried); with it alone, it is our
    outage, as before."""
    import asyncio

    from verifier.result import ProviderUnavailable
    from verifier.routes import EgressesDown, open_via

    def make(*routes):
        return EgressPool(routes, block_ttl_s=60, down_ttl_s=60, named=True)
    unbindable = Route("far", "direct", source="::1")
    kw = dict(label="x", source_address=None, connect_timeout=1, helo_name="h.test",
              mail_from="a@b.test", banner_timeout=1, command_timeout=1)
    pool = make(unbindable, Route("other", "direct", source="::2"))
    with pytest.raises(EgressesDown) as ei:
        asyncio.run(open_via(pool, list(pool.routes), "127.0.0.1", 9, **kw))
    assert "egress far is down: cannot bind source address ::1" in str(ei.value)
    assert pool.down(pool.routes[0]) and pool.down(pool.routes[1])
    alone = make(unbindable)
    with pytest.raises(ProviderUnavailable) as ei2:
        asyncio.run(open_via(alone, list(alone.routes), "127.0.0.1", 9, **kw))
    assert not isinstance(ei2.value, EgressesDown) and alone.down(unbindable) is None


def test_a_proxy_that_breaks_off_the_handshake_is_that_routes_outage():
    """A SOCKS5 server killed mid-handshake (here: one that hangs up on the greeting) is
    the route's outage, never an internal error of the probe."""
    import asyncio

    from verifier.routes import EgressDown, socks5_connect

    async def main():
        async def hang_up(reader, writer):
            writer.transport.abort()  # RST before the greeting's reply, as a killed process leaves it
        server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(EgressDown) as ei:
                await socks5_connect(Route("p", "socks5", host="127.0.0.1", port=port), "127.0.0.2", 25, 2)
            return str(ei.value)
        finally:
            server.close()
    assert asyncio.run(main()).startswith("egress p is down: ")


# --- per-egress concurrency and health ---------------------------------------------------
def test_route_limits_are_read_from_the_pool():
    routes = parse_pool(f"a=direct?concurrency=3, b=direct://127.0.0.20?per_mx=1&down_ttl=5,"
                        f" c=socks5://vec:{SECRET}@127.0.0.1:10802?concurrency=20&per_mx=2, d=direct")
    assert [(r.concurrency, r.per_mx, r.down_ttl_s) for r in routes] == [
        (3, None, None), (None, 1, 5.0), (20, 2, None), (None, None, None)]
    assert routes[2].password == SECRET
    assert [r.public() for r in routes] == [
        "direct?concurrency=3", "direct://127.0.0.20?per_mx=1&down_ttl=5",
        "socks5://vec:***@127.0.0.1:10802?concurrency=20&per_mx=2", "direct"]
    pool = EgressPool(routes, block_ttl_s=60, down_ttl_s=30, named=True, concurrency=7, per_mx=4)
    assert [pool.caps(r) for r in routes] == [(3, 4), (7, 1), (20, 2), (7, 4)]


@pytest.mark.parametrize("spec,why", [
    ("a=direct?concurrency=0", "egress 'a': concurrency must be a positive number"),
    ("a=direct?per_mx=two", "egress 'a': per_mx must be a positive number"),
    ("a=direct?down_ttl=-1", "egress 'a': down_ttl must be a positive number"),
    (f"a=socks5://vec:{SECRET}@127.0.0.1:1?speed=9", "egress 'a': unknown limit 'speed'"),
    (f"a=socks5://vec:{SECRET}@127.0.0.1:1?concurrency", "egress 'a': limits are ?KEY=VALUE"),
])
def test_bad_route_limits_are_refused_without_repeating_the_route(spec, why):
    test_bad_pool_is_refused_without_repeating_it(spec, why)


def test_route_slots_hold_each_cap():
    from verifier.routes import RouteSlots

    a, b = parse_pool("a=direct?concurrency=2&per_mx=1, b=direct://127.0.0.20")
    slots = RouteSlots(EgressPool((a, b), block_ttl_s=60, down_ttl_s=30, named=True))
    mx1, mx2, mx3 = ("127.0.0.2", 25), ("127.0.0.3", 25), ("127.0.0.4", 25)
    assert slots.take(a, mx1) and not slots.take(a, mx1)  # per (egress, MX): 1
    assert slots.take(a, mx2) and not slots.take(a, mx3)  # per egress: 2
    assert all(slots.take(b, mx1) for _ in range(50))  # b has no cap of its own
    slots.give(a, mx1)
    assert slots.room(a, mx3) and not slots.room(a, mx2) and slots.take(a, mx1)


def test_a_route_down_is_left_out_for_its_own_down_ttl(monkeypatch):
    import verifier.cache

    now = [1000.0]
    monkeypatch.setattr(verifier.cache.time, "monotonic", lambda: now[0])
    a, b = parse_pool("a=direct://127.0.0.20?down_ttl=5, b=direct://127.0.0.21")
    pool = EgressPool((a, b), block_ttl_s=60, down_ttl_s=30, named=True)
    pool.mark_down(a, "proxy unreachable")
    pool.mark_down(b, "proxy unreachable")
    assert pool.all_down()
    now[0] += 6
    assert pool.down(a) is None and pool.down(b) == "proxy unreachable"
    assert [r.name for r in pool.candidates("127.0.0.2", False)[0]] == ["a"]
    now[0] += 25
    assert not pool.any_down()


def test_a_route_at_its_cap_is_passed_over_then_waited_for():
    """open_via takes the first route with room; with every route at its cap it raises
    RoutesBusy (the prober waits for a slot to be given back, then tries again)."""
    import asyncio

    from verifier.routes import RoutesBusy, RouteSlots, open_via

    async def main():
        async def greet(reader, writer):
            writer.write(b"220 fake ESMTP\r\n")
            while line := await reader.readline():
                writer.write(b"221 bye\r\n" if line.startswith(b"QUIT") else b"250 ok\r\n")
            writer.close()
        server = await asyncio.start_server(greet, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        a, b = parse_pool("a=direct://127.0.0.30?concurrency=1, b=direct://127.0.0.31?per_mx=1")
        pool = EgressPool((a, b), block_ttl_s=60, down_ttl_s=30, named=True)
        slots = RouteSlots(pool)
        kw = dict(label="x", source_address=None, connect_timeout=2, helo_name="h.test",
                  mail_from="a@b.test", banner_timeout=2, command_timeout=2, slots=slots)
        try:
            s1 = await open_via(pool, [a, b], "127.0.0.1", port, **kw)
            s2 = await open_via(pool, [a, b], "127.0.0.1", port, **kw)
            with pytest.raises(RoutesBusy):
                await open_via(pool, [a, b], "127.0.0.1", port, **kw)
            waiting = asyncio.ensure_future(slots.freed.acquire())
            await asyncio.sleep(0)
            assert not waiting.done()
            s1.close()  # gives a's slot back: the waiter wakes
            await asyncio.wait_for(waiting, 5)
            s3 = await open_via(pool, [a, b], "127.0.0.1", port, **kw)
            routes = [s.route.name for s in (s1, s2, s3)]
            s2.close()
            s3.close()
            return routes, dict(slots.open)
        finally:
            server.close()
    routes, still_open = asyncio.run(main())
    assert routes == ["a", "b", "a"]
    assert still_open == {"a": 0, "b": 0}

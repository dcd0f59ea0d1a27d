"""Integration tests proving the loopback mail world behaves as tests/MAILWORLD.md says.

Stdlib smtplib/socket against 127.0.0.x:25 and dnspython against 127.0.0.1:5300.
Run: .venv/bin/python -m pytest tests/test_mailworld.py -p tests.mailworld
"""
from __future__ import annotations

import smtplib
import socket
import subprocess
import time
import uuid

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.resolver
import pytest

pytestmark = pytest.mark.mailworld

# A sender of our own, unique per run, so our greylisting triplets never collide with
# the ones the verifier tests create with probe@vec.test.
SENDER = f"mw-{uuid.uuid4().hex[:12]}@vec.test"

MAIN, GREYLIST, GREYHARD = "127.0.0.2", "127.0.0.3", "127.0.0.4"
TARPIT, BLACKHOLE, CLOSED, SLOW, LIMIT = "127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8", "127.0.0.9"

# domain -> list of (preference, exchange, address of exchange or None)
MX = {
    "example.test": [(10, "mx.example.test.", MAIN)],
    "catchall.test": [(10, "mx.catchall.test.", MAIN)],
    "spamblock.test": [(10, "mx.spamblock.test.", MAIN)],
    "greylist.test": [(10, "mx.greylist.test.", GREYLIST)],
    "greyhard.test": [(10, "mx.greyhard.test.", GREYHARD)],
    "slow.test": [(10, "mx.slow.test.", SLOW)],
    "limit.test": [(10, "mx.limit.test.", LIMIT)],
    "tarpit.test": [(10, "mx.tarpit.test.", TARPIT)],
    "blackhole.test": [(10, "mx.blackhole.test.", BLACKHOLE)],
    "closed.test": [(10, "mx.closed.test.", CLOSED)],
    "failover.test": [(10, "mx1.failover.test.", CLOSED), (20, "mx2.failover.test.", MAIN)],
    "noaddr.test": [(10, "ghost.noaddr.test.", None), (20, "mx2.noaddr.test.", MAIN)],
}


@pytest.fixture(scope="module")
def resolver(mailworld):
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = [mailworld.dns_host]
    r.port = mailworld.dns_port
    r.timeout = 1.0
    r.lifetime = 2.0
    return r


def smtp(host: str, sender: str = SENDER, timeout: float = 10) -> smtplib.SMTP:
    s = smtplib.SMTP(host, 25, local_hostname="vec.test", timeout=timeout)
    code, _ = s.ehlo()
    assert code == 250
    code, msg = s.mail(sender)
    assert code == 250, msg
    return s


def close(s: smtplib.SMTP) -> None:
    try:
        s.quit()
    except (smtplib.SMTPException, OSError):
        s.close()


# ---------------------------------------------------------------------------- fixture

def test_fixture_object(mailworld):
    assert mailworld.dns_server == "127.0.0.1:5300"
    assert mailworld.dead_dns_server == "127.0.0.1:5301"
    assert mailworld.smtp_port == 25
    assert mailworld.state_dir.is_dir()
    assert callable(mailworld.stop_dns) and callable(mailworld.start_dns)
    assert mailworld.env() == {
        "VEC_DNS_SERVERS": "127.0.0.1:5300",
        "VEC_SMTP_PORT": "25",
        "VEC_HELO_NAME": "vec.test",
        "VEC_MAIL_FROM": "probe@vec.test",
    }


def test_under_pytest_xdist_the_worlds_tests_share_one_worker(mailworld, request):
    """scripts/test runs pytest -n 4 --dist loadgroup: the world binds fixed ports, so its
    tests must all be one group (tests/conftest.py). pytest-xdist marks a grouped test by
    its node id's `@group` suffix; when a pytest release broke that, the groups silently
    vanished and four workers fought over the ports."""
    if not request.config.getoption("loadgroup", default=False):
        pytest.skip("not run by pytest-xdist with --dist loadgroup")
    assert request.node.nodeid.endswith("@mailworld"), request.node.nodeid


# ---------------------------------------------------------------------------- DNS

@pytest.mark.parametrize("domain", sorted(MX))
def test_mx_records(resolver, domain):
    answer = resolver.resolve(domain, "MX")
    got = sorted((r.preference, r.exchange.to_text()) for r in answer)
    assert got == [(pref, exch) for pref, exch, _ in MX[domain]]
    for _, exch, addr in MX[domain]:
        if addr is None:
            with pytest.raises(dns.resolver.NXDOMAIN):
                resolver.resolve(exch, "A")
        else:
            assert [r.address for r in resolver.resolve(exch, "A")] == [addr]
        with pytest.raises((dns.resolver.NoAnswer, dns.resolver.NXDOMAIN)):
            resolver.resolve(exch, "AAAA")


def test_null_mx(resolver):
    answer = resolver.resolve("nullmx.test", "MX")
    assert [(r.preference, r.exchange.to_text()) for r in answer] == [(0, ".")]


def test_a_only_domain(resolver):
    with pytest.raises(dns.resolver.NoAnswer):
        resolver.resolve("amx.test", "MX")
    assert [r.address for r in resolver.resolve("amx.test", "A")] == [MAIN]


@pytest.mark.parametrize("name", ["nx.test", "unlisted-7f3a9c21.test", "a.b.nx.test"])  # fixed: xdist workers must collect the same tests
@pytest.mark.parametrize("rtype", ["MX", "A"])
def test_nxdomain(resolver, name, rtype):
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve(name, rtype)


def test_dns_over_tcp(mailworld):
    q = dns.message.make_query("example.test", "MX")
    r = dns.query.tcp(q, mailworld.dns_host, port=mailworld.dns_port, timeout=2)
    assert r.rcode() == dns.rcode.NOERROR
    assert "mx.example.test." in r.answer[0].to_text()


def test_servfail_domain_fails(resolver):
    t0 = time.monotonic()
    with pytest.raises((dns.resolver.LifetimeTimeout, dns.resolver.NoNameservers)):
        resolver.resolve("servfail.test", "MX", lifetime=1.5)
    assert time.monotonic() - t0 < 5


def test_dead_dns_never_answers(mailworld):
    host, port = mailworld.dead_dns_server.rsplit(":", 1)
    q = dns.message.make_query("example.test", "MX")
    with pytest.raises(dns.exception.Timeout):
        dns.query.udp(q, host, port=int(port), timeout=0.5)
    with pytest.raises(dns.exception.Timeout):
        dns.query.tcp(q, host, port=int(port), timeout=0.5)


# ---------------------------------------------------------------------------- SMTP, main

def test_banner_and_not_a_relay(mailworld):
    s = smtplib.SMTP(MAIN, 25, local_hostname="vec.test", timeout=10)
    try:
        code, _ = s.ehlo()
        assert code == 250
        s.mail(SENDER)
        # 127.0.0.1 is not in mynetworks: relaying to a foreign domain is refused.
        code, msg = s.rcpt("someone@elsewhere.test")
        assert code == 554 and b"Relay access denied" in msg
    finally:
        close(s)


def test_example_valid_users(mailworld):
    s = smtp(MAIN)
    try:
        for user in ["alice", "bob", "carol", "dave", "erin", "frank", "info", "postmaster"]:
            code, msg = s.rcpt(f"{user}@example.test")
            assert code == 250, (user, msg)
    finally:
        close(s)


def test_example_unknown_full_disabled(mailworld):
    s = smtp(MAIN)
    try:
        code, msg = s.rcpt("nobody-here@example.test")
        assert code == 550 and msg.startswith(b"5.1.1 ") and b"User unknown" in msg, msg
        code, msg = s.rcpt("full@example.test")
        assert code == 552 and msg.startswith(b"5.2.2 ") and b"Mailbox full" in msg, msg
        code, msg = s.rcpt("disabled@example.test")
        assert code == 550 and msg.startswith(b"5.2.1 "), msg
        assert b"The email account that you tried to reach is disabled" in msg
    finally:
        close(s)


def test_spamblock(mailworld):
    s = smtp(MAIN)
    try:
        for user in ["alice", "postmaster", "nobody"]:
            code, msg = s.rcpt(f"{user}@spamblock.test")
            assert code == 554 and msg.startswith(b"5.7.1 "), msg
            assert b"Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org" in msg
    finally:
        close(s)


def test_catchall(mailworld):
    s = smtp(MAIN)
    try:
        for local in ["alice", "postmaster", f"random-{uuid.uuid4().hex[:10]}", "x.y+tag"]:
            code, msg = s.rcpt(f"{local}@catchall.test")
            assert code == 250, (local, msg)
    finally:
        close(s)


@pytest.mark.parametrize("domain", ["failover.test", "noaddr.test", "amx.test"])
def test_alice_only_domains(mailworld, domain):
    s = smtp(MAIN)
    try:
        assert s.rcpt(f"alice@{domain}")[0] == 250
        code, msg = s.rcpt(f"bob@{domain}")
        assert code == 550 and msg.startswith(b"5.1.1 "), msg
    finally:
        close(s)


def test_error_limit_drops_session(mailworld):
    """Postfix defaults: soft limit 10 (then 1 s per reply), hard limit 20 -> 421."""
    s = smtp(MAIN)
    try:
        for i in range(20):
            code, msg = s.rcpt(f"bad{i}@example.test")
            assert code == 550, (i, msg)
        code, msg = s.rcpt("bad20@example.test")
        assert code == 421 and msg.startswith(b"4.7.0 ") and b"too many errors" in msg, msg
    finally:
        close(s)


# ---------------------------------------------------------------------------- greylisting

def test_greylisting(mailworld):
    sender = f"grey-{uuid.uuid4().hex[:12]}@vec.test"
    s = smtp(GREYLIST, sender)
    try:
        t_first = time.monotonic()
        for rcpt in ["alice@greylist.test", "bob@greylist.test", "stranger@greylist.test"]:
            code, msg = s.rcpt(rcpt)
            assert code == 450 and msg.startswith(b"4.2.0 ") and b"Greylisted" in msg, (rcpt, msg)
        # still greylisted when retried at once
        assert s.rcpt("alice@greylist.test")[0] == 450
    finally:
        close(s)

    h = smtp(GREYHARD, sender)
    try:
        code, msg = h.rcpt("alice@greyhard.test")
        assert code == 450 and msg.startswith(b"4.2.0 ") and b"Greylisted" in msg, msg
    finally:
        close(h)

    time.sleep(max(0.0, t_first + 2.5 - time.monotonic()))

    s = smtp(GREYLIST, sender)
    try:
        assert s.rcpt("alice@greylist.test") == (250, b"2.1.5 Ok")
        assert s.rcpt("bob@greylist.test")[0] == 250
        code, msg = s.rcpt("stranger@greylist.test")
        assert code == 550 and msg.startswith(b"5.1.1 "), msg
        # a new triplet (another sender) is greylisted again
    finally:
        close(s)
    s = smtp(GREYLIST, f"other-{uuid.uuid4().hex[:12]}@vec.test")
    try:
        assert s.rcpt("alice@greylist.test")[0] == 450
    finally:
        close(s)

    h = smtp(GREYHARD, sender)
    try:
        for rcpt in ["alice@greyhard.test", "bob@greyhard.test", "stranger@greyhard.test"]:
            code, msg = h.rcpt(rcpt)
            assert code == 450 and msg.startswith(b"4.2.0 "), (rcpt, msg)
    finally:
        close(h)


# ---------------------------------------------------------------------------- slow, limit

def test_slow_listener(mailworld):
    s = smtp(SLOW)
    try:
        for rcpt, want in [("alice@slow.test", 250), ("u999@slow.test", 250), ("nobody@slow.test", 550)]:
            t0 = time.monotonic()
            code, msg = s.rcpt(rcpt)
            took = time.monotonic() - t0
            assert code == want, (rcpt, msg)
            assert took >= 1.0, (rcpt, took)
    finally:
        close(s)


def test_recipient_limit(mailworld):
    s = smtp(LIMIT)
    try:
        for i in range(3):
            assert s.rcpt(f"u{i}@limit.test")[0] == 250
        code, msg = s.rcpt("u3@limit.test")
        assert code == 452 and msg == b"4.5.3 Error: too many recipients", msg
        # a new transaction starts counting again
        assert s.rset()[0] == 250
        assert s.mail(SENDER)[0] == 250
        assert s.rcpt("u99@limit.test")[0] == 250
        code, msg = s.rcpt("u100@limit.test")
        assert code == 550 and msg.startswith(b"5.1.1 "), msg
    finally:
        close(s)


# ---------------------------------------------------------------------------- broken hosts

def test_tarpit_sends_no_banner(mailworld):
    with socket.create_connection((TARPIT, 25), timeout=2) as sock:
        sock.settimeout(2.0)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            sock.recv(1024)
        assert time.monotonic() - t0 >= 1.9


def test_blackhole_connect_times_out(mailworld):
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        socket.create_connection((BLACKHOLE, 25), timeout=2.0).close()
    assert 1.9 <= time.monotonic() - t0 < 10  # our 2 s timeout ended it (a generous margin above)


def test_blackhole_stays_full_after_timeouts(mailworld):
    """A second attempt right after a timed-out one must time out too."""
    for _ in range(2):
        with pytest.raises(TimeoutError):
            socket.create_connection((BLACKHOLE, 25), timeout=0.5).close()


# ---------------------------------------------------------------------------- resolver outage

def _status(mw) -> tuple[int, dict[str, str]]:
    from tests.mailworld import SCRIPT

    r = subprocess.run([str(SCRIPT), "status", str(mw.state_dir)], capture_output=True, text=True,
                       timeout=30)
    return r.returncode, dict(line.split() for line in r.stdout.splitlines() if line.strip())


def test_dns_stop_and_start(mailworld, resolver):
    """dnsmasq alone stops (status says so, nothing answers on 5300, the rest of the
    world runs on) and starts again with the same data."""
    assert _status(mailworld) == (0, {k: "running" for k in
                                      ("dnsmasq", "sockets", "postgrey-fast", "postgrey-hard", "postfix")})
    with mailworld.dns_stopped():
        code, st = _status(mailworld)
        assert code == 1 and st["dnsmasq"] == "stopped" and st["postfix"] == "running"
        q = dns.message.make_query("example.test", "MX")
        with pytest.raises((dns.exception.Timeout, OSError)):
            dns.query.udp(q, mailworld.dns_host, port=mailworld.dns_port, timeout=0.5)
        with pytest.raises(OSError):
            dns.query.tcp(q, mailworld.dns_host, port=mailworld.dns_port, timeout=0.5)
        s = smtp(MAIN)  # SMTP is untouched
        close(s)
        mailworld.stop_dns()  # stopping twice is harmless
    assert _status(mailworld)[0] == 0
    assert [r.address for r in resolver.resolve("mx.example.test", "A")] == [MAIN]
    mailworld.start_dns()  # starting a running DNS is harmless
    assert _status(mailworld)[0] == 0


def test_dns_stopped_restarts_even_when_the_body_fails(mailworld, resolver):
    with pytest.raises(RuntimeError):
        with mailworld.dns_stopped():
            raise RuntimeError("boom")
    assert [r.address for r in resolver.resolve("mx.example.test", "A")] == [MAIN]


def test_closed_refuses(mailworld):
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((CLOSED, 25), timeout=2).close()

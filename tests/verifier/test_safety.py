"""Nothing unsafe reaches an SMTP server: no CR, LF or NUL from an address, a HELO name
or a MAIL FROM is ever sent, and over-long addresses never leave the syntax check.
Every test's fake server records each byte it receives."""
from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from verifier.config import VerifierSettings
from verifier.prober import SmtpProber
from verifier.smtp import UnsafeCommand, check_argument, open_session
from verifier.syntax import SyntaxResult, check_syntax, length_error

from .fakes import FakeSMTP, forbidden_bytes, postfix_like
from .test_prober import A, World

pytestmark = pytest.mark.timeout(60)

INJECTIONS = [
    "x\r\nRCPT TO:<victim@a.test>",
    "x\nRCPT TO:<victim@a.test>",
    "x\rRCPT TO:<victim@a.test>",
    "x\x00RCPT TO:<victim@a.test>",
]


def assert_clean(srv: FakeSMTP) -> None:
    assert forbidden_bytes(bytes(srv.received)) == []
    assert b"victim" not in srv.received


# ----------------------------------------------------------------------- settings

@pytest.mark.parametrize("field", ["helo_name", "fallback_helo_name"])
@pytest.mark.parametrize("value", ["vec.test\r\nRSET", "vec.test\n", "vec\x00.test", "vec test",
                                   "vëc.test", "a" * 256])
def test_helo_names_are_validated(field, value):
    with pytest.raises(ValidationError, match=field):
        VerifierSettings(**{field: value})


def test_empty_helo_names():
    with pytest.raises(ValidationError, match="helo_name must not be empty"):
        VerifierSettings(helo_name="")
    assert VerifierSettings(fallback_helo_name="").fallback_helo_name is None  # use helo_name


@pytest.mark.parametrize("field", ["mail_from", "fallback_mail_from"])
@pytest.mark.parametrize("value", ["probe@vec.test\r\nRCPT TO:<v@x.test>", "probe@vec.test\n",
                                   "probe\x00@vec.test", "pro be@vec.test", "prøbe@vec.test",
                                   "a" * 250 + "@x.test", "probe", "<probe@vec.test>", "a@b@c"])
def test_senders_are_validated(field, value):
    with pytest.raises(ValidationError, match=field):
        VerifierSettings(**{field: value})


def test_good_identities_pass():
    s = VerifierSettings(helo_name="a" * 255, mail_from="", fallback_helo_name="fb.vec.test",
                         fallback_mail_from="p@vec.test")
    assert s.mail_from == "" and len(s.helo_name) == 255
    assert VerifierSettings(mail_from="a" * 64 + "@" + "b" * 60 + ".test").mail_from


@pytest.mark.parametrize("kw", [{"helo_name": "x\r\nRSET"}, {"mail_from": "p@x\r\n"},
                                {"mail_from": "p@x\x00"}])
def test_prober_refuses_an_unsafe_identity(kw):
    with pytest.raises(ValueError):
        SmtpProber(VerifierSettings(dns_servers="127.0.0.1:9"), **kw)


# ----------------------------------------------------------------------- the last line

@pytest.mark.parametrize("value", [b"a\rb", b"a\nb", b"a\x00b", b"\r\n"])
def test_check_argument(value):
    with pytest.raises(UnsafeCommand):
        check_argument("x", value)
    assert check_argument("x", b"alice@a.test") == b"alice@a.test"


def test_session_refuses_unsafe_arguments_and_sends_nothing():
    async def main():
        async with World() as w:
            srv = w.servers[A]
            kw = dict(label="t", source_address=None, connect_timeout=1, banner_timeout=1,
                      command_timeout=1)
            for helo, sender in (("vec.test\r\nRCPT TO:<victim@a.test>", "p@vec.test"),
                                 ("vec.test", "p@vec.test\r\nRCPT TO:<victim@a.test>"),
                                 ("vec.test", "p@vec.test\x00victim")):
                with pytest.raises(UnsafeCommand):
                    await open_session(A, w.port, helo_name=helo, mail_from=sender, **kw)
            assert srv.sessions == []  # refused before connecting
            sess = await open_session(A, w.port, helo_name="vec.test", mail_from="p@vec.test", **kw)
            for bad in INJECTIONS:
                with pytest.raises(UnsafeCommand):
                    await sess.rcpt(bad + "@a.test", False, 1)
            reply = await sess.rcpt("alice@a.test", False, 1)  # the session is still clean
            await sess.quit(1)
            await asyncio.sleep(0.05)
            return srv, reply
    srv, reply = asyncio.run(main())
    assert reply.code == 250
    assert [rc for s in srv.sessions for rc, _ in s.rcpts] == ["alice@a.test"]
    assert_clean(srv)


@pytest.mark.parametrize("local", INJECTIONS)
def test_an_unsafe_address_that_slipped_through_is_never_sent(monkeypatch, local):
    """Even if the syntax check let one through, the address ends unknown
    provider_error, unsent; the other addresses of the session are unaffected."""
    import verifier.prober as prober_mod

    real = prober_mod.check_syntax

    def lax(address, **kw):
        if address.startswith("evil"):
            return SyntaxResult(address, True, normalized=address, local_part=local,
                                domain="a.test", ascii_domain="a.test")
        return real(address, **kw)
    monkeypatch.setattr(prober_mod, "check_syntax", lax)

    async def main():
        async with World() as w:
            got = await w.prober().verify(["alice@a.test", "evil@a.test", "bob@a.test"])
            await asyncio.sleep(0.05)
            return w.servers[A], got
    srv, res = asyncio.run(main())
    assert [(r.status, r.reason) for r in res] == [("safe", None), ("unknown", "provider_error"),
                                                   ("safe", None)]
    assert "not sent" in res[1].detail
    assert_clean(srv)


# ----------------------------------------------------------------------- lengths

def _domain(octets: int, tld: str = "test") -> str:
    """A domain of exactly ``octets`` octets, labels of at most 63."""
    labels, remaining = [], octets - len(tld) - 1
    while remaining > 0:
        n = min(63, remaining)
        if remaining - n == 1:  # no empty label at the end
            n -= 1
        labels.append("d" * n)
        remaining -= n + 1
    d = ".".join(labels + [tld])
    assert len(d) == octets
    return d


@pytest.mark.parametrize("local,ok", [
    ("a" * 64, True), ("a" * 65, False),
    ("é" * 32, True),  # 64 octets
    ("é" * 32 + "a", False),  # 33 characters, 65 octets: email-validator alone lets it pass
    ("用" * 21 + "a", True),  # 64 octets
    ("用" * 22, False),  # 66 octets
])
def test_local_part_octets(local, ok):
    r = check_syntax(f"{local}@example.com")
    assert r.ok is ok, r.error
    if not ok:
        assert "local part" in r.error or "before the @-sign" in r.error


@pytest.mark.parametrize("label,ok", [(63, True), (64, False)])
def test_label_length(label, ok):
    assert check_syntax(f"a@{'b' * label}.com").ok is ok


@pytest.mark.parametrize("total,ok", [(254, True), (255, False)])
def test_address_octets(total, ok):
    domain = _domain(total - 2, "com")
    r = check_syntax(f"a@{domain}")
    assert len(f"a@{domain}") == total
    assert r.ok is ok, r.error


def test_idn_domain_counted_in_its_ascii_form():
    """233 UTF-8 octets, but 258 once in IDNA form (what DNS and SMTP see): refused."""
    label = ("aαbбcξdжeшfщgэhюiяjλkμlπ" * 2)[:30]
    domain = ".".join([label] * 5) + ".com"
    assert len(domain.encode()) == 233
    r = check_syntax(f"a@{domain}")
    assert not r.ok
    shorter = ".".join([label] * 4) + ".com"  # 208 octets in IDNA form
    assert check_syntax(f"a@{shorter}").ok


def test_length_error_boundaries():
    assert length_error("a" * 64, "x.com") is None
    assert "local part is 65 octets" in length_error("a" * 65, "x.com")
    assert "local part is 66 octets" in length_error("é" * 33, "x.com")
    assert length_error("a", _domain(252, "com")) is None
    assert "domain is 254 octets" in length_error("a", _domain(254, "com"))
    assert "label is 64 octets" in length_error("a", "b" * 64 + ".com")
    assert length_error("a", _domain(251, "com")) is None  # 1 + 1 + 251 = 253
    assert "address is 255 octets" in length_error("a" * 64, _domain(190, "com"))
    assert length_error("a" * 64, _domain(189, "com")) is None  # exactly 254


def test_over_long_addresses_never_reach_dns_or_smtp():
    addrs = ["a" * 65 + "@a.test", "é" * 33 + "@a.test", "a@" + "b" * 64 + ".test",
             "a@" + _domain(253), "x@" + _domain(253)]

    async def main():
        async with World() as w:
            res = await w.prober().verify(addrs)
            return w, res
    w, res = asyncio.run(main())
    assert [(r.status, r.reason) for r in res] == [("invalid", "syntax")] * len(addrs)
    assert w.dns.queries == []
    assert not any(srv.sessions for srv in w.servers.values())


def test_longest_valid_address_is_probed():
    local = "u" * 64

    async def main():
        async with World() as w:
            w.servers[A].respond = postfix_like({local})
            res = await w.prober().verify([f"{local}@a.test"])
            return w.servers[A], res[0]
    srv, r = asyncio.run(main())
    assert r.status == "safe"
    assert_clean(srv)

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from verifier.lists import is_disposable, is_role
from verifier.syntax import check_syntax


@pytest.mark.parametrize("address,normalized,ascii_domain,smtputf8", [
    ("alice@example.com", "alice@example.com", "example.com", False),
    ("Alice@EXAMPLE.com", "Alice@example.com", "example.com", False),  # local part keeps case
    ("first.last+tag@sub.example.co.uk", "first.last+tag@sub.example.co.uk", "sub.example.co.uk", False),
    ("jörg@exämple.com", "jörg@exämple.com", "xn--exmple-cua.com", True),
    ("user@xn--exmple-cua.com", "user@exämple.com", "xn--exmple-cua.com", False),
    ("用户@例子.广告", "用户@例子.广告", "xn--fsqu00a.xn--4rr70v", True),
    ("POSTMASTER@example.com", "postmaster@example.com", "example.com", False),  # RFC 2142
])
def test_valid(address, normalized, ascii_domain, smtputf8):
    r = check_syntax(address)
    assert r.ok, r.error
    assert r.normalized == normalized
    assert r.ascii_domain == ascii_domain
    assert r.smtputf8 is smtputf8
    assert r.rcpt.endswith("@" + ascii_domain)


@pytest.mark.parametrize("address", [
    "",
    "plainaddress",
    "@example.com",
    "alice@",
    "alice@@example.com",
    "alice@example",  # no dot
    "alice..bob@example.com",
    ".alice@example.com",
    "alice@-example.com",
    "alice@exa_mple.com",
    "alice @example.com",
    " alice@example.com",
    "alice@example.com ",
    "alice\r\n@example.com",
    "alice@example.com\r\nRCPT TO:<victim@example.com>",
    "alice\n@example.com",
    "alice\x00@example.com",
    "alice\t@example.com",
    "ali\u2028ce@example.com",
    '"alice bob"@example.com',  # quoted local parts are not accepted
    "Alice <alice@example.com>",  # display names neither
    "alice@[127.0.0.1]",  # nor domain literals
    "a" * 65 + "@example.com",  # local part over 64
    "a@" + "b" * 250 + ".com",  # over 254
    "x@" + ".".join(["a" * 60] * 5) + ".com",  # 254+ in total
    "alice@localhost",
    "alice@example.invalid",
    "alice@example.test",  # special use, unless allow_test_domains
])
def test_invalid(address):
    r = check_syntax(address)
    assert not r.ok
    assert r.error
    assert r.normalized is None


def test_length_limit_is_254():
    local = "a" * 64
    domain_len = 254 - 65
    labels = []
    remaining = domain_len - 4  # ".com"
    while remaining > 0:
        n = min(63, remaining)
        if remaining - n == 1:  # avoid a trailing empty label
            n -= 1
        labels.append("b" * n)
        remaining -= n + 1
    domain = ".".join(labels) + ".com"
    addr = f"{local}@{domain}"
    assert len(addr) <= 254
    assert check_syntax(addr).ok
    assert not check_syntax("a" + addr).ok


def test_test_domains_only_when_allowed():
    assert not check_syntax("alice@example.test").ok
    r = check_syntax("alice@example.test", allow_test_domains=True)
    assert r.ok and r.ascii_domain == "example.test"
    assert not check_syntax("alice@localhost", allow_test_domains=True).ok


@given(st.text(max_size=80))
def test_never_raises_and_never_lets_controls_through(s):
    r = check_syntax(s)
    if r.ok:
        assert not any(c in s for c in "\r\n\x00 \t")
        assert len(s) <= 254
        assert r.rcpt.count("@") == 1


@given(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=20),
    st.sampled_from(["\r", "\n", "\x00", " ", "\t", "\r\n"]),
    st.integers(min_value=0, max_value=20),
)
def test_injection_characters_always_invalid(local, bad, pos):
    pos = min(pos, len(local))
    assert not check_syntax(local[:pos] + bad + local[pos:] + "@example.com").ok


@pytest.mark.parametrize("local,expected", [
    ("info", True), ("INFO", True), ("sales+eu", True), ("postmaster", True), ("noreply", True),
    ("alice", False), ("information", False), ("bob.sales", False),
])
def test_role(local, expected):
    assert is_role(local) is expected


def test_disposable():
    assert is_disposable("mailinator.com")
    assert is_disposable("MAILINATOR.COM")
    assert is_disposable("sub.mailinator.com")  # sub-domains of a disposable domain
    assert not is_disposable("example.com")
    assert not is_disposable("gmail.com")
    assert not is_disposable("com")


_LOCAL = st.text(alphabet=st.sampled_from(list("abcXYZ019.+-_'!#é用\"@ ") + ["ß", "Å", "\u0301"]), max_size=70)
_DOMAIN = st.one_of(
    st.sampled_from(["example.com", "EXAMPLE.com", "exämple.com", "xn--exmple-cua.com", "example.test",
                     "例子.广告", "a-b.co", "-bad.com", "bad_.com", "localhost", "x" * 70 + ".com",
                     ".".join(["d" * 63] * 3) + ".com", "[127.0.0.1]", "a.b", "a..b.com", "com"]),
    st.text(alphabet=st.sampled_from(list("abc.-é1")), max_size=30),
)


@given(_LOCAL, _DOMAIN, st.booleans())
def test_cached_path_equals_full_validation(local, domain, allow_test):
    from verifier.syntax import check_syntax_uncached

    address = f"{local}@{domain}"
    assert check_syntax(address, allow_test_domains=allow_test) == \
        check_syntax_uncached(address, allow_test_domains=allow_test)

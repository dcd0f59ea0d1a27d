from __future__ import annotations

import pytest
from pydantic import ValidationError

from verifier import build_provider
from verifier.config import VerifierSettings, parse_hostport
from verifier.prober import SmtpProber
from verifier.provider import HttpApiProvider, TieredProvider


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    import os

    for k in list(os.environ):
        if k.startswith("VEC_"):
            monkeypatch.delenv(k)


def test_defaults():
    s = VerifierSettings()
    assert s.smtp_port == 25
    assert s.address_deadline == 15.0
    assert s.connect_timeout_s == s.banner_timeout_s == s.command_timeout_s == s.smtp_timeout
    assert s.nameservers == []
    assert s.fallback_tier == "none"
    assert s.primary_deadline == s.address_deadline
    assert (s.dns_canary, s.unreachable_hosts, s.unreachable_domains) == (".", 10, 5)
    assert "connection_refused" in s.fallback_reasons  # was reported as smtp_timeout before


def test_unknown_reasons():
    from verifier.config import UNKNOWN_REASONS

    assert {"connection_refused", "policy", "smtp_timeout", "dns_failure"} <= set(UNKNOWN_REASONS)
    assert VerifierSettings(fallback_on="connection_refused,policy").fallback_reasons == {
        "connection_refused", "policy"}


def test_health_settings(monkeypatch):
    monkeypatch.setenv("VEC_DNS_CANARY", "example.com")
    monkeypatch.setenv("VEC_UNREACHABLE_HOSTS", "3")
    monkeypatch.setenv("VEC_UNREACHABLE_DOMAINS", "2")
    s = VerifierSettings()
    assert (s.dns_canary, s.unreachable_hosts, s.unreachable_domains) == ("example.com", 3, 2)
    for bad in ({"unreachable_hosts": 0}, {"unreachable_domains": 0}, {"dns_canary": "a..b"}):
        with pytest.raises(ValidationError):
            VerifierSettings(**bad)


def test_environment(monkeypatch):
    env = {
        "VEC_DNS_SERVERS": "127.0.0.1:5300, 127.0.0.53,[::1]:5353",
        "VEC_SMTP_PORT": "2525",
        "VEC_SMTP_TIMEOUT": "2.5",
        "VEC_CONNECT_TIMEOUT": "1",
        "VEC_RETRY_WINDOW": "6",
        "VEC_HELO_NAME": "vec.test",
        "VEC_MAIL_FROM": "probe@vec.test",
        "VEC_MAX_CONCURRENCY": "7",
        "VEC_PER_MX_CONCURRENCY": "3",
        "VEC_ADDRESS_DEADLINE": "12",
        "VEC_FALLBACK_TIER": "smtp",
        "VEC_FALLBACK_SOURCE_ADDRESS": "127.0.0.10",
        "VEC_FALLBACK_DEADLINE": "4",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = VerifierSettings()
    assert s.nameservers == [("127.0.0.1", 5300), ("127.0.0.53", 53), ("::1", 5353)]
    assert s.smtp_port == 2525
    assert s.connect_timeout_s == 1.0 and s.banner_timeout_s == 2.5 and s.command_timeout_s == 2.5
    assert s.retry_window == 6.0
    assert (s.helo_name, s.mail_from) == ("vec.test", "probe@vec.test")
    assert (s.max_concurrency, s.per_mx_concurrency) == (7, 3)
    assert s.primary_deadline == 8.0
    p = build_provider(s)
    assert isinstance(p, TieredProvider)
    assert isinstance(p.fallback, SmtpProber)
    assert p.fallback.source_address == "127.0.0.10"
    assert p.fallback.tier == "smtp-fallback"
    assert p.fallback.deadline == 4.0
    assert p.primary.deadline == 8.0


def test_toml_file(tmp_path, monkeypatch):
    f = tmp_path / "v.toml"
    f.write_text('[verifier]\ndns_servers = "127.0.0.1:5300"\nsmtp_port = 2526\nhelo_name = "file.test"\n')
    monkeypatch.setenv("VEC_VERIFIER_CONFIG", str(f))
    monkeypatch.setenv("VEC_HELO_NAME", "env.test")  # the environment wins over the file
    s = VerifierSettings()
    assert s.smtp_port == 2526
    assert s.helo_name == "env.test"
    assert s.nameservers == [("127.0.0.1", 5300)]


@pytest.mark.parametrize("spec,expected", [
    ("127.0.0.1", ("127.0.0.1", 53)),
    ("127.0.0.1:5300", ("127.0.0.1", 5300)),
    ("::1", ("::1", 53)),
    ("[::1]:5300", ("::1", 5300)),
])
def test_parse_hostport(spec, expected):
    assert parse_hostport(spec, 53) == expected


@pytest.mark.parametrize("spec", ["dns.google", "localhost:53", "127.0.0.1:0", "[::1", ""])
def test_parse_hostport_rejects(spec):
    with pytest.raises(ValueError):
        parse_hostport(spec, 53)


def test_bad_values():
    with pytest.raises(ValidationError):
        VerifierSettings(dns_servers="resolver.example:53")
    with pytest.raises(ValidationError):
        VerifierSettings(fallback_on="greylisted,bogus")
    with pytest.raises(ValidationError):
        VerifierSettings(fallback_tier="http")  # needs a URL
    with pytest.raises(ValidationError):
        VerifierSettings(fallback_tier="smtp", fallback_deadline=20)


def test_loopback_only_guards():
    with pytest.raises(ValueError):
        build_provider(VerifierSettings(loopback_only=True))  # would use the system resolver
    with pytest.raises(ValueError):
        build_provider(VerifierSettings(loopback_only=True, dns_servers="192.0.2.1"))
    with pytest.raises(ValueError):
        build_provider(VerifierSettings(loopback_only=True, dns_servers="127.0.0.1:5300",
                                        source_address="192.0.2.1"))
    with pytest.raises(ValueError):
        build_provider(VerifierSettings(loopback_only=True, dns_servers="127.0.0.1:5300",
                                        fallback_tier="http", fallback_url="http://192.0.2.1/v"))
    p = build_provider(VerifierSettings(loopback_only=True, dns_servers="127.0.0.1:5300",
                                        fallback_tier="http", fallback_url="http://127.0.0.1:9/v"))
    assert isinstance(p, TieredProvider) and isinstance(p.fallback, HttpApiProvider)
    assert isinstance(build_provider(VerifierSettings(dns_servers="127.0.0.1:5300")), SmtpProber)

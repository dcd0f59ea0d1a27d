"""Verifier configuration: environment variables with the prefix ``VEC_``, or a TOML file.

Precedence (highest first): keyword arguments, environment (``VEC_*``), the TOML file named
by ``VEC_VERIFIER_CONFIG`` (keys are the field names below, optionally under a
``[verifier]`` table), then the defaults.

Every timeout is in seconds. ``VEC_SMTP_TIMEOUT`` is the default for each SMTP stage
(connect, banner, command); each stage can be overridden on its own.
"""
from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import dns.name
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

if TYPE_CHECKING:
    from .routes import Route

UNKNOWN_REASONS = (
    "smtp_timeout",  # connect, greeting or command timed out
    "connection_refused",  # every MX host tried refused the TCP connection
    "greylisted",
    "antispam_block",
    "temporary_failure",
    "dns_failure",
    "policy",  # our own rules refused to probe (e.g. the egress guard)
    "provider_error",
)

# Longest values sent to a server: a domain name (RFC 5321 4.5.3.1.2) and a path.
MAX_HELO_LENGTH = 255
MAX_MAIL_FROM_LENGTH = 254


def smtp_argument_error(value: str, what: str, max_length: int) -> str | None:
    """Why ``value`` cannot be sent as an SMTP command argument, or None when it can.

    Refuses control characters (CR, LF, NUL...: they would end the command and start
    another), white space, non-ASCII and over-long values."""
    bad = next((c for c in value if ord(c) < 0x21 or ord(c) > 0x7E), None)
    if bad is not None:
        return f"{what} must be printable ASCII without spaces; found U+{ord(bad):04X}"
    if len(value) > max_length:
        return f"{what} is {len(value)} characters long, at most {max_length} allowed"
    return None


def parse_hostport(spec: str, default_port: int) -> tuple[str, int]:
    """Parse ``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 literal.

    The host must be an IP literal: resolving a DNS server's own name would need the
    system resolver, which the verifier never uses when servers are configured.
    """
    spec = spec.strip()
    if not spec:
        raise ValueError("empty DNS server")
    port = default_port
    if spec.startswith("["):
        host, sep, rest = spec[1:].partition("]")
        if not sep:
            raise ValueError(f"bad DNS server {spec!r}")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"bad DNS server {spec!r}")
            port = int(rest[1:])
    elif spec.count(":") == 1:
        host, _, p = spec.partition(":")
        port = int(p)
    else:
        host = spec
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"DNS server must be an IP address, got {host!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"bad port in {spec!r}")
    return host, port


class _TomlFileSource(PydanticBaseSettingsSource):
    """Reads the TOML file named by VEC_VERIFIER_CONFIG (or passed as _config_file)."""

    def __init__(self, settings_cls: type[BaseSettings], path: str | None) -> None:
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        if path:
            import tomllib  # only with a configuration file

            with open(Path(path), "rb") as fh:
                data = tomllib.load(fh)
            if isinstance(data.get("verifier"), dict):
                data = data["verifier"]
            fields = settings_cls.model_fields
            self._data = {k: v for k, v in data.items() if k in fields}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class VerifierSettings(BaseSettings):
    # hide_input_in_errors: a validation error must never print the egress pool's secrets
    model_config = SettingsConfigDict(env_prefix="VEC_", extra="ignore", frozen=True,
                                      hide_input_in_errors=True)

    # --- DNS ---------------------------------------------------------------------------
    dns_servers: str = Field(
        "",
        description="host[:port],... of the DNS resolvers (IP literals). Empty: the system "
        "resolver (refused when loopback_only is set).",
    )
    dns_port: int = Field(53, description="port for DNS servers given without one")
    dns_timeout: float = Field(4.0, gt=0, description="total time for one DNS query")
    dns_cache_ttl: float = Field(300.0, ge=0, description="max age of a cached DNS answer")
    dns_concurrency: int = Field(64, ge=1)
    dns_canary: str = Field(
        ".",
        description="name asked (type SOA) to tell a dead resolver from a failing domain: "
        "any answer, whatever its rcode, proves the resolver is up",
    )

    # --- SMTP --------------------------------------------------------------------------
    smtp_port: int = 25
    smtp_timeout: float = Field(6.0, gt=0, description="default timeout of every SMTP stage")
    connect_timeout: float | None = Field(None, gt=0)
    banner_timeout: float | None = Field(None, gt=0)
    command_timeout: float | None = Field(None, gt=0)
    helo_name: str = "localhost.localdomain"
    mail_from: str = "probe@localhost.localdomain"
    source_address: str | None = Field(None, description="local IP to bind for SMTP")
    max_concurrency: int = Field(100, ge=1, description="SMTP sessions open at once, in all")
    per_mx_concurrency: int = Field(5, ge=1, description="SMTP sessions open at once per MX host")
    rcpts_per_session: int = Field(100, ge=1, description="RCPT commands per SMTP session")
    rcpts_per_transaction: int | None = Field(
        20, ge=1, description="RCPT commands per MAIL transaction; then RSET and a new MAIL FROM "
        "in the same session (also when the server says 452 too many recipients). None: "
        "rcpts_per_session")
    pipeline_depth: int = Field(
        10, ge=1, description="RCPTs sent at once where the server offers PIPELINING (RFC 2920), "
        "never more than the session's error budget left; 1: one at a time",
    )
    max_errors_per_session: int = Field(
        7, ge=1, description="rejected RCPTs after which a session is closed (Postfix slows at 10)"
    )
    max_mx_hosts: int = Field(5, ge=1, description="MX hosts tried per domain at most")
    unreachable_hosts: int = Field(
        10, ge=1, description="distinct MX hosts whose TCP connect failed, with nothing coming "
        "back from any server since (no connect, no reply), after which our network is "
        "presumed down (see verifier/health.py)",
    )
    unreachable_domains: int = Field(
        5, ge=1, description="... and the number of distinct domains those hosts must serve",
    )

    # --- egress pool (verifier/routes.py) ------------------------------------------------
    egress_pool: SecretStr = Field(
        SecretStr(""),
        description="NAME=URI,... routes SMTP sessions leave by, in preference order: direct, "
        "direct://SOURCE_IP, socks5://[USER:PASSWORD@]HOST:PORT. Empty: direct from "
        "source_address. A secret: never shown.",
    )
    egress_block_ttl: float = Field(
        3600.0, ge=0, description="how long an egress refused by an MX for its address is not "
        "used for that MX",
    )
    egress_down_ttl: float = Field(
        30.0, ge=0, description="how long an egress whose proxy failed is not used",
    )
    egress_concurrency: int = Field(
        0, ge=0, description="SMTP sessions open at once through one egress, for a route "
        "without its own ?concurrency= (0: no cap of its own)",
    )
    egress_per_mx_concurrency: int = Field(
        0, ge=0, description="SMTP sessions open at once through one egress to one MX host, for "
        "a route without its own ?per_mx= (0: only per_mx_concurrency, shared by every egress)",
    )

    # --- retries, deadlines, caches ----------------------------------------------------
    retry_window: float = Field(10.0, ge=0, description="time during which 4xx answers are retried")
    retry_backoff: float = Field(1.0, gt=0, description="first retry delay; doubles each time")
    retry_backoff_max: float = Field(8.0, gt=0)
    address_deadline: float = Field(15.0, gt=0, description="worst case for one address, all tiers")
    catch_all_cache_ttl: float = Field(3600.0, ge=0)
    host_failure_ttl: float = Field(
        60.0, ge=0, description="how long an MX host that refused/timed out is skipped"
    )

    # --- syntax and safety -------------------------------------------------------------
    allow_test_domains: bool = Field(False, description="accept the special-use .test TLD")
    loopback_only: bool = Field(
        False, description="refuse to resolve through or connect to non-loopback addresses"
    )

    # --- fallback tier -----------------------------------------------------------------
    fallback_tier: Literal["none", "smtp", "http"] = "none"
    fallback_on: str = Field(
        # connection_refused used to be reported as smtp_timeout: it keeps going to the fallback
        "smtp_timeout,connection_refused,antispam_block,temporary_failure,provider_error",
        description="unknown reasons of the primary tier that go to the fallback tier",
    )
    fallback_deadline: float = Field(
        5.0, gt=0, description="share of address_deadline kept for the fallback tier"
    )
    fallback_helo_name: str | None = None
    fallback_mail_from: str | None = None
    fallback_source_address: str | None = None
    fallback_url: str | None = Field(None, description="HTTP verification API (fallback_tier=http)")
    fallback_http_timeout: float = Field(10.0, gt=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = os.environ.get("VEC_VERIFIER_CONFIG")
        return (init_settings, env_settings, _TomlFileSource(settings_cls, path))

    @field_validator("source_address", "fallback_source_address")
    @classmethod
    def _ip_or_none(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        ipaddress.ip_address(v)
        return v

    @field_validator("helo_name", "fallback_helo_name")
    @classmethod
    def _helo(cls, v: str | None, info: Any) -> str | None:
        if v is None or (v == "" and info.field_name == "fallback_helo_name"):
            return None  # the fallback then uses helo_name
        if not v:
            raise ValueError(f"{info.field_name} must not be empty")
        err = smtp_argument_error(v, info.field_name, MAX_HELO_LENGTH)
        if err:
            raise ValueError(err)
        return v

    @field_validator("mail_from", "fallback_mail_from")
    @classmethod
    def _mail_from(cls, v: str | None, info: Any) -> str | None:
        if v is None or v == "":  # "" is the null sender, MAIL FROM:<>
            return v
        err = smtp_argument_error(v, info.field_name, MAX_MAIL_FROM_LENGTH)
        if err:
            raise ValueError(err)
        if v.count("@") != 1 or "<" in v or ">" in v:
            raise ValueError(f"{info.field_name} must be one address local@domain, got {v!r}")
        return v

    @field_validator("dns_canary")
    @classmethod
    def _canary(cls, v: str) -> str:
        try:
            dns.name.from_text(v)
        except Exception as exc:  # noqa: BLE001 - dnspython raises several kinds
            raise ValueError(f"dns_canary is not a DNS name: {exc}") from None
        return v

    @field_validator("fallback_on")
    @classmethod
    def _reasons(cls, v: str) -> str:
        for r in (x.strip() for x in v.split(",")):
            if r and r not in UNKNOWN_REASONS:
                raise ValueError(f"unknown reason {r!r} in fallback_on")
        return v

    @model_validator(mode="after")
    def _check(self) -> "VerifierSettings":
        self.nameservers  # validates the list
        self.egress_routes  # validates the pool (its errors never repeat a secret)
        if self.fallback_tier == "http" and not self.fallback_url:
            raise ValueError("fallback_tier=http needs fallback_url")
        if self.fallback_tier != "none" and self.fallback_deadline >= self.address_deadline:
            raise ValueError("fallback_deadline must be below address_deadline")
        return self

    # --- derived values ----------------------------------------------------------------
    @property
    def nameservers(self) -> list[tuple[str, int]]:
        return [parse_hostport(s, self.dns_port) for s in self.dns_servers.split(",") if s.strip()]

    @property
    def rcpts_per_transaction_n(self) -> int:
        return min(self.rcpts_per_transaction or self.rcpts_per_session, self.rcpts_per_session)

    @property
    def connect_timeout_s(self) -> float:
        return self.connect_timeout or self.smtp_timeout

    @property
    def banner_timeout_s(self) -> float:
        return self.banner_timeout or self.smtp_timeout

    @property
    def command_timeout_s(self) -> float:
        return self.command_timeout or self.smtp_timeout

    @property
    def fallback_reasons(self) -> frozenset[str]:
        return frozenset(r.strip() for r in self.fallback_on.split(",") if r.strip())

    @property
    def primary_deadline(self) -> float:
        """Per-address budget of the primary tier (the fallback keeps its share)."""
        if self.fallback_tier == "none":
            return self.address_deadline
        return self.address_deadline - self.fallback_deadline

    @property
    def egress_routes(self) -> "tuple[Route, ...]":
        """The configured routes (empty: direct from source_address)."""
        from .routes import parse_pool

        return parse_pool(self.egress_pool.get_secret_value())

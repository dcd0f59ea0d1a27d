"""Address syntax and normalisation (email-validator, never a home-made regex).

Pure: no DNS, no network. Anything with CR, LF, NUL (or any other control character),
white space outside the address, or more than 254 characters is refused before the
library even looks at it, so it can never reach a server.

The RFC 5321 limits are counted in octets of what is sent (:func:`length_error`):
email-validator counts the local part in characters, so a 33-character local part
of "é" (66 octets) would pass it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES  # lowered by email-validator

MAX_ADDRESS_LENGTH = 254  # octets of local@domain (RFC 5321 4.5.3.1.3, minus the <>)
MAX_LOCAL_PART_LENGTH = 64  # octets (RFC 5321 4.5.3.1.1)
MAX_DOMAIN_LENGTH = 253  # octets of the IDNA form, without the trailing dot
MAX_LABEL_LENGTH = 63
# C0 controls, DEL, C1 controls, and every Unicode space/line separator.
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\s\u2028\u2029\u200b\ufeff]")


@dataclass(frozen=True)
class SyntaxResult:
    address: str
    ok: bool
    normalized: str | None = None
    local_part: str | None = None  # normalised (NFC) local part
    domain: str | None = None  # Unicode domain, lower case
    ascii_domain: str | None = None  # IDNA form, what DNS and SMTP use
    smtputf8: bool = False  # the local part needs SMTPUTF8
    error: str | None = None

    @property
    def rcpt(self) -> str:
        """The address as sent in RCPT TO."""
        if not self.ok or self.local_part is None or self.ascii_domain is None:
            raise ValueError(f"no RCPT for an invalid address: {self.error}")
        return f"{self.local_part}@{self.ascii_domain}"


def length_error(local_part: str, ascii_domain: str) -> str | None:
    """Why the address is too long for SMTP (in octets, as sent), or None."""
    local_octets = len(local_part.encode("utf-8"))
    if local_octets > MAX_LOCAL_PART_LENGTH:
        return f"local part is {local_octets} octets, at most {MAX_LOCAL_PART_LENGTH} allowed"
    domain = ascii_domain.rstrip(".")
    if len(domain) > MAX_DOMAIN_LENGTH:
        return f"domain is {len(domain)} octets, at most {MAX_DOMAIN_LENGTH} allowed"
    longest = max((len(label) for label in domain.split(".")), default=0)
    if longest > MAX_LABEL_LENGTH:
        return f"a domain label is {longest} octets, at most {MAX_LABEL_LENGTH} allowed"
    total = local_octets + 1 + len(domain)
    if total > MAX_ADDRESS_LENGTH:
        return f"address is {total} octets, at most {MAX_ADDRESS_LENGTH} allowed"
    return None


_OPTS: dict[str, Any] = dict(
    check_deliverability=False,
    allow_smtputf8=True,
    allow_quoted_local=False,
    allow_domain_literal=False,
    allow_display_name=False,
    strict=True,  # local part at most 64 octets (RFC 5321 4.5.3.1.1)
)
_PLAIN_LOCAL_DOMAIN = "a.co"  # stands in for a domain already validated
_ATEXT = r"[a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~]"  # RFC 5322 atext, as email-validator has it
_DOT_ATOM = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*\Z")


@lru_cache(maxsize=8192)
def _check_domain(domain_part: str, allow_test_domains: bool) -> tuple[str | None, str | None, str | None]:
    """(domain, ascii_domain, error) for the part after the @, by email-validator."""
    try:
        v = validate_email("a@" + domain_part, test_environment=allow_test_domains, **_OPTS)
    except EmailNotValidError as exc:
        return None, None, str(exc)
    return v.domain, v.ascii_domain, None


def check_syntax(address: str, *, allow_test_domains: bool = False) -> SyntaxResult:
    """Validate one address. The domain part is validated once per domain (cached);
    the local part each time, both by email-validator. The result equals
    :func:`check_syntax_uncached` (a property test holds them together)."""
    if not isinstance(address, str):
        return SyntaxResult(str(address), False, error="not a string")
    pre = _precheck(address)
    if pre is not None:
        return pre
    local, at, domain_part = address.rpartition("@")
    if not at or not local or '"' in address or "<" in address or "[" in domain_part:
        return check_syntax_uncached(address, allow_test_domains=allow_test_domains)
    domain, ascii_domain, err = _check_domain(domain_part, allow_test_domains)
    if err is not None or domain is None or ascii_domain is None:
        return check_syntax_uncached(address, allow_test_domains=allow_test_domains)
    local_part, smtputf8 = _check_local(local)
    if local_part is None:
        return check_syntax_uncached(address, allow_test_domains=allow_test_domains)
    normalized = f"{local_part}@{domain}"
    if len(address.encode("utf-8")) > MAX_ADDRESS_LENGTH or len(normalized.encode("utf-8")) > MAX_ADDRESS_LENGTH or (
        length_error(local_part, ascii_domain)
    ):
        return check_syntax_uncached(address, allow_test_domains=allow_test_domains)
    return SyntaxResult(
        address,
        True,
        normalized=normalized,
        local_part=local_part,
        domain=domain,
        ascii_domain=ascii_domain.lower(),
        smtputf8=smtputf8,
    )


def _check_local(local: str) -> tuple[str | None, bool]:
    """(normalised local part, needs SMTPUTF8), or (None, False) when email-validator
    refuses it. A plain ASCII dot-atom of at most 64 characters is what email-validator
    accepts unchanged (the common case, checked here without it: it validated the
    stand-in domain again for every address)."""
    if len(local) <= 64 and _DOT_ATOM.match(local) and local.lower() not in CASE_INSENSITIVE_MAILBOX_NAMES:
        return local, False
    try:
        v = validate_email(f"{local}@{_PLAIN_LOCAL_DOMAIN}", **_OPTS)
    except EmailNotValidError:
        return None, False
    return v.local_part, bool(v.smtputf8)


def _precheck(address: str) -> SyntaxResult | None:
    if not address:
        return SyntaxResult(address, False, error="empty address")
    m = _FORBIDDEN.search(address)
    if m:
        return SyntaxResult(
            address, False, error=f"forbidden character U+{ord(m.group()):04X} in the address"
        )
    if len(address) > MAX_ADDRESS_LENGTH:
        return SyntaxResult(
            address, False, error=f"address longer than {MAX_ADDRESS_LENGTH} characters"
        )
    return None


def check_syntax_uncached(address: str, *, allow_test_domains: bool = False) -> SyntaxResult:
    """The whole address through email-validator in one call (the reference)."""
    if not isinstance(address, str):
        return SyntaxResult(str(address), False, error="not a string")
    pre = _precheck(address)
    if pre is not None:
        return pre
    try:
        v = validate_email(address, test_environment=allow_test_domains, **_OPTS)
    except EmailNotValidError as exc:
        return SyntaxResult(address, False, error=str(exc))
    if len(v.normalized.encode("utf-8")) > MAX_ADDRESS_LENGTH:
        return SyntaxResult(address, False, error="address longer than 254 octets")
    too_long = length_error(v.local_part, v.ascii_domain)
    if too_long:
        return SyntaxResult(address, False, error=too_long)
    return SyntaxResult(
        address,
        True,
        normalized=v.normalized,
        local_part=v.local_part,
        domain=v.domain,
        ascii_domain=v.ascii_domain.lower(),
        smtputf8=bool(v.smtputf8),
    )

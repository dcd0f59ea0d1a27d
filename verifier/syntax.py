"""Address syntax and normalisation (email-validator, never a home-made regex).

Pure: no DNS, no network. Anything with CR, LF, NUL (or any other control character),
white space outside the address, or more than 254 characters is refused before the
library even looks at it, so it can never reach a server.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

MAX_ADDRESS_LENGTH = 254
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
        assert self.ok and self.local_part is not None and self.ascii_domain is not None
        return f"{self.local_part}@{self.ascii_domain}"


def check_syntax(address: str, *, allow_test_domains: bool = False) -> SyntaxResult:
    if not isinstance(address, str):
        return SyntaxResult(str(address), False, error="not a string")
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
    try:
        v = validate_email(
            address,
            check_deliverability=False,
            allow_smtputf8=True,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
            strict=True,  # local part at most 64 octets (RFC 5321 4.5.3.1.1)
            test_environment=allow_test_domains,
        )
    except EmailNotValidError as exc:
        return SyntaxResult(address, False, error=str(exc))
    if len(v.normalized.encode("utf-8")) > MAX_ADDRESS_LENGTH:
        return SyntaxResult(address, False, error="address longer than 254 octets")
    return SyntaxResult(
        address,
        True,
        normalized=v.normalized,
        local_part=v.local_part,
        domain=v.domain,
        ascii_domain=v.ascii_domain.lower(),
        smtputf8=bool(v.smtputf8),
    )

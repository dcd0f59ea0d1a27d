"""The result of verifying one address, and the errors of a whole batch."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

STATUSES = ("safe", "invalid", "risky", "unknown")


@dataclass(frozen=True)
class VerificationResult:
    address: str  # as given
    normalized: str | None
    status: str  # "safe" | "invalid" | "risky" | "unknown"
    # unknown: smtp_timeout|connection_refused|greylisted|antispam_block|temporary_failure|
    #          dns_failure|policy|provider_error
    # risky:   catch_all|full_inbox|disposable|role
    # invalid: syntax|no_domain|null_mx|no_mx|user_unknown|disabled|smtputf8_unsupported
    reason: str | None
    detail: str  # human text, e.g. the SMTP reply
    tier: str  # which tier produced it: "smtp", "smtp-fallback", "syntax", "dns"...
    mx: tuple[str, ...] = ()  # MX hosts tried (or published, when SMTP was not needed)
    smtp_code: int | None = None
    smtp_message: str | None = None
    smtp_enhanced: str | None = None  # RFC 3463 code from the reply text, e.g. "5.1.1"
    smtp_host: str | None = None  # "mx.example.test[127.0.0.2]"
    catch_all: bool | None = None
    disposable: bool = False
    role: bool = False
    duration_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "normalized": self.normalized,
            "status": self.status,
            "reason": self.reason,
            "detail": self.detail,
            "mx": list(self.mx),
            "smtp": {
                "code": self.smtp_code,
                "enhanced": self.smtp_enhanced,
                "message": self.smtp_message,
                "host": self.smtp_host,
            },
            "catch_all": self.catch_all,
            "disposable": self.disposable,
            "role": self.role,
            "tier": self.tier,
            "duration_ms": self.duration_ms,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "VerificationResult":
        smtp = data.get("smtp") or {}
        return cls(
            address=data["address"],
            normalized=data.get("normalized"),
            status=data["status"],
            reason=data.get("reason"),
            detail=data.get("detail") or "",
            tier=data.get("tier") or "",
            mx=tuple(data.get("mx") or ()),
            smtp_code=smtp.get("code"),
            smtp_message=smtp.get("message"),
            smtp_enhanced=smtp.get("enhanced"),
            smtp_host=smtp.get("host"),
            catch_all=data.get("catch_all"),
            disposable=bool(data.get("disposable")),
            role=bool(data.get("role")),
            duration_ms=int(data.get("duration_ms") or 0),
        )


class ProviderError(Exception):
    """The provider rejected the whole batch (to be retried, then the chunk fails)."""


class ProviderUnavailable(ProviderError):
    """The provider cannot work at all (its own outage, not a remote's answer).

    ``unanswered``: the addresses of the batch that got no result (each once, in input
    order); every other address of the batch has been passed to ``on_result``.
    """

    unanswered: tuple[str, ...] = ()

    def __init__(self, *args: object, unanswered: Iterable[str] = ()) -> None:
        super().__init__(*args)
        self.unanswered = tuple(dict.fromkeys(unanswered))

"""The mail-probing library: syntax, DNS, SMTP, classification.

Knows nothing of events, tasks or credits. The engine uses :func:`build_provider`.
"""
from .config import VerifierSettings
from .provider import (
    HttpApiProvider,
    Provider,
    ProviderError,
    ProviderUnavailable,
    SmtpProber,
    TieredProvider,
    VerificationResult,
    build_provider,
)

__all__ = [
    "VerifierSettings",
    "Provider",
    "ProviderError",
    "ProviderUnavailable",
    "SmtpProber",
    "TieredProvider",
    "HttpApiProvider",
    "VerificationResult",
    "build_provider",
]

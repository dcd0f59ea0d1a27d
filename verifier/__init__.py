"""The mail-probing library: syntax, DNS, SMTP, classification.

Knows nothing of events, tasks or credits. The engine uses :func:`build_provider`.

The names below are loaded when first used (PEP 562): ``import verifier.config`` (the
settings, `vec egress`) then does not load the prober, dnspython's resolver and
email-validator.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_WHERE = {
    "VerifierSettings": ".config",
    "Provider": ".provider",
    "ProviderError": ".result",
    "ProviderUnavailable": ".result",
    "SmtpProber": ".prober",
    "TieredProvider": ".provider",
    "HttpApiProvider": ".provider",
    "VerificationResult": ".result",
    "build_provider": ".provider",
}

__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'verifier' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value

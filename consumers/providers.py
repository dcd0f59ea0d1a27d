"""Providers the workers can call, and the translation of their answers into task results."""
from __future__ import annotations

import asyncio
from typing import Callable, Sequence

from engine.config import EngineSettings
from engine.domain.tasks import Result
from verifier.provider import build_provider as build_smtp


class InstantProvider:
    """Answers at once from the local part (unknown*, invalid*, risky* or else safe).

    For engine-overhead benchmarks and demos: it measures everything but the mail servers.
    """

    name = "instant"
    tier = "instant"

    def __init__(self, delay: float = 0.0):
        self.delay = delay

    async def verify(self, addresses: Sequence[str], on_result: Callable | None = None) -> list[Result]:
        results = []
        for address in addresses:
            if self.delay:
                await asyncio.sleep(self.delay)
            local = address.split("@", 1)[0].lower()
            if local.startswith("unknown"):
                result = Result(address, "unknown", "greylisted", "instant", self.tier)
            elif local.startswith("invalid"):
                result = Result(address, "invalid", "user_unknown", "instant", self.tier)
            elif local.startswith("risky"):
                result = Result(address, "risky", "catch_all", "instant", self.tier)
            else:
                result = Result(address, "safe", "", "instant", self.tier)
            results.append(result)
            if on_result is not None:
                on_result(result)
        return results


EVIDENCE_LENGTH = 500  # characters of a detail or a reply kept in the log


def to_result(answer) -> Result:
    """A provider's answer (verifier.VerificationResult or Result) as a task result, with its
    evidence: the SMTP reply that decided it and who sent it."""
    if isinstance(answer, Result):
        return answer
    reply = f"{answer.smtp_code} {answer.smtp_message or ''}".strip() if answer.smtp_code else ""
    flags = tuple(name for name, on in (("role", answer.role), ("disposable", answer.disposable),
                                        ("catch_all", answer.catch_all), ("mx_found", bool(answer.mx))) if on)
    return Result(answer.address, answer.status, answer.reason or "", (answer.detail or "")[:EVIDENCE_LENGTH],
                  answer.tier, reply.replace("\r", " ").replace("\n", " ")[:EVIDENCE_LENGTH],
                  (answer.smtp_host or "")[:200], flags)


def build_provider(settings: EngineSettings, host_slots=None):
    """`host_slots`: the fleet's per-MX session slots (distributed mode), shared by every worker."""
    if settings.provider == "instant":
        return InstantProvider()
    if settings.provider == "smtp":
        return build_smtp(host_slots=host_slots)
    raise ValueError(f"unknown provider {settings.provider!r}; use smtp or instant")

"""Providers the workers can call, and the translation of their answers into task results."""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Callable, Protocol, Sequence, runtime_checkable

from engine.config import CoreSettings
from engine.domain.tasks import Result
from verifier.lists import is_free_email  # result taxonomy: the free_email flag
from verifier.prober import HostSlots
from verifier.provider import ProviderError, TieredProvider, build_provider as build_smtp
from verifier.result import VerificationResult

if TYPE_CHECKING:
    from consumers.verification import Provider  # which imports this module

Answer = Result | VerificationResult  # what a provider hands on: the verifier's answer, or a task result already


@runtime_checkable
class Tiered(Protocol):
    """A provider that names its tier (the instant one, the SMTP prober): the tier its chunks
    are submitted for. Others (a tiered SMTP provider) are the "primary" tier."""

    tier: str


def tier_of(provider: object) -> str:
    """The tier a provider's chunks are submitted for (ChunkSubmitted.tier)."""
    return provider.tier if isinstance(provider, Tiered) else "primary"


class InstantProvider:
    """Answers at once from the local part (unknown*, invalid*, risky* or else safe).

    For engine-overhead benchmarks and demos: it measures everything but the mail servers.
    """

    name = "instant"
    tier = "instant"

    def __init__(self, delay: float = 0.0):
        self.delay = delay

    async def verify(self, addresses: Sequence[str],
                     on_result: Callable[[Result], None] | None = None) -> list[Result]:
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


def to_result(answer: Answer) -> Result:
    """A provider's answer (verifier.VerificationResult or Result) as a task result, with its
    evidence: the SMTP reply that decided it and who sent it."""
    if isinstance(answer, Result):
        return answer
    reply = f"{answer.smtp_code} {answer.smtp_message or ''}".strip() if answer.smtp_code else ""
    flags = tuple(name for name, on in (("role", answer.role), ("disposable", answer.disposable),
                                        ("catch_all", answer.catch_all), ("mx_found", bool(answer.mx)),
                                        # result taxonomy: decided now, recorded in the event (never at fold time)
                                        ("free_email", is_free_email(_domain(answer)))) if on)
    return Result(answer.address, answer.status, answer.reason or "", (answer.detail or "")[:EVIDENCE_LENGTH],
                  answer.tier, reply.replace("\r", " ").replace("\n", " ")[:EVIDENCE_LENGTH],
                  (answer.smtp_host or "")[:200], flags)


def _domain(answer: VerificationResult) -> str:
    """The domain of a verified address (its normalized form when the verifier has one)."""
    return (answer.normalized or answer.address or "").rpartition("@")[2]


def build_provider(settings: CoreSettings, host_slots: HostSlots | None = None) -> Provider:
    """`host_slots`: the fleet's per-MX session slots (distributed mode), shared by every worker."""
    provider: Provider
    if settings.provider == "instant":
        provider = InstantProvider()
    elif settings.provider == "smtp":
        provider = build_smtp(host_slots=host_slots)
    else:
        raise ValueError(f"unknown provider {settings.provider!r}; use smtp or instant")
    if not settings.second_pass:
        return provider
    # the second look goes through the fallback tier when one is configured
    again = provider.fallback if isinstance(provider, TieredProvider) else None
    return SecondPass(provider, settings.second_pass_delay, again)


class SecondPass:
    """The service's second look at Unknowns (VEC_SECOND_PASS): a chunk's Unknown answers are
    held back, and after `delay` seconds (greylisting and busy servers often clear by then)
    checked again through the fallback tier when one is configured, else the same provider.
    The second answer settles the address, whatever it is; each result keeps the tier that
    decided it ("second-pass/<tier>"). If the second look fails, the first answers stand.
    `again`: who takes the second look (the fallback tier), else `provider` itself."""

    def __init__(self, provider: Provider, delay: float, again: Provider | None = None):
        self.provider, self.delay = provider, delay
        self.name, self.tier = provider.name, tier_of(provider)
        self.again = again or provider

    async def verify(self, addresses: Sequence[str],
                     on_result: Callable[[Answer], None] | None = None) -> list[Answer]:
        held: dict[str, Answer] = {}

        def first(answer: Answer) -> None:
            if to_result(answer).status == "unknown":
                held[answer.address] = answer
            elif on_result is not None:
                on_result(answer)

        answers: dict[str, Answer] = {a.address: a for a in await self.provider.verify(addresses, on_result=first)}
        for address, answer in answers.items():
            if to_result(answer).status == "unknown":
                held.setdefault(address, answer)
        if not held:
            return list(answers.values())
        await asyncio.sleep(self.delay)

        def second(answer: Answer) -> None:
            settled = answers[answer.address] = _second_tier(answer)
            held.pop(settled.address, None)
            if on_result is not None:
                on_result(settled)

        try:
            await self.again.verify(list(held), on_result=second)
        except ProviderError:
            pass  # the first answers stand
        for answer in held.values():  # no second answer: the first one
            if on_result is not None:
                on_result(answer)
        return list(answers.values())


def _second_tier(answer: Answer) -> Result:
    result = to_result(answer)
    return Result(result.address, result.status, result.reason, result.detail, f"second-pass/{result.tier}",
                  result.reply, result.mx_host, result.flags)

"""Is it them or us? Telling our own network outage from mail servers that are down.

One dead MX host is the domain's problem. When the TCP connects to many distinct MX
hosts, of many distinct domains, all fail while nothing at all comes back from any
server, the common factor is us (our network, our firewall, our upstream): the prober
then stops answering ``unknown`` and raises
:class:`~verifier.result.ProviderUnavailable`.

Proof of life is a TCP connect that succeeded or an SMTP reply received, from any
server. It resets the tracker. A failed connect only counts when no proof of life
came from ``overlap`` seconds before its attempt began; and the thresholds must stay
met ``overlap`` seconds before the network is presumed down. So a batch mixing dead
and live domains, whose live sessions talk while the dead ones time out, or whose
live connects are a few milliseconds slower than a dead host's refusal, never looks
like an outage.

Pure bookkeeping, no I/O: the prober reports outcomes with monotonic times.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

HostKey = tuple[str, int]  # (ip, port)

_MAX_TRACKED = 1000  # more proves nothing more; keeps memory bounded during an outage


@dataclass
class ReachabilityTracker:
    """Failed TCP connects since the last proof of life, shared by every batch of a
    prober. A server that accepted the connection and then said no, stalled or hung up
    is a proof of life: packets flow. ``network_error`` is a failure that is ours by
    definition (no route at all, source address unusable)."""

    hosts_needed: int = 10
    domains_needed: int = 5
    overlap: float = 1.0  # seconds
    failed: dict[HostKey, str] = field(default_factory=dict)  # host -> last detail
    domains: set[str] = field(default_factory=set)
    network_error: str | None = None
    last_alive: float = -math.inf
    met_since: float | None = None  # when the thresholds were first met

    def alive(self, now: float) -> None:
        """Something came back from a server: whatever failed before was not us."""
        self.last_alive = max(self.last_alive, now)
        self.failed.clear()
        self.domains.clear()
        self.network_error = None
        self.met_since = None

    def connect_failed(self, key: HostKey, domain: str, detail: str, started: float, now: float) -> bool:
        """Record a failed TCP connect that began at ``started``. False when it does
        not count (a proof of life overlapped it: the host is down, not us)."""
        if self.last_alive >= started - self.overlap:
            return False
        if key in self.failed or len(self.failed) < _MAX_TRACKED:
            self.failed[key] = detail
        if len(self.domains) < _MAX_TRACKED:
            self.domains.add(domain)
        if self.met_since is None and self.thresholds_met:
            self.met_since = now
        return True

    def unusable(self, key: HostKey, detail: str) -> None:
        """Our side failed outright (ENETUNREACH, source address): down at once."""
        self.network_error = detail
        if key in self.failed or len(self.failed) < _MAX_TRACKED:
            self.failed[key] = detail

    @property
    def thresholds_met(self) -> bool:
        return len(self.failed) >= self.hosts_needed and len(self.domains) >= self.domains_needed

    @property
    def unconfirmed(self) -> bool:
        """Some counted connect failed and nothing came back since: maybe our fault."""
        return bool(self.failed) or self.network_error is not None

    def down_at(self) -> float | None:
        """When our network is (or will be) presumed down if nothing comes back
        meanwhile; None when the evidence is not there."""
        if self.network_error is not None:
            return -math.inf
        if self.met_since is None or not self.thresholds_met:
            return None
        return self.met_since + self.overlap

    def down(self, now: float) -> bool:
        at = self.down_at()
        return at is not None and now >= at

    def describe(self) -> str:
        if self.network_error is not None:
            return self.network_error
        return (f"no MX host reachable: TCP connects to {len(self.failed)} distinct MX hosts of "
                f"{len(self.domains)} domains failed with nothing coming back from any server "
                f"(thresholds: {self.hosts_needed} hosts, {self.domains_needed} domains)")

    def sample(self, n: int) -> list[HostKey]:
        """A few of the failed hosts, most recent first (to re-probe)."""
        return list(reversed(self.failed))[:n]

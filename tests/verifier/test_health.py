"""The reachability tracker (pure): when do failed connects mean our network is down?"""
from __future__ import annotations

from verifier.health import ReachabilityTracker


def fail_all(t: ReachabilityTracker, hosts: int, domains: int, started: float, now: float) -> None:
    for i in range(hosts):
        t.connect_failed((f"192.0.2.{i}", 25), f"d{i % domains}.example", "refused", started, now)


def test_thresholds_then_confirmation():
    t = ReachabilityTracker(hosts_needed=10, domains_needed=5, overlap=1.0)
    fail_all(t, 9, 4, started=10.0, now=10.1)
    assert t.unconfirmed and t.down_at() is None
    fail_all(t, 10, 4, started=10.0, now=10.2)  # 10 hosts, but of 4 domains
    assert t.down_at() is None
    t.connect_failed(("192.0.2.99", 25), "d9.example", "timeout", 10.0, 10.3)
    assert t.down_at() == 11.3
    assert not t.down(11.0) and t.down(11.3)
    assert "11 distinct MX hosts of 5 domains" in t.describe()


def test_proof_of_life_resets():
    t = ReachabilityTracker(hosts_needed=2, domains_needed=1, overlap=1.0)
    fail_all(t, 2, 1, started=5.0, now=5.1)
    assert t.down_at() == 6.1
    t.alive(5.5)  # a reply came back before the confirmation: not us
    assert not t.unconfirmed and t.down_at() is None and not t.down(9.0)


def test_overlapping_failures_do_not_count():
    """A connect that began less than `overlap` after (or any time before) the last
    proof of life is the host's failure, not ours."""
    t = ReachabilityTracker(hosts_needed=1, domains_needed=1, overlap=1.0)
    t.alive(100.0)
    assert not t.connect_failed(("192.0.2.1", 25), "d.example", "timeout", started=99.0, now=105.0)
    assert not t.connect_failed(("192.0.2.1", 25), "d.example", "refused", started=100.5, now=100.6)
    assert not t.unconfirmed
    assert t.connect_failed(("192.0.2.1", 25), "d.example", "refused", started=101.5, now=101.6)
    assert t.down(102.6)


def test_same_host_counts_once_and_network_errors_are_immediate():
    t = ReachabilityTracker(hosts_needed=2, domains_needed=1)
    for _ in range(5):
        t.connect_failed(("192.0.2.1", 25), "d.example", "refused", 1.0, 1.0)
    assert t.down_at() is None
    t.unusable(("192.0.2.7", 25), "network unreachable: connect to 192.0.2.7")
    assert t.down(0.0) and t.describe().startswith("network unreachable")
    assert t.sample(1) == [("192.0.2.7", 25)]
    t.alive(2.0)
    assert t.down_at() is None

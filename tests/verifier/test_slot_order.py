"""The order a session takes its slots in (verifier/prober.py, `_DomainJob._take_slots`):
this process's MX slot, then a global one (`max_concurrency`), then the fleet's MX slot.
A job waiting for a busy MX must not sit on a global slot that another domain could use
(the head-of-line blocking the fleet benchmark measured: bench/README.md, scale_out), and
the order must hold everywhere so that nothing deadlocks. In-process fakes (test_prober's
world): no mail world needed."""
from __future__ import annotations

import asyncio

import pytest

from .fakes import FakeSMTP, count_open_sessions, postfix_like
from .test_prober import A, B, C, World, run, until

pytestmark = pytest.mark.timeout(60)


def test_a_job_waiting_for_a_busy_mx_holds_no_global_slot():
    """max_concurrency 2, one session per MX. Batch 1 keeps a.test's MX busy (20 RCPTs at
    0.4 s: ~8 s); batch 2 (a.test again) waits for that MX; b.test, on another MX, must get
    the second global slot at once instead of waiting behind batch 2 for batch 1's session
    to end. Asserted as an order of events, not a duration: b.test is answered while batch
    1's session is still open."""
    async def main():
        async with World() as w:
            srv = w.servers[A]
            srv.respond = postfix_like({f"u{i}" for i in range(40)})
            srv.rcpt_delay = 0.4
            p = w.prober(max_concurrency=2, per_mx_concurrency=1, rcpts_per_session=50, address_deadline=60,
                         command_timeout=2)
            first = asyncio.create_task(p.verify([f"u{i}@a.test" for i in range(20)]))
            await until(lambda: srv._live == 1 and srv.sessions and srv.sessions[0].rcpts)  # MX busy
            second = asyncio.create_task(p.verify([f"u{i}@a.test" for i in range(20, 26)]))
            for _ in range(100):  # batch 2 runs up to its wait for a.test's MX (its DNS is cached)
                await asyncio.sleep(0)
            other = await p.verify(["alice@b.test"])
            first_done_before_other = first.done()
            a_results = [*await first, *await second]
            return w, other, first_done_before_other, a_results
    w, other, first_done_before_other, a_results = run(main())
    assert [r.status for r in other] == ["safe"]
    assert all(r.status == "safe" for r in a_results), [r.detail for r in a_results]
    assert len(a_results) == 26 and w.servers[A].max_concurrent == 1  # batch 2 did wait for the MX
    # before: b.test waited for a global slot held by batch 2 until batch 1's session ended
    assert not first_done_before_other, "b.test was answered only after batch 1's session ended"


def test_many_batches_over_shared_and_failover_mxs_finish_within_both_limits(monkeypatch):
    """Small limits, many overlapping batches, domains sharing an MX (noaddr.test and
    failover.test fail over to a.test's MX): everything finishes (no deadlock), never more
    than one session per MX nor two in all."""
    live = count_open_sessions(monkeypatch)

    async def main():
        async with World() as w:
            for ip in (A, B, C):
                w.servers[ip].rcpt_delay = 0.02
            p = w.prober(max_concurrency=2, per_mx_concurrency=1, rcpts_per_session=3, address_deadline=30,
                         command_timeout=2)
            batches = [[f"{who}@{d}" for who in ("alice", "bob", "nobody")
                        for d in ("a.test", "b.test", "c.test", "noaddr.test", "failover.test")[i % 5:] +
                        ("a.test", "b.test", "c.test", "noaddr.test", "failover.test")[:i % 5]]
                       for i in range(6)]
            async with asyncio.timeout(45):
                results = await asyncio.gather(*(p.verify(b) for b in batches))
            return w, results
    w, results = run(main())
    expected = {"alice": "safe", "bob": "safe", "nobody": "invalid"}
    for batch in results:
        assert len(batch) == 15
        assert all(r.status == expected[r.address.split("@")[0]] for r in batch), \
            [(r.address, r.status, r.detail) for r in batch if r.status != expected[r.address.split("@")[0]]]
    assert all(w.servers[ip].max_concurrent <= 1 for ip in (A, B, C))
    assert live["max"] <= 2


class CountingFleetSlots:
    """A fake of the fleet's MX slots (consumers/fleet/slots.py): grants at once, counts
    what is held."""

    def __init__(self) -> None:
        self.held = 0
        self.max_held = 0
        self.granted = 0

    async def acquire(self, key):
        self.held += 1
        self.granted += 1
        self.max_held = max(self.max_held, self.held)

        def release() -> None:
            self.held -= 1
        return release


def test_a_fleet_slot_is_taken_only_with_a_global_slot_in_hand():
    """One global slot, two per MX, three domains on three MXs at once: a fleet slot held
    by a session still waiting for this process's global slot would be an MX slot the
    whole fleet cannot use; so the fleet's slot comes last, and at most one is held."""
    from verifier import build_provider

    from .test_prober import settings

    async def main():
        async with World() as w:
            for ip in (A, B, C):
                w.servers[ip].rcpt_delay = 0.05
            fleet = CountingFleetSlots()
            p = build_provider(settings(w.dns_addr, w.port, max_concurrency=1, per_mx_concurrency=2,
                                        rcpts_per_session=2, address_deadline=30), host_slots=fleet)
            results = await asyncio.gather(*(p.verify([f"{who}@{d}.test" for who in ("alice", "bob")])
                                             for d in "abc" for _ in range(2)))
            return fleet, results
    fleet, results = run(main())
    assert all(r.status == "safe" for batch in results for r in batch)
    assert fleet.granted >= 3 and fleet.held == 0
    assert fleet.max_held == 1

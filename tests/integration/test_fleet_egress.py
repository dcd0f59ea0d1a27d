"""The fleet shares what one worker learned of the egress routes (consumers/fleet/slots.py,
verifier.routes.SharedEgressState): two workers, each with its own connection to the
fleet's PostgreSQL, against the real mail world's block-listing Postfix."""
from __future__ import annotations

import asyncio

import pytest

from consumers.fleet.slots import FleetHostSlots
from verifier import build_provider
from tests.verifier.test_probe_mailworld import log_size, log_tail, make_settings

pytestmark = [pytest.mark.mailworld, pytest.mark.postgres, pytest.mark.timeout(120)]

MX = "127.0.0.11"  # mx.blocklisted.test: refuses 127.0.0.1, our direct path


def test_one_workers_refusal_spares_the_others(mailworld, pg_url):
    settings = make_settings(mailworld, egress_pool="direct=direct,clean=direct://127.0.0.20")

    async def main():
        a, b = FleetHostSlots(pg_url, 5), FleetHostSlots(pg_url, 5)
        try:
            first = build_provider(settings, host_slots=a)
            start = log_size(mailworld)
            r1 = await first.verify(["alice@blocklisted.test"])
            await asyncio.gather(*first.egress._publishing)  # the block reached the fleet
            log1 = log_tail(mailworld, start)
            shared = await b.egress_blocks(MX)
            start = log_size(mailworld)
            r2 = await build_provider(settings, host_slots=b).verify(["bob@blocklisted.test"])
            return r1 + r2, log1, shared, log_tail(mailworld, start)
        finally:
            await a.close()
            await b.close()
    results, log1, shared, log2 = asyncio.run(main())
    assert [r.status for r in results] == ["safe", "safe"]
    assert all(r.smtp_host.endswith("via clean") for r in results)
    assert "RCPT from unknown[127.0.0.1]: 554 5.7.1" in log1  # worker A was refused directly
    assert [(route, "blocked using zen.spamhaus.org" in reply, left > 3000)
            for route, reply, left in shared] == [("direct", True, True)]
    assert "connect from unknown[127.0.0.20]" in log2  # worker B's session is in the log...
    assert "connect from unknown[127.0.0.1]" not in log2  # ...and it never tried the blocked path

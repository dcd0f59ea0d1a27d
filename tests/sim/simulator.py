"""A deterministic simulator of the whole embedded engine, in the style of TigerBeetle's VOPR.

One seed drives everything: the virtual clock (asyncio runs on a loop whose time only moves
when nothing is ready, so an hour of engine time takes milliseconds), the provider's
latencies, answers and faults (rejected batches, outages of ours, duplicate answers),
crashes of the engine at any await point (a crash stops the process between two
transactions, as kill -9 does: the engine holds no transaction across an await), restarts
inside and past the outage grace or days later, and what customers do meanwhile through a
second engine racing the first (tests/sim/customers.py): PAYG purchases, Monthly
subscriptions whose periods end while an engine runs or while it is down, bulk and single
tasks, cancels, deletes, erasures, retention settings, and commands sent twice with one
idempotency key (later, or racing a third engine). A last night moves the clock past
periods and retention, or not, and an engine runs its sweeps.

After each run `vec audit` and every money rule are checked (tests/sim/checks.py: Monthly
first, never negative, expiring exactly its leftover at period end, refunds to PAYG, an
erased task's results, key and inputs gone while its counts and Credits History stay,
history rows summing to the balance, no retry counted twice). A failure prints its seed and
its story; `python -m tests.sim.simulator --seed N -v` replays it exactly.

    python -m tests.sim.simulator --seeds 10000        # the long hunt (about 10 minutes a thousand)
    python -m tests.sim.simulator --seed 1234 -v       # one seed, with the story of the run
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, ContextManager
from unittest import mock

from tests.sim.checks import Violation

if TYPE_CHECKING:
    from engine.service import Engine

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=timezone.utc)


class Clock:
    """Virtual seconds since T0."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def utc(self) -> datetime:
        return T0 + timedelta(seconds=self.now)


class VirtualSelector(selectors.BaseSelector):
    """Nothing ever becomes ready by itself: waiting for `timeout` seconds moves the clock."""

    def __init__(self, clock: Clock):
        self.clock, self.keys = clock, {}

    def register(self, fileobj, events, data=None):
        key = selectors.SelectorKey(fileobj, fileobj if isinstance(fileobj, int) else fileobj.fileno(), events, data)
        self.keys[key.fd] = key
        return key

    def unregister(self, fileobj):
        return self.keys.pop(fileobj if isinstance(fileobj, int) else fileobj.fileno())

    def select(self, timeout=None):
        if timeout is None:
            raise SimDeadlock("every task waits and no timer is set: the engine would hang")
        self.clock.now += max(timeout, 0.0)
        return []

    def get_map(self):
        return self.keys

    def close(self):
        self.keys.clear()


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: Clock):
        super().__init__(VirtualSelector(clock))
        self.clock = clock

    def time(self) -> float:
        return self.clock.now


class SimDeadlock(Exception):
    pass


@dataclass
class Story:
    seed: int
    lines: list[str] = field(default_factory=list)
    crashes: int = 0
    restarts_past_grace: int = 0
    tasks: int = 0
    events: int = 0
    coverage: Counter[str] = field(default_factory=Counter)  # how often each money rule was exercised

    def say(self, clock: Clock, text: str) -> None:
        self.lines.append(f"t={clock.now:9.3f} {text}")


# --- the simulated provider -----------------------------------------------------------

class SimProvider:
    """Answers from the seed: latencies, statuses, rejected batches, outages of ours,
    duplicate answers."""

    name = tier = "sim"

    def __init__(self, rng: random.Random, clock: Clock):
        self.rng, self.clock = rng, clock
        self.outage_until = 0.0

    async def verify(self, addresses, on_result=None):
        from engine.domain.tasks import Result
        from verifier.provider import ProviderError, ProviderUnavailable

        rng = self.rng
        roll = rng.random()
        if roll < 0.04:
            raise ProviderError("the simulated provider rejects this batch")
        if roll < 0.07:
            self.outage_until = self.clock.now + rng.choice((1, 5, 30, 200))
        results = []
        for address in addresses:
            await asyncio.sleep(rng.expovariate(1 / 0.4))
            if self.clock.now < self.outage_until:
                raise ProviderUnavailable("simulated outage of ours",
                                          unanswered=[a for a in addresses if a not in {r.address for r in results}])
            status = rng.choices(("safe", "invalid", "risky", "unknown"), (5, 2, 1, 2))[0]
            reason = {"safe": "", "invalid": "user_unknown", "risky": "catch_all", "unknown": "greylisted"}[status]
            result = Result(address, status, reason, "sim", self.tier)
            results.append(result)
            if on_result is not None:
                on_result(result)
                if rng.random() < 0.05:
                    on_result(result)  # a duplicate answer
        return results


# --- one run ----------------------------------------------------------------------------

class Sim:
    def __init__(self, seed: int, workdir: Path, verbose: bool = False):
        self.seed, self.workdir, self.verbose = seed, workdir, verbose
        self.rng = random.Random(seed)
        self.clock = Clock()
        self.story = Story(seed)
        self.url = f"sqlite:///{workdir}/vec.db"
        self.alive: list[tuple[float, float]] = []  # (start, end) of every engine that ran

    def say(self, text: str) -> None:
        self.story.say(self.clock, text)

    def settings(self):
        from entrypoints.settings import EngineSettings

        rng = self.rng
        return EngineSettings(
            store=self.url, provider="instant", chunk_size=rng.choice((1, 2, 3, 5, 8)),
            chunk_window=rng.choice((1, 2, 4)), workers=rng.choice((1, 2, 8)), chunk_retries=rng.choice((0, 1, 3)),
            retry_backoff=rng.choice((0.1, 1.0)), partial_failure_threshold=rng.choice((0.0, 0.3, 1.0)),
            outage_grace=self.grace, provider_deadline=self.deadline, heartbeat_interval=1.0, poll_interval=0.2,
            results_flush_interval=rng.choice((0.1, 0.5, 2.0)), driver_retries=2,
            task_stall_timeout=self.deadline + 120, duplicate_window_hours=0)

    def engine(self):
        from engine.service import Engine
        from engine.store import open_database

        return Engine(open_database(self.url), self.base_settings, self.clock.utc)

    # --- the engine's life: run, crash, restart ------------------------------------------

    async def life(self) -> None:
        from tests.sim.customers import Customers

        rng = self.rng
        customers = self.customers = Customers(self)
        for _ in range(rng.randint(1, 3)):
            customers.open_account()
        for _ in range(rng.randint(1, 3)):
            customers.new_bulk()
        for round_ in range(rng.randint(2, 6)):
            engine, stop, running = self.start()
            crash_at = self.clock.now + rng.expovariate(1 / 20)
            while self.clock.now < crash_at and not running.done():
                await asyncio.sleep(rng.expovariate(1 / 3))
                if rng.random() < 0.3:
                    customers.poke()
            self.still_running(running)
            if round_ % 2 == 0 or rng.random() < 0.5:
                await self.crash(engine, running)
                await asyncio.sleep(self.downtime())
            else:
                await self.stop(engine, stop, running)
                self.say("clean stop")
        await self.drain()
        await self.last_night()

    def start(self) -> tuple["Engine", asyncio.Event, asyncio.Task]:
        from consumers.runtime import Runtime

        engine, stop = self.engine(), asyncio.Event()
        running = asyncio.create_task(Runtime(engine, SimProvider(self.rng, self.clock)).run(stop))
        self.alive.append((self.clock.now, self.clock.now))
        return engine, stop, running

    def ran_until_now(self) -> None:
        self.alive[-1] = (self.alive[-1][0], self.clock.now)

    @staticmethod
    def still_running(running: asyncio.Task) -> None:
        from engine.store.lease import LeaseHeld

        if running.done():
            error = running.exception()
            if isinstance(error, LeaseHeld):
                raise Violation(f"a restart found the lease held: {error}")
            raise Violation(f"the runtime stopped by itself: {error!r}")

    async def stop(self, engine, stop: asyncio.Event, running: asyncio.Task) -> None:
        from consumers.runtime import EngineCrashed

        self.ran_until_now()
        stop.set()
        with contextlib.suppress(EngineCrashed):
            await running
        engine.db.close()

    def downtime(self) -> float:
        """Down inside the grace, past it, or now and then for days (Monthly periods end and
        retention runs out meanwhile: the next engine's first sweep acts)."""
        rng = self.rng
        if rng.random() < 0.1:
            down = rng.uniform(0.5, 3.5) * 86400
        else:
            down = rng.choice((0.5, 5.0, self.grace - 1, self.grace + 5, self.grace * 3))
        self.story.restarts_past_grace += down > self.grace
        self.say(f"crash; down for {down:g}s (grace {self.grace:g}s)")
        return down

    async def crash(self, engine, running: asyncio.Task) -> None:
        """kill -9: the process stops between two transactions; nothing of its clean-up runs
        (its connection is gone), and its lease stays behind with a dead PID."""
        self.ran_until_now()
        self.story.crashes += 1
        engine.db.close()
        running.cancel()
        from engine.store import open_database

        db = open_database(self.url)
        db.events.conn.execute("UPDATE engine_lease SET pid = ?", (DEAD_PID,))
        db.close()
        await asyncio.sleep(0)
        with contextlib.suppress(BaseException):
            await running

    async def drain(self) -> None:
        """A last engine runs until every task has finished (the stall bound guarantees it)."""
        customers = self.customers
        engine, stop, running = self.start()
        limit = self.clock.now + 4 * 3600
        while any(customers.engine.task(t).active for t in customers.tasks):
            if running.done():
                raise Violation(f"the last runtime stopped: {running.exception()!r}")
            if self.clock.now > limit:
                raise Violation("tasks still active four virtual hours after the last restart")
            await asyncio.sleep(5)
        await self.stop(engine, stop, running)

    async def last_night(self) -> None:
        """The customers tidy up finished tasks; the clock jumps (past Monthly periods and
        retention, or not); an engine runs two sweeps."""
        rng = self.rng
        for _ in range(rng.randint(0, 3)):
            self.customers.poke_finished()
        night_s = rng.choice((0.0, 120.0, 7200.0, 1.2 * 86400, 4 * 86400))
        self.say(f"the last night: {night_s:g}s")
        await asyncio.sleep(night_s)
        await self.sweeps()

    async def sweeps(self) -> None:
        """A runner of the sweeps runs two of them."""
        from engine.policies import SWEEP_INTERVAL_S

        engine, stop, running = self.start()
        await asyncio.sleep(2 * SWEEP_INTERVAL_S + 5)
        self.still_running(running)
        await self.stop(engine, stop, running)

    # --- the checks -----------------------------------------------------------------------

    def check(self) -> None:
        from engine.store import open_database

        db = open_database(self.url)
        try:
            self.check_on(db)
        finally:
            db.close()

    def check_on(self, db) -> None:
        """`vec audit` and every money rule (tests/sim/checks.py) over the store `db`; `alive`
        says when a runner of the sweeps ran."""
        from engine.audit import audit
        from tests.sim import checks

        report = audit(db)
        if report.violations:
            raise Violation("vec audit: " + "; ".join(report.violations[:5]))
        ledger = checks.Ledger(self.alive, self.story.coverage)
        self.story.events = ledger.fold(db.events.read_all())
        checks.check_accounts(db, ledger, self.customers, self.clock.now)
        checks.check_tasks(db, self.engine_on(db), ledger, self.customers)
        self.story.tasks = len(ledger.tasks)

    def engine_on(self, db):
        from engine.service import Engine

        return Engine(db, self.base_settings, self.clock.utc)

    def patches(self) -> list[ContextManager[object]]:
        """What the run replaces: the processes' monotonic clocks by the virtual one, random
        ids and keys by the seed's."""
        import consumers.runtime
        import consumers.verification
        import engine.keyring
        import engine.service

        rng_ids = random.Random(self.seed ^ 0x5EED)
        fake_time = mock.Mock(wraps=time)
        fake_time.monotonic = self.clock.monotonic
        return [mock.patch.object(consumers.runtime, "time", fake_time),
                mock.patch.object(consumers.verification, "time", fake_time),
                mock.patch.object(engine.keyring, "time", fake_time),
                mock.patch.object(engine.service.uuid, "uuid4", lambda: uuid.UUID(int=rng_ids.getrandbits(128))),
                mock.patch.object(engine.keyring.os, "urandom", rng_ids.randbytes)]

    def run(self) -> Story:
        self.grace = self.rng.choice((10.0, 60.0, 300.0))
        self.deadline = self.rng.choice((5.0, 30.0, 120.0))
        self.base_settings = self.settings()
        loop = VirtualLoop(self.clock)
        with contextlib.ExitStack() as patched:
            for patch in self.patches():
                patched.enter_context(patch)
            try:
                loop.run_until_complete(asyncio.wait_for(self.life(), timeout=30 * 86400))
            finally:
                _close(loop)
            self.check()
        return self.story


def _close(loop: asyncio.AbstractEventLoop) -> None:
    """A failed run leaves engines running: they are cancelled and awaited on the loop, so no
    coroutine is left to be finalised later by the garbage collector (in the middle of
    anything: Python 3.11 then fails ast.parse with "AST constructor recursion depth
    mismatch")."""
    left = asyncio.all_tasks(loop)
    for task in left:
        task.cancel()
    with contextlib.suppress(BaseException):
        loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
    loop.close()


def _reaped_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


DEAD_PID = _reaped_pid()


def run_seed(seed: int, verbose: bool = False, mode: str = "embedded") -> Story:
    import logging

    # a crashed engine's clean-up fails on its closed connection by design: not news
    logging.getLogger().setLevel(logging.INFO if verbose else logging.CRITICAL)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    workdir = Path(tempfile.mkdtemp(prefix=f"vec-sim-{seed}-"))
    if mode == "fleet":
        from tests.sim.fleet import FleetSim

        sim: Sim = FleetSim(seed, workdir, verbose)
    else:
        sim = Sim(seed, workdir, verbose)
    try:
        return sim.run()
    except BaseException as error:
        story = "\n".join(sim.story.lines[-40:])
        raise Violation(f"seed {seed} failed: {type(error).__name__}: {error}\n"
                        f"replay: python -m tests.sim.simulator{' --mode fleet' if mode == 'fleet' else ''}"
                        f" --seed {seed} -v\n{story}") from error
    finally:
        if verbose:
            print("\n".join(sim.story.lines))
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds, from --first")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--seed", type=int, help="run this one seed")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the story of each run")
    parser.add_argument("--mode", choices=("embedded", "fleet"), default="embedded",
                        help="the embedded runtime, or the fleet's roles on a simulated broker (tests/sim/fleet.py)")
    args = parser.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else range(args.first, args.first + args.seeds)
    failed, started = [], time.monotonic()
    crashes = past_grace = tasks = events = 0
    coverage: Counter[str] = Counter()
    for seed in seeds:
        try:
            story = run_seed(seed, args.verbose, args.mode)
        except Violation as violation:
            failed.append(seed)
            print(violation, file=sys.stderr)
            continue
        crashes, past_grace = crashes + story.crashes, past_grace + story.restarts_past_grace
        tasks, events = tasks + story.tasks, events + story.events
        coverage.update(story.coverage)
    runs = len(list(seeds))
    print(f"{runs} seeds in {time.monotonic() - started:.1f}s: {tasks} tasks, {events} events, {crashes} crashes "
          f"({past_grace} restarted past the grace); violations: {len(failed)}"
          + (f" (seeds {', '.join(map(str, failed[:20]))})" if failed else ""))
    print("exercised: " + ", ".join(f"{n} {what}" for what, n in sorted(coverage.items())))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

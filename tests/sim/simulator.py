"""A deterministic simulator of the whole embedded engine, in the style of TigerBeetle's VOPR.

One seed drives everything: the virtual clock (asyncio runs on a loop whose time only moves
when nothing is ready, so an hour of engine time takes milliseconds), the provider's
latencies, answers and faults (rejected batches, outages of ours, duplicate answers),
crashes of the engine at any await point (a crash stops the process between two
transactions, as kill -9 does: the engine holds no transaction across an await), restarts
inside and past the outage grace, a second engine racing the first with cancels, new
bulks, grants and erasures. After each run every money rule is checked, and `vec audit`.
A failure prints its seed; `python -m tests.sim.simulator --seed N` replays it exactly.

    python -m tests.sim.simulator --seeds 10000        # the long hunt (a few minutes a thousand)
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
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from unittest import mock

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


class Violation(AssertionError):
    pass


@dataclass
class Story:
    seed: int
    lines: list[str] = field(default_factory=list)
    crashes: int = 0
    restarts_past_grace: int = 0
    tasks: int = 0
    events: int = 0

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
        self.accounts: list[str] = []
        self.tasks: list[str] = []
        self.files = 0

    def say(self, text: str) -> None:
        self.story.say(self.clock, text)

    def settings(self):
        from engine.config import EngineSettings

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

    # --- what the customers do (a second engine, racing the runtime) --------------------

    def open_account(self, customer) -> None:
        account = f"acct{len(self.accounts)}"
        customer.open_account(account)
        customer.grant_credits(account, "payg", self.rng.randint(1, 300))
        self.accounts.append(account)
        self.say(f"open {account}")

    def new_bulk(self, customer) -> None:
        from engine.domain.errors import DomainError

        account = self.rng.choice(self.accounts)
        count = self.rng.randint(1, 40)
        self.files += 1
        path = self.workdir / f"bulk{self.files}.csv"
        path.write_text("email\n" + "".join(f"s{self.seed}u{self.files}x{i}@sim{i % 4}.example\n"
                                            for i in range(count)))
        try:
            task_id = customer.create_bulk(account, path).task_id
        except DomainError as refused:  # too few credits, say: nothing appended
            self.say(f"bulk of {count} for {account} refused: {refused}")
            return
        self.tasks.append(task_id)
        self.say(f"bulk {task_id[:8]} of {count} for {account}")

    def poke(self, customer) -> None:
        """Something a customer or an operator does while the engine runs."""
        from engine.domain.errors import DomainError

        rng = self.rng
        try:
            action = rng.choices(("cancel", "bulk", "grant", "erase", "single"), (4, 3, 1, 1, 1))[0]
            if action == "cancel" and self.tasks:
                task_id = rng.choice(self.tasks)
                customer.cancel_task(task_id)
                self.say(f"cancel {task_id[:8]}")
            elif action == "bulk":
                self.new_bulk(customer)
            elif action == "grant":
                customer.grant_credits(rng.choice(self.accounts), "payg", rng.randint(1, 100))
            elif action == "erase" and self.tasks:
                task_id = rng.choice(self.tasks)
                customer.erase_task(task_id)
                self.say(f"erase {task_id[:8]}")
            elif action == "single":
                task_id = customer.create_single(rng.choice(self.accounts), f"one{rng.randint(0, 9)}@sim.example")
                self.tasks.append(task_id)
        except DomainError as refused:
            self.say(f"{action} refused: {refused}")

    # --- the engine's life: run, crash, restart ------------------------------------------

    async def life(self) -> None:
        from consumers.runtime import EngineCrashed, Runtime
        from engine.store.lease import LeaseHeld

        rng = self.rng
        customer = self.engine()
        for _ in range(rng.randint(1, 3)):
            self.open_account(customer)
        for _ in range(rng.randint(1, 3)):
            self.new_bulk(customer)
        for round_ in range(rng.randint(2, 6)):
            engine = self.engine()
            provider = SimProvider(rng, self.clock)
            stop = asyncio.Event()
            runtime = Runtime(engine, provider)
            running = asyncio.create_task(runtime.run(stop))
            crash_at = self.clock.now + rng.expovariate(1 / 20)
            while self.clock.now < crash_at and not running.done():
                await asyncio.sleep(rng.expovariate(1 / 3))
                if rng.random() < 0.3:
                    self.poke(customer)
            if running.done():
                error = running.exception()
                if isinstance(error, LeaseHeld):
                    raise Violation(f"a restart found the lease held: {error}")
                raise Violation(f"the runtime stopped by itself: {error!r}")
            if round_ % 2 == 0 or rng.random() < 0.5:
                self.crash(engine, running)
                await asyncio.sleep(0)
                with contextlib.suppress(BaseException):
                    await running
                down = rng.choice((0.5, 5.0, self.grace - 1, self.grace + 5, self.grace * 3))
                self.story.restarts_past_grace += down > self.grace
                self.say(f"crash; down for {down:g}s (grace {self.grace:g}s)")
                await asyncio.sleep(down)
            else:
                stop.set()
                with contextlib.suppress(EngineCrashed):
                    await running
                engine.db.close()
                self.say("clean stop")
        await self.drain(customer)

    def crash(self, engine, running: asyncio.Task) -> None:
        """kill -9: the process stops between two transactions; nothing of its clean-up runs
        (its connection is gone), and its lease stays behind with a dead PID."""
        self.story.crashes += 1
        engine.db.close()
        running.cancel()
        from engine.store import open_database

        db = open_database(self.url)
        db.events.conn.execute("UPDATE engine_lease SET pid = ?", (DEAD_PID,))
        db.close()

    async def drain(self, customer) -> None:
        """A last engine runs until every task has finished (the stall bound guarantees it)."""
        from consumers.runtime import Runtime

        engine = self.engine()
        stop = asyncio.Event()
        running = asyncio.create_task(Runtime(engine, SimProvider(self.rng, self.clock)).run(stop))
        limit = self.clock.now + 4 * 3600
        while any(customer.task(t).active for t in self.tasks):
            if running.done():
                raise Violation(f"the last runtime stopped: {running.exception()!r}")
            if self.clock.now > limit:
                raise Violation("tasks still active four virtual hours after the last restart")
            await asyncio.sleep(5)
        stop.set()
        await running
        engine.db.close()

    # --- the checks -----------------------------------------------------------------------

    def check(self) -> None:
        from collections import Counter

        from engine.audit import audit
        from engine.store import open_database
        from events import AddressVerified, CreditsDebited, CreditsRefunded, ResultUnknown

        db = open_database(self.url)
        try:
            report = audit(db)
            if report.violations:
                raise Violation("vec audit: " + "; ".join(report.violations[:5]))
            debited, refunded, consumed, debits = Counter(), Counter(), Counter(), Counter()
            settled: Counter = Counter()
            for recorded in db.events.read_all():
                event = recorded.event
                if isinstance(event, CreditsDebited):
                    debits[event.task_id] += 1
                    debited[event.task_id] += event.monthly + event.payg
                elif isinstance(event, CreditsRefunded):
                    refunded[event.task_id] += event.amount
                elif isinstance(event, (AddressVerified, ResultUnknown)) and not event.late:
                    settled[(recorded.stream, event.address)] += 1
                    if isinstance(event, AddressVerified):
                        consumed[recorded.stream.removeprefix("task-")] += 1
                self.story.events += 1
            twice = [key for key, n in settled.items() if n > 1]
            if twice:
                raise Violation(f"{len(twice)} addresses settled twice, e.g. {twice[0]}")
            if any(n != 1 for n in debits.values()):
                raise Violation("a task was debited more than once")
            for task_id in self.tasks:
                if debited[task_id] != consumed[task_id] + refunded[task_id]:
                    raise Violation(f"task {task_id}: debited {debited[task_id]} != consumed {consumed[task_id]}"
                                    f" + refunded {refunded[task_id]}")
            for account in self.accounts:
                balance = db.read.balances(account)
                if balance["monthly"] < 0 or balance["payg"] < 0:
                    raise Violation(f"{account} went negative")
            self.story.tasks = len(self.tasks)
        finally:
            db.close()

    def run(self) -> Story:
        import consumers.runtime
        import consumers.verification
        import engine.keyring
        import engine.service

        rng_ids = random.Random(self.seed ^ 0x5EED)
        self.grace = self.rng.choice((10.0, 60.0, 300.0))
        self.deadline = self.rng.choice((5.0, 30.0, 120.0))
        self.base_settings = self.settings()
        fake_time = mock.Mock(wraps=time)
        fake_time.monotonic = self.clock.monotonic
        loop = VirtualLoop(self.clock)
        with mock.patch.object(consumers.runtime, "time", fake_time), \
                mock.patch.object(consumers.verification, "time", fake_time), \
                mock.patch.object(engine.service.uuid, "uuid4", lambda: uuid.UUID(int=rng_ids.getrandbits(128))), \
                mock.patch.object(engine.keyring.os, "urandom", rng_ids.randbytes):
            try:
                loop.run_until_complete(asyncio.wait_for(self.life(), timeout=24 * 3600))
            finally:
                loop.close()
        self.check()
        return self.story


def _reaped_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


DEAD_PID = _reaped_pid()


def run_seed(seed: int, verbose: bool = False) -> Story:
    import logging

    # a crashed engine's clean-up fails on its closed connection by design: not news
    logging.getLogger().setLevel(logging.INFO if verbose else logging.CRITICAL)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    workdir = Path(tempfile.mkdtemp(prefix=f"vec-sim-{seed}-"))
    sim = Sim(seed, workdir, verbose)
    try:
        return sim.run()
    except BaseException as error:
        story = "\n".join(sim.story.lines[-40:])
        raise Violation(f"seed {seed} failed: {type(error).__name__}: {error}\n"
                        f"replay: python -m tests.sim.simulator --seed {seed} -v\n{story}") from error
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
    args = parser.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else range(args.first, args.first + args.seeds)
    failed, started = [], time.monotonic()
    crashes = past_grace = tasks = events = 0
    for seed in seeds:
        try:
            story = run_seed(seed, args.verbose)
        except Violation as violation:
            failed.append(seed)
            print(violation, file=sys.stderr)
            continue
        crashes, past_grace = crashes + story.crashes, past_grace + story.restarts_past_grace
        tasks, events = tasks + story.tasks, events + story.events
    runs = len(list(seeds))
    print(f"{runs} seeds in {time.monotonic() - started:.1f}s: {tasks} tasks, {events} events, {crashes} crashes "
          f"({past_grace} restarted past the grace); violations: {len(failed)}"
          + (f" (seeds {', '.join(map(str, failed[:20]))})" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

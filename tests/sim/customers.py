"""What customers and operators do to the simulated engine, drawn from the seed: accounts,
PAYG purchases and Monthly subscriptions (renewed or topped up), bulk and single tasks,
cancels, deletes, erasures (of a task or a whole account), retention settings, and
commands sent twice with one idempotency key, later or racing a second engine.

Every command goes through a second engine on the same store, racing the runtime, as the
CLI and the API do. What the customers were told (credits granted, tasks created) is kept
as their promises, which the checks (tests/sim/checks.py) hold the log to.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable

from engine.domain.errors import DomainError
from engine.store.base import IdempotencyConflict
from tests.sim.checks import Violation

if TYPE_CHECKING:
    from engine.service import Engine
    from tests.sim.simulator import Sim

# Subscription periods (virtual seconds): some end while an engine runs (a sweep expires the
# leftover), some while it is down or over the last night (the next engine's first sweep).
PERIODS_S = (15.0, 60.0, 240.0, 1800.0, 1.5 * 86400)
RETENTION_DAYS = (1, 2, 3)

Outcome = tuple[str, Any]  # ("ok", what the command returned) | ("refused", the error's class)


@dataclass
class Idempotent:
    """A command with an idempotency key: `run(engine)` sends it, `other(engine)` sends another
    command under the same key, `promise(value)` records its effect once."""

    what: str
    run: Callable[["Engine"], Any]
    other: Callable[["Engine"], Any]
    promise: Callable[[Any], None]
    first: Outcome | None = None


class RaceAhead:
    """An event store whose next append first lets `ahead` run: the engine holding it decided
    on what it read, then another engine appends the same command before it (it loses)."""

    def __init__(self, store, ahead: Callable[[], None]):
        self._store, self._ahead = store, ahead

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def append(self, *args, **kwargs):
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead()
        return self._store.append(*args, **kwargs)


class Customers:
    def __init__(self, sim: "Sim"):
        self.sim, self.rng = sim, sim.rng
        self.engine = sim.engine()  # the customers' engine, racing the runtime
        self.racer = sim.engine()  # a second one, racing the first with the same idempotency key
        self.accounts: list[str] = []
        self.tasks: list[str] = []
        self.periods: dict[str, float] = {}  # account -> its subscription period
        self.granted: Counter[str] = Counter()  # promises: credits each account was told it got
        self.created: set[str] = set()  # promises: the tasks the customers were given
        self.sent: list[Idempotent] = []  # idempotent commands that succeeded, to send again
        self.keys = self.files = 0

    def say(self, text: str) -> None:
        self.sim.say(text)

    def count(self, what: str, n: int = 1) -> None:
        self.sim.story.coverage[what] += n

    # --- accounts and credits -------------------------------------------------------------

    def open_account(self) -> None:
        account = f"acct{len(self.accounts)}"
        self.engine.open_account(account)
        self._opened(account)
        self.grant(account)
        if self.rng.random() < 0.6:
            self.subscribe(account)
        if self.rng.random() < 0.6:
            self.set_retention(account)

    def _opened(self, account: str) -> None:
        self.accounts.append(account)
        self.periods[account] = self.rng.choice(PERIODS_S)
        self.granted[account] += 200  # the welcome grant
        self.say(f"open {account} (Monthly period {self.periods[account]:g}s)")

    def grant(self, account: str) -> None:
        amount = self.rng.randint(1, 300)
        self.engine.grant_credits(account, "payg", amount)
        self.granted[account] += amount

    def subscribe(self, account: str) -> None:
        """A Monthly grant: a new period (the leftover of the last one expires), or now and
        then a top-up of the current one (same expiry)."""
        amount, expires = self.rng.randint(1, 150), self._period_end(account)
        self.engine.grant_credits(account, "monthly", amount, "subscription", expires_at=expires)
        self.granted[account] += amount
        self.count("monthly grants")
        self.say(f"subscription: {amount} Monthly credits for {account}, expiring at t={self._t(expires):.3f}")

    def _period_end(self, account: str):
        now, current = self.sim.clock.utc(), self.engine.account(account).monthly_expires_at
        if current is not None and current > now and self.rng.random() < 0.3:
            return current
        return now + timedelta(seconds=self.periods[account])

    def _t(self, moment) -> float:
        from tests.sim.simulator import T0

        return (moment - T0).total_seconds()

    def set_retention(self, account: str) -> None:
        days = self.rng.choice(RETENTION_DAYS)
        self.engine.set_retention(account, days)
        self.say(f"retention of {account}: {days} days")

    # --- tasks ------------------------------------------------------------------------

    def _bulk_file(self, count: int):
        self.files += 1
        path = self.sim.workdir / f"bulk{self.files}.csv"
        path.write_text("email\n" + "".join(f"s{self.sim.seed}u{self.files}x{i}@sim{i % 4}.example\n"
                                            for i in range(count)))
        return path

    def new_bulk(self) -> None:
        account, count = self.rng.choice(self.accounts), self.rng.randint(1, 40)
        try:
            task_id = self.engine.create_bulk(account, self._bulk_file(count)).task_id
        except DomainError as refused:  # too few credits, say: nothing appended
            self.say(f"bulk of {count} for {account} refused: {refused}")
            return
        self._created(task_id, "bulk")
        self.say(f"bulk {task_id[:8]} of {count} for {account}")

    def new_single(self) -> None:
        account = self.rng.choice(self.accounts)
        task_id = self.engine.create_single(account, self._address())
        self._created(task_id, "single")
        self.say(f"single {task_id[:8]} for {account}")

    def _address(self) -> str:
        return f"one{self.rng.randint(0, 9)}@sim.example"

    def _created(self, task_id: str, kind: str) -> None:
        self.created.add(task_id)
        self.tasks.append(task_id)
        self.count(f"{kind} tasks")

    def on_task(self, action: str, task_id: str | None = None) -> None:
        """cancel, delete or erase a task (often one still running: refused)."""
        task_id = task_id or self.rng.choice(self.tasks)
        do = {"cancel": self.engine.cancel_task, "delete": self.engine.delete_task,
              "erase": lambda t: self.engine.erase_task(t, "request")}[action]
        done = do(task_id)
        self.say(f"{action} {task_id[:8]}" + ("" if done else " (nothing to do)"))
        if action != "cancel" and done:
            self.count(f"{action}s")

    def erase_account(self) -> None:
        account = self.rng.choice(self.accounts)
        erased = self.engine.erase_account(account)
        self.count("account erasures")
        self.say(f"erase account {account}: {len(erased)} tasks")

    # --- idempotent commands ----------------------------------------------------------

    def idempotent(self) -> Idempotent:
        """One of the commands that take an idempotency key, with a fresh key."""
        self.keys += 1
        key, account = f"sim-key-{self.keys}", self.rng.choice(self.accounts)
        kind = self.rng.choice(("grant", "subscribe", "single", "bulk", "open"))
        if kind == "open":
            new = f"acct{len(self.accounts)}"
            return Idempotent(f"open {new}", lambda e: _ids(e.open_account(new, idempotency_key=key)),
                              lambda e: e.open_account(new + "x", idempotency_key=key), lambda _: self._opened(new))
        if kind in ("grant", "subscribe"):
            bucket, expires = ("payg", None) if kind == "grant" else ("monthly", self._period_end(account))
            n = self.rng.randint(1, 100)
            reason = "purchase" if kind == "grant" else "subscription"
            return Idempotent(f"{kind} {n} to {account}", lambda e: _ids(e.grant_credits(
                account, bucket, n, reason, expires, idempotency_key=key)), lambda e: e.grant_credits(
                account, bucket, n + 1, reason, expires, idempotency_key=key), lambda _: self._granted(account, n))
        if kind == "single":
            address = self._address()
            return Idempotent(f"single for {account}", lambda e: e.create_single(account, address, idempotency_key=key),
                              lambda e: e.create_single(account, "other@sim.example", idempotency_key=key),
                              lambda t: self._created(t, "single"))
        path, other = self._bulk_file(self.rng.randint(1, 12)), self._bulk_file(1)
        return Idempotent(f"bulk for {account}", lambda e: e.create_bulk(account, path, idempotency_key=key).task_id,
                          lambda e: e.create_bulk(account, other, idempotency_key=key).task_id,
                          lambda t: self._created(t, "bulk"))

    def _granted(self, account: str, amount: int) -> None:
        self.granted[account] += amount

    def send_twice(self) -> None:
        """A command and its retry with the same key: one after the other, or racing (a
        second engine decides, then the first appends the same command before it)."""
        command = self.idempotent()
        if self.rng.random() < 0.5:
            first = self._outcome(command, self.engine)
            second = self._outcome(command, self.rng.choice((self.engine, self.racer)))
            how = "retried"
        else:
            first, second = self._race(command)
            how = "raced"
        self.count(f"idempotent retries ({how})")
        self.say(f"{command.what}, {how} with one key: {first[0]}")
        self._same(command, first, second)
        command.first = first
        if first[0] == "ok":
            command.promise(first[1])
            self.sent.append(command)

    def _race(self, command: Idempotent) -> tuple[Outcome, Outcome]:
        ahead: list[Outcome] = []
        self.racer.store = RaceAhead(self.racer.db.events, lambda: ahead.append(self._outcome(command, self.engine)))
        try:
            second = self._outcome(command, self.racer)
        finally:
            self.racer.store = self.racer.db.events
        if not ahead:  # refused before it appended: the race never began
            ahead.append(self._outcome(command, self.engine))
        return ahead[0], second

    def send_again(self) -> None:
        """A command sent earlier (it succeeded) arrives again, much later: the same answer,
        nothing appended; another command under its key is refused, nothing appended."""
        command = self.rng.choice(self.sent)
        engine = self.rng.choice((self.engine, self.racer))
        head = engine.store.head()
        self._same(command, command.first, self._outcome(command, engine))
        self.count("idempotent retries (later)")
        try:
            command.other(engine)
        except IdempotencyConflict:
            self.count("idempotency key reused for another command")
        else:
            raise Violation(f"{command.what}: another command under its idempotency key was accepted")
        if engine.store.head() != head:
            raise Violation(f"{command.what}: a retry appended events ({head} -> {engine.store.head()})")
        self.say(f"{command.what} sent again: the same answer")

    @staticmethod
    def _outcome(command: Idempotent, engine: "Engine") -> Outcome:
        try:
            return "ok", command.run(engine)
        except DomainError as refused:
            return "refused", type(refused).__name__

    @staticmethod
    def _same(command: Idempotent, first: Outcome | None, second: Outcome) -> None:
        if first != second:
            raise Violation(f"{command.what}: sent twice with one idempotency key, answered {first} then {second}")

    # --- one random action ------------------------------------------------------------

    def poke_finished(self) -> None:
        """After the run: delete or erase a finished task, or send a command again."""
        finished = [t for t in self.tasks if not self.engine.task(t).active]
        action = self.rng.choice(("delete", "erase", "again"))
        try:
            if action == "again" and self.sent:
                self.send_again()
            elif finished:
                self.on_task(action if action != "again" else "erase", self.rng.choice(finished))
        except DomainError as refused:  # deleted already, say
            self.say(f"{action} refused: {refused}")

    ACTIONS = {"cancel": 4, "bulk": 3, "single": 2, "grant": 1, "subscribe": 1.5, "erase": 1, "delete": 1.5,
               "retention": 0.5, "twice": 1.5, "again": 1, "erase account": 0.2}

    def poke(self) -> None:
        """Something a customer or an operator does while the engine runs."""
        action = self.rng.choices(list(self.ACTIONS), list(self.ACTIONS.values()))[0]
        try:
            self._do(action)
        except DomainError as refused:
            self.say(f"{action} refused: {refused}")

    def _do(self, action: str) -> None:
        if action in ("cancel", "delete", "erase"):
            if self.tasks:
                self.on_task(action)
        elif action == "again":
            if self.sent:
                self.send_again()
        else:
            {"bulk": self.new_bulk, "single": self.new_single, "twice": self.send_twice,
             "retention": lambda: self.set_retention(self.rng.choice(self.accounts)),
             "erase account": self.erase_account,
             "grant": lambda: self.grant(self.rng.choice(self.accounts)),
             "subscribe": lambda: self.subscribe(self.rng.choice(self.accounts))}[action]()


def _ids(recorded) -> tuple[str, ...]:
    return tuple(str(r.event_id) for r in recorded)

"""Hypothesis stateful tests of the money rules (shared/DESIGN.md), driving the real
application service over a real SQLite file with a controllable clock.

An independent model keeps what every account and task *should* hold; after every step
the engine, the log and the read models are checked against it and against the rules:
balances never negative, the ledger identity per account, every address settled at most
once, `debited == consumed + refunded` for finished tasks, refunds only into PAYG, Credits
History summing to the balance, read models equal to a fresh fold (audit), and refused
commands appending nothing.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from engine.audit import audit
from engine.bulkfile import BadUpload
from entrypoints.settings import EngineSettings
from engine.domain.errors import (
    AccountAlreadyOpen,
    AccountNotFound,
    InsufficientCredits,
    InvalidCommand,
    TaskAlreadyCancelled,
    TaskAlreadyFinished,
    TaskNotCancellable,
    TaskNotFinished,
    TaskNotFound,
)
from engine.domain.tasks import Result
from engine import service
from engine.service import Engine
from engine.store import ConcurrencyError, IdempotencyConflict, open_database
from events import (
    AddressVerified,
    ChunkFailed,
    CreditsDebited,
    CreditsRefunded,
    ResultUnknown,
    ResultsRecorded,
    SystemFailure,
    TaskCancelled,
    TaskFailed,
)
from projections import queries, runner
from tests.staged import staged_chunk

T0 = datetime(2026, 1, 15, 8, 0, tzinfo=timezone.utc)
WELCOME = 200
ACCOUNT_NAMES = ("acme", "beta", "gamma")
POOL = ("ann@x.com", "bob@x.com", "cy@y.org", "dee@y.org", "eve@z.net", "fay@z.net", "gus@x.com", "hal@y.org",
        "ivy@w.io", "jo@w.io")
OUTCOMES = (
    ("safe", ""), ("invalid", "user_unknown"), ("risky", "accept_all"),
    ("unknown", "greylisted"), ("unknown", "smtp_timeout"), ("unknown", "antispam_block"),
    ("unknown", "no-such-reason"),
)
ACTIVE = ("pending", "processing")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class MAccount:
    monthly: int = 0
    payg: int = WELCOME
    expires: datetime | None = None
    # the ledger, kept apart from the buckets
    granted: int = WELCOME
    debited: int = 0
    refunded: int = 0
    expired: int = 0

    def lazily_expired(self, now: datetime) -> bool:
        return self.monthly > 0 and self.expires is not None and self.expires <= now

    def expire(self) -> None:
        self.expired += self.monthly
        self.monthly = 0


@dataclass
class MTask:
    task_id: str
    account: str
    kind: str
    addresses: list[str]
    chunk_size: int
    sha256: str
    created_at: datetime
    status: str = "pending"
    submitted: int = 0
    chunks: dict[int, list[str]] = field(default_factory=dict)
    pending: dict[int, list[str]] = field(default_factory=dict)
    settled: dict[str, str] = field(default_factory=dict)  # address -> consumed | refunded
    late: set[str] = field(default_factory=set)
    failed_chunks: int = 0
    deleted: bool = False
    erased: bool = False  # its per-address data is gone: nothing more is recorded for it

    @property
    def total_chunks(self) -> int:
        return -(-len(self.addresses) // self.chunk_size)

    @property
    def consumed(self) -> int:
        return sum(1 for s in self.settled.values() if s == "consumed")

    @property
    def refunded(self) -> int:
        return sum(1 for s in self.settled.values() if s == "refunded")

    @property
    def unsettled(self) -> list[str]:
        return [a for a in self.addresses if a not in self.settled]

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


class RacingStore:
    """The real store, with a rival's write slipped in just before the next append."""

    def __init__(self, inner, rival):
        self.inner, self.rival, self.conflicts = inner, rival, 0

    def append(self, events, expected, idempotency=None):
        if self.rival is not None:
            rival, self.rival = self.rival, None
            rival()
        try:
            return self.inner.append(events, expected, idempotency)
        except ConcurrencyError:
            self.conflicts += 1
            raise

    def __getattr__(self, name):
        return getattr(self.inner, name)


class MoneyMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="vec-money-"))
        self.url = f"sqlite:///{self.dir}/vec.db"
        self.clock = Clock()
        self.dbs: list = []
        self.engines: list[Engine] = []
        self.current = 0
        self.settings: EngineSettings | None = None
        self.accounts: dict[str, MAccount] = {}
        self.tasks: dict[str, MTask] = {}
        self.task_order: list[str] = []
        self.files: list[bytes] = []
        self.grant_keys: list[tuple[str, str, int]] = []  # (key, account, amount)
        self.opened_with_key: set[str] = set()
        self.single_keys: list[tuple[str, str, str, str]] = []  # (key, account, address, task id)
        self.counter = 0
        self.steps = 0

    # --- plumbing ---------------------------------------------------------------------

    def _connect(self) -> None:
        self.dbs = [open_database(self.url), open_database(self.url)]
        self.engines = [Engine(db, self.settings, self.clock) for db in self.dbs]

    @property
    def db(self):
        return self.dbs[0]

    @property
    def engine(self) -> Engine:
        return self.engines[self.current]

    def teardown(self) -> None:
        try:
            for module, name, value in getattr(self, "_restore", []):
                setattr(module, name, value)
            if self.dbs:
                report = audit(self.db)
                assert report.violations == [], report.violations
                assert report.accounts == len(self.accounts) and report.tasks == len(self.tasks)
                # a rebuild from the log gives the live read models back, row for row
                projector = self.db.projector
                live = {table: projector.sorted_rows(table) for table in projector.specs}
                projector.rebuild()
                assert {table: projector.sorted_rows(table) for table in projector.specs} == live
        finally:
            for db in self.dbs:
                db.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def _staged(self) -> int:
        return sum(self.db.inputs.staged().values())

    def refused(self, error: type[BaseException], command) -> None:
        """A refused command raises the expected error and appends (and stages) nothing."""
        head, staged = self.db.events.head(), self._staged()
        with pytest.raises(error):
            command()
        assert self.db.events.head() == head, f"{error.__name__} appended events"
        assert self._staged() == staged, f"{error.__name__} left staged inputs"

    def replays(self, command, types: list[str]) -> None:
        """An idempotent retry: the earlier events come back, nothing new is appended."""
        head = self.db.events.head()
        recorded = command()
        assert [r.type for r in recorded] == types
        assert all(r.position <= head for r in recorded)
        assert self.db.events.head() == head

    def appends_nothing(self, command) -> None:
        head = self.db.events.head()
        assert command() == []
        assert self.db.events.head() == head

    def _next(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def _pick(self, keys, index: int):
        keys = list(keys)
        return keys[index % len(keys)]

    def _refund(self, task: MTask, addresses) -> None:
        account = self.accounts[task.account]
        for address in addresses:
            assert address not in task.settled
            task.settled[address] = "refunded"
            account.payg += 1
            account.refunded += 1

    def _stop(self, task: MTask, status: str) -> None:
        self._refund(task, task.unsettled)
        task.status = status

    # --- set-up -----------------------------------------------------------------------

    @initialize(chunk_size=st.sampled_from([1, 2, 3]), threshold=st.sampled_from([0.0, 0.34, 0.5, 1.0]),
                projection_batch=st.sampled_from([runner.BATCH, 1, 3]),
                cache_size=st.sampled_from([service.CACHE_SIZE, 2, 3]))
    def start(self, chunk_size, threshold, projection_batch, cache_size):
        # Small projector batches and engine caches take the paths a big log takes:
        # checkpoints between batches, aggregates evicted and reloaded from the log.
        self._restore = [(runner, "BATCH", runner.BATCH), (service, "CACHE_SIZE", service.CACHE_SIZE)]
        runner.BATCH, service.CACHE_SIZE = projection_batch, cache_size
        self.settings = EngineSettings(chunk_size=chunk_size, partial_failure_threshold=threshold,
                                       duplicate_window_hours=24)
        self._connect()
        self.engine.open_account("acme")
        self.accounts["acme"] = MAccount()

    def ready(self) -> bool:
        return self.settings is not None

    # --- accounts ---------------------------------------------------------------------

    @rule(name=st.sampled_from(ACCOUNT_NAMES), key=st.booleans())
    def open_account(self, name, key):
        idempotency = f"open-{name}" if key else None
        if name in self.accounts:
            if key and name in self.opened_with_key:
                self.replays(lambda: self.engine.open_account(name, idempotency), ["AccountOpened", "CreditsGranted"])
            else:
                self.refused(AccountAlreadyOpen, lambda: self.engine.open_account(name, idempotency))
            return
        recorded = self.engine.open_account(name, idempotency)
        assert [r.type for r in recorded] == ["AccountOpened", "CreditsGranted"]
        self.accounts[name] = MAccount()
        if key:
            self.opened_with_key.add(name)

    @rule(pick=st.integers(0, 9), amount=st.integers(1, 300),
          mode=st.sampled_from(["plain", "keyed", "retry", "conflict"]))
    def grant_payg(self, pick, amount, mode):
        if mode in ("retry", "conflict") and self.grant_keys:
            key, name, amount = self._pick(self.grant_keys, pick)
            if mode == "retry":
                self.replays(lambda: self.engine.grant_credits(name, "payg", amount, "purchase",
                                                               idempotency_key=key), ["CreditsGranted"])
            else:
                self.refused(IdempotencyConflict, lambda: self.engine.grant_credits(
                    name, "payg", amount + 1, "purchase", idempotency_key=key))
            return
        name = self._pick(self.accounts, pick)
        key = self._next("order-") if mode != "plain" else None
        self.engine.grant_credits(name, "payg", amount, "purchase", idempotency_key=key)
        if key:
            self.grant_keys.append((key, name, amount))
        account = self.accounts[name]
        account.payg += amount
        account.granted += amount

    @rule(pick=st.integers(0, 9), amount=st.integers(1, 120), days=st.sampled_from([1, 10, 30, 45]),
          top_up=st.booleans())
    def grant_monthly(self, pick, amount, days, top_up):
        name = self._pick(self.accounts, pick)
        account = self.accounts[name]
        now = self.clock.now
        if top_up and account.expires is not None and account.expires > now:
            expires = account.expires
        else:
            expires = now + timedelta(days=days)
        self.engine.grant_credits(name, "monthly", amount, "subscription", expires)
        if account.monthly > 0 and account.expires != expires:
            account.expire()  # a new period: the leftover expires first
        account.monthly += amount
        account.granted += amount
        account.expires = expires

    @rule(pick=st.integers(0, 9), how=st.sampled_from(["stranger", "past", "zero", "payg-expiry"]))
    def refused_grant(self, pick, how):
        name = self._pick(self.accounts, pick)
        now = self.clock.now
        if how == "stranger":
            self.refused(AccountNotFound, lambda: self.engine.grant_credits("ghost", "payg", 5))
        elif how == "past":
            self.refused(InvalidCommand, lambda: self.engine.grant_credits(
                name, "monthly", 10, "subscription", now - timedelta(seconds=1)))
        elif how == "zero":
            self.refused(InvalidCommand, lambda: self.engine.grant_credits(name, "payg", 0))
        else:
            self.refused(InvalidCommand, lambda: self.engine.grant_credits(
                name, "payg", 5, "purchase", now + timedelta(days=1)))

    @rule(hours=st.sampled_from([1, 6, 23, 25, 24 * 11, 24 * 31]), pick=st.integers(0, 9), expire=st.booleans())
    def time_passes(self, hours, pick, expire):
        """The clock moves on; then maybe the scheduler's ExpireMonthly for one account."""
        self.clock.now += timedelta(hours=hours)
        if not expire:
            return
        name = self._pick(self.accounts, pick)
        account = self.accounts[name]
        if account.lazily_expired(self.clock.now):
            recorded = self.engine.expire_monthly(name)
            assert [r.type for r in recorded] == ["MonthlyCreditsExpired"]
            account.expire()
        else:
            self.appends_nothing(lambda: self.engine.expire_monthly(name))

    # --- creating tasks ---------------------------------------------------------------

    def _debit(self, name: str, count: int) -> str | None:
        """The model's debit: "refused" when the credits do not cover it (then nothing changes)."""
        account = self.accounts[name]
        monthly = 0 if account.lazily_expired(self.clock.now) else account.monthly
        if count > monthly + account.payg:
            return "refused"
        if account.lazily_expired(self.clock.now):
            account.expire()
        from_monthly = min(account.monthly, count)
        account.monthly -= from_monthly
        account.payg -= count - from_monthly
        account.debited += count
        return None

    def _csv(self, rows: list[str], header: str) -> bytes:
        if header == "none":
            lines = rows
        elif header == "email":
            lines = ["email", *rows]
        else:
            lines = ["name,email", *(f"N{i},{r}" for i, r in enumerate(rows))]
        return ("\n".join(lines) + "\n").encode()

    @rule(pick=st.integers(0, 9),
          rows=st.lists(st.tuples(st.integers(0, len(POOL)), st.booleans()), min_size=0, max_size=9),
          header=st.sampled_from(["none", "email", "name,email"]),
          big=st.integers(0, 12), reuse=st.integers(-3, 5), allow_duplicate=st.booleans())
    def create_bulk(self, pick, rows, header, big, reuse, allow_duplicate):
        name = self._pick(self.accounts, pick)
        if reuse >= 0 and self.files:
            data = self._pick(self.files, reuse)
        elif big == 0:
            tag = self._next("big")
            data = self._csv([f"{tag}-{i}@big.example" for i in range(150)], "email")
        else:
            cells = [(POOL[i].upper() if upper else POOL[i]) if i < len(POOL) else "n/a" for i, upper in rows]
            data = self._csv(cells, header)
        self.files.append(data)
        path = self.dir / f"{self._next('upload-')}.csv"
        path.write_bytes(data)

        addresses = self._addresses_of(data)
        sha = hashlib.sha256(data).hexdigest()
        since = self.clock.now - timedelta(hours=24)
        duplicate = any(t.account == name and t.kind == "bulk" and t.sha256 == sha and t.created_at >= since
                        for t in self.tasks.values())
        create = lambda: self.engine.create_bulk(name, path, allow_duplicate=allow_duplicate)  # noqa: E731
        if not addresses or (duplicate and not allow_duplicate):
            self.refused(BadUpload, create)
            return
        if self._debit(name, len(addresses)) == "refused":
            self.refused(InsufficientCredits, create)
            return
        upload = create()
        assert upload.report.unique == len(addresses)
        self._add_task(MTask(upload.task_id, name, "bulk", addresses, self.settings.chunk_size, sha, self.clock.now))

    @staticmethod
    def _addresses_of(data: bytes) -> list[str]:
        seen: dict[str, str] = {}
        for line in data.decode().splitlines():
            cell = line.split(",")[-1].strip()
            if "@" in cell:
                seen.setdefault(cell.lower(), cell)
        return list(seen.values())

    @rule(pick=st.integers(0, 9), address=st.sampled_from(POOL),
          key=st.sampled_from(["none", "none", "keyed", "retry", "conflict"]))
    def create_single(self, pick, address, key):
        if key in ("retry", "conflict") and self.single_keys:
            idempotency, name, address, task_id = self._pick(self.single_keys, pick)
            if key == "retry":
                head, staged = self.db.events.head(), self._staged()
                assert self.engine.create_single(name, address, idempotency_key=idempotency) == task_id
                assert (self.db.events.head(), self._staged()) == (head, staged)
            else:
                other = next(a for a in POOL if a != address)
                self.refused(IdempotencyConflict,
                             lambda: self.engine.create_single(name, other, idempotency_key=idempotency))
            return
        name = self._pick(self.accounts, pick)
        idempotency = self._next("single-") if key == "keyed" else None
        create = lambda: self.engine.create_single(name, address, idempotency_key=idempotency)  # noqa: E731
        if self._debit(name, 1) == "refused":
            self.refused(InsufficientCredits, create)
            return
        task_id = create()
        if idempotency:
            self.single_keys.append((idempotency, name, address, task_id))
        self._add_task(MTask(task_id, name, "single", [address], 1, hashlib.sha256(address.encode()).hexdigest(),
                             self.clock.now))

    def _upload(self, task_id: str) -> str:
        """Where the task's staged inputs wait (TaskCreated.upload_id)."""
        return self.engine.task(task_id).upload_id

    def _add_task(self, task: MTask) -> None:
        self.tasks[task.task_id] = task
        self.task_order.append(task.task_id)

    # --- running tasks ----------------------------------------------------------------

    def _task(self, pick: int, prefer_active: bool = True) -> MTask:
        """Mostly a task with work left (running, or with results still in flight); else any."""
        busy = [t for t in self.task_order
                if not self.tasks[t].deleted and (self.tasks[t].active or any(self.tasks[t].pending.values()))]
        return self.tasks[self._pick(busy if prefer_active and busy else self.task_order, pick)]

    def _submit(self, task: MTask, retry: bool = False) -> None:
        if task.deleted:
            self.refused(TaskNotFound, lambda: self.engine.submit_chunk(task.task_id, 0, [], "smtp", "primary"))
            return
        n = task.submitted - 1 if retry and task.submitted else task.submitted
        addresses = staged_chunk(self.db, self._upload(task.task_id), n, task.chunk_size, task.task_id)
        submit = lambda: self.engine.submit_chunk(task.task_id, n, addresses, "smtp", "primary")  # noqa: E731
        if not task.active or n < task.submitted:
            self.appends_nothing(submit)
            return
        if n >= task.total_chunks:
            self.refused(InvalidCommand, submit)
            return
        start = n * task.chunk_size
        assert addresses == task.addresses[start:start + task.chunk_size], "staged inputs differ from the upload"
        recorded = submit()
        assert [r.type for r in recorded] == ["ChunkSubmitted"]
        task.chunks[n] = list(addresses)
        task.pending[n] = list(addresses)
        task.submitted += 1
        task.status = "processing"

    def _chunk(self, task: MTask, chunk: int) -> int:
        """Mostly a chunk still waiting for results; sometimes any chunk, or one never submitted."""
        waiting = [n for n, p in task.pending.items() if p]
        if chunk < 5 and waiting:
            return waiting[chunk % len(waiting)]
        return chunk % (task.submitted + 1)

    def _record(self, task: MTask, n: int, answers, bogus: bool) -> None:
        addresses = task.pending.get(n) or task.chunks.get(n, [])
        everyone = task.chunks.get(n, [])
        results = []
        for i, (status, reason) in answers:
            if i < len(addresses):
                address = addresses[i]
            elif i - len(addresses) < len(everyone):
                address = everyone[i - len(addresses)]  # maybe already settled: a retry
            else:
                address = "stranger@x.com"
            results.append(Result(address, status, reason))
        if bogus:
            results.append(Result(addresses[0] if addresses else "stranger@x.com", "maybe"))
        record = lambda: self.engine.record_results(task.task_id, n, results)  # noqa: E731
        if task.deleted:
            self.refused(TaskNotFound, record)
            return
        if task.erased:  # late results of an erased task: nothing to keep, nothing refused
            self.appends_nothing(record)
            return
        if n not in task.chunks:
            self.refused(InvalidCommand, record)
            return
        pending, seen, outcomes = task.pending[n], set(), []
        for result in results:
            if result.address not in pending or result.address in seen:
                continue
            seen.add(result.address)
            if result.status == "maybe":
                self.refused(InvalidCommand, record)
                return
            outcomes.append(result)
        if not outcomes:
            self.appends_nothing(record)
            return
        late = not task.active
        recorded = record()
        batches = [r for r in recorded if isinstance(r.event, ResultsRecorded)]
        settled_now = sorted((a, r.event.status) for r in batches for a in r.event.addresses)
        assert settled_now == sorted((r.address, r.status) for r in outcomes)  # each once, with its answer
        assert all(r.event.late == late for r in batches)
        unknown_refunds = [r for r in recorded if isinstance(r.event, CreditsRefunded)]
        assert len(unknown_refunds) == (0 if late else sum(r.status == "unknown" for r in outcomes))
        # each Unknown's refund is caused by the batch that settled it, one credit each
        assert sorted(str(r.causation_id) for r in unknown_refunds) == sorted(
            str(b.event_id) for b in batches if b.event.status == "unknown" for _ in b.event.addresses) or late
        for result in outcomes:
            task.pending[n].remove(result.address)
            if late:
                assert result.address not in task.late
                task.late.add(result.address)
            elif result.status == "unknown":
                self._refund(task, [result.address])
            else:
                task.settled[result.address] = "consumed"
        if not late and not task.unsettled:
            task.status = "completed"

    ANSWERS = st.lists(st.tuples(st.integers(0, 5), st.sampled_from(OUTCOMES)), min_size=1, max_size=6)

    @precondition(lambda self: self.tasks)
    @rule(pick=st.integers(0, 20), answers=ANSWERS, more=st.booleans())
    def work(self, pick, answers, more):
        """What a worker does next for a running task: submit the next chunk, or answer one."""
        task = self._task(pick)
        if task.active and task.submitted < task.total_chunks and (more or not any(task.pending.values())):
            self._submit(task)
        else:
            self._record(task, self._chunk(task, 0), answers, bogus=False)

    @precondition(lambda self: self.tasks)
    @rule(pick=st.integers(0, 20), retry=st.booleans(), any_task=st.booleans())
    def submit_chunk(self, pick, retry, any_task):
        self._submit(self._task(pick, prefer_active=not any_task), retry)

    @precondition(lambda self: self.tasks)
    @rule(pick=st.integers(0, 20), chunk=st.integers(0, 6), answers=ANSWERS, bogus=st.integers(0, 9),
          any_task=st.booleans())
    def record_results(self, pick, chunk, answers, bogus, any_task):
        task = self._task(pick, prefer_active=not any_task)
        self._record(task, self._chunk(task, chunk), answers, bogus == 0)

    @precondition(lambda self: self.tasks)
    @rule(pick=st.integers(0, 20), chunk=st.integers(0, 6), any_task=st.booleans())
    def fail_chunk(self, pick, chunk, any_task):
        task = self._task(pick, prefer_active=not any_task)
        n = self._chunk(task, chunk)
        fail = lambda: self.engine.fail_chunk(task.task_id, n, "provider rejected the chunk")  # noqa: E731
        if task.deleted:
            self.refused(TaskNotFound, fail)
            return
        if n not in task.chunks:
            self.refused(InvalidCommand, fail)
            return
        if not task.active or not task.pending[n]:
            self.appends_nothing(fail)
            return
        fail()
        self._refund(task, task.pending[n])
        task.pending[n] = []
        task.failed_chunks += 1
        if task.failed_chunks == task.total_chunks or \
                task.failed_chunks / task.total_chunks > self.settings.partial_failure_threshold:
            self._stop(task, "failed")
        elif not task.unsettled:
            task.status = "completed"

    @precondition(lambda self: self.tasks)
    @rule(pick=st.integers(0, 20), any_task=st.booleans())
    def cancel(self, pick, any_task):
        bulk = [t for t in self.task_order if self.tasks[t].active and self.tasks[t].kind == "bulk"]
        task = self.tasks[self._pick(bulk, pick)] if bulk and not any_task else self._task(pick, False)
        cancel = lambda: self.engine.cancel_task(task.task_id)  # noqa: E731
        if task.deleted:
            self.refused(TaskNotFound, cancel)
        elif task.kind == "single":
            self.refused(TaskNotCancellable, cancel)
        elif task.status == "cancelled":
            self.refused(TaskAlreadyCancelled, cancel)
        elif not task.active:
            self.refused(TaskAlreadyFinished, cancel)
        else:
            recorded = cancel()
            refunds = [r.event for r in recorded if isinstance(r.event, CreditsRefunded)]
            unsettled = len(task.unsettled)
            assert refunds == ([CreditsRefunded(task.task_id, unsettled, "cancelled")] if unsettled else [])
            self._stop(task, "cancelled")

    @precondition(lambda self: self.tasks)
    @rule(pick=st.integers(0, 20), any_task=st.booleans())
    def system_failure(self, pick, any_task):
        task = self._task(pick, prefer_active=not any_task)
        fail = lambda: self.engine.fail_for_system(task.task_id, "engine down past the grace")  # noqa: E731
        if task.deleted:
            self.refused(TaskNotFound, fail)
        elif not task.active:
            self.appends_nothing(fail)
        else:
            fail()
            self._stop(task, "failed")

    @precondition(lambda self: self.tasks)
    @rule(pick=st.integers(0, 20), any_task=st.booleans())
    def delete(self, pick, any_task):
        task = self._task(pick, prefer_active=any_task)  # mostly a finished one
        delete = lambda: self.engine.delete_task(task.task_id)  # noqa: E731
        if task.deleted:
            self.refused(TaskNotFound, delete)
        elif task.active:
            self.refused(TaskNotFinished, delete)
        else:
            delete()  # hides the task and erases its per-address data
            task.deleted = True
            self._erased(task)

    @precondition(lambda self: self.tasks)
    @rule(pick=st.integers(0, 20), any_task=st.booleans())
    def erase(self, pick, any_task):
        task = self._task(pick, prefer_active=any_task)
        erase = lambda: self.engine.erase_task(task.task_id, "request")  # noqa: E731
        if task.active:
            self.refused(TaskNotFinished, erase)
        elif task.erased:
            self.appends_nothing(erase)
        else:
            erase()
            self._erased(task)

    def _erased(self, task: MTask) -> None:
        task.erased = True
        task.pending = {n: [] for n in task.pending}  # nothing will be settled any more
        assert self.db.keyring.store.get(task.task_id) is None, "the task's key survived its erasure"
        assert self._upload(task.task_id) not in self.db.inputs.staged()
        self.db.catch_up()
        assert next(iter(self.db.read.results(task.task_id)), None) is None, "results survived the erasure"

    # --- races: the other engine writes between our decision and our append --------------

    def _race(self, rival) -> "RacingStore":
        store = RacingStore(self.engine.store, rival)
        self.engine.store = store
        return store

    def _unrace(self, store: "RacingStore") -> None:
        self.engine.store = store.inner

    @precondition(lambda self: len(self.dbs) == 2)
    @rule(pick=st.integers(0, 20), kind=st.sampled_from(["spend", "cancel", "results"]), answers=ANSWERS)
    def raced(self, pick, kind, answers):
        """Our decision goes stale: the other engine appends between our decision and our
        append; the append conflicts and the command is decided again on what it wrote."""
        rival_engine = self.engines[1 - self.current]
        if kind == "spend":
            self._raced_spend(self._pick(self.accounts, pick), rival_engine)
            return
        running = [t for t in self.task_order if self.tasks[t].active and self.tasks[t].kind == "bulk"
                   and any(self.tasks[t].pending.values())]
        if not running:
            return
        task = self.tasks[self._pick(running, pick)]
        n = next(n for n, p in task.pending.items() if p)
        answers = [(i % len(task.pending[n]), outcome) for i, outcome in answers]
        if kind == "cancel":
            # the rival cancels; our results, decided on the running task, come out late
            store = self._race(lambda: rival_engine.cancel_task(task.task_id))
            try:
                self._stop(task, "cancelled")
                self._record(task, n, answers, bogus=False)
            finally:
                self._unrace(store)
        else:
            # the rival records the same results first; ours, decided again, append nothing
            results = [Result(task.pending[n][i], status, reason) for i, (status, reason) in answers]

            def rival() -> None:
                self.current = 1 - self.current
                try:
                    self._record(task, n, answers, bogus=False)
                finally:
                    self.current = 1 - self.current

            store = self._race(rival)
            try:
                assert self.engine.record_results(task.task_id, n, results) == []
            finally:
                self._unrace(store)
        assert store.conflicts == 1

    def _raced_spend(self, name: str, rival_engine: Engine) -> None:
        account = self.accounts[name]
        available = (0 if account.lazily_expired(self.clock.now) else account.monthly) + account.payg
        ours = lambda: self.engine.create_single(name, "ours@x.com")  # noqa: E731
        if available < 1:
            self.refused(InsufficientCredits, ours)  # refused at once: no append, no race
            return
        rival_ids: list[str] = []
        store = self._race(lambda: rival_ids.append(rival_engine.create_single(name, "rival@x.com")))
        head = self.db.events.head()
        try:
            assert self._debit(name, 1) is None  # the rival's credit
            if self._debit(name, 1) == "refused":
                with pytest.raises(InsufficientCredits):
                    ours()
                task_id = None
            else:
                task_id = ours()
        finally:
            self._unrace(store)
        assert store.conflicts == 1
        sha = hashlib.sha256
        self._add_task(MTask(rival_ids[0], name, "single", ["rival@x.com"], 1, sha(b"rival@x.com").hexdigest(),
                             self.clock.now))
        if task_id is not None:
            self._add_task(MTask(task_id, name, "single", ["ours@x.com"], 1, sha(b"ours@x.com").hexdigest(),
                                 self.clock.now))
        debits = [r for r in self.db.events.read_all(after_position=head) if isinstance(r.event, CreditsDebited)]
        assert [r.event.task_id for r in debits] == rival_ids + ([task_id] if task_id else [])

    # --- engines: switching, crashing -------------------------------------------------

    @rule(how=st.sampled_from(["switch", "cold", "reopen"]))
    def restart(self, how):
        """switch: the other engine (another connection to the same file, with whatever its
        cache last saw) takes the next commands; cold: drop the engines (a crash-restart,
        cold caches); reopen: drop the connections too."""
        if how == "switch":
            self.current = 1 - self.current
        elif how == "cold":
            self.engines = [Engine(db, self.settings, self.clock) for db in self.dbs]
        else:
            for db in self.dbs:
                db.close()
            self._connect()

    # --- invariants -------------------------------------------------------------------

    @invariant()
    def accounts_match_the_model_and_the_ledger(self):
        if not self.ready():
            return
        for name, model in self.accounts.items():
            assert model.monthly >= 0 and model.payg >= 0
            assert model.monthly + model.payg == (
                model.granted - model.debited + model.refunded - model.expired), "model ledger broken"
            state = self.engine.account(name)
            assert state.monthly >= 0 and state.payg >= 0, "negative balance"
            assert (state.monthly, state.payg) == (model.monthly, model.payg), name
            for task_id, left in state.outstanding.items():
                task = self.tasks[task_id]
                assert left == len(task.addresses) - task.refunded

    @invariant()
    def tasks_match_the_model_and_settle_each_address_once(self):
        if not self.ready():
            return
        for task_id, model in self.tasks.items():
            state = self.engine.task(task_id)
            assert state.deleted == model.deleted
            assert (state.status, state.consumed, state.refunded, state.late, state.chunks_submitted,
                    state.failed_chunks) == (model.status, model.consumed, model.refunded, len(model.late),
                                             model.submitted, model.failed_chunks), task_id
            assert state.in_flight() == {n: p for n, p in model.pending.items() if p}
            self._log_settles_once(task_id, model)
        staged = set(self.db.inputs.staged())
        assert staged == {self._upload(t) for t, m in self.tasks.items() if not m.deleted and not m.erased}, \
            "staged inputs without a live task"

    def _log_settles_once(self, task_id: str, model: MTask) -> None:
        settled: Counter[str] = Counter()
        late: Counter[str] = Counter()
        stop_refunds = 0
        for recorded in self.db.events.read_stream(f"task-{task_id}"):
            event = recorded.event
            if isinstance(event, ResultsRecorded):
                (late if event.late else settled).update(event.addresses)
            elif isinstance(event, (AddressVerified, ResultUnknown)):
                (late if event.late else settled)[event.address] += 1
            elif isinstance(event, ChunkFailed):
                settled.update(event.addresses)
            elif isinstance(event, (TaskCancelled, TaskFailed, SystemFailure)):
                stop_refunds += event.unverified_count
        assert max(settled.values(), default=0) <= 1, f"an address settled twice in {task_id}"
        assert max(late.values(), default=0) <= 1 and not set(late) & set(settled)
        assert sum(settled.values()) + stop_refunds == model.consumed + model.refunded <= len(model.addresses)
        if not model.active:
            assert sum(settled.values()) + stop_refunds == len(model.addresses)

    @invariant()
    def the_log_and_the_read_models_keep_the_money_rules(self):
        if not self.ready():
            return
        db = self.db
        db.catch_up()
        debited: Counter[str] = Counter()
        refunded: Counter[str] = Counter()
        for name in self.accounts:
            for recorded in db.events.read_stream(f"account-{name}"):
                event = recorded.event
                if isinstance(event, CreditsDebited):
                    debited[event.task_id] += event.monthly + event.payg
                elif isinstance(event, CreditsRefunded):
                    refunded[event.task_id] += event.amount
            model = self.accounts[name]
            balance = db.read.balances(name)
            assert (balance["monthly"], balance["payg"], balance["total"]) == (
                model.monthly, model.payg, model.monthly + model.payg)
            rows = db.read.history(name)
            assert sum(r["amount"] for r in rows) == balance["total"], "history does not sum to the balance"
            assert rows[-1]["balance_after"] == balance["total"]
            assert all(r["bucket"] == "payg" for r in rows if r["type"] in ("refund", "cancel"))
            assert all(r["amount"] > 0 for r in rows if r["type"] in ("refund", "cancel", "purchase", "welcome"))
        for task_id, model in self.tasks.items():
            assert debited[task_id] == len(model.addresses)
            assert refunded[task_id] == model.refunded
            if not model.active:
                assert debited[task_id] == model.consumed + refunded[task_id]
            row = db.read.task(task_id)
            if model.deleted:
                assert row is None
            else:
                assert (row["status"], row["debited"], row["consumed"], row["refunded"]) == (
                    "deleted" if model.erased else model.status, len(model.addresses), model.consumed,
                    model.refunded)

    @invariant()
    def every_few_steps_the_audit_is_clean(self):
        self.steps += 1
        if self.ready() and self.steps % 8 == 0:
            report = audit(self.db)
            assert report.violations == [], report.violations


# VEC_MONEY_EXAMPLES=2000 for a deeper hunt; the default keeps the file to a few seconds.
MoneyMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("VEC_MONEY_EXAMPLES", "60")), stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestMoneyRules = MoneyMachine.TestCase

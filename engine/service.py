"""The application service: commands in, events appended atomically with expected versions.

Every command loads the streams it touches (cached aggregates, caught up from the log),
asks the pure deciders, and appends everything in one transaction. A concurrent writer
makes the append fail with ConcurrencyError; the command is then decided again on the
fresh state. Refund policies run here, in the transaction of the event that causes them.
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import hmac
import secrets
import json
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Literal

from events import (
    AddressVerified,
    ChunkFailed,
    ChunkSubmitted,
    CreditsDebited,
    CreditsRefunded,
    Event,
    NewEvent,
    RecordedEvent,
    ResultsRecorded,
    ResultUnknown,
    SystemFailure,
    TaskCancelled,
    TaskCompleted,
    TaskCreated,
    TaskDataErased,
    TaskDeleted,
    TaskFailed,
    account_stream,
    deterministic_id,
    task_stream,
)
from engine.bulkfile import FileReport, read_addresses
from engine.config import CoreSettings
from engine import policies, sealing_pool
from engine.domain import accounts, settlement, tasks
from engine.domain.errors import (
    AccountNotFound,
    BadUpload,
    InvalidCommand,
    InvariantViolation,
    ResultsDeleted,
    TaskNotFinished,
    TaskNotFound,
    check,
)
from engine.domain.limits import MAX_UPLOAD_BYTES, MIN_RETENTION_DAYS
from engine.store.base import ANY, ConcurrencyError, DuplicateEventError, Idempotency
from engine import tracing  # spans of commands, off by default (engine/tracing.py)

if TYPE_CHECKING:
    from engine.keyring import Sealer
    from engine.store import Database

States = dict[str, Any]  # the states a command decides on, by stream: AccountState or TaskState
ErasureReason = Literal["retention", "request", "account"]

MAX_ATTEMPTS = 50
CACHE_SIZE = 10_000
RECENT_WEIGHT = 10_000  # appended events kept for the in-process projector (two of its batches),
# each weighing the addresses it carries: a chunk's submission weighs 500, not 1


class RecentEvents:
    """The events this engine appended last, bounded by the addresses they carry, so that a
    bulk submitting every chunk at once keeps a few chunks here, not the whole task."""

    def __init__(self, budget: int = RECENT_WEIGHT):
        self.events: deque[tuple[RecordedEvent, int]] = deque()
        self.budget, self.weight = budget, 0

    def extend(self, recorded: Iterable[RecordedEvent]) -> None:
        for r in recorded:
            weight = len(getattr(r.event, "addresses", ())) or 1  # a submission, a failed chunk, a batch of results
            self.events.append((r, weight))
            self.weight += weight
        while self.weight > self.budget and len(self.events) > 1:
            self.weight -= self.events.popleft()[1]

    def between(self, after: int, until: int) -> list[RecordedEvent] | None:
        """Those in (after, until], if held from after + 1 on without a gap (another process's
        event in between ends the run)."""
        if not self.events or not self.events[0][0].position <= after + 1 <= self.events[-1][0].position:
            return None
        handed: list[RecordedEvent] = []
        for recorded, _ in self.events:
            if recorded.position <= after:
                continue
            if recorded.position > until or recorded.position != after + 1 + len(handed):
                break
            handed.append(recorded)
        return handed or None

# Who issues the commands of this context: "apikey:ID", "cli:USER", "admin", "engine".
# Recorded in every event's metadata, so audit can answer "who ran what".
ACTOR: contextvars.ContextVar[str | None] = contextvars.ContextVar("vec_actor", default=None)


@contextlib.contextmanager
def acting_as(actor: str) -> Iterator[None]:
    """Attributes the commands issued inside the block to `actor`."""
    token = ACTOR.set(actor)
    try:
        yield
    finally:
        ACTOR.reset(token)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


ERASED_KEY = "erased"  # a task's erasure, one fact whatever its reason


def event_key(event: Event, mac: Callable[[str], str] = lambda a: a) -> str | None:
    """The natural key of a task-stream event: re-emitting the same fact gives the same id.
    An address enters the key through `mac`, the task's keyed digest (engine/keyring.py): an
    event id must not be a guessable digest of an address."""
    match event:
        case TaskCreated():
            return "created"
        case ChunkSubmitted(chunk_no=n):
            return f"chunk/{n}"
        case AddressVerified(chunk_no=n, address=a) | ResultUnknown(chunk_no=n, address=a):
            return f"result/{n}/{mac(a)}"
        case ResultsRecorded(chunk_no=n, addresses=(a, *_)):
            return f"results/{n}/{mac(a)}"  # its first address settles once: no other batch starts with it
        case ChunkFailed(chunk_no=n):
            return f"chunk-failed/{n}"
        case TaskCancelled():
            return "cancelled"
        case TaskCompleted():
            return "completed"
        case TaskFailed():
            return "failed"
        case SystemFailure():
            return "system-failure"
        case TaskDeleted():
            return "deleted"
        case TaskDataErased():
            return ERASED_KEY
    return None


def _unknown_keys(decided: Iterable[Event], mac: Callable[[str], str]) -> dict[str, Iterator[str]]:
    """For each batch of Unknowns, the keys of its entries' refunds, in order: the key each
    address's ResultUnknown had, so a refund's id is the same whether its result was batched."""
    return {str(event_key(e, mac)): iter([f"result/{e.chunk_no}/{mac(a)}" for a in e.addresses])
            for e in decided if isinstance(e, ResultsRecorded) and e.status == "unknown" and not e.late}


def _planned_refunds(task_id: str, decided: list[Event], refunds: list[tuple[Event, CreditsRefunded]],
                     a_stream: str, mac: Callable[[str], str]) -> list[Planned]:
    """The refunds a task command causes, each with its id derived from its cause: one refund
    per cause, whatever retries. A batch's Unknowns are refunded one by one, each under its
    address's own key (their cause's key and id are worked out once)."""
    unknown = _unknown_keys(decided, mac)
    causes: dict[int, tuple[str, str]] = {}  # id(cause) -> its key, its event id
    planned = []
    for cause, refund in refunds:
        known = causes.get(id(cause))
        if known is None:
            key = event_key(cause, mac)
            if key is None:
                raise InvariantViolation(f"{cause.type_name()} gives credits back but has no natural key")
            known = causes[id(cause)] = (key, str(deterministic_id(task_stream(task_id), key)))
        key, causation_id = known
        own = next(unknown[key]) if key in unknown else key
        planned.append(Planned(a_stream, refund, f"refund/{task_id}/{own}", causation_id))
    return planned


@dataclass(frozen=True)
class Planned:
    stream: str
    event: Event
    key: str | None  # natural key for a deterministic id; None = a fresh id
    causation_id: str | None = None


@dataclass(frozen=True)
class Upload:
    task_id: str
    report: FileReport


def fingerprint(*parts: object) -> str:
    """A digest of a command's content, to tell a retry from a different command."""
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def api_key_hash(secret: str) -> str:
    """Secrets are 32 random bytes: a plain SHA-256 is enough to keep them out of the log."""
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_api_key(key: str) -> tuple[str, str]:
    """("key id", "secret") of a key "vec_<id>_<secret>", or ("", "") if it is not one."""
    prefix, _, rest = key.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != "vec" or not key_id or not secret or len(key) > 200:
        return "", ""
    return key_id, secret


def _evolve_for(stream: str) -> Callable[[Any, Event], Any]:
    return tasks.evolve if stream.startswith("task-") else accounts.evolve


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Engine:
    """Commands of the engine. Synchronous: SQLite work is short and done on the caller's thread."""

    def __init__(self, db: Database, settings: CoreSettings | None = None,
                 clock: Callable[[], datetime] = utcnow):
        self.db = db
        self.store = db.events
        self.inputs = db.inputs
        self.settings = settings or CoreSettings()
        self.clock = clock
        self._cache: OrderedDict[str, tuple[object, int]] = OrderedDict()
        self._recent = RecentEvents()
        self.stats = {"commands": 0, "conflicts": 0}  # appends decided, and decided again after a conflict
        self.default_actor = "engine"  # a process of the engine itself, unless a command says who

    # --- loading ----------------------------------------------------------------------

    def _load(self, stream: str) -> tuple[object, int]:
        cached = self._cache.get(stream)
        if cached is not None and stream.startswith("task-"):
            try:
                return self._catch_up(stream, *cached)
            except InvariantViolation:
                # The cached state holds the task's addresses opened; if another process erased
                # the task since, what follows reads as placeholders and cannot fold onto it.
                # The stream read from the start reads alike throughout: it decides.
                cached = None
        return self._catch_up(stream, *(cached or (
            (tasks.TaskState(task_id=stream[5:]) if stream.startswith("task-") else accounts.AccountState()), 0)))

    def _catch_up(self, stream: str, state: object, version: int) -> tuple[object, int]:
        state, version = self._fold(stream, state, version, self.store.read_stream(stream, after_version=version))
        self._remember(stream, state, version)
        return state, version

    def _fold(self, stream: str, state: object, version: int, recorded: Iterable[RecordedEvent]) -> tuple[object, int]:
        """Folds events into a stream's state. Task states are updated in place (a copy per
        event would make a bulk quadratic), so a fold that fails half-way leaves a state
        ahead of its version: the cache entry is dropped and the next load reads the
        stream again from the start."""
        evolve = _evolve_for(stream)
        try:
            for r in recorded:
                check(r.version == version + 1, "{}: version {} folded after {}", stream, r.version, version)
                state = evolve(state, r.event)
                version = r.version
        except BaseException:
            self._cache.pop(stream, None)
            raise
        return state, version

    def _remember(self, stream: str, state: object, version: int) -> None:
        self._cache[stream] = (state, version)
        self._cache.move_to_end(stream)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    # _load serves both kinds of stream (typed object): an account stream folds to an
    # AccountState, a task stream to a TaskState (_load's initial states)
    def account(self, account_id: str) -> accounts.AccountState:
        return self._load(account_stream(account_id))[0]  # type: ignore[return-value]

    def task(self, task_id: str) -> tasks.TaskState:
        return self._load(task_stream(task_id))[0]  # type: ignore[return-value]

    def require_results_kept(self, task_id: str) -> None:
        """`require_results_kept` without folding the task: its erasure is a fact of a known
        id, looked up in the log (an export of a million results need not read a million
        events first)."""
        if self.store.holds(deterministic_id(task_stream(task_id), ERASED_KEY)):
            raise _results_deleted(task_id)

    # --- the unit of work -------------------------------------------------------------

    def _execute(
        self,
        streams: list[str],
        plan: Callable[[dict[str, object]], list[Planned]],
        idempotency: Idempotency | None = None,
        correlation_id: str | None = None,
        loose: tuple[str, ...] = (),
    ) -> list[RecordedEvent]:
        if not tracing.enabled():
            return self._decide_and_append(streams, plan, idempotency, correlation_id, loose)
        # a span per command, in its task's trace (engine/tracing.py)
        with tracing.span("vec.engine.append", correlation_id if tracing.is_task_id(correlation_id) else None,
                          streams=streams) as current:
            recorded = self._decide_and_append(streams, plan, idempotency, correlation_id, loose)
            tracing.annotate(current, events=sorted({r.type for r in recorded}), appended=len(recorded))
            return recorded

    def _decide_and_append(
        self,
        streams: list[str],
        plan: Callable[[dict[str, object]], list[Planned]],
        idempotency: Idempotency | None,
        correlation_id: str | None,
        loose: tuple[str, ...],
    ) -> list[RecordedEvent]:
        """Decides on the loaded `streams` and appends what `plan` returns in one transaction.
        Every stream is appended at the version it was decided on, except the `loose` ones:
        they are written at any version, when another stream's version already guards the
        decision (a task's refunds on its account: the task stream settles each address
        once), so settling tasks never conflict on their shared account."""
        if idempotency is not None:
            earlier = self.store.replayed(idempotency)
            if earlier is not None:
                return earlier
        self.stats["commands"] += 1
        for attempt in range(MAX_ATTEMPTS):
            if attempt:
                self.stats["conflicts"] += 1
            loaded = {s: self._load(s) for s in streams}
            planned = plan({s: state for s, (state, _) in loaded.items()})
            if not planned:
                return []
            now = self.clock()
            actor = ACTOR.get() or self.default_actor
            new = [
                NewEvent(
                    stream=p.stream,
                    event=p.event,
                    event_id=self._event_id(p, idempotency, i),
                    occurred_at=now,
                    correlation_id=correlation_id,
                    causation_id=p.causation_id,
                    actor=actor,
                )
                for i, p in enumerate(planned)
            ]
            try:
                written = {p.stream for p in planned}
                expected = {s: (ANY if s in loose else v) for s, (_, v) in loaded.items()
                            if s in written or s not in loose}
                recorded = self.store.append(new, expected, idempotency)
            except (ConcurrencyError, DuplicateEventError):
                earlier = self.store.replayed(idempotency) if idempotency is not None else None
                if earlier is not None:
                    return earlier  # the same command won a race
                continue  # someone else wrote first: decide again on what they wrote
            self._fold_own(recorded)
            self._recent.extend(recorded)
            return recorded
        raise ConcurrencyError(f"gave up after {MAX_ATTEMPTS} conflicting attempts on {streams}")

    @staticmethod
    def _event_id(planned: Planned, idempotency: Idempotency | None, index: int) -> uuid.UUID:
        if planned.key is not None:
            return deterministic_id(planned.stream, planned.key)
        if idempotency is not None:
            return deterministic_id(planned.stream, f"idempotency/{idempotency.key}/{index}")
        return uuid.uuid4()

    def recent_events(self, after: int, until: int) -> list[RecordedEvent] | None:
        """Events this engine appended in (after, until], if it holds them all from after + 1
        on (up to the first one another process wrote in between): the projector's shortcut."""
        return self._recent.between(after, until)

    def _fold_own(self, recorded: list[RecordedEvent]) -> None:
        """Brings the cached states up to what this command appended."""
        for stream in dict.fromkeys(r.stream for r in recorded):
            cached = self._cache.get(stream)
            if cached is None:
                continue  # evicted meanwhile: the next load reads it back
            state, version = cached
            own = [r for r in recorded if r.stream == stream and r.version > version]
            if own and own[0].version != version + 1:
                self._load(stream)  # others appended in between (an any-version append): read all
                continue
            self._remember(stream, *self._fold(stream, state, version, own))

    # --- accounts ---------------------------------------------------------------------

    def open_account(self, account_id: str, idempotency_key: str | None = None) -> list[RecordedEvent]:
        stream = account_stream(account_id)

        def plan(states: States) -> list[Planned]:
            events = accounts.decide(accounts.OpenAccount(account_id), states[stream])
            return [Planned(stream, events[0], "opened"), Planned(stream, events[1], "welcome")]

        return self._execute([stream], plan, self._idempotency(idempotency_key, "open", account_id), account_id)

    def grant_credits(self, account_id: str, bucket: str, amount: int, reason: str = "purchase",
                      expires_at: datetime | None = None, idempotency_key: str | None = None) -> list[RecordedEvent]:
        stream = account_stream(account_id)

        def plan(states: States) -> list[Planned]:
            decided = accounts.decide(accounts.GrantCredits(bucket, amount, reason, self.clock(), expires_at),
                                      states[stream])
            return [Planned(stream, e, None) for e in decided]

        key = self._idempotency(idempotency_key, "grant", account_id, bucket, amount, reason, expires_at)
        return self._execute([stream], plan, key, account_id)

    def expire_monthly(self, account_id: str) -> list[RecordedEvent]:
        stream = account_stream(account_id)

        def plan(states: States) -> list[Planned]:
            return [Planned(stream, e, None) for e in accounts.decide(accounts.ExpireMonthly(self.clock()), states[stream])]

        return self._execute([stream], plan, None, account_id)

    # --- API keys -----------------------------------------------------------------------

    def issue_api_key(self, account_id: str, scopes: Iterable[str] = ("read", "write"), label: str = "",
                      idempotency_key: str | None = None) -> tuple[str, str]:
        """A new key of the account: (key id, the key itself). The key is shown once: the log
        keeps only the SHA-256 of its secret."""
        stream = account_stream(account_id)
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        scopes = tuple(scopes)

        def plan(states: States) -> list[Planned]:
            return [Planned(stream, e, f"key/{key_id}") for e in accounts.decide(
                accounts.IssueApiKey(key_id, api_key_hash(secret), scopes, label), states[stream])]

        self._execute([stream], plan, None, account_id)
        return key_id, f"vec_{key_id}_{secret}"

    def revoke_api_key(self, account_id: str, key_id: str) -> list[RecordedEvent]:
        stream = account_stream(account_id)

        def plan(states: States) -> list[Planned]:
            return [Planned(stream, e, f"key-revoked/{key_id}") for e in accounts.decide(
                accounts.RevokeApiKey(key_id), states[stream])]

        return self._execute([stream], plan, None, account_id)

    def check_api_key(self, account_id: str, key: str) -> tuple[str, tuple[str, ...]] | None:
        """(key id, scopes) if `key` is a live key of the account, else None. Decided on the
        account's stream as it is now: a revoked key stops at once."""
        key_id, secret = parse_api_key(key)
        stored = self.account(account_id).keys.get(key_id) if key_id else None
        if stored is None or stored[2] or not hmac.compare_digest(stored[0], api_key_hash(secret)):
            return None
        return key_id, stored[1]

    # --- creating tasks ---------------------------------------------------------------

    def create_bulk(self, account_id: str, path: str | Path, allow_duplicate: bool = False,
                    task_id: str | None = None, idempotency_key: str | None = None, name: str = "") -> Upload:
        """Streams the file into staging, then debits and creates the task in one transaction."""
        if not Path(path).is_file():
            raise BadUpload(f"no such file: {path}")
        if Path(path).stat().st_size > MAX_UPLOAD_BYTES:
            raise BadUpload(f"a file is at most {MAX_UPLOAD_BYTES // (1024 * 1024)} MB "
                            f"(this one has {Path(path).stat().st_size / (1024 * 1024):.0f} MB); split it")
        self._require_account(account_id)
        sha256 = file_sha256(path)
        idempotency = self._idempotency(idempotency_key, "create", account_id, "bulk", sha256)
        earlier = self._created_earlier(idempotency)
        if earlier is not None:
            count = earlier.event.address_count if isinstance(earlier.event, TaskCreated) else 0
            return Upload(earlier.stream.removeprefix("task-"), FileReport(sha256=sha256, unique=count,
                                                                           candidates=count))
        duplicate_window = None if allow_duplicate else timedelta(hours=self.settings.duplicate_window_hours)
        # refused before the file is staged; decided for good with the debit
        accounts.refuse_duplicate_upload(self.account(account_id), sha256, self.clock(), duplicate_window)
        task_id, upload_id = self._new_task_id(task_id)
        with tracing.task_root(task_id, kind="bulk", account_id=account_id):  # the task's root span
            report = FileReport()
            sealer = self._sealer(task_id, create=True)
            addresses = read_addresses(path, report)
            if sealer is not None:  # a big file's addresses sealed by a worker, a batch ahead
                addresses = sealing_pool.POOL.seal_ahead(sealer, addresses)
            report.unique = self.inputs.stage(upload_id, addresses, self.clock(), sealer.seal if sealer else None)
            try:
                if report.unique == 0:
                    raise BadUpload(f"the file has no e-mail addresses ({report.rows} rows, none with an address)")
                created = self._create(account_id, task_id, upload_id, "bulk", report.unique,
                                       f"file:{Path(path).name}", report.sha256, self.settings.chunk_size,
                                       idempotency, duplicate_window, name)
            except BaseException:
                self.inputs.discard(upload_id)
                raise
        return Upload(created, report)

    def create_single(self, account_id: str, address: str, task_id: str | None = None,
                      idempotency_key: str | None = None, name: str = "") -> str:
        address = address.strip()
        if "@" not in address:
            raise InvalidCommand(f"{address!r} is not an e-mail address")
        self._require_account(account_id)
        # a keyed digest of the address tells a retry from another command; the log keeps none
        digest = hmac.new(self.db.keyring.pepper(), address.lower().encode(), hashlib.sha256).hexdigest()
        idempotency = self._idempotency(idempotency_key, "create", account_id, "single", digest)
        earlier = self._created_earlier(idempotency)
        if earlier is not None:
            return earlier.stream.removeprefix("task-")
        task_id, upload_id = self._new_task_id(task_id)
        with tracing.task_root(task_id, kind="single", account_id=account_id):  # the task's root span
            sealer = self._sealer(task_id, create=True)
            self.inputs.stage(upload_id, [address], self.clock(), sealer.seal if sealer else None)
            try:
                return self._create(account_id, task_id, upload_id, "single", 1, "single", "", 1, idempotency, None,
                                    name)
            except BaseException:
                self.inputs.discard(upload_id)
                raise

    def _created_earlier(self, idempotency: Idempotency | None) -> RecordedEvent | None:
        """The TaskCreated of an earlier command with this idempotency key, if any."""
        earlier = self.store.replayed(idempotency) if idempotency is not None else None
        return next((r for r in earlier or () if isinstance(r.event, TaskCreated)), None)

    def _new_task_id(self, task_id: str | None) -> tuple[str, str]:
        """(task id, upload id): a fresh id serves as both; a caller's id gets its own upload key."""
        if task_id is None:
            fresh = uuid.uuid4().hex
            return fresh, fresh
        if self.store.stream_version(task_stream(task_id)):
            raise InvalidCommand(f"task {task_id} already exists")
        return task_id, uuid.uuid4().hex

    def _require_account(self, account_id: str) -> None:
        if not self.account(account_id).opened:
            raise AccountNotFound(f"no such account: {account_id}")

    def _create(self, account_id: str, task_id: str, upload_id: str, kind: Literal["single", "bulk"], count: int,
                source: str, sha256: str,
                chunk_size: int, idempotency: Idempotency | None, duplicate_window: timedelta | None = None,
                name: str = "") -> str:
        """Debits and creates the task; returns its id (an earlier one when the idempotency key
        replays a create that won a race, in which case this attempt's staging is dropped)."""
        a_stream, t_stream = account_stream(account_id), task_stream(task_id)

        def plan(states: States) -> list[Planned]:
            created = tasks.decide(
                tasks.CreateTask(task_id, account_id, kind, count, source, sha256, chunk_size, upload_id, name),
                states[t_stream])
            file_sha256 = sha256 if kind == "bulk" else ""
            debit = accounts.decide(accounts.DebitCredits(task_id, count, self.clock(), file_sha256, duplicate_window),
                                    states[a_stream])
            return [Planned(t_stream, created[0], "created")] + [
                Planned(a_stream, e, f"debit/{task_id}" if isinstance(e, CreditsDebited) else None) for e in debit
            ]

        recorded = self._execute([a_stream, t_stream], plan, idempotency, task_id)
        created = next(r for r in recorded if isinstance(r.event, TaskCreated))
        if created.stream != t_stream:
            self.inputs.discard(upload_id)
        return created.stream.removeprefix("task-")

    # --- running tasks ----------------------------------------------------------------

    def _task_command(self, task_id: str, command: tasks.TaskCommand, deleted_too: bool = False) -> list[RecordedEvent]:
        """Decides a task command and the refunds it causes, in one atomic append."""
        t_stream = task_stream(task_id)
        task_state = self.task(task_id)
        if task_state.status == "new" or (task_state.deleted and not deleted_too):
            raise TaskNotFound(f"no such task: {task_id}")
        a_stream = account_stream(task_state.account_id or "")
        mac = self._mac(task_id)

        def plan(states: States) -> list[Planned]:
            decided = tasks.decide(command, states[t_stream])
            planned = [Planned(t_stream, e, event_key(e, mac)) for e in decided]
            return planned + _planned_refunds(task_id, decided, settlement.refunds(task_id, decided, states[a_stream]),
                                              a_stream, mac)

        return self._execute([t_stream, a_stream], plan, None, task_id, loose=(a_stream,))

    def submit_chunk(self, task_id: str, chunk_no: int, addresses: Iterable[str], provider: str,
                     tier: str) -> list[RecordedEvent]:
        return self._task_command(task_id, tasks.SubmitChunk(chunk_no, tuple(addresses), provider, tier))

    def record_results(self, task_id: str, chunk_no: int, results: Iterable[tasks.Result]) -> list[RecordedEvent]:
        return self._task_command(task_id, tasks.RecordResults(chunk_no, tuple(results)))

    def fail_chunk(self, task_id: str, chunk_no: int, error: str) -> list[RecordedEvent]:
        return self._task_command(
            task_id, tasks.FailChunk(chunk_no, error, self.settings.partial_failure_threshold))

    def cancel_task(self, task_id: str) -> list[RecordedEvent]:
        return self._task_command(task_id, tasks.CancelTask())

    def fail_for_system(self, task_id: str, reason: str) -> list[RecordedEvent]:
        return self._task_command(task_id, tasks.FailForSystem(reason))

    def delete_task(self, task_id: str) -> list[RecordedEvent]:
        """Hides a finished task from the customer and erases its per-address data (the help
        center's "delete": the task's counts and the Credits History stay for audit)."""
        recorded = self._task_command(task_id, tasks.DeleteTask())
        return recorded + self.erase_task(task_id, "request")

    # --- personal data: sealing and erasure (engine/keyring.py) -------------------------

    def _sealer(self, task_id: str, create: bool = False) -> Sealer | None:
        return self.db.keyring.sealer(task_id, create=create)

    def _mac(self, task_id: str) -> Callable[[str], str]:
        sealer = self._sealer(task_id)
        return sealer.mac if sealer is not None else (lambda text: text)

    def staged_chunk(self, state: tasks.TaskState, chunk_no: int) -> list[str]:
        """The addresses of a chunk to submit, from the staged inputs (opened with the task's key)."""
        if state.task_id is None or state.upload_id is None:
            raise TaskNotFound("no such task")
        sealer = self._sealer(state.task_id)
        upload_id, size = state.upload_id, state.chunk_size
        if sealer is None:
            return self.inputs.chunk(upload_id, chunk_no, size)
        # the next chunks opened by a worker while this one is verified (engine/sealing_pool.py)
        return sealing_pool.POOL.open_chunk(sealer, upload_id, chunk_no, state.total_chunks,
                                            lambda n: self.inputs.chunk(upload_id, n, size))

    def set_retention(self, account_id: str, days: int) -> list[RecordedEvent]:
        stream = account_stream(account_id)

        def plan(states: States) -> list[Planned]:
            return [Planned(stream, e, None) for e in accounts.decide(accounts.SetRetention(days), states[stream])]

        return self._execute([stream], plan, None, account_id)

    # --- e-mail notification settings (consumers/notifications/mail.py) ----------------------------
    def set_notifications(self, account_id: str, email: str, on_completion: bool = False,
                          low_balance_threshold: int = 0) -> list[RecordedEvent]:
        """Where and when the account is told by e-mail (NotificationsSet); nothing is appended
        when the settings are the same."""
        stream = account_stream(account_id)
        command = accounts.SetNotifications(email, on_completion, low_balance_threshold)

        def plan(states: States) -> list[Planned]:
            return [Planned(stream, e, None) for e in accounts.decide(command, states[stream])]

        return self._execute([stream], plan, None, account_id)

    def erase_due(self, now: datetime | None = None) -> list[str]:
        """The retention sweep: erases every finished task whose account's retention has run
        out since it ended; returns their ids."""
        now = now or self.clock()
        candidates = [(task_id, datetime.fromisoformat(finished_at), self.account(account_id).retention_days)
                      for task_id, account_id, finished_at in self.db.read.finished_not_erased(
                          (now - timedelta(days=MIN_RETENTION_DAYS)).isoformat())]
        due = policies.retention_due(candidates, now)
        for command in due:
            self.erase_task(command.task_id, "retention")
        return [command.task_id for command in due]

    def erase_account(self, account_id: str) -> list[str]:
        """Erases the data of every task of an account (its running bulks are cancelled first,
        with their refund); returns the ids. A single task still running is waited for."""
        self._require_account(account_id)
        self.db.catch_up()
        task_ids = self.db.read.task_ids_of(account_id)
        for task_id in task_ids:
            state = self.task(task_id)
            if state.active and state.kind == "bulk":
                self.cancel_task(task_id)
            elif state.active:
                raise TaskNotFinished(f"single task {task_id} is still running (seconds at most); erase again")
        for task_id in task_ids:
            self.erase_task(task_id, "account")
        return task_ids

    def unprocessed(self, task_id: str) -> Iterator[str]:
        """The addresses of a failed task that got no answer: those of its failed chunks, then
        those it never submitted (kept staged for this download until the task is erased)."""
        state = self.task(task_id)
        if not state.exists:
            raise TaskNotFound(f"no such task: {task_id}")
        require_results_kept(state)
        self.db.catch_up()
        yield from self.db.read.failed_chunk_addresses(task_id)
        if state.status == "failed" and not state.erased:
            for chunk_no in range(state.chunks_submitted, state.total_chunks):
                yield from self.staged_chunk(state, chunk_no)

    def erase_task(self, task_id: str, reason: ErasureReason = "request") -> list[RecordedEvent]:
        """Erases a finished task's per-address data for good: the erasure is recorded, then the
        task's key is destroyed (its sealed addresses in the log can no longer be read) and its
        staged inputs dropped; its results leave the read models. Counts and money stay. Safe
        to run again (a crash between the two steps is finished by the next run)."""
        recorded = self._task_command(task_id, tasks.EraseTaskData(reason), deleted_too=True)
        state = self.task(task_id)
        if state.erased:
            self.inputs.discard(state.upload_id or task_id)
            if self.db.keyring.sealer(task_id) is not None:
                self.db.keyring.destroy(task_id)
        return recorded

    # --- helpers ----------------------------------------------------------------------

    @staticmethod
    def _idempotency(key: str | None, *content: object) -> Idempotency | None:
        return None if key is None else Idempotency(key, fingerprint(*content))


def require_results_kept(task: tasks.TaskState) -> None:
    """Raises ResultsDeleted once a task's per-address data is erased (retention or request):
    an empty list would read as "no results", which is not what happened."""
    if task.erased:
        raise _results_deleted(task.task_id or "")


def _results_deleted(task_id: str) -> ResultsDeleted:
    return ResultsDeleted(f"the results of task {task_id} were deleted (data retention or erasure); "
                          "its counts and credits remain")

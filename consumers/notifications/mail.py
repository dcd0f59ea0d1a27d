"""E-mail notifications: a task's end (opt-in per account) and a balance that falls below
the account's threshold, sent with aiosmtplib through the configured SMTP relay
(VEC_NOTIFY_SMTP_*), at least once and never twice for one event under normal operation.

An account's settings are an event of its stream (NotificationsSet: e-mail, on_completion,
low_balance_threshold; `engine.set_notifications`, `vec notify set`), so every decision is
taken on the log, at the position of the event that causes it:

- The consumer reads the log past its own checkpoint (`notify_checkpoint`) and, in one
  transaction with the checkpoint's move, puts messages in the outbox (`notify_outbox`):
  * a task end (TaskCompleted, TaskFailed, SystemFailure, TaskCancelled) of an account whose
    settings at that position say on_completion -> one summary (counts and credits only:
    never an address);
  * a CreditsDebited that takes the account's balance from >= its threshold to below it ->
    one "balance low" message. The balances before and after the debit are the account
    decider's own fold (engine/domain/accounts.evolve) of the account stream up to that
    position: a crossing is a fact of the log, the same on every re-read.
  A message's id derives from the event id (and its kind): re-reading the log inserts
  nothing new, and the `Message-ID` header carries it, so a relay or a reader can dedupe.
  The consumer folds only accounts that ever set notifications (`notify_watch`, kept by the
  same transactions from the NotificationsSet events it reads). Its first start is where no
  NotificationsSet can lie before it: the notifications read model's checkpoint, or the
  first settings it holds, whichever is earlier.
- The sender claims due messages (attempt row `sending`, the message's next attempt pushed
  past the attempt's time bound) in one transaction, hands each to the relay, and records
  the outcome at once: accepted = sent (never sent again); a relay that is down, times out
  or answers 4xx = deferred, retried after the next step of VEC_NOTIFY_RETRY_SCHEDULE until
  VEC_NOTIFY_MAX_ATTEMPTS; a 5xx answer = rejected, failed for good. At least once: a
  process that dies between the relay's answer and the record leaves the attempt `sending`;
  the next sender marks it `interrupted` and sends again (same Message-ID).

Run like the webhooks (consumers/webhooks/delivery.py, whose helpers it reuses): a supervised loop of
the embedded runtime, or of the fleet's elected notifications leader. With no relay
configured (VEC_NOTIFY_SMTP_HOST empty) messages are still put in the outbox and wait.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any, Callable

from consumers.features import Call
from consumers.outbox import OutboxLoops, OutboxSchema, OutboxStore, inline, stamp
from consumers.webhooks.delivery import retry_delay
from consumers.notifications.settings import NotifySettings
from engine.config import parse_schedule
from engine.domain import accounts
from engine.domain.accounts import AccountState
from engine.domain.errors import InvariantViolation
from engine.service import Engine
from engine.store.base import EventStore
from events import CreditsDebited, RecordedEvent, TaskCreated, account_stream, task_stream
from projections.base import Table
from projections.queries import first_notification_position, notification_settings
from projections.runner import checkpoint_positions

log = logging.getLogger("vec.notifications")


TASK_ENDS = {"TaskCompleted": "completed", "TaskFailed": "failed", "SystemFailure": "failed",
             "TaskCancelled": "cancelled"}
SETTINGS_EVENT = "NotificationsSet"
KINDS = ("task_end", "low_balance")
STATUSES = ("pending", "sent", "failed")

OUTBOX = Table("notify_outbox", ("message_id", "account_id", "kind", "event_id", "position", "task_id", "recipient",
                                 "subject", "body", "header_id", "occurred_at", "status", "attempts",
                                 "next_attempt_at", "last_code", "last_error", "created_at", "sent_at"),
               ("message_id",), frozenset({"position", "attempts", "last_code"}),
               (("status", "next_attempt_at"), ("account_id", "position"), ("position",)))
ATTEMPTS = Table("notify_attempts", ("message_id", "attempt", "started_at", "outcome", "code", "detail",
                                     "duration_ms"),
                 ("message_id", "attempt"), frozenset({"attempt", "code", "duration_ms"}), (("outcome",),))
CHECKPOINT = Table("notify_checkpoint", ("name", "position"), ("name",), frozenset({"position"}))
WATCH = Table("notify_watch", ("account_id", "position"), ("account_id",), frozenset({"position"}))
TABLES = (OUTBOX, ATTEMPTS, CHECKPOINT, WATCH)

ID_NAMESPACE = uuid.UUID("5d0c2f4e-8a43-4c1b-9f3e-7b6a1d2c9e80")
CONSUMER = "notifications"
READ_MODEL = "notifications"  # the projection holding the settings (projections/read_models.py)
BATCH = 1000  # log positions the consumer looks at per transaction
CLAIM_MARGIN = 30.0  # seconds past an attempt's own bound before an unrecorded attempt is sent again
CONCURRENCY = 4  # messages handed to the relay at once
FOLDS_CACHED = 1000  # account states the consumer keeps between batches
ERROR_TEXT = 300

MESSAGE_FIELDS = ("message_id", "account_id", "kind", "task_id", "recipient", "subject", "event_id", "position",
                  "status", "attempts", "next_attempt_at", "last_code", "last_error", "created_at", "sent_at")
ATTEMPT_FIELDS = ("attempt", "started_at", "outcome", "code", "detail", "duration_ms")  # detail: the relay's
# reply when it took the message ("2.0.0 Ok: queued as ..."), else what went wrong


# --- pure helpers -------------------------------------------------------------------------

def message_id(event_id: str, kind: str) -> str:
    """The outbox id of the message one event causes: the same on every re-read and retry."""
    return "ntf_" + uuid.uuid5(ID_NAMESPACE, f"{event_id}/{kind}").hex


def header_id(message: str, sender: str) -> str:
    """The Message-ID header of a message: its outbox id at the sender's domain."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    return f"<{message}@{domain}>"


def _plain(text: str, limit: int = 120) -> str:
    """A customer's text (a task name) fit for a subject line: printable, one line, bounded."""
    text = "".join(c if c.isprintable() else " " for c in text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _credits(n: int) -> str:
    return f"{n} credit" if n == 1 else f"{n} credits"


def crossed(before: AccountState, after: AccountState) -> bool:
    """A debit crossed the threshold in force before it: from >= threshold to below."""
    threshold = before.low_balance_threshold
    return bool(before.notify_email) and threshold > 0 and before.total >= threshold > after.total


def task_end_text(task_id: str, name: str, status: str, state: Any, account_id: str,
                  finished_at: datetime) -> tuple[str, str]:
    """(subject, body) of a task's end: counts and credits, never an address."""
    counts = state.counts
    label = _plain(name) or task_id
    not_verified = max(state.address_count - state.consumed - counts.get("unknown", 0), 0)
    line = (f"Task {label} {status}: {state.address_count} addresses, {counts.get('safe', 0)} safe, "
            f"{counts.get('invalid', 0)} invalid, {counts.get('risky', 0)} risky, {counts.get('unknown', 0)} unknown"
            + (f", {not_verified} not verified" if not_verified else "")
            + f" (refunded {_credits(state.refunded)})")
    body = "\n".join([
        line + ".",
        "",
        f"Task:        {task_id}" + (f" ({label})" if label != task_id else ""),
        f"Account:     {account_id}",
        f"Status:      {status}" + (" (partial failure)" if state.partial_failure else ""),
        f"Finished at: {finished_at.astimezone(timezone.utc).isoformat(timespec='seconds')}",
        f"Credits:     {state.consumed} used, {state.refunded} refunded",
        "",
        f"Results: `vec task results {task_id}` or GET /v1/tasks/{task_id}/results",
        "",
        f"You get this message because task notifications are on for account {account_id}",
        f"(`vec notify set {account_id} --email ... --no-on-completion` turns them off).",
        "",
    ])
    return line, body


def low_balance_text(account_id: str, before: AccountState, after: AccountState, task_id: str,
                     debited: int) -> tuple[str, str]:
    threshold = before.low_balance_threshold
    subject = f"Balance low: account {account_id} has {after.total} credits left (below {threshold})"
    body = "\n".join([
        f"The balance of account {account_id} fell below your threshold of {threshold} credits:",
        f"{after.total} credits left ({after.monthly} monthly, {after.payg} PAYG), "
        f"{before.total} before task {task_id} took {debited}.",
        "",
        "Tasks need one credit per address; a task the balance cannot cover is refused.",
        f"Grant more with `vec credits grant {account_id} --payg N` (or buy them in the dashboard).",
        "",
        f"This message is sent once each time the balance crosses the threshold "
        f"(`vec notify set {account_id} --email ... --low-balance 0` turns it off).",
        "",
    ])
    return subject, body


# --- the tables -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Message:
    """A message the consumer puts in the outbox."""

    message_id: str
    account_id: str
    kind: str
    event_id: str
    position: int
    task_id: str | None
    recipient: str
    subject: str
    body: str
    occurred_at: datetime


@dataclass(frozen=True)
class Job:
    """One claimed attempt of one message."""

    message_id: str
    attempt: int
    recipient: str
    subject: str
    body: str
    header_id: str
    occurred_at: str
    kind: str
    event_id: str


class NotificationStore(OutboxStore):
    """The outbox, its attempts, the consumer's checkpoint and watch list (consumers/outbox.py)."""

    SCHEMA = OutboxSchema(CONSUMER, TABLES, CHECKPOINT.name, OUTBOX.name, ATTEMPTS.name, "message_id", "detail",
                          "the sender stopped before it recorded the relay's answer; sent again")

    # --- reads ------------------------------------------------------------------------------

    def settings(self, account_id: str) -> dict[str, Any] | None:
        """An account's settings as the read model holds them (`vec notify show`)."""
        return notification_settings(self._tuples, account_id)

    def messages(self, account_id: str | None = None, status: str | None = None, kind: str | None = None,
                 limit: int = 100, with_attempts: bool = False) -> list[dict[str, Any]]:
        """Newest first (by log position)."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("account_id", account_id), ("status", status), ("kind", kind)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        rows = self._rows(f"SELECT {', '.join(MESSAGE_FIELDS)} FROM notify_outbox"
                          f"{' WHERE ' + ' AND '.join(where) if where else ''}"
                          " ORDER BY position DESC, message_id DESC LIMIT ?", (*params, limit))
        if with_attempts:
            for row in rows:
                row["attempt_log"] = self.attempts(row["message_id"])
        return rows

    def message(self, message: str) -> dict[str, Any] | None:
        rows = self._rows(f"SELECT {', '.join(MESSAGE_FIELDS)}, header_id, body FROM notify_outbox"
                          " WHERE message_id = ?", (message,))
        if not rows:
            return None
        rows[0]["attempt_log"] = self.attempts(message)
        return rows[0]

    def attempts(self, message: str) -> list[dict[str, Any]]:
        return self._rows(f"SELECT {', '.join(ATTEMPT_FIELDS)} FROM notify_attempts WHERE message_id = ?"
                          " ORDER BY attempt", (message,))

    # --- the consumer's side ------------------------------------------------------------

    def watched(self) -> set[str]:
        return {r[0] for r in self.sql.execute("SELECT account_id FROM notify_watch").fetchall()}

    def start_checkpoint(self) -> int:
        """The first time: a position no NotificationsSet lies before, i.e. the settings read
        model's checkpoint, or just before the first settings it holds if earlier (read in one
        snapshot: a rebuild in between cannot make both look later than they are)."""
        with self.sql.snapshot():
            positions = checkpoint_positions(self._tuples)
            first = first_notification_position(self._tuples)
        start = positions.get(READ_MODEL, 0)
        if first is not None:
            start = min(start, first - 1)
        return self.start_at(max(start, 0))

    def enqueue(self, expected: int, until: int, watch: list[tuple[str, int]], messages: list[Message],
                sender: str) -> int | None:
        """One transaction: the accounts newly watched, the messages, and the checkpoint moved
        from `expected` to `until`. None if the checkpoint was not at `expected` (another
        consumer moved it: read again). Returns how many messages are new."""
        now = stamp(self.clock())
        added = 0
        with self.sql.transaction():
            self.sql.lock("vec.notifications.consumer")
            if self.checkpoint() != expected:
                return None
            for account_id, position in watch:
                self.sql.execute("INSERT INTO notify_watch (account_id, position) VALUES (?, ?)"
                                 " ON CONFLICT (account_id) DO NOTHING", (account_id, position))
            for m in messages:
                cursor = self.sql.execute(
                    f"INSERT INTO notify_outbox ({', '.join(OUTBOX.columns)})"
                    f" VALUES ({', '.join('?' for _ in OUTBOX.columns)}) ON CONFLICT (message_id) DO NOTHING",
                    (m.message_id, m.account_id, m.kind, m.event_id, m.position, m.task_id, m.recipient, m.subject,
                     m.body, header_id(m.message_id, sender), stamp(m.occurred_at), "pending", 0, now, None, None,
                     now, None))
                added += max(cursor.rowcount, 0)
            self.sql.execute("UPDATE notify_checkpoint SET position = ? WHERE name = ?", (until, CONSUMER))
        return added

    # --- the sender's side ----------------------------------------------------------------

    def claim_due(self, limit: int, hold: float) -> list[Job]:
        """Claims up to `limit` due messages: each gets its attempt row (`sending`) and its next
        attempt moved `hold` seconds on, so that an attempt never recorded is made again."""
        now = self.clock()
        due = self.sql.execute(
            "SELECT message_id, attempts, recipient, subject, body, header_id, occurred_at, kind, event_id"
            " FROM notify_outbox WHERE status = 'pending' AND next_attempt_at <= ?"
            " ORDER BY next_attempt_at, message_id LIMIT ?", (stamp(now), limit)).fetchall()
        if not due:
            return []
        jobs = []
        with self.sql.transaction():
            self.sql.lock("vec.notifications.sender")
            for message, attempts, *rest in due:
                attempt = attempts + 1
                claimed = self.sql.execute(
                    "UPDATE notify_outbox SET attempts = ?, next_attempt_at = ? WHERE message_id = ?"
                    " AND attempts = ? AND status = 'pending'",
                    (attempt, stamp(now + timedelta(seconds=hold)), message, attempts)).rowcount
                if claimed != 1:
                    continue
                self._interrupted(message)
                self.sql.execute("INSERT INTO notify_attempts (message_id, attempt, started_at, outcome, code, detail,"
                                 " duration_ms) VALUES (?, ?, ?, 'sending', NULL, NULL, NULL)"
                                 " ON CONFLICT (message_id, attempt) DO NOTHING", (message, attempt, stamp(now)))
                jobs.append(Job(message, attempt, *rest))
        return jobs

    def record(self, job: Job, outcome: str, code: int | None, detail: str | None, duration_ms: int,
               schedule: tuple[float, ...], max_attempts: int) -> str:
        """The attempt's outcome (sent | deferred | rejected) and the message's new state
        (returned): sent, pending (next attempt per the schedule) or failed."""
        now = self.clock()
        error = None if outcome == "sent" else detail
        with self.sql.transaction():
            self.sql.execute("UPDATE notify_attempts SET outcome = ?, code = ?, detail = ?, duration_ms = ?"
                             " WHERE message_id = ? AND attempt = ?",
                             (outcome, code, detail, duration_ms, job.message_id, job.attempt))
            if outcome == "sent":  # the relay took it: whoever else may hold it now, it is sent
                self.sql.execute("UPDATE notify_outbox SET status = 'sent', next_attempt_at = NULL, last_code = ?,"
                                 " last_error = NULL, sent_at = ? WHERE message_id = ?",
                                 (code, stamp(now), job.message_id))
                return "sent"
            state = "failed" if outcome == "rejected" or job.attempt >= max_attempts else "pending"
            following = None if state == "failed" else stamp(now + timedelta(seconds=retry_delay(schedule,
                                                                                                 job.attempt)))
            self.sql.execute("UPDATE notify_outbox SET status = ?, next_attempt_at = ?, last_code = ?,"
                             " last_error = ? WHERE message_id = ? AND attempts = ? AND status = 'pending'",
                             (state, following, code, error, job.message_id, job.attempt))
            return state


# --- the consumer: log -> outbox ---------------------------------------------------------------

class AccountFolds:
    """The account decider's fold of watched accounts, by log position, kept between batches
    (AccountState is immutable: a cached state is never changed under a caller)."""

    def __init__(self, events: EventStore, size: int = FOLDS_CACHED):
        self.events, self.size = events, size
        self.cache: OrderedDict[str, tuple[AccountState, int, int]] = OrderedDict()  # state, version, position

    def around(self, account_id: str, position: int) -> tuple[AccountState, AccountState]:
        """(the account just before `position`, the account at it)."""
        state, version, last = self.cache.pop(account_id, (AccountState(), 0, 0))
        if last >= position:  # read again from the start (the consumer was set back)
            state, version, last = AccountState(), 0, 0
        before = state
        for recorded in self.events.read_stream(account_stream(account_id), after_version=version,
                                                until_position=position):
            if recorded.position == position:
                before = state
            state = accounts.evolve(state, recorded.event)
            version, last = recorded.version, recorded.position
        self.cache[account_id] = (state, version, last)
        while len(self.cache) > self.size:
            self.cache.popitem(last=False)
        return before, state


class NotificationConsumer:
    """Reads the log past its checkpoint and puts the messages it causes in the outbox."""

    def __init__(self, engine: Engine, store: NotificationStore, sender: str):
        self.engine, self.db, self.store, self.sender = engine, engine.db, store, sender
        self.folds = AccountFolds(self.db.events)

    def step(self, batch: int = BATCH) -> int:
        """One batch: returns how many log positions it moved past (0: nothing new)."""
        start = self.store.checkpoint()
        if start is None:
            start = self.store.start_checkpoint()
        headers = self.db.events.read_headers(start, batch)  # cheap: no payloads decoded
        if not headers:
            return 0
        watched = self.store.watched()
        watch: list[tuple[str, int]] = []
        messages: list[Message] = []
        for position, stream, type_name in headers:
            if stream.startswith("account-") and type_name == SETTINGS_EVENT:
                account_id = stream.removeprefix("account-")
                if account_id not in watched:
                    watched.add(account_id)
                    watch.append((account_id, position))
            elif stream.startswith("account-") and type_name == "CreditsDebited":
                account_id = stream.removeprefix("account-")
                if account_id in watched:
                    messages += self._low_balance(account_id, position)
            elif stream.startswith("task-") and type_name in TASK_ENDS and watched:
                task_id = stream.removeprefix("task-")
                owner = self._account(task_id)
                if owner is not None and owner in watched:
                    messages += self._task_end(owner, task_id, position, type_name)
        added = self.store.enqueue(start, headers[-1][0], watch, messages, self.sender)
        if added is None:
            self.folds.cache.clear()
            return 0
        if added:
            log.info("notifications: %d messages queued up to position %d", added, headers[-1][0])
        return len(headers)

    def _event(self, position: int) -> RecordedEvent:
        return next(self.db.events.read_all(after_position=position - 1, until_position=position, batch=1))

    def _low_balance(self, account_id: str, position: int) -> list[Message]:
        before, after = self.folds.around(account_id, position)
        if not crossed(before, after) or not before.notify_email:  # crossed() needs an address too
            return []
        recorded = self._event(position)
        debit = recorded.event
        if not isinstance(debit, CreditsDebited):
            raise InvariantViolation(f"position {position} is a {recorded.type}, its header said CreditsDebited")
        subject, body = low_balance_text(account_id, before, after, debit.task_id, debit.monthly + debit.payg)
        return [Message(message_id(str(recorded.event_id), "low_balance"), account_id, "low_balance",
                        str(recorded.event_id), position, debit.task_id, before.notify_email, subject, body,
                        recorded.occurred_at)]

    def _task_end(self, account_id: str, task_id: str, position: int, type_name: str) -> list[Message]:
        _, settings = self.folds.around(account_id, position)  # the settings in force at the task's end
        if not (settings.notify_email and settings.notify_on_completion):
            return []
        recorded = self._event(position)
        state = self.engine.task(task_id)  # its counts are final at its end (late results count apart)
        subject, body = task_end_text(task_id, self._name(task_id), TASK_ENDS[type_name], state, account_id,
                                      recorded.occurred_at)
        return [Message(message_id(str(recorded.event_id), "task_end"), account_id, "task_end",
                        str(recorded.event_id), position, task_id, settings.notify_email, subject, body,
                        recorded.occurred_at)]

    def _name(self, task_id: str) -> str:
        """The task's name (set once, by TaskCreated): from the tasks read model, else from the
        task's first event."""
        row = self.db.read.task(task_id)
        if row is not None:
            return row.get("name") or ""
        created = next(self.db.events.read_stream(task_stream(task_id)), None)  # the rest is never read
        return created.event.name if created is not None and isinstance(created.event, TaskCreated) else ""

    def _account(self, task_id: str) -> str | None:
        """The task's account: from the tasks read model (set long before the task ends), else
        from the task's own stream."""
        row = self.db.read.task(task_id)
        return row["account"] if row is not None else self.engine.task(task_id).account_id


# --- the sender -----------------------------------------------------------------------------

class Relay:
    """Hands one claimed message to the SMTP relay; never raises for what the relay does.
    Answers (outcome, code, detail): sent (detail: the relay's reply) | deferred (down, timed
    out, 4xx: tried again) | rejected (5xx: failed for good)."""

    def __init__(self, settings: NotifySettings):
        self.settings = settings
        self.envelope_from = parseaddr(settings.notify_sender)[1]

    def build(self, job: Job) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.settings.notify_sender
        message["To"] = job.recipient
        message["Subject"] = job.subject
        message["Date"] = format_datetime(datetime.fromisoformat(job.occurred_at))  # the event's time
        message["Message-ID"] = job.header_id
        message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies
        message["X-Vec-Notification"] = f"{job.kind}; event={job.event_id}"
        message.set_content(job.body)
        return message

    def options(self) -> dict[str, Any]:
        s = self.settings
        options: dict[str, Any] = {"hostname": s.notify_smtp_host, "port": s.notify_smtp_port,
                                   "timeout": s.notify_timeout, "use_tls": s.notify_smtp_tls == "tls",
                                   "start_tls": True if s.notify_smtp_tls == "starttls" else False}
        if s.notify_smtp_ca_file:
            options["cert_bundle"] = s.notify_smtp_ca_file
        if s.notify_smtp_username:
            options["username"] = s.notify_smtp_username
            options["password"] = s.notify_smtp_password.get_secret_value()
        return options

    async def send(self, job: Job) -> tuple[str, int | None, str | None]:
        import aiosmtplib

        try:
            async with asyncio.timeout(self.settings.notify_timeout * 2):
                _, reply = await aiosmtplib.send(self.build(job), sender=self.envelope_from,
                                                 recipients=[job.recipient], **self.options())
            return "sent", 250, " ".join(str(reply).split())[:ERROR_TEXT]  # "2.0.0 Ok: queued as ..."
        except aiosmtplib.SMTPRecipientsRefused as error:
            refused = error.recipients[0] if error.recipients else None
            code = getattr(refused, "code", None)
            return self._refused(code, f"{code} {getattr(refused, 'message', error)}")
        except aiosmtplib.SMTPResponseException as error:  # MAIL, DATA, AUTH, HELO refused
            return self._refused(error.code, f"{error.code} {error.message}")
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:  # down, gone, no TLS: later
            return "deferred", None, f"{type(error).__name__}: {error}"[:ERROR_TEXT]
        except Exception as error:  # noqa: BLE001 - whatever a relay does must never stop the engine
            log.error("notification %s: unexpected %s talking to the relay", job.message_id, type(error).__name__,
                      exc_info=True)
            return "deferred", None, f"{type(error).__name__}: {error}"[:ERROR_TEXT]

    async def close(self) -> None:
        """Nothing to close: each message has a session of its own."""

    @staticmethod
    def _refused(code: int | None, text: str) -> tuple[str, int | None, str]:
        text = " ".join(text.split())[:ERROR_TEXT]
        if code is not None and 500 <= code < 600:
            return "rejected", code, text
        return "deferred", code, text


# --- both loops, supervised as one ------------------------------------------------------------

class Notifications(OutboxLoops[Job]):
    """The consumer and the sender (consumers/outbox.py). Without a relay
    (VEC_NOTIFY_SMTP_HOST) messages wait in the outbox."""

    NAME, SUCCESS, JOB_KEY = "notifications", "sent", "message_id"

    def __init__(self, engine: Engine, settings: NotifySettings,
                 call: Call = inline, clock: Callable[[], datetime] | None = None):
        self.settings = settings
        store = NotificationStore(engine.db.projector.sql, clock or engine.clock)
        super().__init__(engine, call, store, NotificationConsumer(engine, store, settings.notify_sender),
                         batch=BATCH, schedule=parse_schedule(settings.notify_retry_schedule),
                         poll_interval=settings.notify_poll_interval, concurrency=CONCURRENCY,
                         hold=settings.notify_timeout * 2 + CLAIM_MARGIN, max_attempts=settings.notify_max_attempts)

    def sender(self) -> "Relay":
        return Relay(self.settings)

    def sending(self) -> bool:
        if not self.settings.notify_smtp_host:
            log.info("notifications: no relay (VEC_NOTIFY_SMTP_HOST); messages wait in the outbox")
        return bool(self.settings.notify_smtp_host)

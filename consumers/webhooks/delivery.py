"""Signed webhooks on task end: an account registers endpoints; when one of its tasks
completes, fails or is cancelled, the engine POSTs the task's summary, signed per the
Standard Webhooks spec (`webhook-id`, `webhook-timestamp`, `webhook-signature`, with the
`standardwebhooks` library), at least once, every attempt recorded.

Two loops, run together by `Webhooks.run` (a supervised loop of the embedded runtime, or
of the fleet's elected webhooks leader; never more than one at a time):

- The consumer reads the log past its own checkpoint (`webhook_checkpoint`). For each task
  end (TaskCompleted, TaskFailed, SystemFailure, TaskCancelled) of an account with
  endpoints it enqueues one delivery per endpoint, and it moves its checkpoint in the same
  transaction: a crash neither loses nor doubles a delivery. A delivery's id is the
  webhook-id, derived from the event id and the endpoint, so re-reading the log inserts
  nothing new and a receiver can dedupe on it. An endpoint gets the task ends appended after
  it was registered (`created_position`, the log's head then).
- The sender takes due deliveries, claims each (attempt row `sending`, the delivery's next
  attempt pushed past the attempt's time bound) in one transaction, POSTs, and records the
  outcome: 2xx = delivered; anything else is retried after the next step of
  `VEC_WEBHOOK_RETRY_SCHEDULE`, until `VEC_WEBHOOK_MAX_ATTEMPTS` (then failed). At least
  once: a process that dies between sending and recording leaves the attempt `sending`; the
  next sender marks it `interrupted` and sends again.

Egress guard: the endpoint's host is resolved and every address checked with the
verifier's rules (verifier/egress.py); a loopback, private, link-local, metadata... address
is refused (the attempt is recorded as `refused`, no connection is opened), unless
`VEC_WEBHOOK_ALLOW_LOOPBACK=true` (tests only) allows loopback. The request then goes to the
address that was checked (no second resolution: no DNS rebinding), with the endpoint's Host
and, for HTTPS, its name for SNI and certificate checks; redirects are not followed, proxies
from the environment are not used.
"""
from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import secrets
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Literal, Self, get_args
from urllib.parse import urlsplit

import orjson

from consumers.features import Call
from consumers.outbox import OutboxLoops, OutboxSchema, OutboxStore, inline, stamp
from consumers.webhooks.settings import WebhookSettings
from engine.config import parse_schedule
from engine.domain.errors import InvalidCommand
from engine.domain.text import printable
from engine.keyring import SEALED, Keyring, Sealer
from engine.service import Engine, utcnow
from events import RecordedEvent
from projections.base import Table
from projections.sql import Rows, SqlSession, scalar
from verifier.egress import egress_refusal

log = logging.getLogger("vec.webhooks")


# task-end event -> the webhook's type
TASK_ENDS = {"TaskCompleted": "task.completed", "TaskFailed": "task.failed", "SystemFailure": "task.failed",
             "TaskCancelled": "task.cancelled"}
DeliveryStatus = Literal["pending", "delivered", "failed"]
STATUSES: tuple[str, ...] = get_args(DeliveryStatus)

ENDPOINTS = Table("webhook_endpoints", ("endpoint_id", "account_id", "url", "description", "secret", "created_at",
                                        "created_position", "created_by", "disabled_at"),
                  ("endpoint_id",), frozenset({"created_position"}), (("account_id",),))
DELIVERIES = Table("webhook_deliveries", ("delivery_id", "endpoint_id", "account_id", "task_id", "event_id",
                                          "position", "event_type", "payload", "status", "attempts",
                                          "next_attempt_at", "last_status_code", "last_error", "created_at",
                                          "delivered_at"),
                   ("delivery_id",), frozenset({"position", "attempts", "last_status_code"}),
                   (("status", "next_attempt_at"), ("endpoint_id", "position"), ("account_id", "position")))
ATTEMPTS = Table("webhook_attempts", ("delivery_id", "attempt", "started_at", "outcome", "status_code", "error",
                                      "duration_ms"),
                 ("delivery_id", "attempt"), frozenset({"attempt", "status_code", "duration_ms"}),
                 (("outcome",),))
CHECKPOINT = Table("webhook_checkpoint", ("name", "position"), ("name",), frozenset({"position"}))
TABLES = (ENDPOINTS, DELIVERIES, ATTEMPTS, CHECKPOINT)


def attempt_counts(rows: Rows) -> dict[str, int]:
    """Delivery attempts by outcome (every attempt is a row: the truth across processes)."""
    return {outcome: int(n) for outcome, n in rows(f"SELECT outcome, COUNT(*) FROM {ATTEMPTS.name} GROUP BY outcome")}


def delivery_counts(rows: Rows) -> dict[str, int]:
    """Deliveries by status."""
    return {status: int(n) for status, n in rows(f"SELECT status, COUNT(*) FROM {DELIVERIES.name} GROUP BY status")}


def consumer_position(rows: Rows) -> int | None:
    """How far the webhooks consumer read the log; None before it ever ran."""
    found = rows(f"SELECT position FROM {CHECKPOINT.name} WHERE name = ?", (CONSUMER,))
    return int(found[0][0]) if found else None

ID_NAMESPACE = uuid.UUID("0b5b7d52-6a57-4f0e-9a43-3c0f3b6f5e21")
CONSUMER = "webhooks"
BATCH = 1000  # log positions the consumer looks at per transaction
CLAIM_MARGIN = 30.0  # seconds past an attempt's own bound before an unrecorded attempt is sent again
MAX_ENDPOINTS = 20  # active endpoints per account
MAX_URL = 2000
ERROR_TEXT = 300  # characters of an error or a response kept per attempt
USER_AGENT = "vec-webhooks/1"

ENDPOINT_FIELDS = ("endpoint_id", "account_id", "url", "description", "created_at", "created_by", "disabled_at")
DELIVERY_FIELDS = ("delivery_id", "endpoint_id", "account_id", "task_id", "event_id", "position", "event_type",
                   "status", "attempts", "next_attempt_at", "last_status_code", "last_error", "created_at",
                   "delivered_at")
ATTEMPT_FIELDS = ("attempt", "started_at", "outcome", "status_code", "error", "duration_ms")


# --- pure helpers -------------------------------------------------------------------------

def new_secret() -> str:
    """A Standard Webhooks signing secret: `whsec_` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def webhook_id(event_id: str, endpoint_id: str) -> str:
    """The webhook-id of one task end for one endpoint: the same on every re-read and retry."""
    return "msg_" + uuid.uuid5(ID_NAMESPACE, f"{event_id}/{endpoint_id}").hex


def retry_delay(schedule: tuple[float, ...], attempt: int) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based)."""
    return schedule[min(attempt, len(schedule)) - 1]


def allowed_address(ip: str, allow_loopback: bool) -> str | None:
    """None when a webhook may be sent to `ip`; otherwise why not (the verifier's rules)."""
    why = egress_refusal(ip)
    if why is not None and allow_loopback and egress_refusal(ip, loopback_only=True) is None:
        return None
    return why


def validate_url(url: str, allow_loopback: bool = False) -> str:
    """The endpoint URL, checked: http or https, a host, no credentials, no fragment, and not
    an address literal the egress guard refuses (host names are checked at each delivery)."""
    url = url.strip()
    if not url or len(url) > MAX_URL or any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise InvalidCommand(f"a webhook URL is 1-{MAX_URL} printable characters without spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise InvalidCommand(f"not a valid URL: {error}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidCommand("a webhook URL is http:// or https://")
    if not parts.hostname:
        raise InvalidCommand("a webhook URL names a host")
    if parts.username is not None or parts.password is not None:
        raise InvalidCommand("a webhook URL carries no credentials (the signature authenticates the sender)")
    if parts.fragment:
        raise InvalidCommand("a webhook URL has no #fragment")
    if port == 0:
        raise InvalidCommand("a webhook URL's port is 1-65535")
    try:  # what the sender will parse it with (host names in IDNA)
        import httpx

        httpx.URL(url).raw_host.decode("ascii").encode("idna")  # the resolver's own check: labels of 1-63
    except Exception as error:  # noqa: BLE001 - InvalidURL, an IDNA or Unicode error
        raise InvalidCommand(f"not a valid URL: {error}") from None
    try:
        literal = str(ipaddress.ip_address(parts.hostname))
    except ValueError:
        return url  # a host name: its addresses are checked at each delivery
    why = allowed_address(literal, allow_loopback)
    if why is not None:
        raise InvalidCommand(f"webhooks are never sent to {literal} ({why}): not globally routable")
    return url


def task_summary(event_type: str, event: Any, state: Any, recorded: Any) -> dict[str, Any]:
    """The body of a task-end webhook (Standard Webhooks' type/timestamp/data shape)."""
    task_id = recorded.stream.removeprefix("task-")
    reason = getattr(event, "reason", None) if event_type in ("TaskFailed", "SystemFailure") else None
    return {
        "type": TASK_ENDS[event_type],
        "timestamp": recorded.occurred_at.astimezone(timezone.utc).isoformat(),
        "data": {
            "task_id": task_id,
            "account": state.account_id,
            "kind": state.kind,
            "status": TASK_ENDS[event_type].removeprefix("task."),
            "partial_failure": bool(state.partial_failure),
            "reason": reason,
            "total": state.address_count,
            "verified": state.consumed + state.counts.get("unknown", 0),
            "consumed": state.consumed,
            "refunded": state.refunded,
            "unverified": getattr(event, "unverified_count", 0),
            "counts": dict(state.counts),
            "finished_at": recorded.occurred_at.astimezone(timezone.utc).isoformat(),
            "event_id": str(recorded.event_id),
            "position": recorded.position,
            "url": f"/v1/tasks/{task_id}",
        },
    }


# --- the tables -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """One claimed attempt of one delivery."""

    delivery_id: str
    attempt: int
    url: str
    secret: str
    payload: str


class WebhookStore(OutboxStore):
    """Endpoints, deliveries, attempts and the consumer's checkpoint (consumers/outbox.py).

    Signing secrets are sealed at rest with the store's keyring (engine/keyring.py, the key
    of scope SECRETS_SCOPE); a row written before that is read as it is, and sealed in place
    when the schema is first ensured."""

    SCHEMA = OutboxSchema(CONSUMER, TABLES, CHECKPOINT.name, DELIVERIES.name, ATTEMPTS.name, "delivery_id", "error",
                          "the sender stopped before it recorded an answer; sent again")

    def __init__(self, sql: SqlSession, clock: Callable[[], datetime] = utcnow, *, keyring: Keyring):
        super().__init__(sql, clock)
        self.keyring = keyring

    def _sealer(self) -> Sealer:
        return self.keyring.sealer(SECRETS_SCOPE, create=True)

    def ensure_schema(self) -> Self:
        if not self._ready:
            super().ensure_schema()
            self._seal_plain_secrets()
        return self

    def _seal_plain_secrets(self) -> None:
        plain = self.sql.execute("SELECT endpoint_id, secret FROM webhook_endpoints WHERE secret NOT LIKE ?",
                                 (SEALED + "%",)).fetchall()
        if plain:
            sealer = self._sealer()
            with self.sql.transaction():
                for endpoint_id, secret in plain:
                    self.sql.execute("UPDATE webhook_endpoints SET secret = ? WHERE endpoint_id = ? AND secret = ?",
                                     (sealer.seal(secret), endpoint_id, secret))

    # --- endpoints ----------------------------------------------------------------------

    def add_endpoint(self, account_id: str, url: str, description: str, created_position: int,
                     created_by: str | None = None, allow_loopback: bool = False) -> dict[str, Any]:
        """Registers an endpoint; the answer holds its signing secret (shown this once)."""
        url = validate_url(url, allow_loopback)
        if len(description) > 200 or not printable(description):
            raise InvalidCommand("a description is at most 200 printable characters")
        secret = new_secret()
        row = {"endpoint_id": f"ep_{uuid.uuid4().hex}", "account_id": account_id, "url": url,
               "description": description, "secret": self._sealer().seal(secret), "created_at": stamp(self.clock()),
               "created_position": created_position, "created_by": created_by, "disabled_at": None}
        with self.sql.transaction():
            self.sql.lock(f"vec.webhooks.account.{account_id}")
            active = scalar(self.sql.execute("SELECT COUNT(*) FROM webhook_endpoints WHERE account_id = ?"
                                             " AND disabled_at IS NULL", (account_id,)))
            if active >= MAX_ENDPOINTS:
                raise InvalidCommand(f"an account has at most {MAX_ENDPOINTS} webhook endpoints; remove one first")
            self.sql.execute(f"INSERT INTO webhook_endpoints ({', '.join(ENDPOINTS.columns)})"
                             f" VALUES ({', '.join('?' for _ in ENDPOINTS.columns)})",
                             tuple(row[c] for c in ENDPOINTS.columns))
        return {**{k: row[k] for k in ENDPOINT_FIELDS}, "secret": secret}

    def endpoint(self, endpoint_id: str) -> dict[str, Any] | None:
        rows = self._rows(f"SELECT {', '.join(ENDPOINT_FIELDS)} FROM webhook_endpoints WHERE endpoint_id = ?",
                          (endpoint_id,))
        return rows[0] if rows else None

    def endpoints(self, account_id: str, include_removed: bool = False) -> list[dict[str, Any]]:
        where = "" if include_removed else " AND disabled_at IS NULL"
        return self._rows(f"SELECT {', '.join(ENDPOINT_FIELDS)} FROM webhook_endpoints WHERE account_id = ?{where}"
                          " ORDER BY created_at, endpoint_id", (account_id,))

    def remove_endpoint(self, endpoint_id: str) -> dict[str, Any] | None:
        """Stops an endpoint: no new deliveries; its pending ones fail ('endpoint removed')."""
        now = stamp(self.clock())
        with self.sql.transaction():
            self.sql.execute("UPDATE webhook_endpoints SET disabled_at = ? WHERE endpoint_id = ?"
                             " AND disabled_at IS NULL", (now, endpoint_id))
            self.sql.execute("UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL,"
                             " last_error = 'endpoint removed' WHERE endpoint_id = ? AND status = 'pending'",
                             (endpoint_id,))
        return self.endpoint(endpoint_id)

    # --- deliveries and attempts (reads) ------------------------------------------------

    def deliveries(self, account_id: str | None = None, endpoint_id: str | None = None, status: str | None = None,
                   before: tuple[int, str] | None = None, limit: int = 100,
                   with_attempts: bool = False) -> list[dict[str, Any]]:
        """Newest first (by log position), a page at a time (`before`: the last row's key)."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("account_id", account_id), ("endpoint_id", endpoint_id), ("status", status)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if before is not None:
            where.append("(position < ? OR (position = ? AND delivery_id < ?))")
            params += [before[0], before[0], before[1]]
        rows = self._rows(f"SELECT {', '.join(DELIVERY_FIELDS)} FROM webhook_deliveries"
                          f"{' WHERE ' + ' AND '.join(where) if where else ''}"
                          " ORDER BY position DESC, delivery_id DESC LIMIT ?", (*params, limit))
        if with_attempts:
            for row in rows:
                row["attempt_log"] = self.attempts(row["delivery_id"])
        return rows

    def delivery(self, delivery_id: str) -> dict[str, Any] | None:
        rows = self._rows(f"SELECT {', '.join(DELIVERY_FIELDS)}, payload FROM webhook_deliveries"
                          " WHERE delivery_id = ?", (delivery_id,))
        if not rows:
            return None
        row = rows[0]
        row["payload"] = orjson.loads(row["payload"])
        row["attempt_log"] = self.attempts(delivery_id)
        return row

    def attempts(self, delivery_id: str) -> list[dict[str, Any]]:
        return self._rows(f"SELECT {', '.join(ATTEMPT_FIELDS)} FROM webhook_attempts WHERE delivery_id = ?"
                          " ORDER BY attempt", (delivery_id,))

    # --- the consumer's side --------------------------------------------------------------

    def listening_accounts(self) -> set[str]:
        return {r[0] for r in self.sql.execute(
            "SELECT DISTINCT account_id FROM webhook_endpoints WHERE disabled_at IS NULL").fetchall()}

    def start_checkpoint(self, head: int) -> int:
        """The first time: the log's head, or the oldest endpoint's registration if earlier
        (`head` is read before the endpoints, so none registered meanwhile is skipped)."""
        oldest = scalar(self.sql.execute("SELECT MIN(created_position) FROM webhook_endpoints"))
        return self.start_at(head if oldest is None else min(head, oldest))

    def enqueue(self, expected: int, until: int, ends: list[tuple[RecordedEvent, dict[str, Any]]]) -> int | None:
        """One transaction: a delivery per active endpoint of each task end's account, and the
        checkpoint moved from `expected` to `until`. None if the checkpoint was not at
        `expected` (another consumer moved it: read again). Returns deliveries inserted."""
        now = stamp(self.clock())
        added = 0
        with self.sql.transaction():
            self.sql.lock("vec.webhooks.consumer")
            if self.checkpoint() != expected:
                return None
            for recorded, payload in ends:
                account_id = payload["data"]["account"]
                body = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode()
                for (endpoint_id,) in self.sql.execute(
                        "SELECT endpoint_id FROM webhook_endpoints WHERE account_id = ? AND disabled_at IS NULL"
                        " AND created_position < ? ORDER BY endpoint_id",
                        (account_id, recorded.position)).fetchall():
                    cursor = self.sql.execute(
                        f"INSERT INTO webhook_deliveries ({', '.join(DELIVERIES.columns)})"
                        f" VALUES ({', '.join('?' for _ in DELIVERIES.columns)}) ON CONFLICT (delivery_id) DO NOTHING",
                        (webhook_id(str(recorded.event_id), endpoint_id), endpoint_id, account_id,
                         payload["data"]["task_id"], str(recorded.event_id), recorded.position, recorded.type, body,
                         "pending", 0, now, None, None, now, None))
                    added += max(cursor.rowcount, 0)
            self.sql.execute("UPDATE webhook_checkpoint SET position = ? WHERE name = ?", (until, CONSUMER))
        return added

    # --- the sender's side ------------------------------------------------------------------

    def claim_due(self, limit: int, hold: float) -> list[Job]:
        """Claims up to `limit` due deliveries: each gets its attempt row (`sending`) and its
        next attempt moved `hold` seconds on, so that an attempt never recorded is made again."""
        now = self.clock()
        due = self.sql.execute(
            "SELECT d.delivery_id, d.attempts, d.payload, e.url, e.secret, e.disabled_at"
            " FROM webhook_deliveries d JOIN webhook_endpoints e ON e.endpoint_id = d.endpoint_id"
            " WHERE d.status = 'pending' AND d.next_attempt_at <= ? ORDER BY d.next_attempt_at, d.delivery_id"
            " LIMIT ?", (stamp(now), limit)).fetchall()
        if not due:
            return []
        jobs = []
        sealer = self._sealer()
        with self.sql.transaction():
            self.sql.lock("vec.webhooks.sender")
            for delivery_id, attempts, payload, url, secret, disabled_at in due:
                if disabled_at is not None:
                    self.sql.execute("UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL,"
                                     " last_error = 'endpoint removed' WHERE delivery_id = ? AND status = 'pending'",
                                     (delivery_id,))
                    continue
                attempt = attempts + 1
                claimed = self.sql.execute(
                    "UPDATE webhook_deliveries SET attempts = ?, next_attempt_at = ? WHERE delivery_id = ?"
                    " AND attempts = ? AND status = 'pending'",
                    (attempt, stamp(now + timedelta(seconds=hold)), delivery_id, attempts)).rowcount
                if claimed != 1:
                    continue
                self._interrupted(delivery_id)
                self.sql.execute("INSERT INTO webhook_attempts (delivery_id, attempt, started_at, outcome, status_code,"
                                 " error, duration_ms) VALUES (?, ?, ?, 'sending', NULL, NULL, NULL)"
                                 " ON CONFLICT (delivery_id, attempt) DO NOTHING", (delivery_id, attempt, stamp(now)))
                jobs.append(Job(delivery_id, attempt, url, sealer.open(secret), payload))  # a plain one opens as it is
        return jobs

    def record(self, job: Job, outcome: str, status_code: int | None, error: str | None, duration_ms: int,
               schedule: tuple[float, ...], max_attempts: int) -> str:
        """The attempt's outcome, and the delivery's new state (returned): delivered,
        pending (next attempt per the schedule) or failed (no attempts left)."""
        now = self.clock()
        with self.sql.transaction():
            self.sql.execute("UPDATE webhook_attempts SET outcome = ?, status_code = ?, error = ?, duration_ms = ?"
                             " WHERE delivery_id = ? AND attempt = ?",
                             (outcome, status_code, error, duration_ms, job.delivery_id, job.attempt))
            if outcome == "delivered":  # whoever else may hold it now: it arrived
                self.sql.execute("UPDATE webhook_deliveries SET status = 'delivered', next_attempt_at = NULL,"
                                 " last_status_code = ?, last_error = NULL, delivered_at = ? WHERE delivery_id = ?",
                                 (status_code, stamp(now), job.delivery_id))
                return "delivered"
            state = "failed" if job.attempt >= max_attempts else "pending"
            delay = timedelta(seconds=retry_delay(schedule, job.attempt))
            following = None if state == "failed" else stamp(now + delay)
            self.sql.execute("UPDATE webhook_deliveries SET status = ?, next_attempt_at = ?, last_status_code = ?,"
                             " last_error = ? WHERE delivery_id = ? AND attempts = ? AND status = 'pending'",
                             (state, following, status_code, error, job.delivery_id, job.attempt))
            return state


# --- the consumer: log -> deliveries --------------------------------------------------------

class WebhookConsumer:
    """Reads the log past its checkpoint and enqueues the deliveries of task ends."""

    def __init__(self, engine: Engine, store: WebhookStore):
        self.engine, self.db, self.store = engine, engine.db, store

    def step(self, batch: int = BATCH) -> int:
        """One batch: returns how many log positions it moved past (0: nothing new)."""
        start = self.store.checkpoint()
        if start is None:
            start = self.store.start_checkpoint(self.db.events.head())
        headers = self.db.events.read_headers(start, batch)  # cheap: no payloads decoded
        if not headers:
            return 0
        ends = []
        # read after the headers: an endpoint registered later only gets later task ends anyway
        listening = self.store.listening_accounts() if any(t in TASK_ENDS for _, _, t in headers) else set()
        for position, stream, type_name in headers:
            if type_name in TASK_ENDS and stream.startswith("task-") and listening:
                task_id = stream.removeprefix("task-")
                if self._account(task_id) not in listening:
                    continue  # no endpoint: no need to fold the task
                recorded = next(self.db.events.read_all(after_position=position - 1, until_position=position,
                                                        batch=1))
                state = self.engine.task(task_id)
                ends.append((recorded, task_summary(type_name, recorded.event, state, recorded)))
        added = self.store.enqueue(start, headers[-1][0], ends)
        if added is None:
            return 0
        if added:
            log.info("webhooks: %d deliveries enqueued up to position %d", added, headers[-1][0])
        return len(headers)

    def _account(self, task_id: str) -> str | None:
        """The task's account: from the tasks read model (set long before the task ends), else
        from the task's own stream."""
        row = self.db.read.task(task_id)
        return row["account"] if row is not None else self.engine.task(task_id).account_id


# --- the sender -----------------------------------------------------------------------------

SECRETS_SCOPE = "~webhook-secrets"  # the keyring scope whose key seals the endpoints' signing secrets
NOT_PUBLIC = "refused: not a public address"  # what a tenant's attempt log says of a refused host


class Egress:
    """Where a webhook may go: the endpoint's addresses, each checked by the egress guard."""

    def __init__(self, allow_loopback: bool):
        self.allow_loopback = allow_loopback

    async def addresses(self, host: str, port: int) -> tuple[list[str], str | None]:
        """(addresses to try, None) or ([], why the host is refused)."""
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        ips = list(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))
        for ip in ips:
            why = allowed_address(ip, self.allow_loopback)
            if why is not None:
                # the operator's log says where it points; the tenant's attempt log must not map
                # our internal names to addresses
                log.info("webhook host %s resolves to %s (%s): refused by the egress guard", host, ip, why)
                return [], NOT_PUBLIC
        return ips, None


class Sender:
    """POSTs one claimed attempt, signed; never raises for what the network or the receiver do."""

    def __init__(self, settings: WebhookSettings, egress: Egress | None = None):
        import httpx

        self.settings = settings
        self.timeout = settings.webhook_timeout
        self.egress = egress or Egress(settings.webhook_allow_loopback)
        # a fresh connection per attempt: a pooled one was checked (and TLS-verified) for
        # another endpoint's host name; no proxies or .netrc from the environment
        self.client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False, trust_env=False,
                                        limits=httpx.Limits(max_keepalive_connections=0))

    async def close(self) -> None:
        await self.client.aclose()

    def headers(self, job: Job, now: float) -> dict[str, str]:
        from standardwebhooks import Webhook

        seconds = int(now)
        signature = Webhook(job.secret).sign(job.delivery_id, datetime.fromtimestamp(seconds, timezone.utc),
                                             job.payload)
        return {"webhook-id": job.delivery_id, "webhook-timestamp": str(seconds), "webhook-signature": signature,
                "content-type": "application/json", "user-agent": USER_AGENT}

    async def send(self, job: Job) -> tuple[str, int | None, str | None]:
        """(outcome: delivered | failed | refused, status code, error)."""
        import httpx

        try:
            async with asyncio.timeout(self.timeout):
                try:
                    url = httpx.URL(job.url)
                    host = url.raw_host.decode("ascii")  # IDNA-encoded
                except Exception as error:  # noqa: BLE001 - registered before a stricter check
                    return "failed", None, f"not a valid URL: {error}"[:ERROR_TEXT]
                port = url.port or (443 if url.scheme == "https" else 80)
                try:
                    ips, refused = await self.egress.addresses(host, port)
                except (OSError, UnicodeError) as error:
                    return "failed", None, f"cannot resolve {host}: {error}"[:ERROR_TEXT]
                if refused:
                    return "refused", None, refused[:ERROR_TEXT]
                body = job.payload.encode()
                headers = {**self.headers(job, time.time()), "host": url.netloc.decode("ascii")}
                extensions = {"sni_hostname": host} if url.scheme == "https" else {}
                for index, ip in enumerate(ips):
                    try:
                        async with self.client.stream("POST", url.copy_with(host=ip), content=body, headers=headers,
                                                      extensions=extensions) as response:
                            excerpt = b""
                            async for chunk in response.aiter_raw():
                                excerpt += chunk
                                if len(excerpt) >= ERROR_TEXT:
                                    break
                    except httpx.ConnectError as error:
                        if index + 1 < len(ips):
                            continue  # the host's next address
                        return "failed", None, f"cannot connect: {error or type(error).__name__}"[:ERROR_TEXT]
                    if 200 <= response.status_code < 300:
                        return "delivered", response.status_code, None
                    text = excerpt[:ERROR_TEXT].decode("utf-8", "replace").strip()
                    return "failed", response.status_code, f"HTTP {response.status_code}{': ' + text if text else ''}"[
                        :ERROR_TEXT]
                return "failed", None, "no address to connect to"
        except (TimeoutError, httpx.TimeoutException):
            return "failed", None, f"no answer within {self.timeout:g}s"
        except httpx.HTTPError as error:
            return "failed", None, f"{type(error).__name__}: {error}"[:ERROR_TEXT]
        except Exception as error:  # noqa: BLE001 - whatever a receiver answers must never stop the engine
            log.error("webhook %s: unexpected %s talking to its endpoint", job.delivery_id, type(error).__name__,
                      exc_info=True)
            return "failed", None, f"{type(error).__name__}: {error}"[:ERROR_TEXT]


# --- both loops, supervised as one ------------------------------------------------------------

class Webhooks(OutboxLoops[Job]):
    """The consumer and the sender (consumers/outbox.py)."""

    NAME, SUCCESS, JOB_KEY = "webhooks", "delivered", "delivery_id"

    def __init__(self, engine: Engine, settings: WebhookSettings,
                 call: Call = inline, clock: Callable[[], datetime] | None = None):
        self.settings = settings
        store = WebhookStore(engine.db.projector.sql, clock or engine.clock, keyring=engine.db.keyring)
        super().__init__(engine, call, store, WebhookConsumer(engine, store), batch=BATCH,
                         schedule=parse_schedule(settings.webhook_retry_schedule),
                         poll_interval=settings.webhook_poll_interval, concurrency=settings.webhook_concurrency,
                         hold=settings.webhook_timeout + CLAIM_MARGIN, max_attempts=settings.webhook_max_attempts)

    def sender(self) -> Sender:
        return Sender(self.settings)

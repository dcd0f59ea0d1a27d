"""Prometheus metrics of every long-running process (`vec run`, each fleet role, `vec serve`).

Two kinds:

- **Process metrics**, counted where things happen, in this module's `REGISTRY`: chunk
  latency and outcomes (consumers/verification.py), provider errors and outage pauses,
  what the SMTP prober saw (probe latency, reply classes, open sessions per MX host,
  connect failures: through the verifier's observer hook, `verifier.prober.set_observer`,
  so verifier/ never imports the engine), the engine's commands and conflict retries
  (`Engine.stats` of every engine this process tracks), the fleet's claims and settles,
  the relay's publishes.
- **State metrics**, computed at scrape time by `StoreState` from the store the process
  works on: tasks by status, addresses by status and Unknown reason, credits debited,
  consumed, refunded (and granted, expired), projection lag (head - checkpoint), relay lag
  (head - relay position) and the fleet's live processes (PostgreSQL), webhook attempts
  and deliveries (the tables of consumers/webhooks/delivery.py, when they exist). Every process that
  exports them reports the same values (they come from the log), so dashboards take
  `max(...)` of them, never `sum(...)`. They are cheap: the counters are folded from the
  log incrementally with aggregate SQL (only new events at each scrape; a fresh process
  catches up within a time budget per scrape), the gauges are aggregate queries on small
  tables or indexes, and a scrape is reused for `VEC_METRICS_CACHE` seconds.

Label cardinality is bounded: no task, account or address labels; reasons come from
closed sets (anything else is `other`); MX host labels only on `vec_smtp_sessions_open`,
at most `VEC_METRICS_MX_HOSTS` of them (the rest add up as `mx="other"`).
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections import Counter as Tally
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence, TypeVar
from urllib.parse import quote, urlparse

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.requests import Request
    from starlette.responses import Response

    from engine.relay import Relay
    from engine.service import Engine

from consumers.fleet.settings import FleetSettings
from consumers.metrics.settings import ObservabilitySettings
from engine.config import CoreSettings, slice_of
from engine.store.base import EventTally
from engine.store.lease import lease_heartbeat
from projections.queries import active_task_counts
from projections.runner import checkpoint_positions, stopped_names

_T = TypeVar("_T")

log = logging.getLogger("vec.metrics")


disable_created_metrics()  # no `_created` series beside every counter and histogram (half the samples)
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

# --- closed label sets ------------------------------------------------------------------

STATUSES = ("safe", "invalid", "risky", "unknown")
UNKNOWN_REASONS = ("smtp_timeout", "greylisted", "antispam_block", "temporary_failure", "dns_failure",
                   "provider_error", "connection_refused", "policy")
REFUND_REASONS = ("unknown", "cancelled", "system_failure", "partial_failure", "support")
GRANT_REASONS = ("welcome", "purchase", "subscription", "support")
TASK_STATUSES = ("pending", "processing", "completed", "cancelled", "failed")
FINISHED = {"TaskCompleted": "completed", "TaskCancelled": "cancelled", "TaskFailed": "failed",
            "SystemFailure": "failed"}
CHUNK_OUTCOMES = ("verified", "nothing_pending", "chunk_failed", "task_failed", "stopped", "error")
PROVIDER_ERRORS = ("unavailable", "rejected", "no_answer")
SYSTEM_FAILURES = ("stalled", "engine_outage", "engine_error", "provider_deadline")
REPLY_STAGES = ("rcpt", "catch_all", "session")
REPLY_CLASSES = ("2xx", "4xx", "5xx", "other")
CONNECT_FAILURES = ("refused", "connect_timeout", "connect_error", "banner_timeout", "timeout", "disconnected",
                    "other")
WEBHOOK_OUTCOMES = ("delivered", "failed", "refused", "sending", "interrupted", "other")
WEBHOOK_STATUSES = ("pending", "delivered", "failed")
ROLES = ("relay", "worker", "projector", "watchdog")


def _bounded(value: str | None, allowed: Iterable[str], other: str = "other") -> str:
    return value if value is not None and value in allowed else other


# --- process metrics ----------------------------------------------------------------------

CHUNK_SECONDS = Histogram(
    "vec_chunk_seconds", "Time to verify one chunk (the verification loop, pauses and retries included), by outcome",
    ["outcome"], registry=REGISTRY,
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800))
CHUNKS_IN_FLIGHT = Gauge("vec_chunks_in_flight", "Chunks this process is verifying now", registry=REGISTRY)
PROVIDER_ERRORS_TOTAL = Counter(
    "vec_provider_errors", "Provider calls that failed: unavailable (an outage of ours: the chunk pauses), rejected "
    "(the provider refused the batch: retried, then the chunk fails), no_answer (addresses the provider left "
    "unanswered, counted per address)", ["kind"], registry=REGISTRY)
OUTAGE_PAUSES = Counter("vec_provider_outage_pauses", "Chunks paused because the provider was unavailable",
                        registry=REGISTRY)
PROVIDER_UNAVAILABLE = Gauge("vec_provider_unavailable", "1 while this process sees the provider unavailable",
                             registry=REGISTRY)
SYSTEM_FAILURES_TOTAL = Counter(
    "vec_system_failures", "Tasks this process failed through SystemFailure, by cause", ["cause"], registry=REGISTRY)
TASKS_DRIVEN = Gauge("vec_tasks_driven", "Tasks the embedded runtime of this process drives now", registry=REGISTRY)
PROBE_SECONDS = Histogram(
    "vec_probe_seconds", "Time from an address's first SMTP work (or its domain's DNS look-up) to its result",
    ["status"], registry=REGISTRY, buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300))
SMTP_REPLIES = Counter(
    "vec_smtp_replies", "SMTP replies by stage (rcpt, the catch-all probe, session = refused at banner/HELO/MAIL) "
    "and class", ["stage", "class"], registry=REGISTRY)
SMTP_CONNECT_FAILURES = Counter("vec_smtp_connect_failures", "MX connections that failed, by kind", ["kind"],
                                registry=REGISTRY)
SMTP_SESSIONS = Counter("vec_smtp_sessions", "SMTP sessions opened", registry=REGISTRY)
FLEET_CLAIMS = Counter("vec_fleet_chunk_claims", "Chunk work a fleet worker received: claimed (won) or held by a "
                       "live worker (taken)", ["outcome"], registry=REGISTRY)
FLEET_SETTLED = Counter("vec_fleet_settled", "Outcomes the fleet's settler handled (retries included), by kind",
                        ["kind"], registry=REGISTRY)
REDISPATCHED = Counter("vec_watchdog_redispatched", "Chunks the watchdog dispatched again (no live worker)",
                       registry=REGISTRY)

for _outcome in CHUNK_OUTCOMES:
    CHUNK_SECONDS.labels(_outcome)
for _kind in PROVIDER_ERRORS:
    PROVIDER_ERRORS_TOTAL.labels(_kind)
for _cause in SYSTEM_FAILURES:
    SYSTEM_FAILURES_TOTAL.labels(_cause)
for _status in STATUSES:
    PROBE_SECONDS.labels(_status)
for _stage in REPLY_STAGES:
    for _class in REPLY_CLASSES:
        SMTP_REPLIES.labels(_stage, _class)
for _kind in CONNECT_FAILURES:
    SMTP_CONNECT_FAILURES.labels(_kind)
for _outcome in ("won", "taken"):
    FLEET_CLAIMS.labels(_outcome)
for _kind in ("results", "fail_chunk", "fail_task"):
    FLEET_SETTLED.labels(_kind)


def provider_error(kind: str, count: int = 1) -> None:
    PROVIDER_ERRORS_TOTAL.labels(_bounded(kind, PROVIDER_ERRORS, "rejected")).inc(count)


def system_failure(cause: str) -> None:
    SYSTEM_FAILURES_TOTAL.labels(_bounded(cause, SYSTEM_FAILURES, "engine_error")).inc()


class ChunkMetrics:
    """The verification loop's observer (consumers/verification.py ChunkObserver)."""

    def chunk_started(self) -> None:
        CHUNKS_IN_FLIGHT.inc()

    def chunk_ended(self, outcome: str, seconds: float) -> None:
        # observed before the chunk leaves "in flight": a scrape that sees 0 in flight sees it
        CHUNK_SECONDS.labels(outcome).observe(seconds)
        CHUNKS_IN_FLIGHT.dec()

    def provider_error(self, kind: str, count: int = 1) -> None:
        provider_error(kind, count)

    def provider_unavailable(self, down: bool) -> None:
        PROVIDER_UNAVAILABLE.set(int(down))

    def paused(self) -> None:
        OUTAGE_PAUSES.inc()

    def system_failure(self, cause: str) -> None:
        system_failure(cause)


CHUNK_METRICS = ChunkMetrics()


# --- what the SMTP prober saw (the verifier's observer hook) ---------------------------

class ProbeMetrics:
    """The verifier's observer (verifier.prober.ProbeObserver): what the prober saw, as
    metrics. Open sessions are kept per MX host and exported capped (`cap` hosts with the
    most open sessions, the rest as mx="other")."""

    def __init__(self, cap: int = 20):
        self.cap = cap
        self.open: Tally[str] = Tally()
        self.lock = threading.Lock()

    def smtp_reply(self, stage: str, code: int | None) -> None:
        kind = f"{code // 100}xx" if isinstance(code, int) and 200 <= code < 600 else "other"
        SMTP_REPLIES.labels(_bounded(stage, REPLY_STAGES, "rcpt"), _bounded(kind, REPLY_CLASSES)).inc()

    def connect_failed(self, kind: str) -> None:
        SMTP_CONNECT_FAILURES.labels(_bounded(kind, CONNECT_FAILURES)).inc()

    def session_opened(self, mx: str) -> None:
        SMTP_SESSIONS.inc()
        with self.lock:
            self.open[mx or "?"] += 1

    def session_closed(self, mx: str) -> None:
        with self.lock:
            mx = mx or "?"
            self.open[mx] -= 1
            if self.open[mx] <= 0:
                del self.open[mx]

    def address_done(self, status: str, seconds: float) -> None:
        PROBE_SECONDS.labels(_bounded(status, STATUSES, "unknown")).observe(max(seconds, 0.0))

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("vec_smtp_sessions_open", "SMTP sessions open now, per MX host (the busiest "
                                   "VEC_METRICS_MX_HOSTS hosts; the rest add up as mx=\"other\")", labels=["mx"])
        with self.lock:
            busiest = self.open.most_common()
        for mx, count in busiest[:self.cap]:
            family.add_metric([mx], count)
        # always a sample, 0 when idle: a dashboard shows "0 open", not "no data"
        family.add_metric(["other"], sum(count for _, count in busiest[self.cap:]))
        yield family


PROBES = ProbeMetrics()
REGISTRY.register(PROBES)


def install(settings: CoreSettings | None = None) -> None:
    """Makes the verifier report to PROBES (idempotent): called by every process that
    verifies (the embedded runtime, the fleet)."""
    from verifier import prober

    if settings is not None:
        PROBES.cap = max(1, slice_of(settings, ObservabilitySettings).metrics_mx_hosts)
    prober.set_observer(PROBES)


# --- objects of this process that count for themselves -----------------------------------

class _Tracked:
    """Engines (Engine.stats: commands decided, decided again after a conflict) and relays
    (messages published) of this process. The stats dicts outlive their engines here, so
    a counter never goes down when an engine is dropped."""

    def __init__(self) -> None:
        self.stats: dict[int, dict[str, int]] = {}
        self.relays: dict[int, Relay] = {}
        self.lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            stats = list(self.stats.values())
            relays = list(self.relays.values())
        commands = CounterMetricFamily("vec_engine_commands", "Commands the engines of this process decided")
        commands.add_metric([], sum(s.get("commands", 0) for s in stats))
        conflicts = CounterMetricFamily("vec_engine_conflicts", "Commands decided again after a concurrent writer "
                                        "moved a stream (optimistic concurrency retries)")
        conflicts.add_metric([], sum(s.get("conflicts", 0) for s in stats))
        published = CounterMetricFamily("vec_relay_published", "Events the relay of this process published and the "
                                        "broker acknowledged (re-sends included)")
        published.add_metric([], sum(r.published for r in relays))
        yield from (commands, conflicts, published)


TRACKED = _Tracked()
REGISTRY.register(TRACKED)


def track_engine(engine: Engine) -> None:
    with TRACKED.lock:
        TRACKED.stats[id(engine.stats)] = engine.stats


def track_relay(relay: Relay) -> None:
    with TRACKED.lock:
        TRACKED.relays[id(relay)] = relay


# --- state metrics: computed from the store at scrape time ----------------------------------

FOLD_WINDOW = 100_000  # log positions per aggregate query
FOLD_BUDGET = 2.0  # seconds of folding per scrape (a fresh process on a long log catches up over a few)
FOLDED_TYPES = ("TaskCreated", "TaskCompleted", "TaskCancelled", "TaskFailed", "SystemFailure", "ResultsRecorded",
                "AddressVerified", "ResultUnknown", "ChunkFailed", "CreditsDebited", "CreditsRefunded", "CreditsGranted",
                "MonthlyCreditsExpired")


class _Sqlite:
    """A scrape's own read-only connection to a SQLite store; the log's queries are the
    store's (engine/store/sqlite.py)."""

    def __init__(self, path: str):
        # mode=rw: a store that is not there yet is an error here, never an empty file made by a scrape
        uri = f"file:{quote(os.path.abspath(path))}?mode=rw"
        self.conn = sqlite3.connect(uri, uri=True, timeout=5.0, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA query_only = ON")

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self.conn.execute(sql, params).fetchall()
        return rows

    def head(self) -> int:
        from engine.store.sqlite import log_head

        return log_head(self.rows)

    def tally(self, after_position: int, until_position: int, types: Sequence[str]) -> list[EventTally]:
        from engine.store.sqlite import tally

        return tally(self.rows, after_position, until_position, types)

    def missing_table(self, error: Exception) -> bool:
        return isinstance(error, sqlite3.OperationalError) and "no such table" in str(error)

    def close(self) -> None:
        self.conn.close()


class _Postgres:
    """A scrape's own connection to a PostgreSQL store; the log's queries are the store's
    (engine/store/postgres.py)."""

    def __init__(self, url: str):
        import psycopg

        from engine.store.postgres import rows_of

        self.errors = psycopg
        self.conn = psycopg.connect(url, autocommit=True, connect_timeout=5)
        self.rows = rows_of(self.conn)

    def head(self) -> int:
        from engine.store.postgres import log_head

        return log_head(self.rows)

    def tally(self, after_position: int, until_position: int, types: Sequence[str]) -> list[EventTally]:
        from engine.store.postgres import tally

        return tally(self.rows, after_position, until_position, types)

    def missing_table(self, error: Exception) -> bool:
        return isinstance(error, self.errors.errors.UndefinedTable)

    def close(self) -> None:
        self.conn.close()


_Store = _Sqlite | _Postgres
Samples = Sequence[tuple[tuple[Any, ...], float]]  # (label values, value) of a family's samples


class StoreState:
    """A collector of the store's state (see the module's doc). Opens its own connection
    (read-only use), never the process's: a scrape runs on its own thread."""

    def __init__(self, url: str, *, kafka: bool = False, worker_ttl: float = 10.0, claim_ttl: float = 10.0,
                 cache: float = 2.0, budget: float = FOLD_BUDGET):
        self.url, self.kafka, self.worker_ttl, self.claim_ttl = url, kafka, worker_ttl, claim_ttl
        self.cache, self.budget = cache, budget
        self.postgres = urlparse(url).scheme in ("postgres", "postgresql")
        self.db: _Sqlite | _Postgres | None = None
        self.lock = threading.Lock()
        self.families: list[Metric] = []
        self.computed_at = -1e9
        self.warned = False
        # folded from the log so far (monotonic: they are Prometheus counters)
        self.folded = 0
        self.counts: Tally[tuple[str, ...]] = Tally()

    @classmethod
    def of(cls, settings: CoreSettings) -> StoreState:
        fleet = slice_of(settings, FleetSettings)
        return cls(settings.store, kafka=bool(fleet.kafka_bootstrap), worker_ttl=fleet.worker_ttl,
                   claim_ttl=fleet.claim_ttl, cache=slice_of(settings, ObservabilitySettings).metrics_cache)

    # --- the collector protocol ---------------------------------------------------------

    def describe(self) -> list[Metric]:
        return []  # names depend on the store; no duplicate check against other collectors

    def collect(self) -> list[Metric]:
        with self.lock:
            if time.monotonic() - self.computed_at >= self.cache:
                self.families = self._compute()
                self.computed_at = time.monotonic()
            return list(self.families)

    def close(self) -> None:
        with self.lock:
            self._drop()

    # --- computing -----------------------------------------------------------------------

    def _connect(self) -> _Store:
        if self.db is None:
            if self.postgres:
                self.db = _Postgres(self.url)
            else:
                from engine.store import sqlite_path

                self.db = _Sqlite(sqlite_path(self.url))
        return self.db

    def _drop(self) -> None:
        if self.db is not None:
            try:
                self.db.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
        self.db = None

    def _compute(self) -> list[Metric]:
        started = time.monotonic()
        up = GaugeMetricFamily("vec_metrics_store_up", "1 if the last scrape of the store's state reached the store")
        seconds = GaugeMetricFamily("vec_metrics_state_seconds", "Seconds the last scrape of the store's state took")
        try:
            families = self._state(self._connect())
            up.add_metric([], 1)
            self.warned = False
        except Exception as error:  # noqa: BLE001 - a scrape answers; the store may be away
            if not self.warned:
                log.warning("metrics: the store's state is unavailable: %s: %s", type(error).__name__, error)
                self.warned = True
            self._drop()
            families = []
            up.add_metric([], 0)
        seconds.add_metric([], time.monotonic() - started)
        return [up, seconds, *families]

    def _fold(self, db: _Store, head: int) -> None:
        """Folds (folded, head] into the counters, FOLD_WINDOW positions per query, within
        the time budget."""
        deadline = time.monotonic() + self.budget
        while self.folded < head:  # one window at least, more within the budget
            until = min(head, self.folded + FOLD_WINDOW)
            for tallied in db.tally(self.folded, until, FOLDED_TYPES):
                self._count(*tallied)
            self.folded = until
            if time.monotonic() >= deadline:
                break

    def _count(self, kind: str, status: str | None, reason: str | None, task_kind: str | None, bucket: str | None,
               late: bool, count: int, amount: int) -> None:
        c = self.counts
        if kind == "ResultsRecorded":  # a batch: its results count as the single events did
            kind, count = ("ResultUnknown" if status == "unknown" else "AddressVerified"), amount
            reason = reason if status == "unknown" else None
        if kind == "AddressVerified":
            if late:
                c[("late",)] += count
            else:
                c[("address", _bounded(status, STATUSES[:3]), "")] += count
                c[("consumed",)] += count
        elif kind == "ResultUnknown":
            if late:
                c[("late",)] += count
            else:
                c[("address", "unknown", _bounded(reason, UNKNOWN_REASONS))] += count
        elif kind == "ChunkFailed":  # its addresses show as Unknown provider_error (rm_results)
            c[("address", "unknown", "provider_error")] += amount
            c[("chunk_failed",)] += count
        elif kind == "TaskCreated":
            c[("created", _bounded(task_kind, ("single", "bulk")))] += count
        elif kind in FINISHED:
            c[("finished", FINISHED[kind])] += count
        elif kind == "CreditsDebited":
            c[("debited",)] += amount
        elif kind == "CreditsRefunded":
            c[("refunded", _bounded(reason, REFUND_REASONS))] += amount
        elif kind == "CreditsGranted":
            c[("granted", _bounded(bucket, ("payg", "monthly")), _bounded(reason, GRANT_REASONS))] += amount
        elif kind == "MonthlyCreditsExpired":
            c[("expired",)] += amount

    def _optional(self, db: _Store, query: Callable[..., _T], *args: Any) -> _T | None:
        """The answer of a table's owner (`query(rows, *args)`) on a table that may not exist
        yet (a store never opened by the engine): None then."""
        try:
            return query(db.rows, *args)
        except Exception as error:
            if db.missing_table(error):
                return None
            raise

    def _state(self, db: _Store) -> list[Metric]:
        head = db.head()
        if head < self.folded:  # another log than the one folded so far (a store made anew)
            self.folded, self.counts = 0, Tally()
        self._fold(db, head)
        out = _Families()
        out.gauge("vec_log_head_position", "Position of the last event of the log", (), [((), head)])
        out.gauge("vec_metrics_folded_position", "How far these metrics folded the log (below the head only while a "
                  "fresh process catches up)", (), [((), self.folded)])
        self._task_families(db, out)
        self._credit_families(out)
        self._engine_families(db, head, out)
        self._fleet_families(db, head, out)
        self._webhook_families(db, head, out)
        return out.families

    def _task_families(self, db: _Store, out: _Families) -> None:
        c = self.counts
        active = self._optional(db, active_task_counts) or {}
        out.gauge("vec_tasks", "Tasks by status (pending and processing from the tasks read model, finished ones "
                  "from the log)", ["status"],
                  [((s,), active.get(s, 0) if s in ("pending", "processing") else c[("finished", s)])
                   for s in TASK_STATUSES])
        out.counter("vec_tasks_created", "Tasks created, by kind", ["kind"],
                    [((k,), c[("created", k)]) for k in ("single", "bulk")])
        out.counter("vec_tasks_finished", "Tasks finished, by status", ["status"],
                    [((s,), c[("finished", s)]) for s in ("completed", "cancelled", "failed")])
        out.counter("vec_addresses", "Addresses settled (results a customer sees; a failed chunk's addresses count "
                    "as unknown provider_error), by status and Unknown reason", ["status", "reason"],
                    [((s, ""), c[("address", s, "")]) for s in STATUSES[:3]]
                    + [(("unknown", r), c[("address", "unknown", r)]) for r in (*UNKNOWN_REASONS, "other")])
        out.counter("vec_addresses_late", "Results recorded after their task stopped (logged, never charged nor "
                    "shown)", (), [((), c[("late",)])])
        out.counter("vec_chunks_failed", "Chunks failed with their refund", (), [((), c[("chunk_failed",)])])

    def _credit_families(self, out: _Families) -> None:
        c = self.counts
        out.counter("vec_credits_debited", "Credits debited when tasks were created", (), [((), c[("debited",)])])
        out.counter("vec_credits_consumed", "Credits consumed: addresses settled Safe, Invalid or Risky", (),
                    [((), c[("consumed",)])])
        out.counter("vec_credits_refunded", "Credits refunded, by reason", ["reason"],
                    [((r,), c[("refunded", r)]) for r in REFUND_REASONS])
        out.counter("vec_credits_granted", "Credits granted, by bucket and reason", ["bucket", "reason"],
                    [((b, r), c[("granted", b, r)]) for b, r in
                     (("payg", "welcome"), ("payg", "purchase"), ("payg", "support"),
                      ("monthly", "subscription"), ("monthly", "support"))])
        out.counter("vec_credits_expired", "Monthly credits expired", (), [((), c[("expired",)])])

    def _engine_families(self, db: _Store, head: int, out: _Families) -> None:
        """The read models' lag and health, and the embedded engine's heartbeat."""
        from projections.read_models import all_projections

        names = [p.name for p in all_projections()]
        stored = self._optional(db, checkpoint_positions) or {}
        stopped = self._optional(db, stopped_names) or set()
        out.gauge("vec_projection_lag_events", "Events of the log a read model has not folded yet (head - its "
                  "checkpoint)", ["projection"], [((n,), max(head - stored.get(n, 0), 0)) for n in names])
        out.gauge("vec_projection_stopped", "1 if a read model stopped on an event it could not fold",
                  ["projection"], [((n,), int(n in stopped)) for n in names])
        beat = self._optional(db, lease_heartbeat)
        beats: Samples = [((), max((datetime.now(timezone.utc) - beat).total_seconds(), 0.0))] if beat else []
        out.gauge("vec_engine_heartbeat_age_seconds", "Seconds since the embedded engine (the holder of the engine "
                  "lease) last beat; absent while no engine holds it", (), beats)

    def _fleet_families(self, db: _Store, head: int, out: _Families) -> None:
        """The distributed mode (PostgreSQL): relay, fleet, claims; families without samples elsewhere."""
        relay: Samples = []
        alive: Samples = []
        claims: Samples = []
        if self.postgres:
            from engine.relay import relay_position
            from engine.store.postgres import live_claims, live_roles

            if self.kafka:
                relay = [((), max(head - (self._optional(db, relay_position) or 0), 0))]
            per_role = Tally(role for role in self._optional(db, live_roles, self.worker_ttl) or [] if role in ROLES)
            alive = [((role,), per_role[role]) for role in ROLES]
            claims = [((), self._optional(db, live_claims, self.claim_ttl) or 0)]
        out.gauge("vec_relay_lag_events", "Events of the log the relay has not published yet (head - relay "
                  "position; PostgreSQL with Kafka)", (), relay)
        out.gauge("vec_fleet_processes", "Fleet processes alive (heartbeat within VEC_WORKER_TTL), by role "
                  "(PostgreSQL)", ["role"], alive)
        out.gauge("vec_chunks_claimed", "Chunks claimed by a live fleet worker (PostgreSQL)", (), claims)

    def _webhook_families(self, db: _Store, head: int, out: _Families) -> None:
        """Webhooks (consumers/webhooks/delivery.py): every attempt is a row, the truth across processes."""
        from consumers.webhooks.delivery import attempt_counts, consumer_position, delivery_counts

        attempts: Tally[str] = Tally()
        for outcome, count in (self._optional(db, attempt_counts) or {}).items():
            attempts[_bounded(outcome, WEBHOOK_OUTCOMES)] += count
        out.counter("vec_webhook_attempts", "Webhook delivery attempts, by outcome (delivered = 2xx; sending = in "
                    "flight now)", ["outcome"], [((o,), attempts[o]) for o in WEBHOOK_OUTCOMES])
        deliveries: Tally[str] = Tally()
        for status, count in (self._optional(db, delivery_counts) or {}).items():
            deliveries[_bounded(status, WEBHOOK_STATUSES, "pending")] += count
        out.gauge("vec_webhook_deliveries", "Webhook deliveries, by status", ["status"],
                  [((s,), deliveries[s]) for s in WEBHOOK_STATUSES])
        position = self._optional(db, consumer_position)
        out.gauge("vec_webhook_lag_events", "Events of the log the webhooks consumer has not looked at yet (head - "
                  "its checkpoint)", (), [((), max(head - position, 0))] if position is not None else [])


class _Families:
    """The metric families of one scrape, in order."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def gauge(self, name: str, text: str, labels: Sequence[str] = (), samples: Samples = ()) -> None:
        self._add(GaugeMetricFamily, name, text, labels, samples)

    def counter(self, name: str, text: str, labels: Sequence[str] = (), samples: Samples = ()) -> None:
        self._add(CounterMetricFamily, name, text, labels, samples)

    def _add(self, cls: type[GaugeMetricFamily] | type[CounterMetricFamily], name: str, text: str,
             labels: Sequence[str], samples: Samples) -> None:
        family = cls(name, text, labels=list(labels))
        for label_values, value in samples:
            family.add_metric(list(label_values), value)
        self.families.append(family)


# --- exposing ---------------------------------------------------------------------------------

class _Union:
    """A collector yielding every metric of other registries/collectors."""

    def __init__(self, *parts: Collector):
        self.parts = parts

    def collect(self) -> Iterator[Metric]:
        for part in self.parts:
            yield from part.collect()


class ScrapeRegistry(CollectorRegistry):
    """A registry to scrape; `store_state`: its collector of the store's state, if any
    (holds a connection: closed when the process stops serving)."""

    def __init__(self) -> None:
        super().__init__(auto_describe=False)
        self.store_state: StoreState | None = None


def scrape_registry(settings: CoreSettings | None = None, state: bool = True) -> ScrapeRegistry:
    """What a process exposes: its process metrics and, with `state`, the store's state."""
    registry = ScrapeRegistry()
    parts: list[Collector] = [REGISTRY]
    if state and settings is not None:
        registry.store_state = StoreState.of(settings)
        parts.append(registry.store_state)
    registry.register(_Union(*parts))
    return registry


def serve(settings: CoreSettings, state: bool = True) -> Callable[[], None] | None:
    """`vec run`: an HTTP server of /metrics on VEC_METRICS_HOST:VEC_METRICS_PORT (on a
    thread of its own). Returns a stop function, or None when the port is 0 (off)."""
    from prometheus_client import start_http_server

    own = slice_of(settings, ObservabilitySettings)
    if not own.metrics_port:
        return None
    registry = scrape_registry(settings, state)
    server, thread = start_http_server(own.metrics_port, own.metrics_host, registry=registry)
    log.info("metrics on http://%s:%s/metrics", own.metrics_host, own.metrics_port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)
        if registry.store_state is not None:
            registry.store_state.close()

    return stop


def mount(app: FastAPI) -> None:
    """GET /metrics on the FastAPI app (no auth: aggregate counts only, no account data).
    The state comes from the store of the app's settings, through a connection of its own."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import Response

    async def metrics(request: Request) -> Response:
        registry = getattr(request.app.state, "metrics_registry", None)
        if registry is None:
            services = request.app.state.services
            track_engine(services.engine)
            registry = request.app.state.metrics_registry = scrape_registry(services.settings)
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    app.add_route("/metrics", metrics, methods=["GET"], include_in_schema=False)


# --- ids for the logs ---------------------------------------------------------------------------

def task_ids(engine: Engine | None, task_id: str | None, **more: object) -> dict[str, object]:
    """`extra=` of a log line about a task: task_id, account_id and correlation_id (a task's
    events carry its id as their correlation id), plus `more` (chunk_no, worker_id...).
    entrypoints/logs.py prints them as fields of the JSON line. Never raises."""
    ids: dict[str, object] = {"task_id": task_id, "correlation_id": task_id, **more}
    if engine is not None and task_id:
        try:
            ids["account_id"] = engine.task(task_id).account_id
        except Exception:  # noqa: BLE001 - a log line must not fail
            pass
    return ids

"""The `vec` command line: for people (tables, progress bars) and machines (--json)."""
from __future__ import annotations

import asyncio
import getpass
import functools
import json
import re
import logging
import signal
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from engine import tracing  # `vec run` configures them (engine/tracing.py)
from entrypoints.settings import EngineSettings
from engine.domain.errors import DomainError, InvariantViolation
from engine.service import Engine
from engine.store import Database, StoreUrlError
from entrypoints import bootstrap
from engine.store.base import StoreError
from engine.store.lease import LeaseHeld
from projections.exports import RESULT_COLUMNS, json_lines, txt_lines
from projections.read_models import HISTORY_TYPES
from projections.runner import ProjectionStopped

if TYPE_CHECKING:
    from consumers.notifications.mail import NotificationStore
    from consumers.webhooks.delivery import WebhookStore

out = Console()
err = Console(stderr=True)

EXPECTED_ERRORS = (DomainError, StoreError, StoreUrlError, LeaseHeld, ProjectionStopped)


class DefaultGroup(click.Group):
    """A group that runs `default` when the first word is not one of its commands
    (`vec credits ACME` shows the balance, `vec credits grant ACME ...` grants)."""

    def __init__(self, *args: Any, default: str, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.default = default

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = [self.default, *args]
        return super().parse_args(ctx, args)


class Context:
    def __init__(self, store: str | None):
        self.settings = EngineSettings(store=store) if store else EngineSettings()
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = bootstrap.open_engine(self.settings, f"cli:{getpass.getuser()}")  # who ran what
        return self._engine

    @property
    def db(self) -> Database:
        return self.engine.db

    @property
    def distributed(self) -> bool:
        """A PostgreSQL store with Kafka: the fleet does the work, never this process."""
        return bool(self.settings.kafka_bootstrap) and self.db.fleet is not None

    def fresh_db(self, *projections: str) -> Database:
        """The read models, caught up with the log; refuses clearly if one of `projections`
        stopped on an event it could not fold."""
        self.db.catch_up()
        self.db.projector.require(*projections)
        return self.db


def command(group: click.Group, name: str | None = None, json_flag: bool = True,
            **kwargs: Any) -> Callable[[Callable[..., None]], click.Command]:
    """A subcommand with --json and the clear-error-or-nothing contract: `fn(context, *the
    command's parameters)`."""

    def wrap(fn: Callable[..., None]) -> click.Command:
        @functools.wraps(fn)
        def run(*args: Any, **kw: Any) -> None:
            try:
                return fn(click.get_current_context().obj, *args, **kw)
            except EXPECTED_ERRORS as error:
                err.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
                sys.exit(1)
            except InvariantViolation as error:
                err.print(f"[bold red]error:[/] the log breaks an invariant: {error} (run `vec audit`)",
                          highlight=False, soft_wrap=True)
                sys.exit(1)

        if json_flag:
            run = click.option("--json", "as_json", is_flag=True, help="machine-readable output")(run)
        return group.command(name, **kwargs)(run)

    return wrap


def emit(data: Any, as_json: bool, title: str | None = None, columns: Iterable[str] | None = None) -> None:
    """JSON for machines (all fields); for people a table of `columns`, or of one record
    as field/value rows."""
    if as_json:
        for row in data if isinstance(data, list) else [data]:
            click.echo(json.dumps(row, default=str))
        return
    if isinstance(data, dict):
        table = Table(title=title, show_header=False)
        table.add_column(no_wrap=True)
        table.add_column(overflow="fold")  # one record: its values in full
        for key, value in data.items():
            table.add_row(key, _cell(value, None))
        out.print(table)
        return
    if not data:
        out.print("(nothing)")
        return
    names = list(columns or data[0])
    table = Table(title=title)
    for name in names:  # a list fits the terminal: long cells end in "…" (--json has them whole)
        table.add_column(name, no_wrap=True, overflow="ellipsis")
    for row in data:
        table.add_row(*[_cell(row[n], CELL_WIDTH) for n in names])
    out.print(table)


CELL_WIDTH = 28  # longest cell of a list; SMTP replies and ids are cut, --json shows them whole
_ISO_TIME = re.compile(r"^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(\.\d+)?(\+00:00|Z)?$")


def _cell(value: Any, width: int | None) -> str:
    if value is None:
        return ""
    text = value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else str(value)
    match = _ISO_TIME.match(text)
    if match:  # UTC times without microseconds: people read them at a glance
        text = f"{match[1]} {match[2]}"
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text


@click.group()
@click.option("--store", envvar="VEC_STORE", help="store URL (default sqlite:///./vec.db)")
@click.option("-v", "--verbose", is_flag=True, help="log what the engine does")
@click.option("--log-format", type=click.Choice(["text", "json"]), envvar="VEC_LOG_FORMAT",
              help="logs as text (default) or JSON lines with task, account and correlation ids (VEC_LOG_FORMAT)")
@click.pass_context
def cli(ctx: click.Context, store: str | None, verbose: bool, log_format: str | None = None) -> None:
    """VEC: the event-sourced email-verification engine."""
    from entrypoints.logs import configure as configure_logs

    # A long-running engine logs what ops must see; a one-shot command prints its own
    # outcome (or one error line) and logs only when asked (-v).
    quiet = logging.WARNING if ctx.invoked_subcommand in ("run", "serve") else logging.CRITICAL
    ctx.obj = Context(store)
    configure_logs(log_format or ctx.obj.settings.log_format, logging.INFO if verbose else quiet)


# --- accounts and credits -------------------------------------------------------------

IDEMPOTENCY = click.option("--idempotency-key", help="a retried command with the same key appends nothing")

@cli.group()
def account() -> None:
    """Customer accounts."""


@command(account, "open")
@click.argument("account_id")
@IDEMPOTENCY
def account_open(ctx: Context, account_id: str, idempotency_key: str | None, as_json: bool) -> None:
    """Open ACCOUNT_ID with the 200-credit welcome bonus."""
    ctx.engine.open_account(account_id, idempotency_key)
    emit(_balance(ctx, account_id), as_json)


@command(account, "retention")
@click.argument("account_id")
@click.argument("days", type=click.IntRange(1, 3650))
def account_retention(ctx: Context, account_id: str, days: int, as_json: bool) -> None:
    """Keep each finished task's per-address data DAYS days (default 15), then erase it."""
    ctx.engine.set_retention(account_id, days)
    emit({"account": account_id, "data_retention_days": ctx.engine.account(account_id).retention_days}, as_json)


@command(account, "erase")
@click.argument("account_id")
@click.option("--yes", is_flag=True, help="do not ask")
def account_erase(ctx: Context, account_id: str, yes: bool, as_json: bool) -> None:
    """Erase the per-address data of every task of ACCOUNT_ID now (running bulks are cancelled
    and refunded first). Counts and the Credits History stay. Irreversible."""
    if not yes and not as_json:
        click.confirm(f"Erase every task's addresses and results of {account_id}? This cannot be undone", abort=True)
    erased = ctx.engine.erase_account(account_id)
    emit({"account": account_id, "tasks_erased": len(erased)}, as_json)


@cli.group(cls=DefaultGroup, default="show")
def credits() -> None:
    """Balances (`vec credits ACCOUNT`) and grants (`vec credits grant ...`)."""


@command(credits, "show")
@click.argument("account_id")
def credits_show(ctx: Context, account_id: str, as_json: bool) -> None:
    """Balance of ACCOUNT_ID per bucket."""
    if ctx.engine.account(account_id).opened:
        ctx.engine.expire_monthly(account_id)  # a lapsed period shows as expired, engine running or not
    emit(_balance(ctx, account_id), as_json)


@command(credits, "grant")
@click.argument("account_id")
@click.option("--payg", type=click.IntRange(min=1), help="credits for the PAYG bucket (never expire)")
@click.option("--monthly", type=click.IntRange(min=1),
              help="credits for the Monthly bucket (expiring at --expires, or at the end of this month)")
@click.option("--expires", type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%d%z"]),
              help="ISO 8601 expiry of monthly credits, with a zone (e.g. 2026-12-31T23:59:59+00:00)")
@click.option("--reason", type=click.Choice(["purchase", "subscription", "support"]))
@IDEMPOTENCY
def credits_grant(ctx: Context, account_id: str, payg: int | None, monthly: int | None, expires: datetime | None,
                  reason: str | None, idempotency_key: str | None, as_json: bool) -> None:
    """Grant credits (--payg N | --monthly N --expires ISO8601)."""
    if (payg is None) == (monthly is None):
        raise click.UsageError("give exactly one of --payg N or --monthly N")
    if payg is not None:
        ctx.engine.grant_credits(account_id, "payg", payg, reason or "purchase", expires, idempotency_key)
    elif monthly is not None:  # (exactly one of them is given)
        if expires is None:
            expires = end_of_month(datetime.now(timezone.utc))
            err.print(f"--expires not given: the monthly credits expire at the end of this month, "
                      f"{expires.isoformat()} (UTC)")
        ctx.engine.grant_credits(account_id, "monthly", monthly, reason or "subscription", expires, idempotency_key)
    emit(_balance(ctx, account_id), as_json)


def end_of_month(now: datetime) -> datetime:
    """The last second of `now`'s month, in UTC."""
    first_of_next = (now.replace(day=28) + timedelta(days=4)).replace(day=1, hour=0, minute=0, second=0,
                                                                        microsecond=0)
    return first_of_next - timedelta(seconds=1)


def _balance(ctx: Context, account_id: str) -> dict[str, Any]:
    row = ctx.fresh_db("credits").read.balances(account_id)
    if row is None:
        raise DomainError(f"no such account: {account_id}")
    return {k: row[k] for k in ("account", "monthly", "payg", "total")}


BY_ACTOR = click.option("--by", "actor", help="only what this actor did (apikey:ID, cli:USER, admin, engine)")


@command(cli, "history")
@click.argument("account_id")
@click.option("--type", "kind", type=click.Choice(HISTORY_TYPES))
@BY_ACTOR
def history(ctx: Context, account_id: str, kind: str | None, actor: str | None, as_json: bool) -> None:
    """The Credits History of ACCOUNT_ID."""
    if ctx.fresh_db("credits").read.balances(account_id) is None:
        raise DomainError(f"no such account: {account_id}")
    emit(ctx.db.read.history(account_id, kind, actor), as_json, title=f"Credits History of {account_id}",
         columns=("time", "type", "bucket", "amount", "balance_after", "description", "task_id"))


# --- API keys ---------------------------------------------------------------------------

@cli.group()
def apikey() -> None:
    """Keys of the HTTP API: one account each, stored hashed, revocable."""


@command(apikey, "create")
@click.argument("account_id")
@click.option("--scope", "scopes", multiple=True, type=click.Choice(["read", "write", "audit"]),
              help="what the key may do (repeatable; default read and write)")
@click.option("--label", default="", help="a note for people (e.g. the service using it)")
def apikey_create(ctx: Context, account_id: str, scopes: tuple[str, ...], label: str, as_json: bool) -> None:
    """Create a key for ACCOUNT_ID and print it, once: only its hash is kept."""
    if not ctx.engine.account(account_id).opened:
        raise DomainError(f"no such account: {account_id}")
    key_id, key = ctx.engine.issue_api_key(account_id, scopes or ("read", "write"), label)
    emit({"account": account_id, "key_id": key_id, "scopes": ",".join(sorted(set(scopes or ("read", "write")))),
          "key": key}, as_json)
    if not as_json:
        err.print("Store the key now: it cannot be shown again.")


@command(apikey, "revoke")
@click.argument("key_id")
def apikey_revoke(ctx: Context, key_id: str, as_json: bool) -> None:
    """Revoke a key: it stops working at once."""
    account_id = ctx.fresh_db("api_keys").read.api_key_account(key_id)
    if account_id is None:
        raise DomainError(f"no such key: {key_id}")
    ctx.engine.revoke_api_key(account_id, key_id)
    emit({"key_id": key_id, "account": account_id, "revoked": True}, as_json)


@command(apikey, "list")
@click.argument("account_id")
def apikey_list(ctx: Context, account_id: str, as_json: bool) -> None:
    """The keys of ACCOUNT_ID (never the keys themselves)."""
    emit(ctx.fresh_db("api_keys").read.api_keys(account_id), as_json, title=f"API keys of {account_id}",
         columns=("key_id", "scopes", "label", "created_at", "revoked_at"))


# --- webhooks (consumers/webhooks/delivery.py) ----------------------------------------------------

def _webhooks(ctx: Context) -> WebhookStore:
    from consumers.webhooks.delivery import WebhookStore

    return WebhookStore(ctx.db.projector.sql, ctx.engine.clock, keyring=ctx.db.keyring).ensure_schema()


@cli.group()
def webhooks() -> None:
    """Signed webhooks (Standard Webhooks) on task end: endpoints, deliveries, attempts."""


@command(webhooks, "add")
@click.argument("account_id")
@click.argument("url")
@click.option("--description", default="", help="a note for people")
def webhooks_add(ctx: Context, account_id: str, url: str, description: str, as_json: bool) -> None:
    """Register URL for ACCOUNT_ID's task ends; prints the signing secret, once."""
    if not ctx.engine.account(account_id).opened:
        raise DomainError(f"no such account: {account_id}")
    row = _webhooks(ctx).add_endpoint(account_id, url, description, ctx.db.events.head(),
                                      f"cli:{getpass.getuser()}", ctx.settings.webhook_allow_loopback)
    emit(row, as_json)
    if not as_json:
        err.print("Store the secret now (receivers verify the webhook-signature with it): it is not shown again.")


@command(webhooks, "list")
@click.argument("account_id")
@click.option("--all", "show_all", is_flag=True, help="also removed endpoints")
def webhooks_list(ctx: Context, account_id: str, show_all: bool, as_json: bool) -> None:
    """The endpoints of ACCOUNT_ID (never their secrets)."""
    emit(_webhooks(ctx).endpoints(account_id, show_all), as_json, title=f"Webhooks of {account_id}",
         columns=("endpoint_id", "url", "created_at", "disabled_at"))


@command(webhooks, "remove")
@click.argument("endpoint_id")
def webhooks_remove(ctx: Context, endpoint_id: str, as_json: bool) -> None:
    """Remove an endpoint: nothing more is sent to it; its pending deliveries fail."""
    store = _webhooks(ctx)
    if store.endpoint(endpoint_id) is None:
        raise DomainError(f"no such webhook endpoint: {endpoint_id}")
    emit(store.remove_endpoint(endpoint_id), as_json)


@command(webhooks, "deliveries")
@click.argument("account_id", required=False)
@click.option("--endpoint", "endpoint_id", help="only to this endpoint")
@click.option("--status", type=click.Choice(["pending", "delivered", "failed"]))
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
def webhooks_deliveries(ctx: Context, account_id: str | None, endpoint_id: str | None, status: str | None,
                        limit: int, as_json: bool) -> None:
    """Deliveries, newest first (of ACCOUNT_ID, or all); --json adds every attempt (attempt_log)."""
    rows = _webhooks(ctx).deliveries(account_id, endpoint_id, status, limit=limit, with_attempts=as_json)
    emit(rows, as_json, title="Webhook deliveries", columns=("delivery_id", "task_id", "event_type", "status",
                                                            "attempts", "last_status_code", "last_error",
                                                            "next_attempt_at"))


@command(webhooks, "attempts")
@click.argument("delivery_id")
def webhooks_attempts(ctx: Context, delivery_id: str, as_json: bool) -> None:
    """Every attempt of one delivery (its webhook-id)."""
    store = _webhooks(ctx)
    if store.delivery(delivery_id) is None:
        raise DomainError(f"no such delivery: {delivery_id}")
    emit(store.attempts(delivery_id), as_json, title=f"Attempts of {delivery_id}",
         columns=("attempt", "started_at", "outcome", "status_code", "duration_ms", "error"))


# --- notifications (consumers/notifications/mail.py) -------------------------------------------

def _notifications(ctx: Context) -> NotificationStore:
    from consumers.notifications.mail import NotificationStore

    return NotificationStore(ctx.db.projector.sql, ctx.engine.clock).ensure_schema()


def _notify_settings(ctx: Context, account_id: str) -> dict[str, Any]:
    from consumers.notifications.mail import NotificationStore

    row = NotificationStore(ctx.fresh_db("notifications").projector.sql).settings(account_id)
    return {"account": account_id, **(row or {"email": None, "on_completion": False, "low_balance_threshold": 0,
                                              "set_at": None, "set_by": None})}


@cli.group()
def notify() -> None:
    """E-mail notifications: on task end (opt-in) and on a low balance; settings and the outbox."""


@command(notify, "set")
@click.argument("account_id")
@click.option("--email", required=True, help="where the notifications go")
@click.option("--on-completion/--no-on-completion", default=None,
              help="an e-mail at each task's end (default: as it was; off at first)")
@click.option("--low-balance", "low_balance", type=click.IntRange(min=0), default=None,
              help="an e-mail once each time the balance falls below N credits (0: off; default: as it was)")
def notify_set(ctx: Context, account_id: str, email: str, on_completion: bool | None, low_balance: int | None,
               as_json: bool) -> None:
    """Where and when ACCOUNT_ID is told by e-mail."""
    state = ctx.engine.account(account_id)
    if not state.opened:
        raise DomainError(f"no such account: {account_id}")
    ctx.engine.set_notifications(account_id, email,
                                 state.notify_on_completion if on_completion is None else on_completion,
                                 state.low_balance_threshold if low_balance is None else low_balance)
    emit(_notify_settings(ctx, account_id), as_json)


@command(notify, "show")
@click.argument("account_id")
def notify_show(ctx: Context, account_id: str, as_json: bool) -> None:
    """The notification settings of ACCOUNT_ID."""
    if not ctx.engine.account(account_id).opened:
        raise DomainError(f"no such account: {account_id}")
    emit(_notify_settings(ctx, account_id), as_json)


@command(notify, "outbox")
@click.option("--account", "account_id", help="only this account's messages")
@click.option("--status", type=click.Choice(["pending", "sent", "failed"]))
@click.option("--kind", type=click.Choice(["task_end", "low_balance"]))
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
def notify_outbox(ctx: Context, account_id: str | None, status: str | None, kind: str | None, limit: int,
                  as_json: bool) -> None:
    """Messages, newest first, with their attempts (--json: every attempt, in attempt_log)."""
    rows = _notifications(ctx).messages(account_id, status, kind, limit=limit, with_attempts=as_json)
    emit(rows, as_json, title="Notification outbox", columns=("message_id", "kind", "status", "attempts",
                                                              "last_error"))


@command(notify, "attempts")
@click.argument("message_id")
def notify_attempts(ctx: Context, message_id: str, as_json: bool) -> None:
    """Every attempt of one message."""
    store = _notifications(ctx)
    if store.message(message_id) is None:
        raise DomainError(f"no such message: {message_id}")
    emit(store.attempts(message_id), as_json, title=f"Attempts of {message_id}",
         columns=("attempt", "started_at", "outcome", "code", "detail"))


# --- tasks ------------------------------------------------------------------------------

@command(cli, "verify")
@click.argument("account_id")
@click.argument("address")
@IDEMPOTENCY
def verify(ctx: Context, account_id: str, address: str, idempotency_key: str | None, as_json: bool) -> None:
    """Verify one ADDRESS for ACCOUNT_ID (costs a credit; Unknown is refunded)."""
    tracing.configure("vec-cli", ctx.settings.tracing)  # the task's root span is this command's
    task_id = ctx.engine.create_single(account_id, address, idempotency_key=idempotency_key)
    _run_to_end(ctx, task_id, show_progress=False)
    row = next(iter(ctx.fresh_db("results", "tasks").read.results(task_id)), None)
    task = _task_row(ctx, task_id)
    emit({"task_id": task_id, "address": address, "status": row["status"] if row else task["status"],
          "reason": (row["reason"] if row else None) or None, "task_status": task["status"]}, as_json)


@command(cli, "bulk")
@click.argument("account_id")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--wait", is_flag=True, help="follow the task to its end with a progress bar")
@click.option("--allow-duplicate", is_flag=True, help="verify a file uploaded in the last 24 h again")
@click.option("--name", default="", help="a name for the task (lists, the Credits History)")
@IDEMPOTENCY
def bulk(ctx: Context, account_id: str, file: str, wait: bool, allow_duplicate: bool, name: str,
         idempotency_key: str | None, as_json: bool) -> None:
    """Upload FILE (CSV or one address per line) as a bulk task of ACCOUNT_ID."""
    tracing.configure("vec-cli", ctx.settings.tracing)  # the task's root span is this command's
    upload = ctx.engine.create_bulk(account_id, file, allow_duplicate=allow_duplicate,
                                    idempotency_key=idempotency_key, name=name)
    report = upload.report
    summary = {"task_id": upload.task_id, "addresses": report.unique, "duplicates": report.duplicates,
               "rows_without_address": report.rows_without_address, "column": report.column}
    if not wait:
        emit(summary if not as_json else {"task_id": upload.task_id, **summary}, as_json)
        return
    if not as_json:
        err.print(f"task {upload.task_id}: {report.unique} addresses ({report.duplicates} duplicates, "
                  f"{report.rows_without_address} rows without an address)")
    _run_to_end(ctx, upload.task_id, show_progress=not as_json)
    emit(ctx.fresh_db("tasks").read.task(upload.task_id), as_json)


def _run_to_end(ctx: Context, task_id: str, show_progress: bool) -> None:
    """Follows the task to its end: a running engine (or the fleet) does the work; with no
    engine running, an embedded store drives it in this process."""
    engine = ctx.engine

    async def main() -> None:
        progress = asyncio.create_task(_show_progress(ctx, task_id)) if show_progress else None
        try:
            while engine.task(task_id).active:
                if ctx.distributed:
                    await asyncio.sleep(ctx.settings.poll_interval)
                    continue
                try:
                    await bootstrap.runtime(engine, only_task=task_id).run()
                except LeaseHeld:  # a running engine does the work; take over if it stops
                    await asyncio.sleep(ctx.settings.poll_interval)
        finally:
            if progress:
                progress.cancel()

    asyncio.run(main())


async def _show_progress(ctx: Context, task_id: str) -> None:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=False) as bar:
        handle = bar.add_task("verifying", total=None)

        def refresh() -> None:
            state = ctx.engine.task(task_id)
            bar.update(handle, total=state.address_count, completed=state.consumed + state.refunded,
                       description=state.status)

        try:
            while True:
                refresh()
                await asyncio.sleep(0.25)
        finally:
            refresh()  # the bar's last line shows how the task ended


@command(cli, "tasks")
@click.argument("account_id")
@BY_ACTOR
def tasks_list(ctx: Context, account_id: str, actor: str | None, as_json: bool) -> None:
    """Tasks of ACCOUNT_ID (deleted ones hidden)."""
    emit(ctx.fresh_db("tasks").read.tasks(account_id, actor), as_json, title=f"Tasks of {account_id}",
         columns=("task_id", "name", "kind", "status", "partial_failure", "total", "verified", "unknown",
                  "refunded", "consumed", "created_at"))


@cli.group()
def task() -> None:
    """One task: show, cancel, delete, results."""


def _task_row(ctx: Context, task_id: str) -> dict[str, Any]:
    row = ctx.fresh_db("tasks").read.task(task_id)
    if row is None:
        raise DomainError(f"no such task: {task_id}")
    return row


@command(task, "show")
@click.argument("task_id")
def task_show(ctx: Context, task_id: str, as_json: bool) -> None:
    """Status and progress of TASK_ID."""
    emit(_task_row(ctx, task_id), as_json)


@command(task, "cancel")
@click.argument("task_id")
def task_cancel(ctx: Context, task_id: str, as_json: bool) -> None:
    """Cancel a bulk task: refunds every address without a result, at once."""
    ctx.engine.cancel_task(task_id)
    emit(_task_row(ctx, task_id), as_json)


@command(task, "delete")
@click.argument("task_id")
def task_delete(ctx: Context, task_id: str, as_json: bool) -> None:
    """Hide a finished task and its results (the log keeps them for audit)."""
    ctx.engine.delete_task(task_id)
    emit({"task_id": task_id, "deleted": True}, as_json)


@command(task, "erase")
@click.argument("task_id")
def task_erase(ctx: Context, task_id: str, as_json: bool) -> None:
    """Erase a finished task's per-address data now: its addresses can no longer be read
    anywhere (the task's key is destroyed); it shows as `deleted`, with its counts."""
    ctx.engine.erase_task(task_id, "request")
    emit(_task_row(ctx, task_id), as_json)


@command(task, "results", json_flag=False)
@click.argument("task_id")
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "txt"]), default="csv",
              help="csv (safe for spreadsheets), json (one object per line, exact), txt (addresses only)")
@click.option("--status", type=click.Choice(["safe", "invalid", "risky", "unknown"]))
def task_results(ctx: Context, task_id: str, fmt: str, status: str | None) -> None:
    """Results of TASK_ID, streamed."""
    _task_row(ctx, task_id)
    ctx.engine.require_results_kept(task_id)
    ctx.db.projector.require("results")
    read = ctx.db.read
    if fmt == "csv":  # a million rows: rendered by the store, no dict per row
        lines = read.result_csv(task_id, RESULT_COLUMNS, status)
    else:
        rows = read.results(task_id, status)
        lines = json_lines(rows) if fmt == "json" else txt_lines(r["address"] for r in rows)
    for line in lines:
        sys.stdout.write(line)


@command(task, "unprocessed", json_flag=False)
@click.argument("task_id")
def task_unprocessed(ctx: Context, task_id: str) -> None:
    """The addresses of a (partially) failed task that got no answer, one per line: its failed
    chunks' and those it never submitted. Refunded; upload them again to verify them."""
    _task_row(ctx, task_id)
    for line in txt_lines(ctx.engine.unprocessed(task_id)):
        sys.stdout.write(line)


# --- the engine and the log ---------------------------------------------------------------

ROLES = ("relay", "worker", "projector", "watchdog")


@command(cli, "run", json_flag=False)
@click.option("--role", "roles", multiple=True, type=click.Choice(ROLES),
              help="distributed mode: run only this role (repeatable); default: every role")
def run(ctx: Context, roles: tuple[str, ...]) -> None:
    """Run the engine until interrupted. Embedded (SQLite, or PostgreSQL without Kafka): one
    process does everything. Distributed (PostgreSQL and VEC_KAFKA_BOOTSTRAP): the fleet's
    roles, all of them or those given with --role; run as many workers as you like."""
    from consumers.runtime import EngineCrashed

    distributed = bool(roles) or ctx.distributed
    if distributed and ctx.engine.db.fleet is None:
        raise DomainError("--role needs the distributed mode: VEC_STORE=postgresql://... and VEC_KAFKA_BOOTSTRAP")
    stop_metrics = _serve_metrics(ctx, state=set(roles) != {"worker"})  # VEC_METRICS_PORT
    # spans, when tracing is configured (engine/tracing.py), named after this process's roles
    tracing.configure("vec-" + "+".join(sorted(roles)) if roles else "vec-run", ctx.settings.tracing)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            if distributed:
                fleet = bootstrap.fleet(ctx.engine, roles or ROLES)
                err.print(f"vec {', '.join(sorted(fleet.roles))} running on {ctx.settings.store} "
                          f"(Kafka {ctx.settings.kafka_bootstrap}, provider {ctx.settings.provider}); Ctrl-C stops")
                await fleet.run(stop)
            else:
                err.print(f"vec engine running on {ctx.settings.store} (provider {ctx.settings.provider}); "
                          "Ctrl-C stops")
                await bootstrap.runtime(ctx.engine).run(stop)
        except EngineCrashed as crash:
            err.print(f"[bold red]error:[/] vec engine stopped: {crash}", highlight=False, soft_wrap=True)
            sys.exit(2)
        stats = ctx.engine.stats
        rate = stats["conflicts"] / stats["commands"] if stats["commands"] else 0.0
        err.print(f"vec engine stopped ({stats['commands']} commands, {stats['conflicts']} decided again after a "
                  f"concurrency conflict: {rate:.2%})")

    try:
        asyncio.run(main())
    finally:
        if stop_metrics is not None:
            stop_metrics()


def _serve_metrics(ctx: Context, state: bool) -> Callable[[], None] | None:
    """observability: /metrics of `vec run` on VEC_METRICS_HOST:VEC_METRICS_PORT (0: off). A
    worker-only process exports its process metrics; the others the store's state too."""
    from consumers.metrics import exporter as metrics

    try:
        stop = metrics.serve(ctx.settings, state=state)
    except OSError as error:
        raise click.ClickException(f"cannot serve metrics on {ctx.settings.metrics_host}:"
                                   f"{ctx.settings.metrics_port}: {error}") from None
    if stop is not None:
        err.print(f"metrics on http://{ctx.settings.metrics_host}:{ctx.settings.metrics_port}/metrics")
    return stop


@command(cli, "serve", json_flag=False)
def serve_cmd(ctx: Context) -> None:
    """Serve the HTTP API (VEC_API_HOST, VEC_API_PORT) and the ops dashboard. On the embedded
    store it also runs the engine in this process; with PostgreSQL and Kafka it is the API
    role alone (run as many as you like)."""
    from entrypoints.api.app import serve
    from entrypoints.api.guard import weak_admin_token

    weak = weak_admin_token(ctx.settings.admin_token)
    if weak:
        raise click.ClickException(weak)
    runtime = None if ctx.distributed else bootstrap.runtime(ctx.engine)
    where = f"http://{ctx.settings.api_host}:{ctx.settings.api_port}"
    err.print(f"vec API on {where} (store {ctx.settings.store}"
              f"{', engine in this process' if runtime else ', the fleet does the work'}); Ctrl-C stops")
    if not ctx.settings.admin_token:
        err.print("note: VEC_ADMIN_TOKEN is not set: the admin routes answer 401")
    status = asyncio.run(serve(ctx.settings, runtime))
    if status:
        err.print("[bold red]error:[/] vec API stopped: the engine or the server failed (see the log above)")
    sys.exit(status)


@command(cli, "fleet")
@click.option("--alive-here", is_flag=True, help="exit 0 only if a fleet process on this host beat recently "
              "(a container's health check)")
@click.option("--all", "show_all", is_flag=True, help="also processes gone for a while")
def fleet_cmd(ctx: Context, alive_here: bool, show_all: bool, as_json: bool) -> None:
    """The distributed mode's processes: roles, state, what they lead, last heartbeat."""
    import socket
    from datetime import datetime, timedelta, timezone

    if ctx.db.fleet is None:
        raise DomainError("no fleet: the embedded store runs in one process (see `vec run`)")
    now = datetime.now(timezone.utc)
    ttl = ctx.settings.worker_ttl
    members = ctx.db.fleet.members(datetime(1970, 1, 1, tzinfo=timezone.utc) if show_all else now - timedelta(days=1))
    rows = [{**m, "alive": (now - m["heartbeat"]).total_seconds() <= ttl,
             "beat_seconds_ago": round((now - m["heartbeat"]).total_seconds(), 1)} for m in members]
    if alive_here:
        here = [r for r in rows if r["host"] == socket.gethostname() and r["alive"]]
        if not here:
            raise DomainError(f"no fleet process on {socket.gethostname()} beat in the last {ttl:g}s")
        emit(here, as_json, columns=("worker_id", "roles", "state", "leads", "beat_seconds_ago"))
        return
    if not show_all:
        rows = [r for r in rows if r["alive"]]
    emit(rows, as_json, title="Fleet", columns=("worker_id", "roles", "state", "leads", "alive", "beat_seconds_ago"))


@command(cli, "events", json_flag=False)
@click.option("--stream", help="only this stream (account-ID or task-ID)")
@click.option("--after", type=click.IntRange(min=0), default=0, help="start after this position")
@click.option("--follow", is_flag=True, help="keep printing new events until interrupted")
def events_cmd(ctx: Context, stream: str | None, after: int, follow: bool) -> None:
    """The log as JSON lines: position, stream, version, type, data, metadata."""
    store = ctx.db.events
    position = after
    try:
        while True:
            for recorded in store.read_all(after_position=position):
                position = recorded.position
                if stream is None or recorded.stream == stream:
                    click.echo(json.dumps(recorded.to_json(), ensure_ascii=False))
            if not follow:
                return
            time.sleep(ctx.settings.poll_interval)
    except KeyboardInterrupt:
        return


@command(cli, "audit")
@click.option("--since-last", is_flag=True,
              help="check only what was appended since the last audit point (a full audit when there is none, or "
                   "when the log no longer holds its hash); a clean audit records a new point")
def audit_cmd(ctx: Context, as_json: bool, since_last: bool) -> None:
    """Replay the whole log, verify its hash chain and check every money rule; exit 0 only if all hold."""
    from rich.markup import escape

    from engine.audit import audit
    from engine.audit_points import audit_since_last, load_point

    if since_last:
        report = audit_since_last(ctx.db)
    else:
        point = load_point(ctx.db)
        report = audit(ctx.db, (point.position, point.chain) if point else None)
    if as_json:
        click.echo(json.dumps(report.to_json()))
    else:
        span = f"positions {report.since + 1}..{report.head}" if report.head > report.since else \
            f"nothing appended since position {report.since}"
        out.print(f"{report.mode} audit, {span} (chain head "
                  f"{report.chain_head[:16] or '-'}): {report.events} events, {report.accounts} accounts, "
                  f"{report.tasks} tasks{' touched' if report.mode == 'incremental' else ''}")
        for violation in report.violations:  # escaped: each starts with its rule's name in brackets
            out.print(f"[red]VIOLATION[/] {escape(violation)}", highlight=False, soft_wrap=True)
        out.print("[green]all money rules hold[/]" if report.ok else f"[red]{len(report.violations)} violations[/]")
    sys.exit(0 if report.ok else 1)


@command(cli, "migrate")
def migrate_cmd(ctx: Context, as_json: bool) -> None:
    """Create or upgrade the store's schema (idempotent). A PostgreSQL store needs it before
    any other command; the embedded SQLite store does it as it opens."""
    from engine.store import migrate_store

    emit(migrate_store(ctx.settings.store), as_json)


@command(cli, "rebuild")
def rebuild_cmd(ctx: Context, as_json: bool) -> None:
    """Recreate every read model from the log."""
    started = time.perf_counter()
    count = ctx.db.projector.rebuild()  # an event that cannot be decoded raises CorruptEvent: one line, exit 1
    stopped = ctx.db.projector.stopped()
    if stopped:  # a read model stopped on an event it could not fold: the rebuild is not whole
        raise ProjectionStopped(*min(((s.name, s.position, s.message) for s in stopped.values()),
                                     key=lambda s: s[1]))
    emit({"events": count, "seconds": round(time.perf_counter() - started, 3)}, as_json)


@command(cli, "replay")
@click.argument("target")
@click.option("--until", "until", type=click.IntRange(min=0), help="state as of this global position")
@click.option("--as-of", "as_of", help="state as of this ISO 8601 time")
def replay_cmd(ctx: Context, target: str, until: int | None, as_of: str | None, as_json: bool) -> None:
    """State of an ACCOUNT or TASK as it was at a position or a time."""
    from engine.replay import replay

    if (until is None) == (as_of is None):
        raise click.UsageError("give exactly one of --until POSITION or --as-of TIME")
    emit(replay(ctx.db, target, until, as_of), as_json)


def main() -> None:
    from verifier.cli import egress, probe  # the verifier knows nothing of the engine

    cli.add_command(probe)
    cli.add_command(egress)
    cli()

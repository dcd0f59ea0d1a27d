"""The ops dashboard: server-rendered pages (Jinja2, autoescaped) with a little JavaScript,
served by the API under /dashboard/ (`/` redirects there). Not part of the /v1 API: no
route here is in the OpenAPI document.

Sign-in: ops paste the admin token or an account's API key into a form; it is exchanged
for a random session id (entrypoints/api/sessions.py: stored hashed, with a lifetime and an
idle timeout, deleted at sign-out) kept in an HttpOnly, SameSite=Strict cookie whose Path is
/dashboard (never sent to /v1, which reads only its Authorization header). Every request
checks the session and who it signed in as (a revoked key or a changed admin token ends it
at once) and the API's per-key limit. Sign-in attempts are limited per client address; the
cookie is Secure when VEC_PUBLIC_URL is https:// or a trusted proxy says the request came
over https. An account key sees its account only; the admin sees every account and the
engine's health.

Every POST is refused unless it is same-origin (Origin / Sec-Fetch-Site, when the browser
sends them) and carries the CSRF token: an HMAC of the session id, rendered into each form
(field `csrf`; the upload form carries it in its URL, so it is checked before the file is
read) and sent by the JavaScript as the `X-VEC-CSRF` header. The cookie's
SameSite=Strict already keeps it off cross-site requests; the token is the second lock.

Work is never done here: uploads, cancels and CSV exports call the /v1 routes' own
functions (entrypoints/api/routes.py), so limits, scopes and errors are the API's.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Awaitable, Literal, ParamSpec, Protocol
from urllib.parse import urlencode, urlparse

import orjson
from markupsafe import Markup
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from engine.domain.errors import AccountNotFound, DomainError, TaskNotFound
from engine.relay import relay_position
from engine.store.base import StoreError
from entrypoints.api import charts, routes
from entrypoints.api.deps import Principal, Services, task_json
from entrypoints.api.problems import Problem, from_exception
from entrypoints.api.uploads import receive_upload
from projections.queries import _task_json
from projections.read_models import HISTORY_TYPES
from projections.runner import ProjectionStopped
from projections import taxonomy

PREFIX = "/dashboard"
COOKIE = "vec_dashboard"
COOKIE_MAX_AGE = 8 * 3600
CSRF_HEADER = "x-vec-csrf"
ACTIVE = ("pending", "processing")
RESULTS_SHOWN = 50
HISTORY_SHOWN = 50
RECENT_TASKS = 20
WINDOW = timedelta(hours=24)  # the overview's Unknown rate and refunds

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(env=Environment(loader=FileSystemLoader(HERE / "templates"),
                                            autoescape=select_autoescape(default=True, default_for_string=True)))


def _when(value: str | None) -> str:
    """An ISO time as `YYYY-MM-DD HH:MM:SS` (UTC as stored); anything else as it is."""
    if not value:
        return ""
    try:
        return datetime.fromisoformat(value).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError):
        return str(value)


templates.env.filters["when"] = _when

router = APIRouter(include_in_schema=False)


def static_files() -> StaticFiles:
    """The dashboard's CSS and JavaScript, mounted at /dashboard/static (app.py)."""
    return StaticFiles(directory=HERE / "static")


# --- who is signed in -------------------------------------------------------------------

class SignIn(Exception):
    """No valid sign-in: pages redirect to the sign-in form, JSON answers 401."""


def csrf_token(sid: str) -> str:
    """The CSRF token of a session: only who holds the session id can compute it."""
    return hmac.new(sid.encode(), b"vec-dashboard-csrf-v1", hashlib.sha256).hexdigest()[:40]


async def viewer(request: Request) -> Principal:
    """Who the session cookie signed in as (SignIn when there is none, or it ended)."""
    sid = request.cookies.get(COOKIE)
    if not sid:
        raise SignIn("")
    svc: Services = request.app.state.services
    who = await svc.call(svc.session_principal, sid)
    if who is None:
        raise SignIn("")
    await svc.throttle(who)
    request.state.dashboard_sid = sid
    return who


def _same_origin(request: Request) -> None:
    """A browser says where a request comes from; anything but this site is refused."""
    site = request.headers.get("sec-fetch-site")
    if site and site not in ("same-origin", "none"):
        raise Problem(403, "Forbidden", "a cross-site request to the dashboard")
    origin = request.headers.get("origin")  # "null" (a sandboxed frame, say) is another origin too
    if origin and urlparse(origin).netloc != request.headers.get("host", ""):
        raise Problem(403, "Forbidden", "a request from another origin")


def _check_csrf(request: Request, supplied: str | None) -> None:
    _same_origin(request)
    supplied = supplied or request.headers.get(CSRF_HEADER) or ""
    expected = csrf_token(request.state.dashboard_sid)
    if not hmac.compare_digest(supplied.encode(), expected.encode()):
        raise Problem(403, "Forbidden", "the form is stale or not from this dashboard (CSRF token); reload the page")


def _local_path(target: str | None) -> str:
    """Where to go after signing in: a dashboard path, never another site."""
    if target and target.startswith(PREFIX + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return PREFIX + "/"


# --- responses --------------------------------------------------------------------------

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def render(request: Request, name: str, status: int = 200, who: Principal | None = None,
           **context: Any) -> HTMLResponse:
    sid = getattr(request.state, "dashboard_sid", None)
    context.update(who=who, csrf=csrf_token(sid) if sid and who else "", prefix=PREFIX,
                   history_types=HISTORY_TYPES)
    return templates.TemplateResponse(request, name, context, status_code=status, headers=SECURITY_HEADERS)


P = ParamSpec("P")


class Page(Protocol[P]):
    """A page's route: the request (FastAPI passes it by name), then the page's own parameters."""

    def __call__(self, request: Request, *args: P.args, **kwargs: P.kwargs) -> Awaitable[Response]: ...


def page(fn: Page[P]) -> Page[P]:
    """A dashboard page: no sign-in redirects to the form; the engine's refusals and errors
    become an HTML page with the API's status and message."""

    @functools.wraps(fn)
    async def wrapper(request: Request, *args: P.args, **kwargs: P.kwargs) -> Response:
        try:
            return await fn(request, *args, **kwargs)
        except SignIn:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            # a fixed message chosen by a flag: no text of the URL is ever shown as ours
            query = {"next": target, **({"expired": "1"} if request.cookies.get(COOKIE) else {})}
            response: Response = RedirectResponse(f"{PREFIX}/signin?{urlencode(query)}", status_code=303)
            if request.cookies.get(COOKIE):
                response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
            return response
        except (Problem, DomainError, StoreError, ProjectionStopped) as error:
            problem = from_exception(error)
            who = getattr(request.state, "dashboard_who", None)
            response = render(request, "error.html", problem.status, who=who, problem=problem)
            response.headers.update(problem.headers)  # Retry-After of a 429, say
            return response

    return wrapper


async def _who(request: Request) -> Principal:
    who = await viewer(request)
    request.state.dashboard_who = who
    return who


def _svc(request: Request) -> Services:
    return routes.services(request)


# --- reads (on the engine's thread, through Services.call) -------------------------------

def progress(task: dict[str, Any]) -> dict[str, Any]:
    """A task as the dashboard shows it: its API JSON, the settled share (consumed +
    refunded of total) and its badges."""
    settled = task["consumed"] + task["refunded"]
    percent = 100.0 if task["total"] <= 0 else min(100.0, 100.0 * settled / task["total"])
    return {**task, "settled": settled, "percent": round(percent, 1), "active": task["status"] in ACTIVE,
            "page": f"{PREFIX}/tasks/{task['task_id']}",
            "account_page": f"{PREFIX}/account?{urlencode({'id': task['account']})}"}


def _recent_tasks(svc: Services, account_id: str | None, limit: int) -> list[dict[str, Any]]:
    """The newest tasks, newest first (the API lists oldest first, for paging)."""
    return [progress(_task_json(r)) for r in svc.db.read.recent_tasks(account_id, limit)]


def _in_flight(svc: Services, account_id: str | None) -> list[dict[str, Any]]:
    rows = [r for status in ("processing", "pending") for r in svc.db.read.tasks_page(account_id, status, None, 200)]
    return [progress(task_json(r)) for r in rows]


def _unknown_by_reason(svc: Services, account_id: str | None, since: str) -> dict[str, Any]:
    """Results of the tasks created since `since`: how many, and the Unknowns per reason."""
    rows = svc.db.read.results_by_status_since(account_id, since)
    total = sum(r["n"] for r in rows)
    unknown = sorted(((r["reason"] or "(none)", r["n"]) for r in rows if r["status"] == "unknown"),
                     key=lambda item: (-item[1], item[0]))
    count = sum(n for _, n in unknown)
    return {"results": total, "unknown": count, "rate": (100.0 * count / total) if total else 0.0,
            "reasons": [{"reason": reason, "count": n, "rate": 100.0 * n / total} for reason, n in unknown]}


def _refunds(svc: Services, account_id: str | None, since: str) -> list[dict[str, Any]]:
    found = svc.db.read.refunds_since(account_id, since)
    return [{"type": kind, "rows": found.get(kind, (0, 0))[0], "credits": found.get(kind, (0, 0))[1]}
            for kind in ("refund", "cancel")]


def _health(svc: Services) -> dict[str, Any]:
    """The engine as the admin sees it: projection lag (head - the slowest checkpoint),
    stopped read models, relay lag and the fleet (PostgreSQL), or the embedded engine."""
    db, now = svc.db, datetime.now(timezone.utc)
    head = db.events.head()
    checkpoints = db.projector.checkpoints()
    stopped = {name: str(error) for name, error in db.projector.stopped().items()}
    projections = [{"name": name, "position": position, "lag": head - position, "stopped": stopped.get(name)}
                   for name, position in sorted(checkpoints.items())]
    health: dict[str, Any] = {"head": head, "projection_lag": head - min(checkpoints.values(), default=head),
              "projections": projections, "stopped": stopped, "mode": "embedded", "relay_lag": None,
              "workers": [], "engine": None}
    if db.fleet is not None and svc.settings.kafka_bootstrap:
        health["mode"] = "distributed"
        try:
            health["relay_lag"] = head - relay_position(lambda sql, params=(): db.read.sql.execute(sql, params).fetchall())
        except Exception as error:  # noqa: BLE001 - shown, not raised: the page still helps
            health["relay_error"] = f"{type(error).__name__}: {error}"
        ttl = svc.settings.worker_ttl
        for member in db.fleet.members(now - timedelta(days=1)):
            age = (now - member["heartbeat"]).total_seconds()
            health["workers"].append({**member, "alive": age <= ttl, "beat_seconds_ago": round(age, 1)})
        return health
    lease = db.lease.current()
    if lease is not None:
        age = (now - lease.heartbeat).total_seconds()
        ttl = max(10 * svc.settings.heartbeat_interval, 30.0)  # the runtime's own lease TTL
        health["engine"] = {"holder": lease.holder, "pid": lease.pid, "host": lease.host,
                            "alive": lease.alive(now, ttl), "beat_seconds_ago": round(age, 1)}
    return health


# the overview's charts over time: span -> (bin width, bins)
SPANS = {"1h": (timedelta(minutes=1), 60), "6h": (timedelta(minutes=5), 72), "24h": (timedelta(minutes=15), 96),
         "7d": (timedelta(hours=2), 84)}
DEFAULT_SPAN = "24h"


def _bin_start(now: datetime, width: timedelta, count: int) -> datetime:
    """The first bin's start: bins aligned on their width, the last one holding `now`."""
    epoch = datetime(2000, 1, 1, tzinfo=timezone.utc)
    return epoch + ((now - epoch) // width) * width - (count - 1) * width


def _width_text(width: timedelta) -> str:
    minutes = int(width.total_seconds() // 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h"


def _activity_charts(svc: Services, account_id: str | None, span: str, now: datetime) -> dict[str, Any]:
    """Throughput (results per bin) and the Unknown rate (% of the bin's results) over `span`."""
    width, count = SPANS[span]
    start = _bin_start(now, width, count)
    minutes = {datetime.fromisoformat(minute).replace(tzinfo=timezone.utc): (results, unknown)
               for minute, results, unknown in svc.db.read.activity(account_id, start.strftime("%Y-%m-%dT%H:%M"))}
    binned = charts.bins(minutes, start, width, count)
    per = _width_text(width)
    throughput = [charts.Point(when, results) for when, results, _ in binned]
    rate = [charts.Point(when, round(100.0 * unknown / results, 1) if results else None)
            for when, results, unknown in binned]
    total = sum(r for _, r, _ in binned)
    return {"span": span, "spans": list(SPANS), "per": per, "span_results": total,
            "span_unknown": sum(u for _, _, u in binned),
            "throughput_chart": charts.series_chart(throughput, "chart-throughput", f"Results per {per}"),
            "unknown_chart": charts.series_chart(rate, "chart-unknown-rate", f"Unknown rate per {per}", kind="line",
                                                 unit="%", top=100.0)}


def _overview(svc: Services, who: Principal, span: str = DEFAULT_SPAN) -> dict[str, Any]:
    health = _health(svc) if who.kind == "admin" else None  # before this process folds anything itself
    svc.db.catch_up()
    svc.db.projector.require("tasks")
    account_id = None if who.kind == "admin" else who.account_id
    since = (datetime.now(timezone.utc) - WINDOW).isoformat()
    in_flight = _in_flight(svc, account_id)
    active = {t["task_id"] for t in in_flight}
    return {"in_flight": in_flight,
            "recent": [t for t in _recent_tasks(svc, account_id, RECENT_TASKS) if t["task_id"] not in active],
            "unknown": _unknown_by_reason(svc, account_id, since), "refunds": _refunds(svc, account_id, since),
            "health": health, **_activity_charts(svc, account_id, span, datetime.now(timezone.utc)),
            "balance": routes._balance(svc, account_id) if account_id else None}


@dataclass(frozen=True)
class ResultFilter:
    """The task page's filters on its results (None: any) and where its page starts."""
    status: str | None = None
    result: str | None = None
    reason: str | None = None
    after: tuple[int, str] | None = None  # the key of the previous page's last row
    offset: int = 0  # how many matching rows come before this page

    def query(self, **changes: str) -> str:
        """The task page's query string with these filters (and `changes`), no cursor."""
        values = {"status": self.status, "result": self.result, "reason": self.reason, **changes}
        return urlencode({k: v for k, v in values.items() if v})


def result_filter(status: str | None, result: str | None, reason: str | None, cursor: str | None) -> ResultFilter:
    """The filters of a task page's URL, checked: a bad one is a 422 saying what is allowed."""
    status, result, reason = status or None, result or None, (reason or "").strip() or None
    if status is not None and status not in taxonomy.MONEY_STATUSES:
        raise Problem(422, "Invalid request", f"no such status: {status} (one of {', '.join(taxonomy.MONEY_STATUSES)})")
    if result is not None and result not in taxonomy.RESULTS:
        raise Problem(422, "Invalid request", f"no such result type: {result} (one of {', '.join(taxonomy.RESULTS)})")
    if reason is not None and len(reason) > 100:
        raise Problem(422, "Invalid request", "a reason is at most 100 characters")
    page = routes.cursor_in(cursor, (int, str, int))
    if page is None:
        return ResultFilter(status, result, reason)
    return ResultFilter(status, result, reason, (page[0], page[1]), page[2])


# the flags a results row shows (projections/taxonomy.py FLAG_COLUMNS), as a reader says them
FLAG_NAMES = {"is_disposable": "disposable", "is_role_account": "role", "is_catch_all": "catch-all",
              "is_free_email": "free", "mx_found": "MX"}
TYPE_CSS = {result: f"r-{money}" for result, money in taxonomy.MONEY_OF.items()}


def _type_chart(task_id: str, counts: list[tuple[str, int]]) -> Markup:
    """The task's results by detailed result, every type in the product's order, each bar a
    link to the results of that type."""
    found = dict(counts)
    bars = [charts.Bar(result, found.get(result, 0), TYPE_CSS[result],
                       f"{PREFIX}/tasks/{task_id}?{ResultFilter(result=result).query()}#results")
            for result in taxonomy.RESULTS]
    return charts.bar_chart(bars, "chart-types", "Results by type")


def _task_view(svc: Services, who: Principal, task_id: str, shown: ResultFilter) -> dict[str, Any]:
    task = progress(routes._task(svc, who, task_id))
    svc.db.projector.require("results")
    read = svc.db.read
    rows, last = read.results_page(task_id, shown.status, shown.after, RESULTS_SHOWN, shown.result, shown.reason)
    matching = read.results_count(task_id, shown.status, shown.result, shown.reason)
    reasons = read.unknown_reasons(task_id)
    after_this = shown.offset + len(rows)
    next_cursor = routes.cursor_out([last[0], last[1], after_this]) if last and after_this < matching else None
    return {"task": task, "results": rows, "reasons": reasons, "shown": shown, "matching": matching,
            "first_row": shown.offset + 1 if rows else 0, "last_row": after_this, "next_cursor": next_cursor,
            "all_reasons": [r for r, _ in read.results_by(task_id, "reason") if r],
            "type_chart": _type_chart(task_id, read.results_by(task_id, "result")),
            "cancellable": task["kind"] == "bulk" and task["active"]}


def _account_view(svc: Services, who: Principal, account_id: str, kind: str | None, after: int) -> dict[str, Any]:
    if not who.sees_account(account_id):
        raise AccountNotFound(f"no such account: {account_id}")
    balance = routes._balance(svc, account_id)
    history = svc.db.read.history_page(account_id, kind, after, HISTORY_SHOWN)
    svc.db.projector.require("tasks")
    return {"balance": balance, "history": history,
            "next_cursor": routes.cursor_out([history[-1]["seq"]]) if len(history) == HISTORY_SHOWN else None,
            "tasks": _recent_tasks(svc, account_id, RECENT_TASKS)}


def _progress_of(svc: Services, who: Principal, task_ids: list[str]) -> dict[str, Any]:
    svc.db.catch_up()
    svc.db.projector.require("tasks")
    tasks: dict[str, dict[str, Any] | None] = {}
    for task_id in task_ids:
        try:
            tasks[task_id] = progress(routes._task(svc, who, task_id))
        except TaskNotFound:
            tasks[task_id] = None
    account_id = None if who.kind == "admin" else who.account_id
    in_flight = [t["task_id"] for t in _in_flight(svc, account_id)]
    return {"tasks": tasks, "in_flight": in_flight}


# --- pages ------------------------------------------------------------------------------

@router.get("/")
async def root() -> Response:
    return RedirectResponse(f"{PREFIX}/", status_code=307)


@router.get(PREFIX)
async def dashboard_bare() -> Response:
    return RedirectResponse(f"{PREFIX}/", status_code=307)


@router.get(PREFIX + "/signin")
async def signin_form(request: Request, next: str | None = None, expired: str | None = None) -> Response:  # noqa: A002
    error = "that sign-in is no longer valid (revoked key, changed token or expired): sign in again" if expired \
        else None
    return render(request, "signin.html", next=_local_path(next), error=error)


@router.post(PREFIX + "/signin")
async def signin(request: Request) -> Response:
    _same_origin(request)
    svc = _svc(request)
    form = await request.form(max_files=0, max_fields=5)
    token = str(form.get("token") or "").strip()
    target = _local_path(str(form.get("next") or ""))
    try:
        await svc.limit("signin", f"signin:{request.client.host if request.client else '?'}",
                        "the sign-in limit of this address")
        who = await svc.principal_of(token) if token else None
        if who is None:
            raise SignIn("this token is not valid (unknown, mistyped or revoked)" if token
                         else "paste the admin token or an API key")
        await svc.throttle(who)
        sid = await svc.call(svc.open_session, who)
    except SignIn as error:
        return render(request, "signin.html", 401, next=target, error=str(error))
    except Problem as problem:
        page_ = render(request, "signin.html", problem.status, next=target, error=problem.detail)
        page_.headers.update(problem.headers)
        return page_
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, sid, max_age=COOKIE_MAX_AGE, path=PREFIX, httponly=True, samesite="strict",
                        secure=_secure(request, svc))
    return response


def _secure(request: Request, svc: Services) -> bool:
    """Secure cookies when the public URL is https://, or the request came over https (as
    seen directly or as a trusted proxy says: VEC_API_TRUSTED_PROXIES)."""
    return svc.guard.public_url.lower().startswith("https://") or request.url.scheme == "https"


@router.post(PREFIX + "/signout")
@page
async def signout(request: Request) -> Response:
    await _who(request)
    form = await request.form(max_files=0, max_fields=5)
    _check_csrf(request, str(form.get("csrf") or ""))
    svc = _svc(request)
    await svc.call(svc.sessions.close, request.state.dashboard_sid)  # the cookie is dead, wherever it was copied
    response = RedirectResponse(f"{PREFIX}/signin", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
    return response


@router.get(PREFIX + "/")
@page
async def overview(request: Request, span: str = DEFAULT_SPAN) -> Response:
    who = await _who(request)
    routes.need(who, "read")
    if span not in SPANS:
        raise Problem(422, "Invalid request", f"no such span: {span} (one of {', '.join(SPANS)})")
    svc = _svc(request)
    data = await svc.call(_overview, svc, who, span)
    return render(request, "overview.html", who=who, window_hours=int(WINDOW.total_seconds() // 3600), **data)


@router.get(PREFIX + "/account")
@page
async def account_page(request: Request, id: str | None = None, type: str | None = None,  # noqa: A002
                       cursor: str | None = None) -> Response:
    """An account: balances, upload, its tasks and the Credits History filtered by type.
    The account is a query parameter (an account id may hold any printable character)."""
    who = await _who(request)
    routes.need(who, "read")
    account_id = who.account_id if who.kind == "key" and not id else (id or "").strip()
    if not account_id:
        return RedirectResponse(f"{PREFIX}/", status_code=303)
    kind = type or None
    if kind is not None and kind not in HISTORY_TYPES:
        raise Problem(422, "Invalid request", f"no such history type: {kind} (one of {', '.join(HISTORY_TYPES)})")
    after = routes.cursor_in(cursor, 1)
    after_seq = after[0] if after else 0
    if isinstance(after_seq, bool) or not isinstance(after_seq, int) or not 0 <= after_seq < 2**63:
        raise Problem(422, "Invalid request", "this cursor is not one this dashboard gave out")
    svc = _svc(request)
    data = await svc.call(_account_view, svc, who, account_id, kind, after_seq)
    return render(request, "account.html", who=who, account_id=account_id, kind=kind, **data)


@router.post(PREFIX + "/account/upload")
@page
async def upload(request: Request, id: str, csrf: str = "") -> Response:  # noqa: A002
    """The account page's upload form: who may upload (write scope, CSRF token in the form's
    URL or the X-VEC-CSRF header) is decided before a byte of the file is read; then the
    /v1 bulk route's own steps do the work."""
    who = await _who(request)
    routes.need(who, "write")
    _check_csrf(request, csrf)
    svc = _svc(request)
    account_id = routes.account_of(who, id)
    try:
        with svc.gates.admit("upload", account_id):
            received = await receive_upload(request, svc.settings.api_max_upload_bytes)
            allow_duplicate = received.fields.get("allow_duplicate", "") in ("1", "on", "true")
            answer = await routes.create_bulk(request, svc, who, account_id, received, allow_duplicate,
                                              received.fields.get("name", "")[:200])
    except (Problem, DomainError) as error:
        problem = from_exception(error)
        data = await svc.call(_account_view, svc, who, account_id, None, 0)
        return render(request, "account.html", problem.status, who=who, account_id=account_id, kind=None,
                      upload_error=problem.detail, **data)
    task = orjson.loads(answer.body)["task"]
    return RedirectResponse(f"{PREFIX}/tasks/{task['task_id']}", status_code=303)


@router.get(PREFIX + "/tasks/{task_id}")
@page
async def task_page(request: Request, task_id: str, status: str | None = None, result: str | None = None,
                    reason: str | None = None, cursor: str | None = None) -> Response:
    """A task: its progress, a chart of its results by type, and its results a page at a
    time, filtered by status, result type and reason."""
    who = await _who(request)
    routes.need(who, "read")
    shown = result_filter(status, result, reason, cursor)
    svc = _svc(request)
    data = await svc.call(_task_view, svc, who, task_id, shown)
    return render(request, "task.html", who=who, results_shown=RESULTS_SHOWN, money_statuses=taxonomy.MONEY_STATUSES,
                  result_types=list(taxonomy.RESULTS), flag_names=FLAG_NAMES, **data)


@router.post(PREFIX + "/tasks/{task_id}/cancel")
@page
async def cancel(request: Request, task_id: str) -> Response:
    """The task page's cancel button (a form POST, or the JavaScript with X-VEC-CSRF)."""
    who = await _who(request)
    form = await request.form(max_files=0, max_fields=5)
    _check_csrf(request, str(form.get("csrf") or ""))
    await routes.cancel(task_id, request, who=who)
    if request.headers.get(CSRF_HEADER):
        svc = _svc(request)
        return JSONResponse(progress(await svc.call(routes._task, svc, who, task_id)), headers=SECURITY_HEADERS)
    return RedirectResponse(f"{PREFIX}/tasks/{task_id}", status_code=303)


@router.get(PREFIX + "/tasks/{task_id}/results.csv")
@page
async def results_csv(request: Request, task_id: str,
                      status: Literal["safe", "invalid", "risky", "unknown"] | None = None) -> Response:
    """The CSV export, as GET /v1/tasks/{id}/results streams it (safe for spreadsheets)."""
    who = await _who(request)
    return await routes.results(task_id, request, status=status, format="csv", who=who)


@router.get(PREFIX + "/progress.json")
async def progress_json(request: Request, task: list[str] = Query(default=[])) -> Response:
    """What the pages' JavaScript polls every second: these tasks' progress and the ids of
    the tasks in flight."""
    try:
        who = await viewer(request)
        routes.need(who, "read")
        svc = _svc(request)
        data = await svc.call(_progress_of, svc, who, task[:200])
    except SignIn:
        return JSONResponse({"error": "signed out"}, status_code=401, headers=SECURITY_HEADERS)
    except (Problem, DomainError, StoreError, ProjectionStopped) as error:
        problem = from_exception(error)
        return JSONResponse({"error": problem.detail}, status_code=problem.status,
                            headers={**SECURITY_HEADERS, **problem.headers})
    return Response(orjson.dumps(data), media_type="application/json", headers=SECURITY_HEADERS)

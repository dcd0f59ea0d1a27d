"""``vec probe ADDRESS... [--json]``: verify addresses by hand (no task, no credits)."""
from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import defaultdict, deque
from typing import Any

import click
from pydantic import ValidationError

from .config import VerifierSettings
from .result import ProviderError, ProviderUnavailable, VerificationResult

_STYLE = {"safe": "green", "invalid": "red", "risky": "yellow", "unknown": "magenta"}


def _read_addresses(args: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for a in args:
        if a == "-":
            for line in sys.stdin:
                line = line.rstrip("\r\n")
                if line.strip():
                    out.append(line)
        else:
            out.append(a)
    return out


class _OrderedPrinter:
    """Prints JSON lines in input order as soon as the prefix is complete. The lines of the
    results that came in one turn of the event loop go out in one write."""

    def __init__(self, addresses: list[str]) -> None:
        self.slots: list[VerificationResult | None] = [None] * len(addresses)
        self.where: dict[str, deque[int]] = defaultdict(deque)
        for i, a in enumerate(addresses):
            self.where[a].append(i)
        self.next = 0
        self.lines: list[str] = []

    def __call__(self, r: VerificationResult) -> None:
        q = self.where.get(r.address)
        if not q:
            return
        self.slots[q.popleft()] = r
        start = len(self.lines)
        while self.next < len(self.slots) and (ready := self.slots[self.next]) is not None:
            self.lines.append(json.dumps(ready.to_json(), ensure_ascii=False))
            self.next += 1
        if start == 0 and self.lines:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # not called from the event loop
                self.flush()

    def flush(self) -> None:
        if self.lines:
            lines, self.lines = self.lines, []
            sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()


def _table(results: list[VerificationResult]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(show_lines=False)
    for col in ("address", "status", "reason", "smtp", "mx host", "ms", "detail"):
        t.add_column(col, overflow="fold")
    for r in results:
        flags = [f for f, key, on in (("catch-all", "catch_all", r.catch_all), ("disposable", "disposable", r.disposable),
                                      ("role", "role", r.role)) if on and key != r.reason]
        reason = (r.reason or "") + (f" ({', '.join(flags)})" if flags else "")
        t.add_row(
            r.address,
            f"[{_STYLE.get(r.status, 'white')}]{r.status}[/]",
            reason,
            str(r.smtp_code or ""),
            r.smtp_host or ", ".join(r.mx),
            str(r.duration_ms),
            r.detail,
        )
    Console().print(t)


@click.command("probe")
@click.argument("addresses", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, in input order.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="TOML file with verifier settings (same as VEC_VERIFIER_CONFIG).")
@click.option("--dns-servers", help="Override VEC_DNS_SERVERS (host[:port],...).")
@click.option("--smtp-port", type=int, help="Override VEC_SMTP_PORT.")
def probe(addresses: tuple[str, ...], as_json: bool, config_file: str | None,
          dns_servers: str | None, smtp_port: int | None) -> None:
    """Verify ADDRESS... by DNS and SMTP ("-" reads addresses from stdin, one a line).

    Configuration comes from VEC_* environment variables (VEC_DNS_SERVERS, VEC_SMTP_PORT,
    VEC_SMTP_TIMEOUT, VEC_RETRY_WINDOW, VEC_HELO_NAME, VEC_MAIL_FROM, ...)."""
    addrs = _read_addresses(addresses)
    if not addrs:
        raise click.UsageError("no address given")
    if config_file:
        os.environ["VEC_VERIFIER_CONFIG"] = os.path.abspath(config_file)
    overrides: dict[str, Any] = {}  # only what was given: the rest comes from the environment
    if dns_servers is not None:
        overrides["dns_servers"] = dns_servers
    if smtp_port is not None:
        overrides["smtp_port"] = smtp_port
    from .provider import build_provider  # the prober, DNS, syntax: not for `vec egress`

    try:
        settings = VerifierSettings(**overrides)
        provider = build_provider(settings)
    except (ValidationError, ValueError) as exc:
        raise click.ClickException(f"bad verifier configuration: {exc}") from exc

    printer = _OrderedPrinter(addrs) if as_json else None
    try:
        results = asyncio.run(provider.verify(addrs, printer))
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except ProviderUnavailable as exc:  # ours, not theirs: say so, no traceback
        left = len(exc.unanswered)
        raise click.ClickException(f"verifier unavailable: {exc} ({left} address(es) not checked)") from None
    except ProviderError as exc:
        raise click.ClickException(f"verification failed: {exc}") from None
    finally:
        if printer is not None:
            printer.flush()  # what the last turn of the loop delivered
    if not as_json:
        _table(results)


def _settings() -> VerifierSettings:
    try:
        return VerifierSettings()
    except ValidationError as exc:  # one line, and never the input (it may hold a secret)
        msgs = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise click.ClickException(f"bad verifier configuration: {msgs}") from None


@click.group("egress")
def egress() -> None:
    """The egress pool SMTP sessions leave by (VEC_EGRESS_POOL; secrets are never shown)."""


@egress.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per route.")
def egress_list(as_json: bool) -> None:
    """The configured routes, in preference order (passwords never shown)."""
    routes = _settings().egress_routes
    rows = [{"name": r.name, "kind": r.kind, "route": r.public(), "auth": bool(r.username)}
            for r in routes]
    if not rows:
        rows = [{"name": "direct", "kind": "direct", "route": "direct (VEC_SOURCE_ADDRESS or the "
                 "system's choice; no pool configured)", "auth": False}]
    for row in rows:
        click.echo(json.dumps(row) if as_json else f"{row['name']:16} {row['kind']:7} {row['route']}")


@egress.command("check")
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per route.")
def egress_check(target: str, as_json: bool) -> None:
    """Connect to TARGET (IP[:PORT], default port VEC_SMTP_PORT) through each route and
    read its greeting: which routes work, without sending any mail command."""
    from .config import parse_hostport
    from .routes import Route, check_route

    settings = _settings()
    try:
        ip, port = parse_hostport(target, settings.smtp_port)
    except ValueError as exc:
        raise click.UsageError(str(exc).replace("DNS server", "target")) from None
    routes = settings.egress_routes or (Route("direct", "direct", source=settings.source_address),)

    async def check_all() -> list[tuple[str, bool, str]]:
        return await asyncio.gather(*(check_route(r, ip, port, settings.connect_timeout_s) for r in routes))
    results = asyncio.run(check_all())
    for name, ok, said in results:
        row = {"name": name, "ok": ok, "said": said}
        click.echo(json.dumps(row) if as_json else f"{name:16} {'ok  ' if ok else 'FAIL'} {said}")
    if not all(ok for _, ok, _ in results):
        raise SystemExit(1)


"""In-process fakes for fast unit tests of the prober: a tiny authoritative DNS server
and scriptable SMTP servers, all on loopback (127.0.1.x) with ephemeral ports.

The real mail world (Postfix, postgrey, dnsmasq) is used by test_probe_mailworld.py;
these fakes only make behaviour that is hard to provoke there cheap and exact
(connection counts, error limits, cancellation, deadlines).
"""
from __future__ import annotations

import asyncio
import asyncio.selector_events
import socket
from dataclasses import dataclass, field
from typing import Callable

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest


class FakeDNS(asyncio.DatagramProtocol):
    """records: {"name.": {"MX": ["10 mx.x.test."], "A": ["127.0.1.1"]}}; names not in
    the table are NXDOMAIN; names in ``silent`` are never answered; ``servfail`` ones
    get SERVFAIL. ``dead``: answers nothing at all (a resolver that is down);
    ``refuse_all``: answers everything REFUSED (alive, but useless)."""

    def __init__(self, records: dict[str, dict[str, list[str]]], silent: set[str] = frozenset(),
                 servfail: set[str] = frozenset()) -> None:
        self.records = {k.lower().rstrip(".") + ".": v for k, v in records.items()}
        self.silent = {s.lower().rstrip(".") + "." for s in silent}
        self.servfail = {s.lower().rstrip(".") + "." for s in servfail}
        self.dead = False
        self.refuse_all = False
        self.queries: list[tuple[str, str]] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr) -> None:  # noqa: ANN001
        q = dns.message.from_wire(data)
        question = q.question[0]
        name = question.name.to_text().lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        if name in self.silent or self.dead:
            return
        resp = dns.message.make_response(q)
        resp.flags |= dns.flags.AA
        if self.refuse_all:
            resp.set_rcode(dns.rcode.REFUSED)
        elif name in self.servfail:
            resp.set_rcode(dns.rcode.SERVFAIL)
        elif name not in self.records:
            resp.set_rcode(dns.rcode.NXDOMAIN)
        else:
            values = self.records[name].get(rdtype, [])
            if values:
                rrset = dns.rrset.from_text_list(question.name, 60, dns.rdataclass.IN, question.rdtype, values)
                resp.answer.append(rrset)
        if self.transport is not None:
            self.transport.sendto(resp.to_wire(), addr)

    async def start(self) -> str:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        self.port = transport.get_extra_info("sockname")[1]
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


Responder = Callable[[str], tuple[int, str]]


def postfix_like(users: set[str]) -> Responder:
    def respond(rcpt: str) -> tuple[int, str]:
        local = rcpt.split("@", 1)[0].lower()
        if local in users:
            return 250, "2.1.5 Ok"
        return 550, f"5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table"
    return respond


@dataclass
class SessionLog:
    helo: str | None = None
    mail_from: str | None = None
    rcpts: list[tuple[str, int]] = field(default_factory=list)
    quit: bool = False
    data: bool = False
    peer: tuple[str, int] | None = None


@dataclass
class FakeSMTP:
    """A scriptable SMTP server on (ip, port)."""

    ip: str
    port: int
    respond: Responder = field(default_factory=lambda: postfix_like({"alice", "bob"}))
    banner: str | None = "220 fake.test ESMTP"  # None: tarpit (never greets)
    rcpt_limit: int | None = None  # accepted RCPTs per transaction, then 452
    hard_error_limit: int | None = None  # after this many errors: 421 and close
    rcpt_delay: float = 0.0
    rcpt_delays: dict[str, float] = field(default_factory=dict)  # per address, on top of rcpt_delay
    queued_at: dict[str, int] = field(default_factory=dict)  # RCPTs waiting when each was read
    smtputf8: bool = True
    pipelining: bool = True  # advertise RFC 2920 PIPELINING
    max_pipelined: int = 0  # most RCPTs seen queued at once (pipelined by the client)
    ehlo_reply: tuple[int, str] | None = None  # e.g. (502, "5.5.2 not implemented")
    mail_reply: tuple[int, str] | None = None
    drop_every: int | None = None  # every n-th connection is closed before the banner
    sessions: list[SessionLog] = field(default_factory=list)
    received: bytearray = field(default_factory=bytearray)  # every byte, every session
    _server: asyncio.base_events.Server | None = None

    async def start(self) -> "FakeSMTP":
        self._server = await asyncio.start_server(self._handle, self.ip, self.port)
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    @property
    def max_concurrent(self) -> int:
        return self._max_concurrent

    _live: int = 0
    _max_concurrent: int = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        log = SessionLog(peer=writer.get_extra_info("peername"))
        self.sessions.append(log)
        self._live += 1
        self._max_concurrent = max(self._max_concurrent, self._live)
        errors = accepted = 0

        async def send(line: str) -> None:
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        try:
            if self.drop_every and len(self.sessions) % self.drop_every == 0:
                return
            if self.banner is None:
                await asyncio.sleep(3600)
                return
            await send(self.banner)
            while True:
                raw = await reader.readline()
                self.received += raw
                if not raw:
                    return
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                verb = line[:4].upper()
                if verb == "EHLO":
                    log.helo = line[5:]
                    if self.ehlo_reply:
                        await send(f"{self.ehlo_reply[0]} {self.ehlo_reply[1]}")
                    else:
                        ext = (["PIPELINING"] if self.pipelining else []) + ["8BITMIME"] + (
                            ["SMTPUTF8"] if self.smtputf8 else [])
                        await send("250-fake.test")
                        for e in ext[:-1]:
                            await send(f"250-{e}")
                        await send(f"250 {ext[-1]}")
                elif verb == "HELO":
                    log.helo = line[5:]
                    await send("250 fake.test")
                elif verb == "MAIL":
                    log.mail_from = line[10:]
                    accepted = 0
                    if self.mail_reply:
                        await send(f"{self.mail_reply[0]} {self.mail_reply[1]}")
                    else:
                        await send("250 2.1.0 Ok")
                elif verb == "RCPT":
                    rcpt = line[8:].strip().strip("<>")
                    # RCPTs that were already waiting behind this one: pipelined (RFC 2920)
                    queued = bytes(reader._buffer).upper().count(b"\nRCPT TO:") + 1  # type: ignore[attr-defined]
                    self.max_pipelined = max(self.max_pipelined, queued)
                    self.queued_at[rcpt] = queued
                    delay = self.rcpt_delay + self.rcpt_delays.get(rcpt, 0.0)
                    if delay:
                        await asyncio.sleep(delay)
                    if self.rcpt_limit is not None and accepted >= self.rcpt_limit:
                        code, msg = 452, "4.5.3 Error: too many recipients"
                    else:
                        code, msg = self.respond(rcpt)
                    log.rcpts.append((rcpt, code))
                    if code // 100 == 2:
                        accepted += 1
                    else:
                        errors += 1
                    if self.hard_error_limit is not None and errors > self.hard_error_limit:
                        await send("421 4.7.0 fake.test Error: too many errors")
                        return
                    await send(f"{code} {msg}")
                elif verb == "RSET":
                    accepted = 0
                    await send("250 2.0.0 Ok")
                elif verb == "DATA":
                    log.data = True
                    await send("554 5.5.1 no DATA in tests")
                elif verb == "QUIT":
                    log.quit = True
                    await send("221 2.0.0 Bye")
                    return
                else:
                    await send("502 5.5.2 Error: command not recognized")
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._live -= 1
            writer.close()


def free_port(ips: list[str]) -> int:
    """A TCP port free on every one of the loopback addresses."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((ips[0], 0))
            port = s.getsockname()[1]
        ok = True
        for ip in ips:
            with socket.socket() as t:
                try:
                    t.bind((ip, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise RuntimeError("no common free port")


class Blackhole:
    """A listening socket whose backlog is full: connects to it time out."""

    def __init__(self, ip: str, port: int) -> None:
        self.srv = socket.socket()
        self.srv.bind((ip, port))
        self.srv.listen(0)
        self.fillers = []
        for _ in range(4):
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect((ip, port))
            except BlockingIOError:
                pass
            self.fillers.append(c)

    def close(self) -> None:
        for c in self.fillers:
            c.close()
        self.srv.close()


def forbidden_bytes(received: bytes) -> list[bytes]:
    """Lines (CRLF-terminated commands) that hold a lone CR, LF or a NUL."""
    lines = received.split(b"\r\n")
    return [ln for ln in lines if b"\r" in ln or b"\n" in ln or b"\0" in ln]


class StubResolver:
    """Stands in for verifier.resolver.DnsResolver: fixed MX answers, no network.
    ``answers``: domain -> MxLookup; ``alive``: what the canary says."""

    def __init__(self, answers: dict, alive: bool = True) -> None:
        self.answers = answers
        self.alive = alive
        self.lookups: list[str] = []

    async def lookup_mx(self, domain: str):
        from verifier.resolver import MxLookup

        self.lookups.append(domain)
        return self.answers.get(domain) or MxLookup(domain, "nxdomain", detail="stub: NXDOMAIN")

    async def resolver_alive(self) -> bool:
        return self.alive

    def clear_cache(self) -> None:
        pass


@pytest.fixture
def no_smtp_connect(monkeypatch):
    """Fails any TCP connect the prober tries (socket level, before a packet leaves):
    the list of (ip, port) it tried is the fixture's value. DNS (UDP) is untouched."""
    tried: list[tuple] = []

    async def refuse(self, sock, address):  # noqa: ANN001
        tried.append(tuple(address[:2]))
        raise AssertionError(f"connection attempt to {address} must not happen")

    monkeypatch.setattr(asyncio.selector_events.BaseSelectorEventLoop, "sock_connect", refuse)
    return tried


def count_open_sessions(monkeypatch) -> dict[str, int]:
    """Counts the SMTP sessions open at once across every FakeSMTP started afterwards:
    the returned dict's `now` and `max`, updated as sessions open and close."""
    live = {"now": 0, "max": 0}
    handle = FakeSMTP._handle

    async def counting(self, reader, writer):
        live["now"] += 1
        live["max"] = max(live["max"], live["now"])
        try:
            await handle(self, reader, writer)
        finally:
            live["now"] -= 1

    monkeypatch.setattr(FakeSMTP, "_handle", counting)
    return live


class FlushingSMTP:
    """A minimal SMTP server in a thread of its own that accepts every RCPT and writes each
    reply the moment it has it (TCP_NODELAY, one send per reply), as servers without an
    output buffer do: pipelined replies then reach the client in separate reads, close
    together. (FakeSMTP shares the client's event loop, so its replies never interleave
    with the client's reads that way.)"""

    def __init__(self, ip: str, port: int) -> None:
        import socketserver
        import threading

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

                def send(line: bytes) -> None:
                    self.request.sendall(line + b"\r\n")
                send(b"220 flush.test ESMTP")
                for line in self.rfile:
                    verb = line[:4].upper()
                    if verb == b"EHLO":
                        send(b"250-flush.test\r\n250 PIPELINING")
                    elif verb in (b"MAIL", b"RCPT", b"RSET"):
                        send(b"250 2.1.5 Ok")
                    else:
                        send(b"221 2.0.0 Bye")
                        return

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.server = Server((ip, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

"""One SMTP session with aiosmtplib: connect, greeting, EHLO (HELO fallback), MAIL FROM,
then any number of RCPT TO. Never DATA. Every stage has its own timeout.

The TCP connection is made here (bound to the configured source address when given)
so that the connect timeout and the banner timeout are separate; aiosmtplib then takes
over the connected socket (``start_tls=False``: the probe never upgrades).

Last line of defence against command injection: no argument containing CR, LF or NUL
is ever written (:class:`UnsafeCommand`), whatever the callers checked before.
"""
from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import aiosmtplib
from aiosmtplib.errors import (
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPHeloError,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from aiosmtplib.response import SMTPResponse

from .classify import enhanced_code
from .result import ProviderUnavailable

# ConnectFailed kinds where no TCP connection was made (the others got one).
TCP_FAILURES = frozenset({"refused", "connect_timeout", "connect_error"})
_FORBIDDEN_BYTES = (b"\r", b"\n", b"\0")


class UnsafeCommand(ValueError):
    """A command argument holds CR, LF or NUL: sending it would inject commands."""


def check_argument(what: str, value: bytes) -> bytes:
    """``value`` unchanged, or :class:`UnsafeCommand` when it must never be sent."""
    for bad in _FORBIDDEN_BYTES:
        if bad in value:
            raise UnsafeCommand(f"{what} contains {bad!r}: not sent")
    return value


class ConnectFailed(Exception):
    """No usable SMTP conversation with this host: refused, timed out, tarpit, dropped."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        # refused | connect_timeout | connect_error | banner_timeout | timeout | disconnected
        self.kind = kind
        self.detail = detail

    @property
    def tcp_failed(self) -> bool:
        """No TCP connection at all (as opposed to a server that connected, then failed)."""
        return self.kind in TCP_FAILURES


class SessionRefused(Exception):
    """The server answered the greeting, EHLO/HELO or MAIL FROM with a refusal."""

    def __init__(self, stage: str, code: int, message: str) -> None:
        super().__init__(f"{stage}: {code} {message}")
        self.stage = stage
        self.code = code
        self.message = message


@dataclass
class Reply:
    code: int
    message: str

    def __str__(self) -> str:
        return f"{self.code} {self.message}".replace("\n", " ")

    @property
    def enhanced(self) -> str | None:
        """The RFC 3463 enhanced status code in the text ("5.1.1"), if any."""
        return enhanced_code(self.message)


@dataclass
class Session:
    smtp: aiosmtplib.SMTP
    label: str  # "mx.example.test[127.0.0.2]"
    key: tuple[str, int]
    smtputf8: bool
    releases: list[Callable[[], None]] = field(default_factory=list)
    host_name: str = ""  # the MX name
    tried: tuple[str, ...] = ()  # MX names tried to open this session, this one last
    rcpts: int = 0  # RCPT commands sent in this session
    tx_rcpts: int = 0  # ... in this transaction
    errors: int = 0  # 4xx/5xx replies to RCPT
    accepted: int = 0  # 2xx replies to RCPT in this transaction
    dead: bool = False
    exhausted: bool = False
    catch_all_tried: bool = False
    route: object = None  # the egress route it left by (verifier.routes.Route)
    mail_command: tuple[bytes, ...] = ()  # the MAIL FROM arguments, to start a new transaction
    pipelining: bool = False  # RFC 2920 advertised (and usable with this aiosmtplib)
    transactions: int = 1  # MAIL transactions in this session (RSET starts the next)

    @property
    def alive(self) -> bool:
        return not self.dead and self.smtp.is_connected

    async def rcpt(self, address: str, utf8: bool, timeout: float) -> Reply:
        """Send RCPT TO and return the reply, whatever its code. Timeouts and
        disconnects raise (and leave the session dead)."""
        enc = "utf-8" if utf8 else "ascii"
        arg = check_argument("RCPT address", address.encode(enc))
        try:
            resp = await self.smtp.execute_command(
                b"RCPT", b"TO:<" + arg + b">", timeout=timeout
            )
        except BaseException:
            self.dead = True
            raise
        self._count(resp.code)
        return Reply(resp.code, resp.message)

    def send_rcpts(self, rcpts: list[tuple[str, bool]]) -> None:
        """RCPT TO for several addresses in one write (RFC 2920 PIPELINING, when the server
        advertised it); then ``next_reply`` once per address, in order. Every argument is
        checked before anything is written."""
        lines = [b"RCPT TO:<" + check_argument("RCPT address", a.encode("utf-8" if utf8 else "ascii"))
                 + b">\r\n" for a, utf8 in rcpts]
        self._write_pipelined(lines)

    async def next_reply(self, timeout: float) -> Reply:
        """The next reply to a pipelined RCPT. aiosmtplib hands one reply per network read:
        replies that came in the same read wait in its buffer, taken from there first. A
        timeout leaves the session open (the reply may still come: the caller decides);
        anything else closes it."""
        resp = await self._read_reply(timeout)
        self._count(resp.code)
        return Reply(resp.code, resp.message)

    def _write_pipelined(self, lines: list[bytes]) -> None:
        """Commands (checked by the caller) in one write; their replies are due in order."""
        proto = self.smtp.protocol
        if proto is None or not self.alive:
            self.dead = True
            raise SMTPServerDisconnected("Server not connected")
        proto._response_pending = True  # replies are due: none may be taken as unsolicited
        try:
            proto.write(b"".join(lines))
        except BaseException:
            self.close()
            raise

    async def _read_reply(self, timeout: float) -> SMTPResponse:
        """The next reply of pipelined commands: from aiosmtplib's buffer first (one reply is
        handed over per network read), else from the network."""
        proto = self.smtp.protocol
        try:
            if proto is None:
                raise SMTPServerDisconnected("Server not connected")
            resp = proto._read_response_from_buffer() if proto._buffer else None
            if resp is None:
                resp = await proto.read_response(timeout=timeout)
        except SMTPTimeoutError:
            raise
        except BaseException:
            self.close()  # the stream is out of step
            raise
        return resp

    def _count(self, code: int) -> None:
        self.rcpts += 1
        self.tx_rcpts += 1
        if code // 100 == 2:
            self.accepted += 1
        else:
            self.errors += 1
        if not self.smtp.is_connected:
            self.dead = True

    async def reset(self, timeout: float) -> bool:
        """RSET and a new MAIL FROM: a new transaction without a new connection (RFC 5321
        4.1.1.5). The server's error count is per session, so ``errors`` carries on. False
        (and the session dead) when the server does not take it."""
        try:
            if self.pipelining:  # RSET and MAIL in one write (RFC 2920): one round trip
                self._write_pipelined([b"RSET\r\n", b" ".join((b"MAIL", *self.mail_command)) + b"\r\n"])
                rset = await self._read_reply(timeout)
                mail = await self._read_reply(timeout)
            else:
                rset = await self.smtp.execute_command(b"RSET", timeout=timeout)
                mail = await self.smtp.execute_command(b"MAIL", *self.mail_command, timeout=timeout) \
                    if rset.code == 250 else rset
        except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001
            self.dead = True
            if isinstance(exc, asyncio.CancelledError):
                raise
            return False
        if rset.code != 250 or mail.code != 250 or not self.smtp.is_connected:
            self.dead = True
            return False
        self.transactions += 1
        self.tx_rcpts = self.accepted = 0
        self.exhausted = False
        return True

    async def quit(self, timeout: float) -> None:
        """Polite end (QUIT); errors ignored; always closes."""
        try:
            if self.alive:
                await self.smtp.execute_command(b"QUIT", timeout=timeout)
        except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001
            if isinstance(exc, asyncio.CancelledError):
                self.close()
                raise
        finally:
            self.close()

    def close(self) -> None:
        """Immediate close (no QUIT), releases the concurrency slots once."""
        self.dead = True
        try:
            self.smtp.close()
        finally:
            releases, self.releases = self.releases, []
            for r in releases:
                r()


async def tcp_connect(ip: str, port: int, source: str | None, timeout: float) -> socket.socket:
    """A connected non-blocking socket, or ConnectFailed (their host) or
    ProviderUnavailable (our side: source address unusable, no route at all)."""
    family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        if exc.errno == errno.EAFNOSUPPORT:  # no IPv6 on this machine: that address only
            raise ConnectFailed("connect_error", f"cannot open a socket: {exc.strerror or exc}") from None
        raise ProviderUnavailable(f"cannot open a socket: {exc.strerror or exc}") from exc  # EMFILE...
    try:
        sock.setblocking(False)
        if source:
            try:
                sock.bind((source, 0))
            except OSError as exc:
                raise ProviderUnavailable(f"cannot bind source address {source}: {exc}") from exc
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.sock_connect(sock, (ip, port)), timeout)
    except (TimeoutError, asyncio.TimeoutError):
        sock.close()
        raise ConnectFailed("connect_timeout", f"connect timed out after {timeout:g}s") from None
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.ENETUNREACH, errno.ENETDOWN):
            # No route at all: our network, not their host -- except IPv6 on a machine
            # that simply has no IPv6 route (common); then only that address fails.
            if family == socket.AF_INET or source:
                raise ProviderUnavailable(
                    f"network unreachable: connect to {ip} port {port}: {exc.strerror or exc}"
                ) from None
            raise ConnectFailed("connect_error", f"no IPv6 route: {exc.strerror or exc}") from None
        if isinstance(exc, ConnectionRefusedError):
            raise ConnectFailed("refused", "connection refused") from None
        raise ConnectFailed("connect_error", f"connect failed: {exc.strerror or exc}") from None
    except BaseException:
        sock.close()
        raise
    return sock


async def open_session(
    ip: str,
    port: int,
    *,
    label: str,
    helo_name: str,
    mail_from: str,
    source_address: str | None,
    connect_timeout: float,
    banner_timeout: float,
    command_timeout: float,
    want_smtputf8: bool = False,
    connect: Callable[[], Awaitable[socket.socket]] | None = None,
) -> Session:
    """Connect and get to the point where RCPT TO can be sent.

    Raises ConnectFailed (try the next MX, host probably down), SessionRefused (the
    server said no before any recipient), UnsafeCommand (before connecting) or
    ProviderUnavailable (our network or source address is unusable). ``connect``: how
    to get the connected socket instead of a direct TCP connect (an egress proxy)."""
    check_argument("HELO name", helo_name.encode("ascii", "replace"))
    mail_arg = check_argument("MAIL FROM", mail_from.encode("ascii"))
    if connect is not None:
        sock = await connect()
    else:
        sock = await tcp_connect(ip, port, source_address, connect_timeout)
    smtp = aiosmtplib.SMTP(
        local_hostname=helo_name, timeout=command_timeout, start_tls=False, sock=sock
    )
    try:
        try:
            await smtp.connect(timeout=banner_timeout)
        except SMTPConnectResponseError as exc:
            raise SessionRefused("greeting", exc.code, exc.message) from None
        except SMTPConnectTimeoutError:
            raise ConnectFailed(
                "banner_timeout", f"no greeting within {banner_timeout:g}s (tarpit?)"
            ) from None
        except SMTPConnectError as exc:
            raise ConnectFailed("disconnected", f"closed before greeting: {exc}") from None

        try:
            try:
                await smtp.ehlo(timeout=command_timeout)
            except SMTPHeloError as exc:
                if smtp.is_connected and exc.code // 100 == 5:
                    try:
                        await smtp.helo(timeout=command_timeout)
                    except SMTPHeloError as exc2:
                        raise SessionRefused("helo", exc2.code, exc2.message) from None
                else:
                    raise SessionRefused("ehlo", exc.code, exc.message) from None
            utf8 = smtp.supports_extension("smtputf8")
            opts = [b"SMTPUTF8"] if (want_smtputf8 and utf8) else []
            mail_command = (b"FROM:<" + mail_arg + b">", *opts)
            resp = await smtp.execute_command(b"MAIL", *mail_command, timeout=command_timeout)
            if resp.code != 250:
                raise SessionRefused("mail", resp.code, resp.message)
        except SMTPTimeoutError:
            raise ConnectFailed("timeout", f"no reply within {command_timeout:g}s after greeting") from None
        except SMTPServerDisconnected as exc:
            raise ConnectFailed("disconnected", f"connection lost: {exc}") from None
    except BaseException:
        smtp.close()
        sock.close()  # in case no transport took it over
        raise
    return Session(smtp=smtp, label=label, key=(ip, port), smtputf8=bool(opts),
                   mail_command=mail_command, pipelining=_set_up_pipelining(smtp))


def _set_up_pipelining(smtp: aiosmtplib.SMTP) -> bool:
    """True when PIPELINING is advertised and aiosmtplib's protocol has the reply buffer
    next_reply reads (internal to aiosmtplib 3-5: without it, one command at a time);
    then replies that come early are kept."""
    proto = smtp.protocol
    usable = (smtp.supports_extension("pipelining") and hasattr(proto, "_buffer")
              and hasattr(proto, "_read_response_from_buffer") and hasattr(proto, "_response_pending")
              and hasattr(proto, "_response_waiter"))
    if usable:
        _keep_replies_read_early(proto)
    return usable


def _keep_replies_read_early(proto: object) -> None:
    """aiosmtplib drops the bytes that arrive while a parsed reply waits to be picked up
    (it expects one reply per command): with PIPELINING the next reply can come in just
    then, and would be lost (its address timed out). Those bytes go to the buffer that
    next_reply reads first."""
    received = getattr(proto, "data_received")

    def data_received(data: bytes) -> None:
        waiter = getattr(proto, "_response_waiter")
        if waiter is not None and waiter.done() and getattr(proto, "_response_pending"):
            getattr(proto, "_buffer").extend(data)
            return
        received(data)

    setattr(proto, "data_received", data_received)

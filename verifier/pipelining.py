"""PIPELINING (RFC 2920) of RCPT commands, for the prober's domain jobs (verifier/prober.py).

Where a server advertises PIPELINING, a worker sends the RCPTs of several addresses in
one write and reads the replies in order. A batch is never larger than what the
transaction, the session, the host's learned recipient limit and the session's error
budget leave room for: even when every RCPT of a batch is refused, the session stays
within ``max_errors_per_session`` (Postfix slows a client after 10 errors and drops it
after 20). A host is pipelined to only once one of its transactions went that far
without "452 too many recipients" (or its limit is known): a server with a small
recipient limit never gets a burst of 452s.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from aiosmtplib.errors import SMTPServerDisconnected, SMTPTimeoutError

from .config import VerifierSettings
from .smtp import Reply, Session, UnsafeCommand, check_argument

if TYPE_CHECKING:
    from .prober import _Item


def pipeline_room(s: VerifierSettings, sess: Session, host_limit: int | None) -> int:
    """RCPTs that may be sent at once on this session now (at least 1)."""
    room = min(s.pipeline_depth, s.rcpts_per_transaction_n - sess.tx_rcpts,
               s.rcpts_per_session - sess.rcpts, s.max_errors_per_session - sess.errors)
    if host_limit is not None:
        room = min(room, host_limit - sess.accepted)
    return max(1, room)


def _sendable(item: "_Item") -> bool:
    try:
        check_argument("RCPT address", item.rcpt.encode("utf-8" if item.syn.smtputf8 else "ascii"))
    except (UnsafeCommand, UnicodeEncodeError):
        return False
    return True


class Pipelining:
    """The pipelined path of a domain job (mixed into prober._DomainJob)."""

    p: Any  # the SmtpProber
    s: VerifierSettings
    ready: "deque[_Item]"
    in_flight: int
    wake: asyncio.Event

    if TYPE_CHECKING:  # what the job provides
        def _begin(self, item: "_Item") -> None: ...
        def _expire(self, item: "_Item", why: str, suspect: bool = False) -> None: ...
        def _dropped(self, item: "_Item", sess: Session, why: str) -> None: ...
        def _on_reply(self, item: "_Item", sess: Session, reply: Reply) -> None: ...
        def _requeue_now(self, item: "_Item") -> None: ...

    def _take_more(self, sess: Session, item: "_Item") -> "list[_Item]":
        """Addresses to pipeline after ``item`` (RFC 2920): as many as the transaction, the
        session, the host's learned limit and -- so that Postfix's error limits are never
        reached even if every one is refused -- the session's error budget leave room for."""
        limit = self.p.host_limits.get(sess.key)
        known = limit is not None or self.p.pipeline_ok.get(sess.key)  # no 452 burst to fear
        if not (sess.pipelining and known and _sendable(item)):
            return []
        room = pipeline_room(self.s, sess, limit) - 1
        more: "list[_Item]" = []
        now = time.monotonic()
        while len(more) < room and self.ready:
            nxt = self.ready[0]
            if nxt.done:
                self.ready.popleft()
                continue
            self._begin(nxt)
            if (nxt.syn.smtputf8 and not sess.smtputf8) or nxt.deadline <= now or not _sendable(nxt):
                break  # the one-at-a-time path deals with it
            self.ready.popleft()
            self.in_flight += 1
            more.append(nxt)
        return more

    async def _send_pipelined(self, sess: Session, batch: "list[_Item]") -> None:
        """One write, then the replies in order. The server takes the RCPTs in turn, so each
        reply is due one command timeout after the one before it (not after the write), and
        matters to its address only until that address's own deadline. A reply that does not
        come in a command timeout ends the session: its address times out, the addresses
        behind it never had their turn and go back to the queue."""
        try:
            sess.send_rcpts([(i.rcpt, i.syn.smtputf8) for i in batch])
        except (SMTPServerDisconnected, ConnectionError, OSError):
            for it in batch:
                self._dropped(it, sess, f"{sess.label}: connection lost at RCPT")
            return
        command_s = self.s.command_timeout_s
        for n, it in enumerate(batch):
            try:
                reply = await self._reply_for(sess, it, time.monotonic() + command_s)
            except (SMTPServerDisconnected, ConnectionError, OSError):
                for rest in batch[n:]:
                    self._dropped(rest, sess, f"{sess.label}: connection lost at RCPT")
                return
            if reply is None:
                sess.close()  # a reply given up on leaves the stream out of step
                self._expire(it, f"{sess.label}: no reply to RCPT within {command_s:.3g}s")
                for rest in reversed(batch[n + 1:]):
                    self._requeue_now(rest)
                return
            if it.done:  # its deadline passed while the reply was on its way
                self.p._alive()
                sess.dead = sess.dead or reply.code == 421  # the server is closing
                continue
            self._on_reply(it, sess, reply)

    async def _reply_for(self, sess: Session, item: "_Item", due: float) -> Reply | None:
        """The reply to ``item``'s RCPT, or None when none came by ``due``. Past the item's
        deadline the item expires, and its reply is still read (the stream stays in step)."""
        while True:
            until = due if item.done else min(due, item.deadline)
            try:
                return await sess.next_reply(max(0.0, until - time.monotonic()))
            except SMTPTimeoutError:
                if until >= due:
                    return None
                self._expire(item, f"deadline of {self.p.deadline:g}s reached")

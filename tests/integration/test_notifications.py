"""E-mail notifications (consumers/notifications/mail.py) through a real SMTP relay: a private
Postfix on loopback (scripts/mailsink) that accepts mail for any recipient and stores it in
a Maildir; every check reads what arrived there (headers and body).

A task-end mail arrives once for an opted-in account and none for an opted-out one; the
low-balance mail arrives once at each crossing of the threshold (not at every debit below);
with the relay stopped a message waits, its attempts recorded, and is sent once the relay is
back; re-reading the log from the start sends nothing twice; a 5xx fails a message at once,
a 4xx is retried; an attempt cut short by a crash is sent again (at least once); STARTTLS
with the relay's certificate checked.
"""
from __future__ import annotations

import asyncio
import email
import email.policy
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from consumers.notifications.mail import NotificationStore, Notifications, header_id, message_id
from consumers.providers import InstantProvider
from consumers.runtime import Runtime
from engine.domain.errors import InvalidCommand
from engine.service import Engine
from tests.integration.test_runtime import addresses, settings, write_csv

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "mailsink"
SENDER = "vec <notifications@vec.example>"



# --------------------------------------------------------------------------- the relay

class MailSink:
    """scripts/mailsink: a private Postfix on 127.0.0.1:PORT that stores every accepted message
    in one Maildir. Started and stopped by PID (the script's own bookkeeping)."""

    def __init__(self, state_dir: Path):
        self.dir = state_dir
        self.port: int | None = None
        self.maildir: Path | None = None
        self.cert = state_dir / "tls" / "cert.pem"

    def _run(self, *args: str) -> str:
        r = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            pytest.fail(f"scripts/mailsink {' '.join(args)} failed: {r.stdout}{r.stderr}", pytrace=False)
        return r.stdout

    def start(self) -> None:
        lines = dict(line.split("=", 1) for line in self._run(
            "start", str(self.dir), "--owner", str(os.getpid()), "--tls").splitlines() if "=" in line)
        self.port, self.maildir = int(lines["MAILSINK_PORT"]), Path(lines["MAILSINK_MAILDIR"])

    def stop(self, purge: bool = False) -> None:
        self._run("stop", str(self.dir), *(["--purge"] if purge else []))

    def messages(self, recipient: str) -> list[email.message.EmailMessage]:
        """What arrived for `recipient` (by its Delivered-To)."""
        found = []
        for sub in ("new", "cur"):
            folder = self.maildir / sub
            for path in sorted(folder.iterdir()) if folder.is_dir() else ():
                message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
                if message["Delivered-To"] == recipient:
                    found.append(message)
        return found

    def wait_for(self, recipient: str, count: int, timeout: float = 10.0) -> list:
        deadline = time.monotonic() + timeout
        while len(self.messages(recipient)) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.messages(recipient)


@pytest.fixture(scope="module")
def sink(tmp_path_factory):
    """Only the tests that send mail need it: without root or Postfix those are skipped,
    saying how to get them (scripts/test installs Postfix, so they run there); the tests
    that need no mail sink run everywhere."""
    if os.geteuid() != 0 or (shutil.which("postfix") is None and not Path("/usr/sbin/postfix").exists()):
        pytest.skip("the mail sink needs root and Postfix: run scripts/mailworld install (scripts/test does)")
    relay = MailSink(tmp_path_factory.mktemp("mailsink"))
    relay.start()
    try:
        yield relay
    finally:
        relay.stop(purge=True)


# --------------------------------------------------------------------------- helpers

def notify_settings(sink: MailSink, **overrides):
    base = dict(notify_smtp_host="127.0.0.1", notify_smtp_port=sink.port, notify_smtp_tls="none",
                notify_sender=SENDER, notify_poll_interval=0.02, notify_retry_schedule="0.2",
                notify_timeout=5)
    base.update(overrides)
    return settings(**base)


def inbox() -> str:
    """A fresh recipient per test: the sink is shared by the module."""
    return f"ops-{uuid.uuid4().hex[:10]}@acme.example"


def outbox(engine: Engine, **where) -> list[dict]:
    return NotificationStore(engine.db.projector.sql).ensure_schema().messages(with_attempts=True, **where)


async def run_until(engine: Engine, done, runtime: bool = False, linger: float = 0.0, timeout: float = 20.0):
    """The notifications loop alone (or the whole embedded runtime, instant provider) until
    `done()`, then `linger` seconds more."""
    stop = asyncio.Event()
    loop = Runtime(engine, InstantProvider()).run(stop) if runtime else Notifications(engine, engine.settings).run(stop)
    running = asyncio.create_task(loop)
    try:
        async with asyncio.timeout(timeout):
            while not done():
                if running.done():
                    await running  # it crashed: say why
                await asyncio.sleep(0.02)
            await asyncio.sleep(linger)
    finally:
        stop.set()
        await running


def bulk(engine: Engine, account: str, tmp_path: Path, emails: list[str], name: str = "") -> str:
    path = write_csv(tmp_path / f"{uuid.uuid4().hex}.csv", emails)
    return engine.create_bulk(account, path, allow_duplicate=True, name=name).task_id


def end_event(db, task_id: str):
    return next(r for r in db.events.read_stream(f"task-{task_id}")
                if r.type in ("TaskCompleted", "TaskFailed", "SystemFailure", "TaskCancelled"))


def sent(engine: Engine, count: int):
    return lambda: len(outbox(engine, status="sent")) >= count


# --------------------------------------------------------------------------- the tests

def test_a_task_end_mails_an_opted_in_account_once_and_an_opted_out_one_never(db, sink, tmp_path):
    engine = Engine(db, notify_settings(sink))
    acme, zeta = inbox(), inbox()
    for account, to, on in (("acme", acme, True), ("zeta", zeta, False)):
        engine.open_account(account)
        engine.set_notifications(account, to, on_completion=on)
    mix = addresses(3) + addresses(2, "unknown") + addresses(1, "invalid")
    task_id = bulk(engine, "acme", tmp_path, mix, name="Spring list")
    other = bulk(engine, "zeta", tmp_path, addresses(2, "other"))
    asyncio.run(run_until(engine, lambda: sent(engine, 1)() and not engine.task(other).active, runtime=True,
                          linger=0.3))

    [mail] = sink.wait_for(acme, 1)
    assert sink.messages(zeta) == []  # opted out: nothing, although its task ended too
    subject = ("Task Spring list completed: 6 addresses, 3 safe, 1 invalid, 0 risky, 2 unknown "
               "(refunded 2 credits)")
    assert mail["Subject"] == subject
    end = end_event(db, task_id)
    assert mail["Message-ID"] == header_id(message_id(str(end.event_id), "task_end"), SENDER)
    assert mail["Message-ID"] == "<" + message_id(str(end.event_id), "task_end") + "@vec.example>"
    assert mail["From"] == SENDER and mail["To"] == acme and mail["Auto-Submitted"] == "auto-generated"
    assert email.utils.parsedate_to_datetime(mail["Date"]).timestamp() == int(end.occurred_at.timestamp())
    body = mail.get_content()
    assert body.startswith(subject + ".\n") and task_id in body and "Credits:     4 used, 2 refunded" in body
    raw = mail.as_string()
    assert "example.test" not in raw and not any(a.split("@")[0] in raw for a in mix)  # never an address

    [row] = outbox(engine)
    assert (row["account_id"], row["kind"], row["task_id"], row["status"], row["attempts"]) == (
        "acme", "task_end", task_id, "sent", 1)
    assert [(a["attempt"], a["outcome"], a["code"]) for a in row["attempt_log"]] == [(1, "sent", 250)]
    assert "queued as" in row["attempt_log"][0]["detail"]  # the relay's queue id, to trace it there


def test_the_low_balance_mail_comes_once_per_crossing_and_a_second_read_sends_nothing(db, sink, tmp_path):
    engine = Engine(db, notify_settings(sink))
    to = inbox()
    engine.open_account("acme")  # 200 welcome credits
    bulk(engine, "acme", tmp_path, addresses(10, "before"))  # 190: no settings yet
    engine.set_notifications("acme", to, on_completion=False, low_balance_threshold=150)
    bulk(engine, "acme", tmp_path, addresses(30, "a"))  # 160: above
    crossing = bulk(engine, "acme", tmp_path, addresses(20, "b"))  # 140: crossed
    bulk(engine, "acme", tmp_path, addresses(5, "c"))  # 135: below already: no mail
    engine.grant_credits("acme", "payg", 100)  # 235: above again
    again = bulk(engine, "acme", tmp_path, addresses(90, "d"))  # 145: crossed again
    asyncio.run(run_until(engine, sent(engine, 2), linger=0.3))

    mails = sorted(sink.wait_for(to, 2), key=lambda m: m["Subject"])
    assert len(mails) == 2
    assert [m["Subject"] for m in mails] == [
        "Balance low: account acme has 140 credits left (below 150)",
        "Balance low: account acme has 145 credits left (below 150)"]
    debits = {r.event.task_id: r for r in db.events.read_stream("account-acme") if r.type == "CreditsDebited"}
    assert [m["Message-ID"] for m in mails] == [
        header_id(message_id(str(debits[t].event_id), "low_balance"), SENDER) for t in (crossing, again)]
    assert "160 before task " + crossing + " took 20" in mails[0].get_content()
    assert {r["task_id"] for r in outbox(engine)} == {crossing, again}

    # the consumer set back to the start of the log: it decides the same, and sends nothing new
    store = NotificationStore(db.projector.sql)
    with db.projector.sql.transaction():
        db.projector.sql.execute("UPDATE notify_checkpoint SET position = 0")
    asyncio.run(run_until(engine, lambda: store.checkpoint() == db.events.head(), linger=0.5))
    assert len(outbox(engine)) == 2 and all(r["attempts"] == 1 for r in outbox(engine))
    assert len(sink.messages(to)) == 2


def test_with_the_relay_down_a_message_waits_and_is_sent_once_it_is_back(db, sink, tmp_path):
    engine = Engine(db, notify_settings(sink))
    to = inbox()
    engine.open_account("acme")
    engine.set_notifications("acme", to, on_completion=True)
    task_id = bulk(engine, "acme", tmp_path, addresses(4))
    engine.cancel_task(task_id)  # a task end without a provider
    sink.stop()
    try:
        def deferred() -> list[dict]:
            return [a for row in outbox(engine) for a in row["attempt_log"] if a["outcome"] == "deferred"]

        asyncio.run(run_until(engine, lambda: len(deferred()) >= 3))
        [row] = outbox(engine)
        assert row["status"] == "pending" and row["last_code"] is None
        assert all("connect" in a["detail"].lower() for a in deferred())
        assert sink.messages(to) == []
    finally:
        sink.start()
    asyncio.run(run_until(engine, sent(engine, 1), linger=0.3))

    [mail] = sink.wait_for(to, 1)
    assert mail["Subject"] == (f"Task {task_id} cancelled: 4 addresses, 0 safe, 0 invalid, 0 risky, 0 unknown, "
                               f"4 not verified (refunded 4 credits)")
    [row] = outbox(engine)
    outcomes = [a["outcome"] for a in row["attempt_log"]]
    assert outcomes[-1] == "sent" and outcomes.count("deferred") >= 3
    assert set(outcomes[:-1]) <= {"deferred", "interrupted"}  # (an attempt in flight at the test's stop)
    starts = [a["started_at"] for a in row["attempt_log"]]
    assert starts == sorted(starts)


def test_a_5xx_fails_a_message_at_once_and_a_4xx_is_retried_until_the_last_attempt(db, sink, tmp_path):
    engine = Engine(db, notify_settings(sink, notify_max_attempts=3, notify_retry_schedule="0.05"))
    for account, to in (("acme", "reject@acme.example"), ("zeta", "defer@acme.example")):
        engine.open_account(account)
        engine.set_notifications(account, to, on_completion=True)
        engine.cancel_task(bulk(engine, account, tmp_path, addresses(1)))
    asyncio.run(run_until(engine, lambda: len(outbox(engine, status="failed")) == 2))

    rows = {r["account_id"]: r for r in outbox(engine)}
    rejected, deferred = rows["acme"], rows["zeta"]
    assert (rejected["status"], rejected["attempts"], rejected["last_code"]) == ("failed", 1, 550)
    assert [(a["outcome"], a["code"]) for a in rejected["attempt_log"]] == [("rejected", 550)]
    assert "5.1.1" in rejected["last_error"]
    assert (deferred["status"], deferred["attempts"], deferred["last_code"]) == ("failed", 3, 450)
    assert [(a["outcome"], a["code"]) for a in deferred["attempt_log"]] == [("deferred", 450)] * 3


def test_an_attempt_cut_short_is_sent_again_and_starttls_checks_the_relay(db, sink, tmp_path):
    engine = Engine(db, notify_settings(sink, notify_smtp_tls="starttls", notify_smtp_ca_file=str(sink.cert)))
    to = inbox()
    engine.open_account("acme")
    engine.set_notifications("acme", to, on_completion=True)
    engine.cancel_task(bulk(engine, "acme", tmp_path, addresses(2)))
    store = NotificationStore(db.projector.sql).ensure_schema()
    notifications = Notifications(engine, engine.settings)
    assert notifications.consumer.step() > 0
    [job] = store.claim_due(10, 60)  # a sender took it, then died before the relay's answer was recorded
    assert outbox(engine)[0]["attempt_log"][0]["outcome"] == "sending"
    asyncio.run(run_until(engine, sent(engine, 1), linger=0.3))

    [mail] = sink.wait_for(to, 1)
    assert "ESMTPS" in mail["Received"]  # STARTTLS, the relay's certificate checked against the CA file
    assert mail["Message-ID"] == header_id(job.message_id, SENDER)
    [row] = outbox(engine)
    assert [a["outcome"] for a in row["attempt_log"]] == ["interrupted", "sent"]


def test_settings_are_validated_and_an_unchanged_setting_appends_nothing(db):
    engine = Engine(db, settings())
    engine.open_account("acme")
    for email_, threshold in (("not-an-address", 0), ("a@b.test", 0), ("ops@acme.example", -1),
                              ("ops@acme.example", True)):
        with pytest.raises(InvalidCommand):
            engine.set_notifications("acme", email_, True, threshold)
    assert len(engine.set_notifications("acme", "Ops@Acme.Example", True, 50)) == 1
    assert engine.set_notifications("acme", "Ops@acme.example", True, 50) == []  # normalised: the same
    state = engine.account("acme")
    assert (state.notify_email, state.notify_on_completion, state.low_balance_threshold) == (
        "Ops@acme.example", True, 50)


def test_the_first_start_is_before_any_settings_and_enqueue_commits_with_the_checkpoint(db, tmp_path):
    engine = Engine(db, settings())
    engine.open_account("acme")
    bulk(engine, "acme", tmp_path, addresses(3))
    db.catch_up()
    caught_up = db.events.head()
    engine.set_notifications("acme", "ops@acme.example", on_completion=True)  # not yet in the read model
    store = NotificationStore(db.projector.sql).ensure_schema()
    assert store.start_checkpoint() == caught_up  # the read model's checkpoint: the settings lie after it
    with db.projector.sql.transaction():
        db.projector.sql.execute("DELETE FROM notify_checkpoint")
    db.catch_up()
    assert store.start_checkpoint() == caught_up  # just before the first settings the read model holds

    engine.cancel_task(bulk(engine, "acme", tmp_path, addresses(2, "more")))
    consumer = Notifications(engine, engine.settings).consumer
    real = db.projector.sql.execute

    def crash_at_checkpoint(sql, params=()):
        if sql.startswith("UPDATE notify_checkpoint"):
            raise OSError("killed")
        return real(sql, params)

    db.projector.sql.execute = crash_at_checkpoint
    try:
        with pytest.raises(OSError):
            consumer.step()
    finally:
        del db.projector.sql.execute
    assert outbox(engine) == [] and store.watched() == set()  # neither the messages nor the watch list
    before = store.checkpoint()
    consumer.step()
    assert len(outbox(engine)) == 1 and store.watched() == {"acme"} and store.checkpoint() > before


def test_on_postgresql_one_elected_leader_mails_once(pg_url, sink, tmp_path):
    """Two fleet processes' watchdog roles (no Kafka needed): one leads the notifications; the
    relay gets the task's end once; the outbox dedupes a re-read."""
    from datetime import timedelta

    from entrypoints import bootstrap
    from engine.service import utcnow
    from engine.store import open_database

    open_database(pg_url, migrate=True).close()
    config = notify_settings(sink, store=pg_url)
    dbs = [open_database(pg_url) for _ in range(2)]
    to = inbox()
    try:
        engine = Engine(dbs[0], config)
        engine.open_account("acme")
        engine.set_notifications("acme", to, on_completion=True, low_balance_threshold=199)
        task_id = bulk(engine, "acme", tmp_path, addresses(3))  # 197: crossed
        engine.cancel_task(task_id)

        async def main() -> None:
            stop = asyncio.Event()
            fleets = [asyncio.create_task(bootstrap.fleet(Engine(db, config), {"watchdog"}).run(stop)) for db in dbs]
            try:
                async with asyncio.timeout(30):
                    while len(outbox(engine, status="sent")) < 2:
                        for fleet in fleets:
                            if fleet.done():
                                await fleet
                        await asyncio.sleep(0.05)
                    await asyncio.sleep(0.5)
                    leaders = [m for m in dbs[0].fleet.members(utcnow() - timedelta(minutes=1))
                               if "notifications" in m["leads"].split(",")]
                    assert len(leaders) == 1, leaders  # one consumer and sender in the whole fleet
            finally:
                stop.set()
                await asyncio.gather(*fleets)

        asyncio.run(main())
        mails = sink.wait_for(to, 2)
        assert sorted(m["Subject"].split(":")[0] for m in mails) == ["Balance low", f"Task {task_id} cancelled"]
        store = NotificationStore(dbs[0].projector.sql)
        with dbs[0].projector.sql.transaction():
            dbs[0].projector.sql.execute("UPDATE notify_checkpoint SET position = 0")
        assert Notifications(engine, config).consumer.step() > 0
        assert len(outbox(engine)) == 2 and store.checkpoint() > 0
    finally:
        for db in dbs:
            db.close()

"""The distributed mode end to end: PostgreSQL, a Kafka-protocol broker, the relay, the
projector, the watchdog and two or more workers (`vec run --role ...` processes), against
the loopback mail world. `vec audit` and `debited == consumed + refunded` after each.
"""
from __future__ import annotations

import signal
import time

import pytest

from tests.e2e.cli import Vec, settled
from tests.e2e.fleet import CountingSmtp, fleet, fleet_env

pytestmark = [pytest.mark.mailworld, pytest.mark.postgres, pytest.mark.kafka]

CONTROL = ("relay", "projector", "watchdog")


@pytest.fixture
def vec(tmp_path, mailworld, pg_url, kafka_broker) -> Vec:
    env = {
        **mailworld.env(), **fleet_env(pg_url, kafka_broker.bootstrap),
        "VEC_PROVIDER": "smtp", "VEC_ALLOW_TEST_DOMAINS": "true", "VEC_LOOPBACK_ONLY": "true",
        "VEC_SMTP_TIMEOUT": "3", "VEC_RETRY_WINDOW": "1", "VEC_RETRY_BACKOFF": "0.5", "VEC_ADDRESS_DEADLINE": "10",
        "VEC_CHUNK_SIZE": "4", "VEC_CHUNK_WINDOW": "2", "VEC_RESULTS_FLUSH_INTERVAL": "0.2",
    }
    v = Vec(env, tmp_path)
    v.run("migrate")
    v.run("account", "open", "acme")
    v.run("credits", "grant", "acme", "--payg", "1000")
    return v


def write(path, addresses) -> str:
    path.write_text("email\n" + "\n".join(addresses) + "\n")
    return str(path)


def assert_money_settled(vec: Vec, task: dict) -> None:
    assert task["debited"] == task["consumed"] + task["refunded"] == task["total"], task
    assert vec.run("audit").returncode == 0


def test_a_mixed_bulk_on_two_workers_with_the_per_mx_limit_held_by_the_fleet(vec: Vec, tmp_path):
    mixed = {"alice@example.test": "safe", "nobody@example.test": "invalid", "full@example.test": "risky",
             "anyone@catchall.test": "risky", "alice@nx.test": "invalid", "victim@spamblock.test": "unknown",
             "alice@closed.test": "unknown"}
    counted = [f"user{i}@counted.test" for i in range(24)]
    smtp = CountingSmtp(tmp_path, ["127.0.0.10:25"], rcpt_delay=0.3)
    try:
        with fleet(vec, tmp_path) as running:
            # 8 chunks in flight over two workers: each alone would keep 2 sessions to the host
            env = {"VEC_PER_MX_CONCURRENCY": "2", "VEC_WORKERS": "4", "VEC_CHUNK_WINDOW": "8"}
            running.start("control", *CONTROL, VEC_CHUNK_WINDOW="8")
            running.start("worker-a", "worker", **env)
            running.start("worker-b", "worker", **env)
            running.wait_ready(2)
            task_id = vec.json("bulk", "acme", write(tmp_path / "mixed.csv", [*mixed, *counted]))["task_id"]
            done = vec.wait_for(task_id, lambda t: t["status"] != "processing" and t["status"] != "pending",
                                timeout=180)
        stats = smtp.stop()["127.0.0.10:25"]
    finally:
        if smtp.process.poll() is None:
            smtp.stop()
    assert done["status"] == "completed"
    results = {r["address"]: r["status"] for r in vec.lines("task", "results", task_id, "--format", "json")}
    assert {a: results[a] for a in mixed} == mixed
    assert all(results[a] == "risky" for a in counted)  # it accepts anyone: a catch-all
    assert stats["max_open"] <= 2, f"the fleet held {stats['max_open']} sessions to one MX (limit 2)"
    assert len({r["to"] for r in stats["rcpts"] if r["to"].startswith("user")}) == len(counted)
    assert_money_settled(vec, done)


def test_a_worker_killed_mid_bulk_a_broker_restart_and_a_postgres_restart_lose_nothing(
        vec: Vec, tmp_path, kafka_broker, postgres_server):
    slow = [f"u{300 + i}@slow.test" for i in range(32)]
    with fleet(vec, tmp_path) as running:
        running.start("control", *CONTROL)
        running.start("worker-a", "worker")
        running.start("worker-b", "worker")
        running.wait_ready(2)
        task_id = vec.json("bulk", "acme", write(tmp_path / "slow.csv", slow))["task_id"]
        vec.wait_for(task_id, lambda t: t["verified"] >= 4, timeout=90)
        running.kill("worker-a")  # kill -9 mid-chunk: its chunk goes to worker-b
        vec.wait_for(task_id, lambda t: t["verified"] >= 10, timeout=90)
        kafka_broker.restart()  # the broker forgets every topic and message (memory storage)
        vec.wait_for(task_id, lambda t: t["verified"] >= 16, timeout=120)
        postgres_server.restart()
        running.start("worker-c", "worker")
        done = vec.wait_for(task_id, lambda t: t["status"] not in ("pending", "processing"), timeout=180)
    assert done["status"] == "completed", done
    events = vec.lines("events", "--stream", f"task-{task_id}")
    addresses = [e["data"]["address"] for e in settled(events)]
    assert sorted(addresses) == sorted(slow)  # each address settled exactly once
    debits = [r for r in vec.lines("history", "acme", "--json") if r["type"] == "debit" and r["task_id"] == task_id]
    assert [r["amount"] for r in debits] == [-len(slow)]
    assert_money_settled(vec, done)


PER_MX = 3


def test_cancel_reaches_every_worker_within_a_second(vec: Vec, tmp_path):
    """Judged by RCPTs counted at the server, not by a tight clock: the fleet holds at most
    PER_MX sessions to the MX, each begins a RCPT every 0.25 s, and each sees the stop signal
    within VEC_STOP_POLL_INTERVAL (0.25 s). So after the cancel at most a few RCPTs per session
    may still begin (5 each leaves a loaded machine 1 s); without the signal the 3 s window
    would see about 36."""
    smtp = CountingSmtp(tmp_path, ["127.0.0.10:25"], rcpt_delay=0.25)
    addresses = [f"cancel{i}@counted.test" for i in range(80)]
    try:
        with fleet(vec, tmp_path) as running:
            env = {"VEC_PER_MX_CONCURRENCY": str(PER_MX)}
            running.start("control", *CONTROL)
            running.start("worker-a", "worker", **env)
            running.start("worker-b", "worker", **env)
            running.wait_ready(2)
            task_id = vec.json("bulk", "acme", write(tmp_path / "cancel.csv", addresses))["task_id"]
            vec.wait_for(task_id, lambda t: t["verified"] >= 8, timeout=90)
            cancelled = vec.json("task", "cancel", task_id)
            cancel_returned = time.time()
            time.sleep(3)
            after = vec.json("task", "show", task_id)
        stats = smtp.stop()["127.0.0.10:25"]
    finally:
        if smtp.process.poll() is None:
            smtp.stop()
    before = [r for r in stats["rcpts"] if r["at"] <= cancel_returned]
    late_starts = [r["at"] - cancel_returned for r in stats["rcpts"] if r["at"] > cancel_returned]
    assert len(before) >= 8  # the workers were probing when the cancel came: the count below means something
    assert len(late_starts) <= 5 * PER_MX, f"{len(late_starts)} RCPTs began after the cancel: {late_starts}"
    assert cancelled["status"] == after["status"] == "cancelled"
    assert (after["consumed"], after["refunded"]) == (cancelled["consumed"], 80 - cancelled["consumed"])
    cancel_rows = [r for r in vec.lines("history", "acme", "--type", "cancel", "--json") if r["task_id"] == task_id]
    assert len(cancel_rows) == 1
    assert_money_settled(vec, after)
    from datetime import datetime

    [appended] = [datetime.fromisoformat(e["metadata"]["occurred_at"]).timestamp()
                  for e in vec.lines("events", "--stream", f"task-{task_id}") if e["type"] == "TaskCancelled"]
    last = max(r["at"] for r in stats["rcpts"])
    print(f"cancel: last RCPT began {last - appended:+.3f}s after TaskCancelled was appended, "
          f"{last - cancel_returned:+.3f}s after the cancel command returned")


def test_no_worker_alive_past_the_grace_fails_the_task_a_shorter_gap_resumes(vec: Vec, tmp_path):
    # every RCPT takes >= 1 s: 40 addresses cannot all be verified between the first result
    # and the kill, however loaded the machine
    slow = [f"u{400 + i}@slow.test" for i in range(48)]
    with fleet(vec, tmp_path) as running:
        # the short gap is the kill, 2 s, and worker-b's start up to its first heartbeat:
        # well under 20 s even on a loaded machine (with 6 s, a loaded CI run failed it)
        running.start("control", *CONTROL, VEC_OUTAGE_GRACE="20")
        running.start("worker-a", "worker")
        running.wait_ready(1)
        short = vec.json("bulk", "acme", write(tmp_path / "short.csv", slow[:8]))["task_id"]
        vec.wait_for(short, lambda t: t["verified"] >= 1, timeout=60)
        running.kill("worker-a")
        time.sleep(2)  # shorter than the grace: the task resumes
        running.start("worker-b", "worker")
        resumed = vec.wait_for(short, lambda t: t["status"] not in ("pending", "processing"), timeout=120)
        assert resumed["status"] == "completed"
        long = vec.json("bulk", "acme", write(tmp_path / "long.csv", slow[8:]))["task_id"]
        vec.wait_for(long, lambda t: t["verified"] >= 1, timeout=60)
        running.kill("worker-b", signal.SIGKILL)
        failed = vec.wait_for(long, lambda t: t["status"] not in ("pending", "processing"), timeout=60)
    assert failed["status"] == "failed" and failed["partial_failure"] is False
    events = vec.lines("events", "--stream", f"task-{long}")
    [system] = [e for e in events if e["type"] == "SystemFailure"]
    assert system["data"]["reason"].startswith("engine_outage")
    refunds = [r for r in vec.lines("history", "acme", "--type", "refund", "--json") if r["task_id"] == long]
    assert refunds[-1]["amount"] == system["data"]["unverified_count"]
    assert_money_settled(vec, resumed)
    assert_money_settled(vec, failed)


def chunk_messages(bootstrap: str, topic: str) -> list[tuple[int, str, int]]:
    """Every work item on the chunks topic, as (partition, task_id, chunk_no)."""
    from kafka import KafkaConsumer, TopicPartition

    from consumers.fleet.messages import read_chunk_work

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        found: list[tuple[int, str, int]] = []
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < end[tp] for tp in partitions) and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                found.extend((tp.partition, *read_chunk_work(r.value)) for r in records)
        return found
    finally:
        consumer.close()


def test_chunks_queued_behind_a_busy_worker_are_verified_once(vec: Vec, tmp_path, kafka_broker):
    """VEC_WORKERS 1 below VEC_CHUNK_WINDOW 4: three of the four chunks in flight wait for
    the worker's one slot far longer than VEC_CLAIM_TTL (3 s here). They are claimed as soon
    as they are read, so the watchdog sees live claims and sends nothing again; a work item
    sent again anyway is skipped by the worker that holds it. Before: the waiting chunks
    looked unclaimed, were dispatched again and verified a second time, RCPTs included.
    The work items are on the partitions `chunk_partition` chose (given to the producer)."""
    from consumers.fleet.messages import chunk_partition

    addresses = [f"once{i}@counted.test" for i in range(24)]  # 6 chunks of 4, ~2.5 s each
    smtp = CountingSmtp(tmp_path, ["127.0.0.10:25"], rcpt_delay=0.5)
    try:
        with fleet(vec, tmp_path) as running:
            env = {"VEC_WORKERS": "1", "VEC_CHUNK_WINDOW": "4"}
            running.start("control", *CONTROL, **env)
            running.start("worker-a", "worker", **env)
            running.wait_ready(1)
            task_id = vec.json("bulk", "acme", write(tmp_path / "once.csv", addresses))["task_id"]
            done = vec.wait_for(task_id, lambda t: t["status"] not in ("pending", "processing"), timeout=180)
            control_log = running.log("control")
        stats = smtp.stop()["127.0.0.10:25"]
    finally:
        if smtp.process.poll() is None:
            smtp.stop()
    assert done["status"] == "completed", done
    from collections import Counter

    rcpts = Counter(r["to"] for r in stats["rcpts"] if r["to"].startswith("once"))
    twice = {a: n for a, n in rcpts.items() if n > 1}
    assert not twice, f"{len(twice)} addresses got RCPT more than once: {twice}"
    assert set(rcpts) == set(addresses)
    assert "dispatching it again" not in control_log  # every waiting chunk had a live claim
    results = {r["address"]: r["status"] for r in vec.lines("task", "results", task_id, "--format", "json")}
    assert results == dict.fromkeys(addresses, "risky")  # it accepts anyone: a catch-all
    assert_money_settled(vec, done)
    items = chunk_messages(kafka_broker.bootstrap, f"{vec.env['VEC_KAFKA_TOPIC_PREFIX']}.chunks")
    assert sorted(n for _, t, n in items if t == task_id) == list(range(6))
    partitions = int(vec.env["VEC_KAFKA_PARTITIONS"])
    assert all(p == chunk_partition(t, n, range(partitions)) for p, t, n in items), items

"""The CLI against the loopback mail world: real Postfix, postgrey and dnsmasq.

A mixed bulk completes with the right statuses, balances and history; a slow bulk
cancelled mid-way refunds exactly its unverified addresses in one `cancel` row while late
results cost nothing; refusals are clear; `kill -9` of `vec run` then a restart inside
the grace completes the task with nothing charged twice, and after the grace fails it
with SystemFailure refunds. `vec audit` passes after each.
"""
from __future__ import annotations

import os
import signal
import time

import pytest

from tests.e2e.cli import Vec, settled

pytestmark = pytest.mark.mailworld


def mailworld_env(mailworld, tmp_path) -> dict[str, str]:
    """The settings of a `vec` probing the mail world (shared by the mail-world e2e tests)."""
    return {
        **mailworld.env(),
        "VEC_STORE": f"sqlite:///{tmp_path}/vec.db",
        "VEC_PROVIDER": "smtp",
        "VEC_ALLOW_TEST_DOMAINS": "true",
        "VEC_LOOPBACK_ONLY": "true",
        "VEC_SMTP_TIMEOUT": "3",
        "VEC_RETRY_WINDOW": "1",
        "VEC_RETRY_BACKOFF": "0.5",
        "VEC_ADDRESS_DEADLINE": "10",
        "VEC_HEARTBEAT_INTERVAL": "0.3",
        "VEC_POLL_INTERVAL": "0.1",
    }


@pytest.fixture
def vec(tmp_path, mailworld) -> Vec:
    v = Vec(mailworld_env(mailworld, tmp_path), tmp_path)
    v.run("account", "open", "acme")
    return v


def write(path, addresses):
    path.write_text("email\n" + "\n".join(addresses) + "\n")
    return str(path)


EXPECTED = {
    "alice@example.test": ("safe", None),
    "bob@example.test": ("safe", None),
    "nobody@example.test": ("invalid", None),
    "disabled@example.test": ("invalid", None),
    "full@example.test": ("risky", "full_inbox"),
    "anyone@catchall.test": ("risky", "catch_all"),
    "alice@nullmx.test": ("invalid", None),
    "alice@nx.test": ("invalid", None),
    "alice@failover.test": ("safe", None),
    "victim@spamblock.test": ("unknown", "antispam_block"),
    "alice@greyhard.test": ("unknown", "greylisted"),
}


def test_mixed_bulk_completes_with_right_statuses_balances_and_history(vec: Vec, tmp_path):
    rows = list(EXPECTED) + ["ALICE@example.test", "not-an-address"]
    task = vec.json("bulk", "acme", write(tmp_path / "mixed.csv", rows), "--wait", timeout=180)
    unknowns = sum(1 for status, _ in EXPECTED.values() if status == "unknown")
    assert (task["status"], task["total"], task["unknown"]) == ("completed", len(EXPECTED), unknowns)
    assert (task["consumed"], task["refunded"]) == (len(EXPECTED) - unknowns, unknowns)
    results = {r["address"]: r for r in vec.lines("task", "results", task["task_id"], "--format", "json")}
    for address, (status, reason) in EXPECTED.items():
        assert results[address]["status"] == status, (address, results[address])
        if reason:
            assert results[address]["reason"] == reason, (address, results[address])
    assert vec.json("credits", "acme")["total"] == 200 - len(EXPECTED) + unknowns
    history = vec.lines("history", "acme", "--json")
    assert [r["type"] for r in history] == ["welcome", "debit"] + ["refund"] * unknowns
    assert all(r["description"] == "Credit refund: 1 credits" for r in history[2:])
    assert sum(r["amount"] for r in history) == history[-1]["balance_after"]
    single = vec.json("verify", "acme", "carol@example.test", timeout=60)
    assert (single["status"], single["task_status"]) == ("safe", "completed")
    assert vec.run("audit").returncode == 0


def test_slow_bulk_cancelled_midway_refunds_exactly_the_unverified(vec: Vec, mailworld, tmp_path):
    # each RCPT takes >= 1 s and results are recorded only when a chunk ends: the cancel comes
    # once Postfix has answered (and logged) a refusal of this bulk's, so a chunk in flight holds
    # at least that result, not yet recorded, and it arrives late (the absence check below sees it)
    vec.env.update({"VEC_CHUNK_SIZE": "10", "VEC_CHUNK_WINDOW": "2", "VEC_RESULTS_FLUSH_INTERVAL": "120"})
    postfix_log = mailworld.log_path()
    logged_before = postfix_log.stat().st_size
    with vec.engine_running(tmp_path / "engine.log"):
        slow = [f"{'nobody' if i % 5 == 1 else 'u'}{i}@slow.test" for i in range(60)]
        task_id = vec.json("bulk", "acme", write(tmp_path / "slow.csv", slow))["task_id"]
        wait_logged(postfix_log, logged_before, [f"reject: RCPT from unknown[127.0.0.1]: 550 5.1.1 <{a}>"
                                                 for a in slow if a.startswith("nobody")])
        assert vec.json("task", "show", task_id)["verified"] == 0, "recorded before the chunk ended: no test"
        assert "only a finished task" in vec.fails("task", "delete", task_id)
        cancelled = vec.json("task", "cancel", task_id)
        assert cancelled["status"] == "cancelled"
        balance_at_cancel = vec.json("credits", "acme")["total"]
        cancel_rows = vec.lines("history", "acme", "--type", "cancel", "--json")
        assert len(cancel_rows) == 1
        assert cancel_rows[0]["amount"] == 60 - cancelled["consumed"] - cancelled["unknown"]
        assert balance_at_cancel == 200 - cancelled["consumed"]
        assert "already cancelled" in vec.fails("task", "cancel", task_id)
        # in-flight chunks stop; what they finished arrives late (waited for: the check means something)
        after = vec.wait_for(task_id, lambda t: t["late"] >= 1, timeout=60)
        assert (after["verified"], after["consumed"]) == (cancelled["verified"], cancelled["consumed"])
        assert vec.json("credits", "acme")["total"] == balance_at_cancel  # late results cost nothing
        log = vec.lines("events", "--stream", f"task-{task_id}")
        late = [e for e in settled(log) if e["data"]["late"]]
        assert after["late"] == len(late)
        cancel_at = next(e["position"] for e in log if e["type"] == "TaskCancelled")
        assert all(e["position"] > cancel_at for e in late)
        assert not [e for e in log if e["type"] == "ChunkSubmitted" and e["position"] > cancel_at]
        assert len(vec.lines("task", "results", task_id, "--format", "json")) == after["verified"]
        single = vec.json("verify", "acme", "alice@example.test", timeout=60)  # the running engine does it
        assert "cannot be cancelled" in vec.fails("task", "cancel", single["task_id"])
        assert vec.run("audit").returncode == 0


def wait_logged(path, offset: int, lines: list[str], timeout_s: float = 60.0) -> str:
    """Waits until the log past `offset` holds one of `lines`; returns it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with open(path, errors="replace") as log:
            log.seek(offset)
            text = log.read()
        found = next((line for line in lines if line in text), None)
        if found is not None:
            return found
        time.sleep(0.1)
    raise AssertionError(f"none of {len(lines)} lines was logged in {timeout_s} s")


def _kill9_midway(vec: Vec, tmp_path, count: int) -> tuple[str, dict]:
    vec.env.update({"VEC_CHUNK_SIZE": "4", "VEC_CHUNK_WINDOW": "2", "VEC_RESULTS_FLUSH_INTERVAL": "0.2"})
    engine = vec.start_engine(tmp_path / "engine.log")
    slow = [f"u{100 + i}@slow.test" for i in range(count)]
    task_id = vec.json("bulk", "acme", write(tmp_path / "slow.csv", slow))["task_id"]
    row = vec.wait_for(task_id, lambda t: t["verified"] >= 2, timeout=60)
    os.kill(engine.pid, signal.SIGKILL)
    engine.wait(timeout=10)
    return task_id, row


def test_kill9_then_restart_inside_grace_completes_charging_nothing_twice(vec: Vec, tmp_path):
    vec.env["VEC_OUTAGE_GRACE"] = "60"
    task_id, at_kill = _kill9_midway(vec, tmp_path, 16)
    assert at_kill["status"] == "processing"
    with vec.engine_running(tmp_path / "engine2.log"):
        done = vec.wait_for(task_id, lambda t: t["status"] != "processing", timeout=120)
    assert (done["status"], done["total"], done["debited"]) == ("completed", 16, 16)
    assert done["consumed"] + done["refunded"] == 16
    debits = [r for r in vec.lines("history", "acme", "--json") if r["type"] == "debit"]
    assert [r["amount"] for r in debits] == [-16]
    assert vec.json("credits", "acme")["total"] == 200 - done["consumed"]
    assert vec.run("audit").returncode == 0


def test_restart_after_grace_fails_the_task_with_system_failure_refunds(vec: Vec, tmp_path):
    vec.env["VEC_OUTAGE_GRACE"] = "2"
    task_id, _ = _kill9_midway(vec, tmp_path, 16)
    time.sleep(3)
    with vec.engine_running(tmp_path / "engine2.log"):
        failed = vec.wait_for(task_id, lambda t: t["status"] != "processing", timeout=60)
    assert failed["status"] == "failed" and failed["partial_failure"] is False
    events = vec.lines("events", "--stream", f"task-{task_id}")
    system = [e for e in events if e["type"] == "SystemFailure"]
    assert len(system) == 1 and system[0]["data"]["reason"].startswith("engine_outage")
    refund_rows = [r for r in vec.lines("history", "acme", "--type", "refund", "--json") if r["task_id"] == task_id]
    assert refund_rows[-1]["amount"] == system[0]["data"]["unverified_count"] == 16 - failed["verified"]
    assert vec.json("credits", "acme")["total"] == 200 - failed["consumed"]
    assert vec.run("audit").returncode == 0


def test_definitive_results_keep_their_smtp_evidence_in_the_log(vec: Vec, tmp_path):
    rows = ["nobody@example.test", "alice@example.test", "anyone@catchall.test", "alice@closed.test"]
    task = vec.json("bulk", "acme", write(tmp_path / "evidence.csv", rows), "--wait", timeout=120)
    events = {e["data"]["address"]: e for e in settled(vec.lines("events", "--stream", f"task-{task['task_id']}"))}
    nobody = events["nobody@example.test"]["data"]
    assert nobody["reply"].startswith("550 5.1.1") and "User unknown" in nobody["reply"]
    assert nobody["mx_host"] == "mx.example.test[127.0.0.2]"
    assert events["alice@example.test"]["data"]["reply"].startswith("250")
    assert "catch_all" in events["anyone@catchall.test"]["data"]["flags"]
    closed = events["alice@closed.test"]["data"]
    assert (closed["reason"], events["alice@closed.test"]["type"]) == ("connection_refused", "ResultUnknown")
    results = {r["address"]: r for r in vec.lines("task", "results", task["task_id"], "--format", "json")}
    assert results["nobody@example.test"]["reply"] == nobody["reply"]
    assert vec.run("audit").returncode == 0


def _bulk_while_the_resolver_is_down(vec: Vec, mailworld, tmp_path, down_for: float) -> tuple[str, dict]:
    """A slow bulk whose first results arrive, then our own resolver stops for `down_for`
    seconds (or for good, if longer than the test waits)."""
    vec.env.update({"VEC_CHUNK_SIZE": "4", "VEC_CHUNK_WINDOW": "2", "VEC_RESULTS_FLUSH_INTERVAL": "0.2",
                    "VEC_PROVIDER_DEADLINE": "6", "VEC_RETRY_BACKOFF": "0.3", "VEC_DNS_CACHE_TTL": "0",
                    "VEC_DNS_TIMEOUT": "1"})
    rows = [f"u{200 + i}@slow.test" for i in range(12)] + [f"alice@example.test", "bob@example.test"]
    with vec.engine_running(tmp_path / "engine.log"):
        task_id = vec.json("bulk", "acme", write(tmp_path / "outage.csv", rows))["task_id"]
        vec.wait_for(task_id, lambda t: t["verified"] >= 1, timeout=60)
        with mailworld.dns_stopped():
            time.sleep(down_for)
        done = vec.wait_for(task_id, lambda t: t["status"] != "processing", timeout=120)
    return task_id, done


def test_our_resolver_down_and_back_inside_the_deadline_pauses_the_bulk(vec: Vec, mailworld, tmp_path):
    task_id, done = _bulk_while_the_resolver_is_down(vec, mailworld, tmp_path, down_for=2.5)
    assert (done["status"], done["total"]) == ("completed", 14)
    results = vec.lines("task", "results", task_id, "--format", "json")
    assert not [r for r in results if r["reason"] == "dns_failure"], "an outage of ours settled as Unknowns"
    assert done["unknown"] == 0 and done["consumed"] == 14
    assert vec.run("audit").returncode == 0


def test_our_resolver_down_past_the_deadline_fails_the_task_with_a_refund_row(vec: Vec, mailworld, tmp_path):
    task_id, done = _bulk_while_the_resolver_is_down(vec, mailworld, tmp_path, down_for=13)
    assert done["status"] == "failed" and done["unknown"] == 0
    events = vec.lines("events", "--stream", f"task-{task_id}")
    [system] = [e for e in events if e["type"] == "SystemFailure"]
    assert system["data"]["reason"].startswith("provider_unreachable")
    refunds = [r for r in vec.lines("history", "acme", "--json") if r["task_id"] == task_id and r["amount"] > 0]
    assert [(r["type"], r["amount"]) for r in refunds] == [("refund", 14 - done["consumed"])]
    assert vec.json("credits", "acme")["total"] == 200 - done["consumed"]
    assert vec.run("audit").returncode == 0

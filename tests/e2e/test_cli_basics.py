"""The CLI as a user meets it, on the instant provider: accounts, credits, history,
bulk uploads and their refusals, tasks, results, events, replay, rebuild and audit."""
from __future__ import annotations

import pytest

from tests.e2e.cli import Vec


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def vec(request, tmp_path) -> Vec:
    """The same CLI on both stores: the embedded SQLite file and a migrated PostgreSQL database."""
    store = f"sqlite:///{tmp_path}/vec.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    v = Vec({"VEC_STORE": store, "VEC_PROVIDER": "instant", "VEC_CHUNK_SIZE": "4"}, tmp_path)
    v.store = request.param
    if request.param == "postgresql":
        refused = v.run("account", "open", "acme", ok=False)
        assert refused.returncode == 1 and "run `vec migrate`" in refused.stderr
        v.run("migrate")
    v.run("account", "open", "acme")
    return v


@pytest.fixture
def sqlite_vec(vec) -> Vec:
    if vec.store != "sqlite":
        pytest.skip("pokes at the SQLite file itself")
    return vec


def test_account_credits_and_history(vec: Vec):
    assert vec.json("credits", "acme") == {"account": "acme", "monthly": 0, "payg": 200, "total": 200}
    vec.run("credits", "grant", "acme", "--payg", "50")
    vec.run("credits", "grant", "acme", "--monthly", "30", "--expires", "2099-01-01T00:00:00+00:00")
    assert vec.json("credits", "acme") == {"account": "acme", "monthly": 30, "payg": 250, "total": 280}
    rows = vec.lines("history", "acme", "--json")
    assert [(r["type"], r["bucket"], r["amount"], r["balance_after"]) for r in rows] == [
        ("welcome", "payg", 200, 200), ("purchase", "payg", 50, 250), ("subscription", "monthly", 30, 280)]
    assert "already open" in vec.fails("account", "open", "acme")
    assert "no such account" in vec.fails("credits", "nobody")
    assert "exactly one" in vec.fails("credits", "grant", "acme", "--payg", "5", "--monthly", "5")
    assert "future" in vec.fails("credits", "grant", "acme", "--monthly", "5", "--expires", "2001-01-01T00:00:00+00:00")
    assert "range" in vec.fails("credits", "grant", "acme", "--payg", "-3")
    # --monthly alone: this month's credits, expiring at its end (UTC), and it says so
    said = vec.run("credits", "grant", "acme", "--monthly", "5")
    assert "end of this month" in said.stderr
    assert vec.json("credits", "acme")["monthly"] == 5  # a new period: the 2099 leftover expired first
    assert vec.lines("history", "acme", "--json")[-2]["type"] == "expiry"
    for line in vec.run("history", "acme").stdout.splitlines():  # a table fits an 80-column terminal
        assert len(line) <= 80, line


def test_bulk_wait_then_results_history_delete_and_audit(vec: Vec, tmp_path):
    f = tmp_path / "list.csv"
    f.write_text("\ufeffName;E-mail\nA;a@x.test\nB;unknown1@x.test\nC;invalid@x.test\nD;A@X.TEST\nE;\n"
                 "F;\"risky@x.test\"\n\nG;b@x.test\n")
    task = vec.json("bulk", "acme", str(f), "--wait")
    assert (task["status"], task["total"], task["consumed"], task["unknown"], task["refunded"]) == (
        "completed", 5, 4, 1, 1)
    assert vec.json("credits", "acme")["total"] == 200 - 5 + 1
    results = vec.lines("task", "results", task["task_id"], "--format", "json")
    assert {r["address"]: r["status"] for r in results} == {
        "a@x.test": "safe", "unknown1@x.test": "unknown", "invalid@x.test": "invalid", "risky@x.test": "risky",
        "b@x.test": "safe"}
    csv_out = vec.run("task", "results", task["task_id"], "--status", "unknown").stdout.splitlines()
    assert csv_out[0].split(",")[:6] == ["address", "status", "reason", "detail", "tier", "reply"] and len(csv_out) == 2
    refunds = vec.lines("history", "acme", "--type", "refund", "--json")
    assert [(r["amount"], r["description"], r["task_id"]) for r in refunds] == [
        (1, "Credit refund: 1 credits", task["task_id"])]
    assert "--allow-duplicate" in vec.fails("bulk", "acme", str(f))
    again = vec.json("bulk", "acme", str(f), "--allow-duplicate")
    assert again["addresses"] == 5 and again["duplicates"] == 1 and again["rows_without_address"] == 1
    vec.run("task", "delete", task["task_id"])
    assert task["task_id"] not in {t["task_id"] for t in vec.lines("tasks", "acme", "--json")}
    assert "no such task" in vec.fails("task", "show", task["task_id"])
    assert "no such task" in vec.fails("task", "delete", task["task_id"])
    assert vec.run("audit").returncode == 0
    rebuilt = vec.json("rebuild")
    assert rebuilt["events"] == len(vec.run("events").stdout.splitlines())
    assert vec.json("audit")["ok"] is True


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"\n\n  \n", "empty"),
    (b"email\nfoo@x.test\x00\n", "binary"),
    (b"email\nfo\xe9@x.test\n", "not UTF-8"),
    (b"name\nalice\nbob\n", "no e-mail addresses"),
])
def test_bad_files_are_refused_and_change_nothing(vec: Vec, tmp_path, content, message):
    f = tmp_path / "bad.csv"
    f.write_bytes(content)
    assert message in vec.fails("bulk", "acme", str(f))
    assert vec.json("credits", "acme")["total"] == 200
    assert vec.lines("tasks", "acme", "--json") == []


def test_too_few_credits_is_refused_with_no_event(vec: Vec, tmp_path):
    f = tmp_path / "big.csv"
    f.write_text("\n".join(f"user{i}@x.test" for i in range(201)))
    assert "needs 201 credits and the balance is 200" in vec.fails("bulk", "acme", str(f))
    assert "no such file" in vec.fails("bulk", "acme", str(tmp_path / "missing.csv"))
    assert "no such account" in vec.fails("bulk", "ghost", str(f))


def test_single_verify_cancel_refusal_events_and_replay(vec: Vec):
    single = vec.json("verify", "acme", "someone@x.test")
    assert (single["status"], single["task_status"]) == ("safe", "completed")
    assert "cannot be cancelled" in vec.fails("task", "cancel", single["task_id"])
    assert "not an e-mail address" in vec.fails("verify", "acme", "nobody")
    events = vec.lines("events", "--stream", f"task-{single['task_id']}")
    assert [e["type"] for e in events] == ["TaskCreated", "ChunkSubmitted", "ResultsRecorded", "TaskCompleted"]
    assert {"position", "stream", "version", "type", "data", "metadata"} <= set(events[0])
    debit_position = next(e["position"] for e in vec.lines("events", "--stream", "account-acme")
                          if e["type"] == "CreditsDebited")
    before = vec.json("replay", "acme", "--until", str(debit_position - 1))
    after = vec.json("replay", "acme", "--until", str(debit_position))
    assert (before["total"], after["total"]) == (200, 199)
    as_of = vec.json("replay", single["task_id"], "--as-of", events[0]["metadata"]["occurred_at"])
    assert as_of["status"] == "pending"
    assert vec.json("replay", single["task_id"], "--until", str(events[-1]["position"]))["status"] == "completed"
    assert "no account or task" in vec.fails("replay", "nothing", "--until", "3")


def test_huge_amounts_are_refused_clearly_and_a_poison_event_never_wedges_reads(sqlite_vec: Vec, tmp_path):
    vec = sqlite_vec
    assert "at most" in vec.fails("credits", "grant", "acme", "--payg", str(10**20))
    assert "Traceback" not in vec.fails("credits", "grant", "acme", "--payg", str(10**20))
    # A log written before amounts were bounded: two grants whose sum no column holds.
    import sqlite3
    import uuid

    conn = sqlite3.connect(tmp_path / "vec.db")
    for version in (3, 4):
        conn.execute("INSERT INTO events (event_id, stream, version, type, schema_version, data, occurred_at)"
                     " VALUES (?, 'account-acme', ?, 'CreditsGranted', 1, ?, '2026-01-01T00:00:00+00:00')",
                     (uuid.uuid4().bytes, version, '{"amount":%d,"bucket":"payg","reason":"purchase"}' % 2**62))
    conn.execute("UPDATE streams SET version = 4 WHERE stream = 'account-acme'")
    conn.commit()
    conn.close()
    for command, named in ((("history", "acme"), "credits read model stopped before position 4"),
                           (("credits", "acme"), "the log breaks an invariant: grant of")):
        message = vec.fails(*command)
        assert named in message and "Traceback" not in message and len(message.strip().splitlines()) == 1
    assert vec.run("tasks", "acme", "--json").stdout == ""  # the other read models serve (no task yet)
    audit = vec.run("audit", ok=False)
    assert audit.returncode == 1 and "credits read model stopped" in audit.stdout
    assert "Traceback" not in audit.stdout + audit.stderr


def _holds_the_lease(conn, pid: int) -> bool:
    import sqlite3

    try:
        return conn.execute("SELECT 1 FROM engine_lease WHERE id = 1 AND pid = ?", (pid,)).fetchone() is not None
    except sqlite3.OperationalError:  # the engine has not created its tables yet
        return False


def test_vec_run_stops_loudly_when_its_heartbeat_fails(sqlite_vec: Vec, tmp_path):
    vec = sqlite_vec
    import sqlite3
    import time

    engine = vec.start_engine(tmp_path / "engine.log")
    try:
        conn = sqlite3.connect(tmp_path / "vec.db", timeout=10)
        deadline = time.monotonic() + 30  # a loaded machine may take long to start it
        while not _holds_the_lease(conn, engine.pid):
            assert engine.poll() is None and time.monotonic() < deadline, "the engine never took its lease"
            time.sleep(0.2)
        conn.execute("DROP TABLE engine_lease")  # the heartbeat can no longer be written
        conn.commit()
        conn.close()
        assert engine.wait(timeout=20) == 2
    finally:
        if engine.poll() is None:
            engine.kill()
    output = (tmp_path / "engine.log").read_text()
    assert "vec engine stopped: the engine's heartbeat failed" in output
    assert "Traceback" not in output


def test_every_event_says_who_issued_it_and_lists_filter_by_it(vec: Vec, tmp_path):
    import getpass

    me = f"cli:{getpass.getuser()}"
    f = tmp_path / "who.csv"
    f.write_text("a@x.test\nunknown1@x.test\n")
    task = vec.json("bulk", "acme", str(f), "--wait")
    actors = {(e["type"], e["metadata"]["actor"]) for e in vec.lines("events")}
    assert ("AccountOpened", me) in actors and ("TaskCreated", me) in actors and ("CreditsDebited", me) in actors
    assert ("ResultsRecorded", "engine") in actors and ("CreditsRefunded", "engine") in actors
    assert [t["task_id"] for t in vec.lines("tasks", "acme", "--by", me, "--json")] == [task["task_id"]]
    assert vec.run("tasks", "acme", "--by", "apikey:nobody", "--json").stdout == ""
    mine = vec.lines("history", "acme", "--by", me, "--json")
    assert [r["type"] for r in mine] == ["welcome", "debit"]
    assert [r["type"] for r in vec.lines("history", "acme", "--by", "engine", "--json")] == ["refund"]


@pytest.mark.parametrize("command", [("events",), ("credits", "acme"), ("audit",)])
def test_a_store_file_that_is_no_database_is_one_clear_line(tmp_path, command):
    """Seen by the fault campaign: `vec events` on a file that is not a SQLite database ended
    in a traceback (exit 1 all the same)."""
    import os
    import subprocess

    from tests.e2e.cli import VEC

    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database, just text " * 200)
    done = subprocess.run([VEC, *command], env={**os.environ, "VEC_STORE": f"sqlite:///{junk}"}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "is not a VEC store (file is not a database)" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert junk.read_bytes() == b"not a database, just text " * 200  # changed nothing

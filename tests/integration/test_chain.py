"""The hash-chained log (engine/chain.py) on both stores: an older log chained in place by the
migration, and the incremental audit (`vec audit --since-last`) catching lies appended after
its point and rewrites before it. The tamper cases of the `chain` rule itself are in
tests/integration/test_tamper_catalogue.py."""
from __future__ import annotations

import json
import uuid
import sqlite3
from datetime import timedelta

import pytest

from entrypoints.settings import EngineSettings
from engine.domain.tasks import Result
from engine.service import Engine
from engine.store import open_database
from tests.integration.test_tamper_catalogue import (
    T0,
    Clock,
    RawLog,
    forged_grant,
    make_log,
    pick,
    rechained,
    vec,
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/vec.db"
    return request.getfixturevalue("pg_url")


def audit(url: str, tmp_path, *args: str) -> dict:
    done = vec(url, tmp_path, "audit", *args, "--json")
    report = json.loads(done.stdout)
    assert done.returncode == (0 if report["ok"] else 1), done.stdout + done.stderr
    return report


def more_work(url: str) -> None:
    """After the log of make_log: a second account, and on acme an Unknown single (debit and
    refund) and a safe one: events that touch streams folded before any point."""
    db = open_database(url)
    clock = Clock()
    clock.now = T0 + timedelta(days=92)
    engine = Engine(db, EngineSettings(chunk_size=2), clock)
    try:
        engine.open_account("beta")
        for address, status in (("late1@l.test", "unknown"), ("late2@l.test", "safe")):
            task = engine.create_single("acme", address)
            engine.submit_chunk(task, 0, [address], "smtp", "primary")
            engine.record_results(task, 0, [Result(address, status, "greylisted")])
    finally:
        db.close()


def test_the_incremental_audit_checks_only_what_was_appended_since_its_point(store_url, tmp_path):
    make_log(store_url, tmp_path)
    first = audit(store_url, tmp_path, "--since-last")
    assert first["ok"] and first["mode"] == "full (no audit point yet)" and first["head"] > 60, first
    more_work(store_url)
    second = audit(store_url, tmp_path, "--since-last")
    assert second["ok"] and second["mode"] == "incremental", second
    assert second["since"] == first["head"] and second["head"] == len(RawLog(store_url).rows()), second
    assert second["tasks"] == 2 and second["accounts"] == 2, second  # only what the new events touch
    again = audit(store_url, tmp_path, "--since-last")  # nothing new: the point stays where it is
    assert again["ok"] and again["mode"] == "incremental" and again["since"] == again["head"] == second["head"]
    assert audit(store_url, tmp_path)["chain_head"] == second["chain_head"]  # the full audit agrees


def test_the_incremental_audit_folds_on_from_the_state_recorded_at_its_point(store_url, tmp_path):
    """A second debit of a task finished before the point, appended after it with a valid
    chain: only the task's recorded state (debited once already) can tell."""
    make_log(store_url, tmp_path)
    assert audit(store_url, tmp_path, "--since-last")["ok"]
    more_work(store_url)
    raw = RawLog(store_url)
    rows = raw.rows()
    debit = rows[pick(rows, "CreditsDebited")]
    rows.append({**debit, "event_id": uuid.uuid4(), "position": len(rows) + 1,
                 "version": max(r["version"] for r in rows if r["stream"] == debit["stream"]) + 1})
    raw.write(rechained(rows, len(rows) - 1))
    report = audit(store_url, tmp_path, "--since-last")
    assert report["mode"] == "incremental" and "chain" not in report["broken_rules"], report
    assert "debit" in report["broken_rules"] and "debited twice" in " ".join(report["violations"]), report


def test_the_incremental_audit_names_an_event_altered_after_its_point(store_url, tmp_path):
    make_log(store_url, tmp_path)
    point = audit(store_url, tmp_path, "--since-last")
    more_work(store_url)
    raw = RawLog(store_url)
    rows = raw.rows()
    refund = pick(rows, "CreditsRefunded", -1)
    assert rows[refund]["position"] > point["head"]
    rows[refund]["data"] = rows[refund]["data"].replace('"amount":1', '"amount":2')
    raw.write(rows)
    report = audit(store_url, tmp_path, "--since-last")
    assert report["mode"] == "incremental" and not report["ok"], report
    assert f"[chain] the chain breaks at position {rows[refund]['position']} " in " ".join(report["violations"])
    assert "refund-outstanding" in report["broken_rules"], report
    assert audit(store_url, tmp_path, "--since-last")["since"] == point["head"]  # no point recorded past a lie


def test_a_rewrite_before_the_point_sends_the_incremental_audit_back_to_a_full_one(store_url, tmp_path):
    """A forger who recomputes the whole chain leaves no `chain` violation; the point's hash
    is gone, so the audit is full and names the point and the money the forgery breaks."""
    make_log(store_url, tmp_path)
    point = audit(store_url, tmp_path, "--since-last")
    more_work(store_url)
    raw = RawLog(store_url)
    raw.write(rechained(forged_grant(raw.rows())))
    report = audit(store_url, tmp_path, "--since-last")
    assert report["mode"] == "full (the log no longer holds the last audit point's hash)", report
    assert "chain" not in report["broken_rules"] and "audit-point" in report["broken_rules"], report
    assert f"position {point['head']}" in " ".join(report["violations"]), report


def _chains(url: str) -> list[bytes]:
    return [r["chain"] for r in RawLog(url).rows()]


def test_an_older_sqlite_log_gets_its_chain_in_place_and_a_stopped_run_resumes(tmp_path):
    url = f"sqlite:///{tmp_path}/vec.db"
    make_log(url, tmp_path)
    written = _chains(url)
    assert all(written)
    conn = sqlite3.connect(tmp_path / "vec.db")
    conn.execute("ALTER TABLE events DROP COLUMN chain")  # the log as format 3 wrote it
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    assert vec(url, tmp_path, "migrate").returncode == 0
    assert _chains(url) == written  # the same hashes the appends wrote
    conn = sqlite3.connect(tmp_path / "vec.db")
    conn.execute("UPDATE events SET chain = NULL WHERE position > 30")  # a run stopped midway
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    report = audit(url, tmp_path)
    assert report["ok"] and _chains(url) == written, report
    more_work(url)
    assert audit(url, tmp_path)["ok"]


@pytest.mark.postgres
def test_an_older_postgres_log_gets_its_chain_from_vec_migrate(pg_url, tmp_path):
    make_log(pg_url, tmp_path)
    written = _chains(pg_url)
    raw = RawLog(pg_url)
    raw.sql("ALTER TABLE events DROP COLUMN chain")  # the log as schema 2 wrote it
    raw.sql("ALTER TABLE log_head DROP COLUMN chain")
    raw.sql("UPDATE vec_schema SET version = 2")
    refused = vec(pg_url, tmp_path, "audit")
    assert refused.returncode == 1 and "run `vec migrate`" in refused.stderr, refused.stderr
    assert vec(pg_url, tmp_path, "migrate").returncode == 0
    assert _chains(pg_url) == written
    assert vec(pg_url, tmp_path, "migrate").returncode == 0 and _chains(pg_url) == written  # idempotent
    more_work(pg_url)  # appends link on from the head's hash the migration set
    assert audit(pg_url, tmp_path)["ok"]

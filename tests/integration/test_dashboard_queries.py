"""The dashboard's read-model queries on both stores (SQLite and PostgreSQL): results paged on
their keyset cursor and filtered by status, result type and reason, counted by type, and the
activity read model (results and Unknowns per minute) behind the overview's charts."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from consumers.providers import InstantProvider
from consumers.runtime import Runtime
from entrypoints.settings import EngineSettings
from engine.service import Engine
from engine.store import open_database

COUNTS = {"safe": 7, "invalid": 5, "risky": 4, "unknown": 3}  # the instant provider's answer by local part


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/vec.db"
    url = request.getfixturevalue("pg_url")
    open_database(url, migrate=True).close()  # `vec migrate`
    return url


def test_results_pages_filters_counts_and_activity(store_url, tmp_path):
    settings = EngineSettings(_env_file=None, store=store_url, provider="instant", chunk_size=4)
    db = open_database(settings.store)
    try:
        engine = Engine(db, settings)
        engine.open_account("acme")
        (tmp_path / "list.csv").write_text("\n".join(f"{kind}{i}@x.test" for kind, n in COUNTS.items()
                                                     for i in range(n)) + "\n")
        since = (datetime.now(timezone.utc) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M")
        task_id = engine.create_bulk("acme", tmp_path / "list.csv").task_id
        asyncio.run(Runtime(engine, InstantProvider(), only_task=task_id).run())
        db.catch_up()
        read = db.read

        pages, after = [], None
        while True:
            rows, after = read.results_page(task_id, None, after, 5)
            pages.append([r["address"] for r in rows])
            if len(rows) < 5:
                break
        assert [len(p) for p in pages] == [5, 5, 5, 4] and len({a for p in pages for a in p}) == 19
        unknown, _ = read.results_page(task_id, "unknown", None, 50, reason="greylisted")
        assert sorted(r["address"] for r in unknown) == [f"unknown{i}@x.test" for i in range(3)]
        assert read.results_count(task_id, result="catch_all") == 4
        assert read.results_count(task_id, "safe", "catch_all") == 0
        assert read.results_count(task_id, reason="") == 19  # "" is no filter
        assert dict(read.results_by(task_id, "result")) == {"safe": 7, "invalid": 5, "catch_all": 4, "unknown": 3}
        with pytest.raises(ValueError):
            read.results_by(task_id, "address; DROP TABLE rm_results")

        minutes = read.activity(None, since)
        assert sum(r for _, r, _ in minutes) == 19 and sum(u for _, _, u in minutes) == 3
        assert read.activity("acme", since) == minutes and read.activity("nobody", since) == []
        engine.delete_task(task_id)
        db.catch_up()
        assert read.activity(None, since) == []  # a deleted task is not shown
    finally:
        db.close()

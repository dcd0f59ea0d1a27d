"""A role led once in the fleet (the projector, the watchdog, a feature such as the e-mail
notifications) whose own work meets the database going away (a PostgreSQL restart) stands
by and leads again: the process does not stop. Found by scripts/fault-campaign: two
PostgreSQL restarts 3 s apart stopped the control process."""
from __future__ import annotations

import asyncio
import logging

import psycopg
import pytest

from entrypoints import bootstrap
from entrypoints.settings import EngineSettings
from engine.service import Engine
from engine.store import open_database

pytestmark = pytest.mark.postgres


def test_a_leader_whose_database_went_away_stands_by_and_leads_again(pg_url, caplog):
    db = open_database(pg_url, migrate=True)
    try:
        engine = Engine(db, EngineSettings(_env_file=None, store=pg_url))
        fleet = bootstrap.fleet(engine, {"watchdog"})
        leads: list[int] = []
        stop = asyncio.Event()

        async def body(until) -> None:
            leads.append(len(leads) + 1)
            if len(leads) == 1:
                raise psycopg.OperationalError("terminating connection due to administrator command")
            stop.set()  # led again: done

        with caplog.at_level(logging.WARNING, logger="vec.fleet"):
            asyncio.run(asyncio.wait_for(fleet._lead("notifications", 7316099, body, stop), 30))
        fleet.call.close()
        assert leads == [1, 2]
        assert "the database went away (terminating connection" in caplog.text
    finally:
        db.close()


def test_a_crash_names_the_error_inside_a_task_group(pg_url, caplog):
    db = open_database(pg_url, migrate=True)
    try:
        engine = Engine(db, EngineSettings(_env_file=None, store=pg_url))
        fleet = bootstrap.fleet(engine, {"watchdog"})
        grouped = ExceptionGroup("unhandled errors in a TaskGroup", [ValueError("the real cause")])
        with caplog.at_level(logging.ERROR, logger="vec.fleet"):
            fleet.crash("notifications", grouped)
        fleet.call.close()
        assert "notifications failed: ValueError: the real cause" in caplog.text
    finally:
        db.close()

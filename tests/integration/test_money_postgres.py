"""The hypothesis money machine (tests/unit/test_money_properties.py) on a real PostgreSQL
store: the same rules, the same model, another backend. Each example gets a fresh database."""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from engine.store import open_database
from tests.unit.test_money_properties import MoneyMachine

pytestmark = pytest.mark.postgres


def test_the_money_rules_hold_on_postgresql(postgres_server):
    class PostgresMoneyMachine(MoneyMachine):
        def __init__(self) -> None:
            super().__init__()
            self.url = postgres_server.new_database()
            open_database(self.url, migrate=True).close()

        def teardown(self) -> None:
            try:
                assert all(db.url.startswith("postgresql://") for db in self.dbs)
                super().teardown()
            finally:
                postgres_server.drop_database(self.url)

    run_state_machine_as_test(PostgresMoneyMachine, settings=settings(
        max_examples=int(os.environ.get("VEC_MONEY_EXAMPLES_PG", "25")), stateful_step_count=30, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))

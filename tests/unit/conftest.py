"""Fixtures shared by the unit tests."""
from __future__ import annotations

import pytest


@pytest.fixture
def server_in_new_york(monkeypatch):
    """The process's local zone is not UTC: times the log keeps must not follow it."""
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()

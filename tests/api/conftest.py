"""Fixtures: `vec serve` as a real process on loopback, in both modes (tests/api/server.py).

- `embedded_api` (session): `vec serve` on a SQLite store; the engine runs in the same process.
- `distributed_api` (session): `vec migrate` on a fresh PostgreSQL database, a fleet
  (`vec run --role relay --role projector --role watchdog` and one `vec run --role worker`,
  tests/e2e/fleet.py) on the session's broker with a topic prefix of its own, waited for
  until the `workers` table shows a ready worker, and `vec serve` (the API role alone) on
  the same store.
- `api`: either of them, for tests parametrized with `BOTH_MODES` (indirect). The
  distributed mode is marked `postgres` and `kafka`; each mode's tests share one xdist
  group, so under `pytest -n` one worker starts each server, once.
- `limited_api`: a second server per mode, for what must not disturb the others: a rate
  limit of 5 requests a second per key, and single tasks that cannot finish within
  VEC_API_SINGLE_WAIT (embedded: the SMTP provider asks a DNS server that never answers;
  distributed: a store with no fleet at all, nothing runs the tasks).

Every store must pass `vec audit` once the tests that used it are done (at teardown,
before its server stops).
"""
from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import Iterator

import pytest

from tests.api.server import HOST, Api, base_env, running, start_server, stop_process
from tests.e2e.cli import Vec
from tests.e2e.fleet import Fleet, fleet_env


@pytest.fixture(scope="session")
def embedded_api(tmp_path_factory) -> Iterator[Api]:
    workdir = tmp_path_factory.mktemp("api-embedded")
    env = base_env(VEC_STORE=f"sqlite:///{workdir}/vec.db")
    with running(start_server("embedded", workdir, env), audit=True) as api:
        yield api


@contextlib.contextmanager
def distributed_store(postgres_server, kafka_broker, workdir: Path, with_fleet: bool, **extra: str):
    """A fresh, migrated database; with `with_fleet`, the fleet on it (the control roles in
    one process, one worker), ready. Everything stopped by PID and dropped afterwards."""
    postgres_server.ensure_running()
    kafka_broker.ensure_running()
    url = postgres_server.new_database()
    env = base_env(**fleet_env(url, kafka_broker.bootstrap), **extra)
    fleet = Fleet(Vec(env, workdir), workdir)
    try:
        fleet.vec.run("migrate")
        if with_fleet:
            fleet.start("control", "relay", "projector", "watchdog")
            fleet.start("worker", "worker")
            fleet.wait_ready(1, timeout=120)
        yield env, (fleet if with_fleet else None)
    finally:
        # by PID, each waited for (before its database is dropped under it)
        for process in fleet.processes.values():
            stop_process(process, timeout=30)
        with contextlib.suppress(Exception):
            postgres_server.drop_database(url)


@pytest.fixture(scope="session")
def distributed_api(tmp_path_factory, postgres_server, kafka_broker) -> Iterator[Api]:
    workdir = tmp_path_factory.mktemp("api-distributed")
    with distributed_store(postgres_server, kafka_broker, workdir, with_fleet=True) as (env, fleet):
        with running(start_server("distributed", workdir, env, fleet), audit=True) as api:
            yield api


@pytest.fixture
def api(request) -> Api:
    """The running server of the mode this test is parametrized with (BOTH_MODES, indirect)."""
    return request.getfixturevalue(f"{request.param}_api")


# ------------------------------------------------------------------------ the limited ones

LIMITED = {"VEC_API_RATE_LIMIT": "5/second", "VEC_API_SINGLE_WAIT": "0.5"}


@contextlib.contextmanager
def silent_dns() -> Iterator[str]:
    """A UDP socket on loopback that takes DNS queries and never answers one."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    try:
        yield f"{HOST}:{sock.getsockname()[1]}"
    finally:
        sock.close()


@pytest.fixture(scope="session")
def limited_embedded_api(tmp_path_factory) -> Iterator[Api]:
    workdir = tmp_path_factory.mktemp("api-embedded-limited")
    with silent_dns() as dns:
        env = base_env(VEC_STORE=f"sqlite:///{workdir}/vec.db", **LIMITED, VEC_PROVIDER="smtp",
                       VEC_DNS_SERVERS=dns, VEC_DNS_TIMEOUT="60", VEC_ADDRESS_DEADLINE="120")
        with running(start_server("embedded", workdir, env, name="limited"), audit=True) as api:
            yield api


@pytest.fixture(scope="session")
def limited_distributed_api(tmp_path_factory, postgres_server, kafka_broker) -> Iterator[Api]:
    workdir = tmp_path_factory.mktemp("api-distributed-limited")
    with distributed_store(postgres_server, kafka_broker, workdir, with_fleet=False, **LIMITED) as (env, _):
        with running(start_server("distributed", workdir, env, name="limited"), audit=True) as api:
            yield api


@pytest.fixture
def limited_api(request) -> Api:
    """The limited server of the mode this test is parametrized with (BOTH_MODES, indirect)."""
    return request.getfixturevalue(f"limited_{request.param}_api")

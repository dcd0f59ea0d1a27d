"""Running the distributed fleet as an operator would: `vec run --role ...` processes on one
PostgreSQL database and one broker, stopped by PID; and a counting SMTP server."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg

from tests.e2e.cli import VEC, Vec

REPO = Path(__file__).resolve().parents[2]


def fleet_env(pg_url: str, bootstrap: str, **extra: str) -> dict[str, str]:
    """Settings for a fleet that reacts in test time; a topic prefix of its own (one broker
    serves the whole test session)."""
    return {
        "VEC_STORE": pg_url, "VEC_KAFKA_BOOTSTRAP": bootstrap,
        "VEC_KAFKA_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}", "VEC_KAFKA_PARTITIONS": "4",
        "VEC_KAFKA_SESSION_TIMEOUT": "6", "VEC_CLAIM_TTL": "3", "VEC_WORKER_TTL": "3",
        "VEC_HEARTBEAT_INTERVAL": "0.3", "VEC_POLL_INTERVAL": "0.1", "VEC_STOP_POLL_INTERVAL": "0.2",
        **extra,
    }


class Fleet:
    def __init__(self, vec: Vec, workdir: Path):
        self.vec, self.workdir = vec, workdir
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *roles: str, **env: str) -> subprocess.Popen:
        args = [VEC, "run", *(a for role in roles for a in ("--role", role))]
        log = (self.workdir / f"{name}.log").open("ab")
        process = subprocess.Popen(args, env={**self.vec.env, **env}, cwd=self.workdir, stdout=log,
                                   stderr=subprocess.STDOUT)
        self.processes[name] = process
        return process

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes.pop(name)
        process.send_signal(sig)
        process.wait(timeout=30)

    def stop_all(self) -> None:
        stopping = [self.processes.pop(name) for name in list(self.processes)]
        for process in stopping:
            if process.poll() is None:
                process.terminate()
        for process in stopping:  # wait by PID: nothing outlives its test
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def workers_ready(self) -> int:
        with psycopg.connect(self.vec.env["VEC_STORE"], autocommit=True) as conn:
            return conn.execute("SELECT COUNT(*) FROM workers WHERE roles LIKE '%%worker%%' AND state = 'ready'"
                                " AND heartbeat > now() - interval '2 seconds'").fetchone()[0]

    def wait_ready(self, workers: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.workers_ready() < workers:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise AssertionError(f"{name} exited ({process.returncode}):\n{self.log(name)[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"fewer than {workers} workers ready after {timeout:.0f}s")
            time.sleep(0.2)


@contextlib.contextmanager
def fleet(vec: Vec, workdir: Path):
    running = Fleet(vec, workdir)
    try:
        yield running
    finally:
        running.stop_all()


class CountingSmtp:
    """scripts/counting_smtp.py on loopback addresses: sessions and RCPT times, as seen by the
    mail server itself."""

    def __init__(self, workdir: Path, listen: list[str], rcpt_delay: float):
        self.stats_file = workdir / f"smtp-{uuid.uuid4().hex[:6]}.json"
        self.process = subprocess.Popen(
            [sys.executable, str(REPO / "scripts" / "counting_smtp.py"), *(a for spec in listen for a in
             ("--listen", spec)), "--rcpt-delay", str(rcpt_delay), "--stats", str(self.stats_file)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        ready = self.process.stdout.readline()
        if "ready" not in ready:
            self.process.kill()
            raise AssertionError(f"counting_smtp did not start: {ready}{self.process.stdout.read()}")

    def stats(self) -> dict:
        return json.loads(self.stats_file.read_text())

    def stop(self) -> dict:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=10)
        return self.stats()


def pids_alive(*pids: int) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
            alive.append(pid)
        except ProcessLookupError:
            pass
    return alive

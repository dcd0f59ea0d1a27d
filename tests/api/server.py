"""`vec serve` as a real process on loopback, and how the API's tests talk to it (the
fixtures are in conftest.py).

Every process is started here and stopped by its PID. Tests never depend on one
another's data: each opens accounts of its own (`Api.new_account`).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from tests.e2e.cli import VEC, Vec
from tests.e2e.fleet import Fleet

ADMIN_TOKEN = "test-admin-" + uuid.uuid4().hex
HOST = "127.0.0.1"
CHUNK_SIZE = 2
MAX_UPLOAD_BYTES = 256 * 1024

MODES = ("embedded", "distributed")
# One xdist group per mode: under `pytest -n`, one worker runs all of a mode's tests and
# starts its server once; the distributed mode needs PostgreSQL and the broker.
MODE_MARKS = {
    "embedded": [pytest.mark.xdist_group("api-embedded")],
    "distributed": [pytest.mark.xdist_group("api-distributed"), pytest.mark.postgres, pytest.mark.kafka],
}
BOTH_MODES = [pytest.param(mode, marks=MODE_MARKS[mode], id=mode) for mode in MODES]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def base_env(**extra: str) -> dict[str, str]:
    return {
        "VEC_API_HOST": HOST, "VEC_ADMIN_TOKEN": ADMIN_TOKEN, "VEC_PROVIDER": "instant",
        "VEC_CHUNK_SIZE": str(CHUNK_SIZE), "VEC_CHUNK_WINDOW": "1", "VEC_WORKERS": "2",
        "VEC_API_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES), "VEC_API_SINGLE_WAIT": "20",
        # far above what the tests send (schemathesis sends ~1,000 requests a minute)
        "VEC_API_RATE_LIMIT": "10000/second",
        "VEC_POLL_INTERVAL": "0.05", "VEC_HEARTBEAT_INTERVAL": "0.3", "VEC_RESULTS_FLUSH_INTERVAL": "0.05",
        **extra,
    }


@dataclass
class Api:
    """One running `vec serve` and how to talk to it."""

    mode: str
    url: str
    env: dict[str, str]
    workdir: Path
    process: subprocess.Popen
    log: Path
    fleet: Fleet | None = None
    _clients: list = field(default_factory=list)
    _admin: httpx.Client | None = None

    # ---- HTTP
    def client(self, token: str | None = ADMIN_TOKEN, **kwargs) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.Client(base_url=self.url, headers=headers, timeout=60, **kwargs)
        self._clients.append(client)
        return client

    @property
    def admin(self) -> httpx.Client:
        if self._admin is None:
            self._admin = self.client()
        return self._admin

    def new_account(self, prefix: str = "acct", payg: int = 0) -> str:
        """A fresh account (200 welcome credits, plus `payg`)."""
        account = f"{prefix}-{uuid.uuid4().hex[:10]}"
        r = self.admin.post("/v1/accounts", json={"account_id": account})
        assert r.status_code == 201, r.text
        if payg:
            r = self.admin.post(f"/v1/accounts/{account}/credits", json={"bucket": "payg", "amount": payg})
            assert r.status_code == 200, r.text
        return account

    def new_key(self, account: str, scopes=("read", "write")) -> dict:
        r = self.admin.post(f"/v1/accounts/{account}/keys", json={"scopes": list(scopes)})
        assert r.status_code == 201, r.text
        return r.json()

    def head(self) -> int:
        r = self.admin.get("/healthz")
        assert r.status_code == 200, r.text
        return r.json()["head"]

    def events_after(self, after: int) -> list[dict]:
        items: list[dict] = []
        while True:
            r = self.admin.get("/v1/events", params={"after": after, "limit": 1000})
            assert r.status_code == 200, r.text
            page = r.json()["items"]
            if not page:
                return items
            items += page
            after = page[-1]["position"]

    def wait_task(self, task_id: str, client: httpx.Client | None = None, timeout: float = 60,
                  until=lambda t: t["status"] not in ("pending", "processing")) -> dict:
        client = client or self.admin
        deadline = time.monotonic() + timeout
        while True:
            r = client.get(f"/v1/tasks/{task_id}")
            assert r.status_code == 200, r.text
            if until(r.json()):
                return r.json()
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_id} never got there: {r.json()}\n{self.tail()}")
            time.sleep(0.05)

    # ---- the CLI on the same store
    def vec(self) -> Vec:
        return Vec(self.env, self.workdir)

    def tail(self, chars: int = 3000) -> str:
        text = self.log.read_text(errors="replace")[-chars:]
        if self.fleet:
            for name in self.fleet.processes:
                text += f"\n--- {name}\n" + self.fleet.log(name)[-chars:]
        return text

    def close(self) -> None:
        for client in self._clients:
            client.close()


def start_server(mode: str, workdir: Path, env: dict[str, str], fleet: Fleet | None = None,
                 name: str = "serve") -> Api:
    """`vec serve` on a free loopback port; returns once /healthz answers."""
    for _attempt in range(3):
        port = free_port()
        server_env = {**os.environ, **env, "VEC_API_PORT": str(port)}
        log = workdir / f"{name}-{port}.log"
        with log.open("ab") as out:
            process = subprocess.Popen([VEC, "serve"], env=server_env, cwd=workdir, stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        api = Api(mode, f"http://{HOST}:{port}", {**env, "VEC_API_PORT": str(port)}, workdir, process, log, fleet)
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                text = log.read_text(errors="replace")
                if "address already in use" in text.lower():
                    break  # someone took the port in between: another one
                raise AssertionError(f"vec serve exited ({process.returncode}):\n{text[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{api.url}/healthz", timeout=2).status_code == 200:
                    return api
            if time.monotonic() > deadline:
                stop_process(process)
                raise AssertionError(f"vec serve never answered /healthz:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
    raise AssertionError("no free port for vec serve after 3 tries")


def stop_process(process: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM to this PID (SIGKILL if it lingers), as an operator stops it."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextlib.contextmanager
def running(api: Api, audit: bool = False) -> Iterator[Api]:
    """Stops the server (by its PID) after the block; with `audit`, `vec audit` must first pass
    on its store, once every test that used it is done."""
    try:
        yield api
        if audit:
            done = api.vec().run("audit", "--json", ok=False, timeout=300)
            assert done.returncode == 0, \
                f"vec audit failed on the {api.mode} store after the tests:\n{done.stdout}{done.stderr}"
    finally:
        api.close()
        stop_process(api.process)


def problem(response: httpx.Response, status: int) -> dict:
    """Asserts an RFC 9457 problem of `status`; returns its body."""
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text}"
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"] and body["type"], body
    return body


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]

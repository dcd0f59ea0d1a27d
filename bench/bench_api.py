#!/usr/bin/env python3
"""Benchmarks of the HTTP API, each against a baseline run side by side.

  single   POST /v1/tasks/single through uvicorn (instant provider, embedded store, the
           engine in the same process) vs the same work in-process (create the single task
           and wait for its end on the same runtime): requests/s ratio (goal >= 0.5), p50/p99.
  history  a 100-row page of the Credits History deep in an account with N rows (1,000,000
           by default) vs its first page: p99 of each (goal: deep p99 under 20 ms).
  upload   a bulk file of N addresses (1,000,000 by default) posted to a `vec serve` process:
           the server's peak RSS during the upload (goal under 150 MB) vs an idle server's.

    .venv/bin/python bench/bench_api.py [--only single,history,upload] [--json]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
VEC = str(REPO / ".venv" / "bin" / "vec")
BENCHMARKS = ("single", "history", "upload")
ADMIN = "bench-admin-" + secrets.token_hex(16)  # vec serve refuses a weak admin token


def progress(args, message: str) -> None:
    if not args.quiet:
        print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class Server:
    """`vec serve` as a process on loopback, stopped by PID."""

    def __init__(self, tmp: Path, **env: str):
        self.port = free_port()
        self.env = {**os.environ, "VEC_STORE": f"sqlite:///{tmp}/vec.db", "VEC_PROVIDER": "instant",
                    "VEC_ADMIN_TOKEN": ADMIN, "VEC_API_PORT": str(self.port), "VEC_API_RATE_LIMIT": "1000000/second",
                    **env}
        self.log = (tmp / f"serve-{self.port}.log").open("wb")
        self.process = subprocess.Popen([VEC, "serve"], env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        import httpx

        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"vec serve did not start: {(tmp / f'serve-{self.port}.log').read_text()[-2000:]}")
            time.sleep(0.1)

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def _account_key(server: Server, account: str) -> str:
    import httpx

    admin = {"Authorization": f"Bearer {ADMIN}"}
    httpx.post(f"{server.url}/v1/accounts", json={"account_id": account}, headers=admin).raise_for_status()
    httpx.post(f"{server.url}/v1/accounts/{account}/credits", json={"bucket": "payg", "amount": 10_000_000},
               headers=admin).raise_for_status()
    return httpx.post(f"{server.url}/v1/accounts/{account}/keys", json={}, headers=admin).json()["key"]


# --- single -------------------------------------------------------------------------------

async def _api_singles(server: Server, key: str, n: int, concurrency: int) -> list[float]:
    import httpx

    latencies: list[float] = []
    queue = list(range(n))

    async def client():
        async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {key}"},
                                     timeout=30) as http:
            while queue:
                i = queue.pop()
                started = time.perf_counter()
                response = await http.post("/v1/tasks/single", json={"address": f"user{i}@example.com"})
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code}: {response.text}")
                latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies


async def _inprocess_singles(tmp: Path, n: int, concurrency: int) -> list[float]:
    """The same work without HTTP: the API's engine calls on one thread, the runtime beside."""
    from consumers.providers import InstantProvider
    from consumers.runtime import Runtime
    from entrypoints.settings import EngineSettings
    from engine.service import Engine
    from engine.store import open_database
    from entrypoints.api.deps import Services

    settings = EngineSettings(store=f"sqlite:///{tmp}/inprocess.db", provider="instant")
    runtime_engine = Engine(open_database(settings.store), settings)
    runtime = Runtime(runtime_engine, InstantProvider())
    stop = asyncio.Event()
    running = asyncio.create_task(runtime.run(stop))
    engine = Engine(open_database(settings.store), settings)
    services = Services(engine, settings, "", "1000000/second")
    await services.call(engine.open_account, "acme")
    await services.call(engine.grant_credits, "acme", "payg", 10_000_000)
    latencies: list[float] = []
    queue = list(range(n))

    async def client():
        while queue:
            i = queue.pop()
            started = time.perf_counter()
            task_id = await services.call(engine.create_single, "acme", f"user{i}@example.com")
            runtime.nudge()
            while (await services.call(engine.task, task_id)).active:
                await asyncio.sleep(0.02)
            await services.call(lambda: (engine.db.catch_up(), next(iter(engine.db.read.results(task_id)))))
            latencies.append(time.perf_counter() - started)

    try:
        await asyncio.gather(*(client() for _ in range(concurrency)))
    finally:
        stop.set()
        await running
        services.close()
    return latencies


def bench_single(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="vec-bench-api-") as scratch:
        tmp = Path(scratch)
        started = time.perf_counter()
        inprocess = asyncio.run(_inprocess_singles(tmp, args.singles, args.concurrency))
        base_rps = args.singles / (time.perf_counter() - started)
        server = Server(tmp)
        try:
            key = _account_key(server, "acme")
            started = time.perf_counter()
            api = asyncio.run(_api_singles(server, key, args.singles, args.concurrency))
            api_rps = args.singles / (time.perf_counter() - started)
        finally:
            server.stop()
    progress(args, f"single: API {api_rps:.0f} req/s, in-process {base_rps:.0f}/s")
    return {"engine": api_rps, "baseline": base_rps, "ratio": api_rps / base_rps, "unit": "requests/s",
            "p50_ms": percentile(api, 50) * 1000, "p99_ms": percentile(api, 99) * 1000,
            "baseline_p99_ms": percentile(inprocess, 99) * 1000, "concurrency": args.concurrency,
            "requests": args.singles}


# --- history --------------------------------------------------------------------------------

def _fill_history(tmp: Path, rows: int, progress_to) -> None:
    """An account with `rows` Credits History rows (grants appended straight to the log)."""
    from engine.store import open_database
    from engine.store.base import ANY
    from events import AccountOpened, CreditsGranted, NewEvent, deterministic_id

    db = open_database(f"sqlite:///{tmp}/vec.db")
    now = datetime.now(timezone.utc)
    db.events.append([NewEvent("account-deep", AccountOpened("deep"), deterministic_id("account-deep", "opened"),
                               now)], {"account-deep": 0})
    batch = 5000
    for start in range(0, rows, batch):
        db.events.append([NewEvent("account-deep", CreditsGranted("payg", 1, "purchase"), uuid.uuid4(), now)
                          for _ in range(min(batch, rows - start))], {"account-deep": ANY})
    progress_to(f"history: {rows:,} rows appended, folding the read models ...")
    db.catch_up()
    db.close()


def bench_history(args) -> dict:
    import httpx

    with tempfile.TemporaryDirectory(prefix="vec-bench-api-") as scratch:
        tmp = Path(scratch)
        _fill_history(tmp, args.history_rows, lambda m: progress(args, m))
        server = Server(tmp)
        try:
            admin = {"Authorization": f"Bearer {ADMIN}"}
            with httpx.Client(base_url=server.url, headers=admin, timeout=30) as http:
                first = http.get("/v1/accounts/deep/history", params={"limit": 100}).json()
                assert len(first["items"]) == 100
                import base64

                deep = base64.urlsafe_b64encode(json.dumps([args.history_rows - 200]).encode()).decode().rstrip("=")

                def timed(params) -> list[float]:
                    out = []
                    for _ in range(args.history_requests):
                        started = time.perf_counter()
                        response = http.get("/v1/accounts/deep/history", params=params)
                        out.append(time.perf_counter() - started)
                        assert response.status_code == 200 and len(response.json()["items"]) == 100
                    return out

                first_page = timed({"limit": 100})
                deep_page = timed({"limit": 100, "cursor": deep})
        finally:
            server.stop()
    progress(args, f"history: deep page p99 {percentile(deep_page, 99) * 1000:.1f} ms, "
                   f"first page p99 {percentile(first_page, 99) * 1000:.1f} ms")
    deep_p99, first_p99 = percentile(deep_page, 99) * 1000, percentile(first_page, 99) * 1000
    return {"engine": deep_p99, "baseline": first_p99, "ratio": deep_p99 / first_p99, "unit": "p99 ms",
            "rows": args.history_rows, "deep_p50_ms": percentile(deep_page, 50) * 1000,
            "first_p50_ms": statistics.median(first_page) * 1000, "goal_ms": 20}


# --- upload ---------------------------------------------------------------------------------

def bench_upload(args) -> dict:
    import httpx

    with tempfile.TemporaryDirectory(prefix="vec-bench-api-") as scratch:
        tmp = Path(scratch)
        csv = tmp / "big.csv"
        with csv.open("w") as f:
            f.write("email\n")
            for i in range(args.upload_addresses):
                f.write(f"user{i}@example.com\n")
        # the engine in the same process must not start verifying the task meanwhile: a tiny window
        server = Server(tmp, VEC_CHUNK_WINDOW="1", VEC_CHUNK_SIZE="1000", VEC_POLL_INTERVAL="5")
        try:
            key = _account_key(server, "acme")
            idle = server.rss_mb()

            def chunks():
                with csv.open("rb") as f:
                    while block := f.read(1 << 20):
                        yield block

            started = time.perf_counter()
            response = httpx.post(f"{server.url}/v1/tasks/bulk", content=chunks(), timeout=600,
                                  headers={"Authorization": f"Bearer {key}", "content-type": "text/csv"})
            elapsed = time.perf_counter() - started
            if response.status_code != 201:
                raise RuntimeError(f"upload: {response.status_code} {response.text}")
            peak = server.peak_rss_mb()
            size = csv.stat().st_size
        finally:
            server.stop()
    progress(args, f"upload: {args.upload_addresses:,} addresses ({size / 1e6:.0f} MB) in {elapsed:.1f}s, "
                   f"server peak RSS {peak:.0f} MB (idle {idle:.0f} MB)")
    return {"engine": peak, "baseline": idle, "ratio": peak / idle, "unit": "MB peak RSS", "goal_mb": 150,
            "addresses": args.upload_addresses, "bytes": size, "seconds": elapsed}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(BENCHMARKS))
    parser.add_argument("--singles", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--history-rows", type=int, default=1_000_000)
    parser.add_argument("--history-requests", type=int, default=300)
    parser.add_argument("--upload-addresses", type=int, default=1_000_000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = set(wanted) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; choose from {', '.join(BENCHMARKS)}")
    runners = {"single": bench_single, "history": bench_history, "upload": bench_upload}
    report = {"machine": {"cores": os.cpu_count(), "loadavg_at_start": os.getloadavg()},
              "results": {name: runners[name](args) for name in BENCHMARKS if name in wanted}}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, r in report["results"].items():
            print(f"{name:<8} {r['engine']:>10.1f} vs {r['baseline']:>10.1f} {r['unit']:<14} ratio {r['ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

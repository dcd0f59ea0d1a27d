#!/usr/bin/env python3
"""Benchmark: what traces cost (engine/tracing.py). One bulk of --addresses on the embedded
engine (SQLite, the InstantProvider, the Runtime in-process), from create_bulk to
TaskCompleted, with tracing off (the default: the baseline) and on (the SDK's
BatchSpanProcessor, as `VEC_TRACING=otlp` sets it up, with an exporter that drops the spans:
the cost of recording, not of a network). Best of --repeat alternating runs (off, on, ...),
each on a fresh database; the ratio is on/off (1.0 = free).

Usage (from the repo root, after scripts/install test):
  .venv/bin/python bench/bench_tracing.py --addresses 20000 --repeat 3
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_engine import write_csv  # noqa: E402


def one_bulk(addresses: int, chunk_size: int, tmp: Path) -> float:
    """Seconds from the upload to the task's completion of one bulk."""
    from consumers.providers import InstantProvider
    from consumers.runtime import Runtime
    from entrypoints.settings import EngineSettings
    from engine.service import Engine
    from engine.store import open_database

    path = write_csv(tmp / "bulk.csv", addresses)
    db = open_database(f"sqlite:///{tmp}/vec.db")
    try:
        engine = Engine(db, EngineSettings(_env_file=None, provider="instant", chunk_size=chunk_size))
        engine.open_account("bench")
        engine.grant_credits("bench", "payg", addresses, reason="purchase")
        db.catch_up()
        start = time.perf_counter()
        task_id = engine.create_bulk("bench", path).task_id
        asyncio.run(Runtime(engine, InstantProvider(), only_task=task_id).run())
        elapsed = time.perf_counter() - start
        assert db.read.task(task_id)["status"] == "completed"
    finally:
        db.close()
    return elapsed


class Dropped:
    """A span exporter that keeps nothing (counts what it was given)."""

    def __init__(self):
        self.spans = 0

    def export(self, spans):
        from opentelemetry.sdk.trace.export import SpanExportResult

        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self):
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def run(args) -> dict:
    from engine import tracing

    best = {"off": float("inf"), "on": float("inf")}
    spans = 0
    for _ in range(args.repeat):
        for mode in ("off", "on"):
            dropped = Dropped()
            if mode == "on":
                from opentelemetry.sdk.trace.export import BatchSpanProcessor

                tracing.install(BatchSpanProcessor(dropped), "vec-bench")
            try:
                with tempfile.TemporaryDirectory(prefix=f"vec-bench-tracing-{mode}-") as tmp:
                    elapsed = one_bulk(args.addresses, args.chunk_size, Path(tmp))
            finally:
                if mode == "on":
                    tracing.uninstall()  # flushes: every span reached the exporter
                    spans = dropped.spans
            best[mode] = min(best[mode], elapsed)
            print(f"{mode}: {args.addresses / elapsed:,.0f} addresses/s", file=sys.stderr)
    return {"addresses": args.addresses, "chunk_size": args.chunk_size,
            "off_addresses_per_s": args.addresses / best["off"], "on_addresses_per_s": args.addresses / best["on"],
            "ratio_on_off": best["off"] / best["on"], "spans_per_bulk": spans}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--addresses", type=int, default=20_000)
    parser.add_argument("--chunk-size", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(run(args), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

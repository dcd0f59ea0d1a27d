#!/usr/bin/env python3
"""Benchmark: `vec audit` (engine/audit.py) against `vec rebuild` of the same log, as ratios.

The audit folds the log into fresh read models in a scratch file and checks every rule of
docs/audit.md beside it; a rebuild folds the same log into the live read models. Their
ratio is what the rules cost over a fold. Memory is the peak traced by tracemalloc
(Python allocations) during each, in the same process.

The log is made through the engine: --singles single tasks (half Unknown, refunded) and
one bulk of --bulk addresses (chunks of 1,000, every fifth address Unknown).

With --incremental: the incremental audit (`vec audit --since-last`, engine/audit_points.py)
of a big log after a small bulk. The log (--addresses, a bulk through `vec bulk --wait` with
VEC_PROVIDER=instant) is built once in --log-dir and reused; an audit point is recorded
(a full audit the first time); then each round appends a --tail-address bulk and times the
incremental audit in process (best of --repeat) and `vec audit --since-last` as a user runs
it (wall time, process start included).

Usage (from the repo root, after scripts/install test):
  .venv/bin/python bench/bench_audit.py                      # 5,000 singles + a 50,000-address bulk
  .venv/bin/python bench/bench_audit.py --singles 20000 --bulk 0 --json
  .venv/bin/python bench/bench_audit.py --incremental --log-dir /tmp/vec-1m   # 1M addresses, then 1,000
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def make_log(url: str, singles: int, bulk: int, folder: Path) -> None:
    from entrypoints.settings import EngineSettings
    from engine.domain.tasks import Result
    from engine.service import Engine
    from engine.store import open_database

    db = open_database(url)
    engine = Engine(db, EngineSettings(chunk_size=1000))
    engine.open_account("acme")
    engine.grant_credits("acme", "payg", singles + bulk + 1, "purchase")
    for i in range(singles):
        address = f"s{i}@x{i % 50}.test"
        task = engine.create_single("acme", address)
        engine.submit_chunk(task, 0, [address], "smtp", "primary")
        engine.record_results(task, 0, [Result(address, "unknown" if i % 2 else "safe", "greylisted")])
    if bulk:
        path = folder / "bulk.csv"
        path.write_text("email\n" + "".join(f"b{i}@x{i % 50}.test\n" for i in range(bulk)))
        task = engine.create_bulk("acme", path).task_id
        for chunk_no in range(engine.task(task).total_chunks):
            addresses = engine.staged_chunk(engine.task(task), chunk_no)
            engine.submit_chunk(task, chunk_no, addresses, "smtp", "primary")
            engine.record_results(task, chunk_no, [Result(a, "safe" if i % 5 else "unknown", "greylisted")
                                                   for i, a in enumerate(addresses)])
    db.catch_up()
    db.close()


def measure(url: str, work: Callable[[Any], Any]) -> tuple[float, float]:
    """(seconds, peak MB traced) of `work(db)` on a freshly opened store."""
    from engine.store import open_database

    db = open_database(url)
    try:
        gc.collect()
        tracemalloc.start()
        started = time.perf_counter()
        work(db)
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
    finally:
        db.close()
    return seconds, peak


def audit_clean(db: Any) -> None:
    from engine.audit import audit

    report = audit(db)
    if not report.ok:
        raise SystemExit(f"the benchmark's own log broke a rule: {report.violations[:3]}")


def vec(url: str, *args: str) -> float:
    """Runs the CLI on the store; its wall time in seconds."""
    import os
    import subprocess

    started = time.perf_counter()
    subprocess.run([str(REPO / ".venv" / "bin" / "vec"), *args], check=True, capture_output=True,
                   env={**os.environ, "VEC_STORE": url, "VEC_PROVIDER": "instant"})
    return time.perf_counter() - started


def bulk_file(path: Path, count: int, prefix: str) -> Path:
    with path.open("w") as out:
        out.write("email\n")
        out.writelines(f"{prefix}{i}@d{i % 997}.test\n" for i in range(count))
    return path


def incremental(args: argparse.Namespace) -> dict[str, Any]:
    from engine.audit_points import audit_since_last
    from engine.store import open_database

    folder = Path(args.log_dir)
    folder.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{folder}/vec.db"
    result: dict[str, Any] = {"addresses": args.addresses, "tail": args.tail}
    if not (folder / "vec.db").exists():
        vec(url, "account", "open", "acme")
        vec(url, "credits", "grant", "acme", "--payg", str(args.addresses + 100 * args.tail), "--reason", "purchase")
        result["build_s"] = round(vec(url, "bulk", "acme", str(bulk_file(folder / "big.csv", args.addresses, "u")),
                                      "--wait"), 1)
    result["point_s"] = round(vec(url, "audit", "--since-last"), 2)  # full the first time, then incremental
    runs, cli = [], []
    for round_no in range(args.repeat):
        tail = bulk_file(folder / "tail.csv", args.tail, f"t{time.time_ns()}-{round_no}-")
        vec(url, "bulk", "acme", str(tail), "--wait")
        db = open_database(url)
        try:
            started = time.perf_counter()
            report = audit_since_last(db)
            runs.append(time.perf_counter() - started)
        finally:
            db.close()
        if not report.ok or report.mode != "incremental":
            raise SystemExit(f"the incremental audit did not run clean: {report.mode} {report.violations[:3]}")
        result["events"], result["checked_events"] = report.events, report.head - report.since
        vec(url, "bulk", "acme", str(tail), "--wait", "--allow-duplicate")
        cli.append(vec(url, "audit", "--since-last"))
    result["incremental_s"] = round(min(runs), 3)
    result["incremental_cli_s"] = round(min(cli), 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--singles", type=int, default=5000)
    parser.add_argument("--bulk", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--incremental", action="store_true", help="time `vec audit --since-last` (see above)")
    parser.add_argument("--addresses", type=int, default=1_000_000, help="--incremental: the big log's bulk")
    parser.add_argument("--tail", type=int, default=1000, help="--incremental: the bulk appended after the point")
    parser.add_argument("--log-dir", default="/tmp/vec-bench-audit-1m", help="--incremental: where the log is kept")
    args = parser.parse_args()
    if args.incremental:
        result = incremental(args)
        print(json.dumps(result) if args.json else "\n".join(f"{k:18} {v}" for k, v in result.items()))
        return
    with tempfile.TemporaryDirectory(prefix="vec-bench-audit-") as folder:
        url = f"sqlite:///{folder}/vec.db"
        make_log(url, args.singles, args.bulk, Path(folder))
        runs = {"audit": [], "rebuild": []}
        for _ in range(args.repeat):  # alternating, best of each
            runs["audit"].append(measure(url, audit_clean))
            runs["rebuild"].append(measure(url, lambda db: db.projector.rebuild()))
    audit_s, audit_mb = min(r[0] for r in runs["audit"]), min(r[1] for r in runs["audit"])
    rebuild_s, rebuild_mb = min(r[0] for r in runs["rebuild"]), min(r[1] for r in runs["rebuild"])
    result = {"singles": args.singles, "bulk": args.bulk, "audit_s": round(audit_s, 2),
              "rebuild_s": round(rebuild_s, 2), "time_ratio": round(audit_s / rebuild_s, 2),
              "audit_peak_mb": round(audit_mb, 1), "rebuild_peak_mb": round(rebuild_mb, 1),
              "memory_ratio": round(audit_mb / rebuild_mb, 2)}
    if args.json:
        print(json.dumps(result))
        return
    print(f"log: {args.singles} single tasks + a {args.bulk}-address bulk")
    print(f"audit   {audit_s:7.2f} s  peak {audit_mb:7.1f} MB traced")
    print(f"rebuild {rebuild_s:7.2f} s  peak {rebuild_mb:7.1f} MB traced")
    print(f"audit / rebuild: time x{audit_s / rebuild_s:.2f}, memory x{audit_mb / rebuild_mb:.2f}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The benchmarks' regression guard (scripts/test runs it, well under a minute).

Small sizes of bench/bench_engine.py and bench/bench_distributed.py, each figure a ratio
against its own baseline run side by side (so the machine's speed cancels out), checked
against bench/floors.json: a rate ratio must stay at or above its `min`, a memory ratio at
or below its `max`. The floors sit at about half (memory: twice) of the figures measured
when they were set, so noise never fails a run but a change that makes the engine twice as
slow does. A figure past its floor is measured once more before it counts (one slow run on
a busy machine is not a regression).

  .venv/bin/python bench/guard.py                      # exit 0, or 1 naming each figure past its floor
  .venv/bin/python bench/guard.py --floors FILE        # other floors (e.g. to see it fail)
  .venv/bin/python bench/guard.py --only engine        # one suite: engine | distributed
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FLOORS = REPO / "bench" / "floors.json"

# suite -> (script, its small-size arguments); the figures are results.NAME.ratio
SUITES = {
    "engine": ("bench_engine.py", ["--only", "append,rebuild,audit,export,e2e,rss", "--append-events", "20000",
                                   "--rebuild-events", "20000", "--export-addresses", "20000", "--e2e-addresses", "5000",
                                   "--rss-addresses", "200000", "--repeat", "3"]),
    "distributed": ("bench_distributed.py", ["--only", "pg_append,relay", "--pg-events", "20000",
                                             "--relay-events", "20000", "--repeat", "2"]),
}


def breaches(figures: dict[str, float], floors: dict[str, dict[str, float]]) -> list[str]:
    """Each figure past its floor, said in one line (pure: the guard's whole judgement)."""
    said = []
    for name, bound in floors.items():
        value = figures.get(name)
        if value is None:
            said.append(f"{name}: not measured (the benchmark gave no such figure)")
        elif "min" in bound and value < bound["min"]:
            said.append(f"{name}: ratio {value:.4f} is below its floor {bound['min']}")
        elif "max" in bound and value > bound["max"]:
            said.append(f"{name}: ratio {value:.4f} is above its ceiling {bound['max']}")
    return said


def measure(suite: str, only: list[str] | None = None) -> dict[str, float]:
    """Runs one suite (or only some of its figures); returns {figure: ratio}."""
    script, args = SUITES[suite]
    if only:
        args = [*args[:args.index("--only")], "--only", ",".join(only), *args[args.index("--only") + 2:]]
    done = subprocess.run([sys.executable, str(REPO / "bench" / script), *args, "--json", "--quiet"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"bench/guard: {script} failed (exit {done.returncode}): "
                         f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    return {name: float(figure["ratio"]) for name, figure in json.loads(done.stdout)["results"].items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--floors", type=Path, default=FLOORS, help="the floors (default bench/floors.json)")
    parser.add_argument("--only", choices=sorted(SUITES), help="one suite")
    args = parser.parse_args()
    try:
        floors = json.loads(args.floors.read_text())
    except (OSError, ValueError) as error:
        print(f"bench/guard: cannot read the floors {args.floors}: {error}", file=sys.stderr)
        return 2
    failed = []
    for suite in [args.only] if args.only else list(SUITES):
        started = time.monotonic()
        figures = measure(suite)
        past = [line.split(":")[0] for line in breaches(figures, floors[suite])]
        if past:  # once more, those alone: one slow run on a busy machine is not a regression
            figures.update(measure(suite, [name for name in past if name in figures]))
        said = breaches(figures, floors[suite])
        shown = ", ".join(f"{name} {value:.4f}" for name, value in sorted(figures.items()))
        print(f"bench/guard {suite}: {shown} ({time.monotonic() - started:.0f}s)"
              + ("" if said else ": every figure within its floor"))
        failed += [f"{suite} {line}" for line in said]
    for line in failed:
        print(f"bench/guard: REGRESSION {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

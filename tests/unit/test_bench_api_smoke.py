"""bench/bench_api.py still runs: each benchmark at a tiny size yields its figures (no timing asserted)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_api.py"


def test_every_api_benchmark_reports_its_figures():
    done = subprocess.run([sys.executable, str(SCRIPT), "--json", "--quiet", "--singles", "20", "--concurrency", "2",
                           "--history-rows", "500", "--history-requests", "5", "--upload-addresses", "500"],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)["results"]
    assert set(results) == {"single", "history", "upload"}
    for figures in results.values():
        assert figures["engine"] > 0 and figures["baseline"] > 0 and figures["ratio"] > 0
    assert results["single"]["p99_ms"] > 0 and results["upload"]["addresses"] == 500

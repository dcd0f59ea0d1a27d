"""bench/bench_engine.py still runs: each benchmark at a tiny size yields its figures.

No timing is asserted: the numbers of a run this small mean nothing, only their presence.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_engine.py"
TINY = ["--append-events", "1200", "--append-batch", "500", "--rebuild-events", "1500", "--rebuild-bulk", "400",
        "--rebuild-accounts", "2", "--export-addresses", "800", "--e2e-addresses", "1200", "--rss-addresses", "3000",
        "--chunk-size", "100", "--repeat", "1"]


def run_bench(tmp_path: Path, *extra: str) -> dict:
    done = subprocess.run([sys.executable, str(SCRIPT), "--json", "--quiet", "--tmp-dir", str(tmp_path), *TINY,
                           *extra], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("name", ["append", "rebuild", "audit", "export", "e2e", "rss"])
def test_each_benchmark_reports_engine_baseline_and_ratio(tmp_path, name):
    report = run_bench(tmp_path, "--only", name)
    assert set(report["results"]) == {name}
    figures = report["results"][name]
    assert figures["engine"] > 0 and figures["baseline"] > 0
    assert figures["ratio"] == pytest.approx(figures["engine"] / figures["baseline"])
    assert report["machine"]["sqlite"]
    assert list(tmp_path.iterdir()) == []  # scratch databases and files are cleaned up


def test_rss_mode_runtime_drives_the_bulk_to_its_end(tmp_path):
    figures = run_bench(tmp_path, "--only", "rss", "--rss-mode", "runtime")["results"]["rss"]
    assert figures["mode"] == "runtime" and figures["phases"]["unique"] == 3000
    # 30 chunks, each submitted and settled in a few batches of results; 300 Unknowns refunded one by one
    assert 30 * 2 + 300 < figures["phases"]["events"] < 3000


def test_unknown_benchmark_is_a_clear_error(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--only", "append,speed"], capture_output=True, text=True)
    assert done.returncode == 2 and "unknown benchmark(s) speed" in done.stderr


def test_append_breakdown_times_every_schema_variant(tmp_path):
    breakdown = run_bench(tmp_path, "--only", "append", "--breakdown")["results"]["append"]["breakdown"]
    assert set(breakdown) >= {"store_schema_without_event_id_index", "store_schema_text_event_ids",
                              "store_schema_sequential_event_ids", "store_schema_prebuilt_rows"}


def test_a_variant_whose_rewrite_matches_nothing_fails():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import bench_engine
    finally:
        sys.path.remove(str(SCRIPT.parent))
    from engine.store.sqlite import SCHEMA

    assert "event_id BLOB NOT NULL" in bench_engine.rewrite(SCHEMA, "event_id BLOB NOT NULL UNIQUE",
                                                             "event_id BLOB NOT NULL")
    with pytest.raises(bench_engine.VariantMismatch, match="matches nothing"):
        bench_engine.rewrite(SCHEMA, "event_id TEXT NOT NULL UNIQUE", "event_id TEXT")

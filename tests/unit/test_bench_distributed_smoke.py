"""bench/bench_distributed.py still runs: both benchmarks at a tiny size yield their figures,
and the servers it starts for itself are stopped and removed.

No timing is asserted: the numbers of a run this small mean nothing, only their presence.
It starts a throw-away PostgreSQL and a Tansu broker (scripts/postgres, scripts/broker),
hence the markers; VEC_TEST_PG_URL / VEC_TEST_KAFKA_BOOTSTRAP make it reuse running ones.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.postgres, pytest.mark.kafka]

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_distributed.py"
TINY = ["--pg-events", "1200", "--pg-batch", "500", "--relay-events", "700", "--relay-batch", "200",
        "--partitions", "3", "--repeat", "1"]


@pytest.fixture
def services_dir():
    """A parent for the servers' directories that the `postgres` user can reach (not
    pytest's 0700 tmp_path); it must be empty again afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="vec-bench-smoke-", dir=os.environ.get("VEC_TEST_SERVICES_TMP", "/tmp")))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def reuse() -> list[str]:
    out = []
    if os.environ.get("VEC_TEST_PG_URL"):
        out += ["--pg-admin-url", os.environ["VEC_TEST_PG_URL"]]
    if os.environ.get("VEC_TEST_KAFKA_BOOTSTRAP"):
        out += ["--bootstrap", os.environ["VEC_TEST_KAFKA_BOOTSTRAP"]]
    return out


def test_both_benchmarks_report_engine_baseline_and_ratio(services_dir):
    done = subprocess.run([sys.executable, str(SCRIPT), "--json", "--quiet", "--breakdown", "--tmp-dir",
                           str(services_dir), *TINY, *reuse()], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report["results"]) == {"pg_append", "relay"}
    for name, figures in report["results"].items():
        assert figures["engine"] > 0 and figures["baseline"] > 0, name
        assert figures["ratio"] == pytest.approx(figures["engine"] / figures["baseline"])
    append = report["results"]["pg_append"]
    assert append["events"] == 1200 and append["executemany"] > 0
    assert set(append["breakdown"]) == {"python_rows_only", "store_sql_prebuilt_rows", "bare_copy_with_store_indexes"}
    assert report["results"]["relay"]["events"] == 700
    assert report["machine"]["postgresql"] and report["machine"]["kafka_python"]
    assert list(services_dir.iterdir()) == []  # the servers it started are stopped and removed


def test_only_one_benchmark_and_an_unknown_name(services_dir):
    done = subprocess.run([sys.executable, str(SCRIPT), "--only", "pg_append,speed"], capture_output=True, text=True)
    assert done.returncode == 2 and "unknown benchmark(s) speed" in done.stderr
    done = subprocess.run([sys.executable, str(SCRIPT), "--json", "--quiet", "--only", "relay", "--tmp-dir",
                           str(services_dir), *TINY, *reuse()], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)["results"]) == {"relay"}

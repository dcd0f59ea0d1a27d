"""bench/bench_distributed.py still runs: each of its benchmarks at a tiny size yields its
figures, and everything it starts for itself (servers, fleets, counting_smtp.py) is stopped
and removed.

No timing is asserted: the numbers of a run this small mean nothing, only their presence.
It starts a throw-away PostgreSQL and a Tansu broker (scripts/postgres, scripts/broker),
hence the markers; VEC_TEST_PG_URL / VEC_TEST_KAFKA_BOOTSTRAP make it reuse running ones.
The scale_out smoke run uses the session's mail world (the `mailworld` fixture) through
--mailworld-dns: the benchmark neither starts nor stops it.
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
    assert append["addresses"] == 1200 and 3 * 4 <= append["events"] < 1200 and append["executemany"] > 0
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


SCALE_TINY = ["--scale-addresses", "8", "--domains", "2", "--rcpt-delay", "0.05", "--scale-chunk-size", "4",
              "--scale-chunk-window", "2", "--scale-workers", "2"]


@pytest.mark.mailworld  # no tighter timeout: the fixture may first wait for a world another session holds
def test_scale_out_reports_one_and_two_workers_on_the_running_mail_world(services_dir, mailworld):
    """1 worker, then 2, on 2 slowN.test domains (counting_smtp.py on 127.0.1.1-2:25) and the
    fixture's mail world: its DNS is used, it is neither started nor stopped here."""
    done = subprocess.run([sys.executable, str(SCRIPT), "--json", "--quiet", "--only", "scale_out", "--tmp-dir",
                           str(services_dir), "--partitions", "3", "--mailworld-dns", mailworld.dns_server,
                           *SCALE_TINY, *reuse()], capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report["results"]) == {"scale_out"}
    figures = report["results"]["scale_out"]
    assert figures["engine"] > 0 and figures["baseline"] > 0
    assert figures["ratio"] == pytest.approx(figures["engine"] / figures["baseline"])
    assert figures["addresses"] == 8 and figures["per_mx_limit"] == 2 and figures["audit_ok"]
    assert figures["max_open_per_mx"] >= 1 and figures["per_mx_ok"] == (figures["max_open_per_mx"] <= 2)
    for workers in ("1", "2"):
        run = figures["runs"][workers]
        assert run["status"] == "completed" and run["total"] == 8 and run["money_settled"], run
        assert run["smtp"]["addresses_probed"] >= 1 and run["smtp"]["rcpts"] >= run["smtp"]["rcpts_ours"]
        assert set(run["smtp"]["max_open_by_mx"]) == {"127.0.1.1:25", "127.0.1.2:25"}
        assert set(run["cpu_s"]) >= {"control", "worker-1", "total"}
    assert "worker-2" in figures["runs"]["2"]["cpu_s"]
    assert list(services_dir.iterdir()) == []  # servers and fleets stopped, directories removed


def test_e2e_reports_distributed_and_embedded(services_dir):
    done = subprocess.run([sys.executable, str(SCRIPT), "--json", "--quiet", "--only", "e2e", "--tmp-dir",
                           str(services_dir), "--partitions", "3", "--e2e-addresses", "300", "--e2e-chunk-size", "100",
                           *reuse()], capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)["results"]["e2e"]
    assert figures["engine"] > 0 and figures["baseline"] > 0
    assert figures["ratio"] == pytest.approx(figures["engine"] / figures["baseline"])
    assert figures["addresses"] == 300 and figures["audit_ok"] and figures["fleet_workers"] == 2
    cpu = figures["cpu_us_per_address"]  # every process of each side, per address
    if min(cpu["embedded"]) > 0:
        assert figures["cpu_per_address_ratio"] == pytest.approx(min(cpu["distributed"]) / min(cpu["embedded"]), rel=0.01)
    else:  # 300 addresses embedded can take less CPU than the clock's 10 ms tick
        assert figures["cpu_per_address_ratio"] is None
    assert "worker-2" in figures["runs"]["distributed"]["cpu_s"]
    for kind, component in (("distributed", "worker-1"), ("embedded", "engine")):
        run = figures["runs"][kind]
        assert run["status"] == "completed" and run["total"] == 300 and run["money_settled"], run
        assert run["timeline"]["chunks"] == 3 and run["timeline"]["results"] == 300
        assert component in run["cpu_s"]
    assert list(services_dir.iterdir()) == []

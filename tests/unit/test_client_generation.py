"""The typed API client (clients/python) is what scripts/client generates from the committed
docs/openapi.json: regenerated into a temporary folder and compared, file by file."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "client"


def check(*args) -> subprocess.CompletedProcess:
    return subprocess.run([SCRIPT, "check", *map(str, args)], capture_output=True, text=True, timeout=120)


def test_the_committed_client_is_what_the_committed_openapi_document_gives():
    done = check()
    assert done.returncode == 0, f"clients/python is stale: run scripts/client\n{done.stderr}"


def test_a_changed_api_makes_the_check_fail(tmp_path):
    document = json.loads((REPO / "docs" / "openapi.json").read_text())
    document["paths"]["/v1/tasks/{task_id}"]["get"]["parameters"].append(
        {"name": "verbose", "in": "query", "required": False, "schema": {"type": "boolean"}})
    (tmp_path / "openapi.json").write_text(json.dumps(document))
    done = check("--openapi", tmp_path / "openapi.json")
    assert done.returncode == 1 and "get_task_v1_tasks_task_id_get.py" in done.stderr, done.stderr


def test_the_script_writes_the_client_where_it_is_asked(tmp_path):
    out = tmp_path / "client"
    subprocess.run([SCRIPT, "--out", out], check=True, capture_output=True, timeout=120)
    assert (out / "vec_client" / "errors.py").read_text() == (REPO / "clients/python/vec_client/errors.py").read_text()
    assert check("--out", out).returncode == 0
    (out / "vec_client" / "models" / "task.py").write_text("# edited by hand\n")
    assert check("--out", out).returncode == 1

"""docs/openapi.json is the API's OpenAPI 3.1 document, committed: the running app serves
exactly it (in both modes), it is valid OpenAPI 3.1, and every /v1 operation documents its
security and its errors as problem details."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import schemathesis

from tests.api.server import BOTH_MODES, Api

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "docs" / "openapi.json"
REGENERATE = "scripts/openapi > docs/openapi.json"


def committed() -> dict:
    return json.loads(COMMITTED.read_text())


@pytest.mark.parametrize("api", BOTH_MODES, indirect=True)
def test_the_running_app_serves_the_committed_document(api: Api):
    r = api.admin.get("/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json() == committed(), f"docs/openapi.json is not what the app serves; regenerate it: {REGENERATE}"


def test_the_committed_document_is_what_scripts_openapi_prints():
    printed = subprocess.run([str(REPO / "scripts" / "openapi")], capture_output=True, text=True, timeout=120,
                             cwd=REPO)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == COMMITTED.read_text(), f"docs/openapi.json is stale; regenerate it: {REGENERATE}"


def test_the_document_is_openapi_3_1_with_security_and_problem_details():
    document = committed()
    assert document["openapi"].startswith("3.1.")
    schemathesis.openapi.from_dict(document).validate()  # against the OpenAPI 3.1 meta-schema
    assert document["components"]["securitySchemes"]["HTTPBearer"] == {
        **document["components"]["securitySchemes"]["HTTPBearer"], "type": "http", "scheme": "bearer"}
    assert {"type", "title", "status", "detail", "instance"} <= set(document["components"]["schemas"]["Problem"]
                                                                   ["required"])
    for path, operations in document["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            label = f"{method.upper()} {path}"
            assert operation.get("security") == [{"HTTPBearer": []}], label
            assert {"401", "403", "404", "422", "429"} <= set(operation["responses"]), label
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert response["content"] == {"application/problem+json": {
                        "schema": {"$ref": "#/components/schemas/Problem"}}}, f"{label} {status}"
            if method == "post":
                assert "Idempotency-Key" in [p["name"] for p in operation.get("parameters", [])], label

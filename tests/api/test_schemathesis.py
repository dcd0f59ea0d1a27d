"""Schemathesis against the running server (`vec serve`, a real uvicorn on loopback):
generated requests for every operation of /openapi.json, valid and invalid ones, as the
admin and as an account's key. Every answer must be a non-5xx that the document describes:
its status code, content type, headers and body. The embedded server gets at least 1,000
requests; the distributed one (PostgreSQL refuses what SQLite takes, a NUL in a text) a
smaller run of the same draws.

Stateless and deterministic: hypothesis derandomized (no example database), each
operation's strategy drawn on its own with a fixed budget. Some draws use the ids of real
resources (an account, its tasks) so the requests reach past the 404s.

Checks run on every response (schemathesis 4.x, `case.call_and_validate(checks=...)`):
not_a_server_error, status_code_conformance, content_type_conformance,
response_headers_conformance, response_schema_conformance, negative_data_rejection.
Left out, on purpose:
- positive_data_acceptance: the document cannot say which well-formed requests the
  money rules refuse (a grant past the balance bound, monthly credits expiring in the
  past, a bulk file without an address, too few credits: 402/422 by design).
- ignored_auth, object_level_authorization: the Authorization header is fixed per draw
  (never negated); tests/api/test_authorization.py checks every route against every kind
  of caller, with the status each must give.
- stateful links, use_after_free, ensure_resource_availability: stateless by design here;
  the stateful run below (test_stateful_sequences_...) follows the document's OpenAPI links
  with those checks, and ends with `vec audit`.
- GET /v1/events/follow is not generated: a Server-Sent Events stream never ends, so a
  generated call would never return; tests/api/test_contract.py follows it and disconnects.
"""
from __future__ import annotations

import contextlib
import itertools
import time
from dataclasses import dataclass, field

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as seed_
from hypothesis.errors import Flaky, Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup

from tests.api.server import ADMIN_TOKEN, MODE_MARKS, Api

CHECKS = [getattr(schemathesis.checks, name) for name in (
    "not_a_server_error", "status_code_conformance", "content_type_conformance", "response_headers_conformance",
    "response_schema_conformance", "negative_data_rejection")]
NOT_GENERATED = {"GET /v1/events/follow"}
# per mode: examples per operation and kind of draw, and the least number of requests sent
BUDGET = {"embedded": (22, 1000), "distributed": (6, 300)}


@dataclass
class Run:
    session: requests.Session
    requests: int = 0
    statuses: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)
    per_operation: dict = field(default_factory=dict)

    def call(self, case) -> None:
        self.requests += 1
        try:
            response = case.call_and_validate(session=self.session, checks=CHECKS, timeout=30)
            self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
            per = self.per_operation.setdefault(case.operation.label, {})
            per[response.status_code] = per.get(response.status_code, 0) + 1
        except FailureGroup as failure:  # record, and go on with the next case
            if len(self.failures) < 30:
                self.failures.append(f"{case.operation.label}:\n{failure}")


@pytest.fixture
def world(api: Api):
    """Real resources for the draws that use them: an account with credits and its key,
    a finished bulk task with Unknowns, a single task."""
    account = api.new_account("fuzz", payg=1_000_000)
    key = api.new_key(account, ("read", "write", "audit"))["key"]
    body = "email\nalice@example.com\nunknown1@example.com\nrisky@example.com\n"
    r = api.admin.post("/v1/tasks/bulk", params={"account": account}, content=body,
                       headers={"Content-Type": "text/csv"})
    assert r.status_code == 201, r.text
    bulk = r.json()["task"]["task_id"]
    r = api.admin.post("/v1/tasks/single", params={"account": account}, json={"address": "bob@example.com"})
    assert r.status_code == 200, r.text
    api.wait_task(bulk)
    return {"account": account, "key": key, "tasks": [bulk, r.json()["task"]["task_id"]]}


@pytest.mark.parametrize("api", [pytest.param(mode, marks=MODE_MARKS[mode], id=mode) for mode in BUDGET],
                         indirect=True)
def test_generated_requests_get_no_5xx_and_only_documented_answers(api: Api, world):
    examples, least = BUDGET[api.mode]
    started = time.monotonic()
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    schema.config.base_url = api.url
    with requests.Session() as session:
        run = Run(session)
        # deletions last: the real resources stay for the other operations' draws
        operations = sorted((result.ok() for result in schema.get_all_operations()),
                            key=lambda operation: operation.method.upper() == "DELETE")
        assert len(operations) >= 17
        for operation in operations:
            if operation.label in NOT_GENERATED:
                continue
            names = {p.name for p in operation.path_parameters}
            query_names = {p.name for p in operation.query}
            real_path = {name: world["tasks"][0] if name == "task_id" else world["account"] for name in names
                         if name in ("task_id", "account_id")}
            real_query = {"account": world["account"]} if "account" in query_names else {}
            draws = [(GenerationMode.POSITIVE, {}, {}, ADMIN_TOKEN), (GenerationMode.NEGATIVE, {}, {}, ADMIN_TOKEN)]
            if real_path or real_query:
                draws += [(GenerationMode.POSITIVE, real_path, real_query, ADMIN_TOKEN),
                          (GenerationMode.POSITIVE, real_path, real_query, world["key"]),
                          (GenerationMode.NEGATIVE, real_path, real_query, world["key"])]
            else:
                draws += [(GenerationMode.POSITIVE, {}, {}, world["key"])]
            for mode, path, query, token in draws:
                strategy = operation.as_strategy(generation_mode=mode, path_parameters=path or None,
                                                 query=query or None, headers={"Authorization": f"Bearer {token}"})

                @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                          phases=[Phase.explicit, Phase.generate],
                          suppress_health_check=list(HealthCheck))
                @given(case=strategy)
                def draw(case):
                    run.call(case)

                try:
                    draw()
                except Unsatisfiable:  # a negative draw with every parameter fixed: nothing left to break
                    pass
    seconds = time.monotonic() - started
    print(f"schemathesis: {run.requests} requests in {seconds:.1f}s, statuses {sorted(run.statuses.items())}")
    for label, counts in run.per_operation.items():
        print(f"  {label}: {sorted(counts.items())}")
    assert not run.failures, f"{len(run.failures)} failing cases (first ones):\n\n" + "\n\n".join(run.failures)
    assert run.requests >= least, f"only {run.requests} generated requests"
    assert not any(status >= 500 for status in run.statuses)
    r = api.admin.get("/healthz")
    assert r.status_code == 200, "the server survived"


# ------------------------------------------------------------------------------ stateful

# per mode: (scenarios per seed, steps at most in one, requests wanted, requests at least); and a
# bound on the time, so that the run stays within about a minute on a loaded machine
STATEFUL_BUDGET = {"embedded": (250, 10, 3000, 500), "distributed": (120, 10, 1500, 150)}
STATEFUL_SECONDS = 45
STATEFUL_CHECKS = CHECKS + [schemathesis.checks.use_after_free, schemathesis.checks.ensure_resource_availability]


def _links(schema) -> int:
    return sum(len(response.get("links", {})) for operations in schema.raw_schema["paths"].values()
               for operation in operations.values() for response in operation["responses"].values())


@pytest.mark.parametrize("api", [pytest.param(mode, marks=MODE_MARKS[mode], id=mode) for mode in STATEFUL_BUDGET],
                         indirect=True)
def test_stateful_sequences_along_the_documents_links_get_no_5xx_and_leave_the_money_right(api: Api):
    """Schemathesis's state machine: sequences of calls that follow the document's OpenAPI
    links (entrypoints/api/links.py: an account opened, then its credits, keys and tasks; a
    task created, then read, cancelled, erased, retried, deleted; a webhook endpoint), with
    valid and invalid data, as the admin. No 5xx, every answer as documented (and a created
    resource is there, a deleted one gone); after it, `vec audit` (the money rules over the
    whole log) passes.

    Fixed seeds one after the other, each a run of scenarios: the server's state carries over
    between scenarios, so Hypothesis finds a replay inconsistent (Flaky) sooner or later; that
    seed's run then ends and the next seed goes on, until the budget is spent. Failures are
    recorded, not raised (no shrinking)."""
    scenarios, steps, wanted, least = STATEFUL_BUDGET[api.mode]
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    schema.config.update(base_url=api.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    for generation in (schema.config.generation, schema.config.phases.stateful.generation):
        generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
    schema = schema.exclude(path="/v1/events/follow")  # an SSE stream never ends
    assert _links(schema) >= 40
    statuses: dict[int, int] = {}
    per_operation: dict[str, dict[int, int]] = {}
    failures: list[str] = []
    started = time.monotonic()

    with requests.Session() as session:
        class Sequences(schema.as_state_machine()):  # type: ignore[misc]
            def get_call_kwargs(self, case):
                return {"session": session, "timeout": 30}

            def validate_response(self, response, case, additional_checks=None, **kwargs):
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                per = per_operation.setdefault(case.operation.label, {})
                per[response.status_code] = per.get(response.status_code, 0) + 1
                try:
                    case.validate_response(response, checks=STATEFUL_CHECKS, transport_kwargs=kwargs or None)
                except FailureGroup as failure:
                    if len(failures) < 30:
                        failures.append(f"{case.operation.label}:\n{failure}")

        for seed in itertools.count():  # seeds 0, 1, ... until the budget is spent
            if sum(statuses.values()) >= wanted or time.monotonic() - started > STATEFUL_SECONDS:
                break
            with contextlib.suppress(Flaky):
                seed_(seed)(Sequences).run(settings=settings(
                    max_examples=scenarios, stateful_step_count=steps, database=None, deadline=None,
                    suppress_health_check=list(HealthCheck), phases=[Phase.generate]))
    seconds = time.monotonic() - started
    print(f"stateful schemathesis: {sum(statuses.values())} requests in {seconds:.1f}s, "
          f"statuses {sorted(statuses.items())}")
    for label, counts in sorted(per_operation.items()):
        print(f"  {label}: {sorted(counts.items())}")
    assert not failures, f"{len(failures)} failing cases (first ones):\n\n" + "\n\n".join(failures)
    assert not any(status >= 500 for status in statuses), statuses
    assert sum(statuses.values()) >= least, f"only {sum(statuses.values())} requests"
    linked = [label for label, counts in per_operation.items() if "{" in label and set(counts) & {200, 201, 204}]
    assert len(linked) >= 5, f"the links led to few real resources: {per_operation}"
    audit = api.vec().run("audit", "--json", ok=False, timeout=300)
    assert audit.returncode == 0, f"vec audit failed after the stateful run:\n{audit.stdout}{audit.stderr}"

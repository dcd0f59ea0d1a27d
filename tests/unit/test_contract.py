"""The published contract of the Kafka topics (entrypoints/contract.py, scripts/contract):
generated from the catalogue, committed under docs/, fresh, and true to what the code sends."""
from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import pytest
import yaml

import events as ev
from consumers.fleet.messages import Outcome, chunk_work
from engine.domain.tasks import Result
from engine.relay import CE_TYPE_PREFIX, EVENT_HEADERS, event_headers
from entrypoints import contract
from events.base import REGISTRY, Event
from events.jsonschema import all_event_schemas, event_schema, schema_id

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"


def test_the_committed_contract_is_what_the_code_gives():
    assert contract.stale(DOCS) == [], "the contract is stale: run scripts/contract and commit docs/"


def test_the_check_fails_when_the_catalogue_changes_and_the_files_were_not_regenerated(tmp_path, monkeypatch):
    contract.write(tmp_path)
    assert contract.stale(tmp_path) == []
    assert subprocess.run([REPO / "scripts" / "contract", "check"], cwd=REPO).returncode == 0

    @dataclasses.dataclass(frozen=True)
    class TaskPaused(Event):  # a new type in the catalogue
        reason: str

    monkeypatch.setitem(REGISTRY, "TaskPaused", TaskPaused)
    assert contract.stale(tmp_path) == ["events/TaskPaused.v1.json", "asyncapi.yaml"]
    monkeypatch.delitem(REGISTRY, "TaskPaused")

    # a new field and schema version of an existing type, with its upcaster declared
    monkeypatch.setattr(ev.TaskCancelled, "schema_version", 2)
    monkeypatch.setitem(ev.upcasters.ADDED_FIELDS, ("TaskCancelled", 1), {})
    assert contract.stale(tmp_path) == ["events/TaskCancelled.v1.json", "events/TaskCancelled.v2.json",
                                        "asyncapi.yaml"]
    monkeypatch.undo()

    (tmp_path / "events" / "Gone.v1.json").write_text("{}")  # a type that left the catalogue
    assert contract.stale(tmp_path) == ["events/Gone.v1.json"]
    assert contract.write(tmp_path) == ["events/Gone.v1.json"] and contract.stale(tmp_path) == []


def test_every_type_and_schema_version_has_a_valid_2020_12_schema():
    schemas = all_event_schemas()
    expected = {f"{name}.v{v}.json" for name, cls in REGISTRY.items() for v in range(1, cls.schema_version + 1)}
    assert set(schemas) == expected and "TaskCreated.v1.json" in schemas and "TaskCreated.v3.json" in schemas
    for name, schema in schemas.items():
        jsonschema.Draft202012Validator.check_schema(schema)
        jsonschema.Draft7Validator.check_schema(schema)  # the AsyncAPI document embeds them as draft-07
        assert schema["$id"] == schema_id(schema["properties"]["type"]["const"],
                                          schema["properties"]["metadata"]["properties"]["schema_version"]["const"])


def message(event: Event, schema_version: int | None = None, **data) -> dict:
    """A message as `vec events` prints it and the relay publishes it."""
    recorded = ev.RecordedEvent(7, "task-t1", 3, ev.deterministic_id("task-t1", "k"),
                                datetime(2026, 12, 7, 9, 0, tzinfo=timezone.utc), event, "c", None, "engine")
    shape = json.loads(json.dumps(recorded.to_json()))
    shape["data"].update(data)
    if schema_version is not None:
        shape["metadata"]["schema_version"] = schema_version
    return shape


def valid(schema: dict, instance: dict) -> bool:
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).is_valid(instance)


def test_old_schema_versions_describe_what_their_events_held():
    v1 = {"account_id": "acme", "kind": "bulk", "address_count": 2500, "sha256": "cd" * 32}
    current = ev.TaskCreated("acme", "bulk", 2500, "upload", "cd" * 32, 1000)
    old = message(current, 1)
    old["data"] = dict(v1)
    assert valid(event_schema(ev.TaskCreated, 1), old)
    assert not valid(event_schema(ev.TaskCreated, 3), old)  # v3 needs source and chunk_size
    assert not valid(event_schema(ev.TaskCreated, 1), message(current, 1))  # v1 had no chunk_size
    assert valid(event_schema(ev.TaskCreated, 3), message(current))
    # the upcaster fills in exactly what the old schema lacked
    assert ev.decode("TaskCreated", 1, v1) == current


def test_schemas_refuse_what_the_decoder_refuses():
    schema = event_schema(ev.CreditsRefunded, 1)
    good = message(ev.CreditsRefunded("t1", 3, "unknown"))
    assert valid(schema, good)
    assert not valid(schema, {**good, "data": {**good["data"], "reason": "gift"}})  # not a refund reason
    assert not valid(schema, {**good, "data": {**good["data"], "extra": 1}})  # an unknown field
    assert not valid(schema, {**good, "type": "CreditsGranted"})
    assert not valid(schema, {**good, "metadata": {**good["metadata"], "event_id": "not-a-uuid"}})
    # a field with a default may be missing (stored before it existed): the reader fills it in
    verified = message(ev.AddressVerified("a@x.test", "safe", ""))
    del verified["data"]["flags"]
    assert valid(event_schema(ev.AddressVerified, 2), verified)
    del verified["data"]["status"]
    assert not valid(event_schema(ev.AddressVerified, 2), verified)


def test_a_type_the_generator_does_not_know_is_an_error_not_a_guess():
    @dataclasses.dataclass(frozen=True)
    class Odd(Event):
        when: datetime

    with pytest.raises(TypeError, match="no JSON Schema for the field type"):
        event_schema(Odd, 1)


# --- the relay's headers: CloudEvents binary mode -------------------------------------------


def test_event_headers_are_cloudevents_binary_mode_and_all_documented():
    when = datetime(2026, 12, 7, 10, 0, 1, 250000, tzinfo=timezone.utc)
    headers = event_headers("urn:vec:p", "0190-id", "TaskCreated", 3, "task-t1", 4, 1234, when)
    assert [name for name, _ in headers] == list(EVENT_HEADERS)  # docs/asyncapi.yaml lists each
    values = {name: value.decode() for name, value in headers}
    assert values["ce_specversion"] == "1.0" and values["ce_id"] == "0190-id"
    assert values["ce_type"] == CE_TYPE_PREFIX + "TaskCreated" == "vec.TaskCreated"
    assert values["ce_time"] == "2026-12-07T10:00:01.250000+00:00"
    assert values["ce_dataschema"] == "urn:vec:event:TaskCreated:v3"
    assert (values["ce_vecposition"], values["ce_vecstream"], values["ce_vecstreamversion"]) == ("1234", "task-t1", "4")
    assert values["content-type"] == "application/json"
    for name in values:  # CloudEvents: attribute names are lowercase a-z0-9, at most 20 characters
        if name.startswith("ce_"):
            assert re.fullmatch(r"[a-z0-9]{1,20}", name[3:]), name


def test_the_asyncapi_document_names_every_event_and_the_fleets_messages_as_sent():
    document = yaml.safe_load((DOCS / contract.ASYNCAPI_FILE).read_text())
    assert document["asyncapi"] == "3.0.0"
    assert set(document["channels"]["events"]["messages"]) == set(REGISTRY)
    assert {c["address"] for c in document["channels"].values()} == {
        "{prefix}.events", "{prefix}.chunks", "{prefix}.results"}
    messages = document["components"]["messages"]
    key, value = chunk_work("t1", 4)
    assert key == b"t1/4"
    jsonschema.validate(json.loads(value), messages["ChunkWork"]["payload"], cls=jsonschema.Draft7Validator)
    result = Result("a@x.test", "risky", "catch_all", "accept-all", "primary", "250 ok", "mx.x.test", ("catch_all",))
    key, value = Outcome("results", "t1", 4, (result,)).to_message()
    sent = json.loads(value)
    schema = messages["ChunkOutcome"]["payload"]
    jsonschema.validate(sent, schema, cls=jsonschema.Draft7Validator)
    names = [item["title"] for item in schema["properties"]["results"]["items"]["items"]]
    assert dict(zip(names, sent["results"][0])) == {**result._asdict(), "flags": ["catch_all"]}
    _, failed = Outcome("fail_chunk", "t1", 4, error="provider down").to_message()
    jsonschema.validate(json.loads(failed), schema, cls=jsonschema.Draft7Validator)


def test_the_asyncapi_cli_validates_the_document():
    """The official tooling (scripts/asyncapi: @asyncapi/cli, pinned, installed by scripts/test)."""
    cli = REPO / "scripts" / "asyncapi"
    if subprocess.run([cli, "--version"], capture_output=True).returncode != 0:
        pytest.fail("the AsyncAPI CLI is not installed: run scripts/asyncapi install (scripts/test does)")
    done = subprocess.run([cli, "validate", DOCS / contract.ASYNCAPI_FILE, "--fail-severity", "warn"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "is valid" in done.stdout


def test_the_asyncapi_cli_refuses_a_broken_document(tmp_path):
    """The check above can fail: an operation with an action AsyncAPI 3 does not know."""
    broken = (DOCS / contract.ASYNCAPI_FILE).read_text().replace("action: send", "action: publish", 1)
    (tmp_path / "asyncapi.yaml").write_text(broken)
    done = subprocess.run([REPO / "scripts" / "asyncapi", "validate", tmp_path / "asyncapi.yaml"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "action" in done.stdout + done.stderr

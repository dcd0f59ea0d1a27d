"""A platform consumer of PREFIX.events, built only from the published contract (docs/events,
docs/asyncapi.yaml) and the CloudEvents SDK, reads every event of a fleet run: `vec run`
(relay, projector, watchdog, worker) on PostgreSQL and the broker, the instant provider
(no mail world). Every event round-trips: id, type, time and data equal what `vec events`
shows, each message valid against the schema its ce_dataschema names. The consumer stops
half-way and resumes as the README says: skip up to its watermark, de-duplicate by ce_id."""
from __future__ import annotations

import dataclasses
import json
import math
import time
from datetime import datetime
from pathlib import Path

import jsonschema
import pytest
import yaml
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
from cloudevents.core.formats.json import JSONFormat

from engine.store.postgres import open_postgres
from events import decode, from_wire
from tests.e2e.cli import Vec
from tests.e2e.fleet import fleet, fleet_env

pytestmark = [pytest.mark.postgres, pytest.mark.kafka]

DOCS = Path(__file__).resolve().parents[2] / "docs"
CHUNK_SIZE = 3


@pytest.fixture
def vec(tmp_path, pg_url, kafka_broker) -> Vec:
    env = {**fleet_env(pg_url, kafka_broker.bootstrap), "VEC_PROVIDER": "instant", "VEC_CHUNK_SIZE": str(CHUNK_SIZE),
           "VEC_CHUNK_WINDOW": "2", "VEC_RESULTS_FLUSH_INTERVAL": "0.2"}
    v = Vec(env, tmp_path)
    v.run("migrate")
    v.run("account", "open", "acme")
    v.run("credits", "grant", "acme", "--payg", "100")
    return v


class PlatformConsumer:
    """What the README tells a platform team to write: every message read as a CloudEvent
    (binary mode), each event applied once. Its state, kept across restarts: `watermark`
    (every position up to it applied; positions are gap-free), `above` ({position: ce_id}
    applied past it) and `ids` (those ids)."""

    def __init__(self, watermark: int = 0, above: dict[int, str] | None = None):
        self.watermark, self.above = watermark, dict(above or {})
        self.ids = set(self.above.values())
        self.applied: dict[int, object] = {}  # position -> the CloudEvent, this run

    def handle(self, record) -> None:
        event = from_binary(KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value),
                            JSONFormat())
        position = int(event.get_extension("vecposition"))
        if position <= self.watermark or event.get_id() in self.ids:
            return  # applied before: at-least-once delivery, or read again after a restart
        assert position not in self.applied, f"position {position} applied twice"
        self.applied[position] = event
        self.above[position] = event.get_id()
        self.ids.add(event.get_id())
        while self.watermark + 1 in self.above:
            self.watermark += 1
            self.ids.discard(self.above.pop(self.watermark))


def read_topic(bootstrap: str, topic: str, enough, timeout_s: float = 60.0) -> list:
    """Records of `topic` from the beginning (as a consumer that kept no offsets), until
    `enough(records)`."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    try:
        deadline = time.monotonic() + timeout_s
        while not (parts := consumer.partitions_for_topic(topic)):
            assert time.monotonic() < deadline, f"no topic {topic}"
            time.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list = []
        while not enough(records):
            assert time.monotonic() < deadline, f"{topic}: only {len(records)} records after {timeout_s:.0f}s"
            for batch in consumer.poll(timeout_ms=300).values():
                records.extend(batch)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def schemas_by_id() -> dict[str, dict]:
    return {s["$id"]: s for s in (json.loads(p.read_text()) for p in (DOCS / "events").glob("*.json"))}


def test_a_platform_consumer_reads_every_event_of_a_fleet_run_with_the_cloudevents_sdk(vec, tmp_path, kafka_broker):
    addresses = ["ann@a.test", "unknown1@a.test", "invalid1@b.test", "risky1@c.test", "bob@d.test",
                 "unknown2@e.test", "cy@f.test"]
    (tmp_path / "list.csv").write_text("email\n" + "\n".join(addresses) + "\n")
    prefix = vec.env["VEC_KAFKA_TOPIC_PREFIX"]
    with fleet(vec, tmp_path) as running:
        running.start("all-roles", "relay", "projector", "watchdog", "worker")
        running.wait_ready(1)
        task_id = vec.json("bulk", "acme", str(tmp_path / "list.csv"))["task_id"]
        done = vec.wait_for(task_id, lambda t: t["status"] not in ("pending", "processing"), timeout=120)
        assert done["status"] == "completed" and done["unknown"] == 2
        log = vec.lines("events")
        positions = {line["position"] for line in log}
        assert positions == set(range(1, len(log) + 1))
        topic = f"{prefix}.events"

        # a first run reads part of the topic and stops; a second one resumes from its state
        records = read_topic(kafka_broker.bootstrap, topic,
                             lambda got: positions <= {int(dict(r.headers)["ce_vecposition"]) for r in got})
        first = PlatformConsumer()
        for record in records[: len(records) // 2]:
            first.handle(record)
        assert 0 < len(first.applied) < len(log)
        second = PlatformConsumer(first.watermark, first.above)
        for record in records + records[:5]:  # everything from the start again, a few twice
            second.handle(record)
        chunks = read_topic(kafka_broker.bootstrap, f"{prefix}.chunks",
                            lambda got: len(got) >= math.ceil(len(addresses) / CHUNK_SIZE))
        results = read_topic(kafka_broker.bootstrap, f"{prefix}.results",
                             lambda got: sum(len(json.loads(r.value)["results"]) for r in got) >= len(addresses))

    applied = {**first.applied, **second.applied}
    assert sorted(applied) == sorted(positions) and second.watermark == len(log) and not second.above
    assert not set(first.applied) & set(second.applied)
    assert {line["type"] for line in log} >= {"AccountOpened", "CreditsGranted", "CreditsDebited", "TaskCreated",
                                              "ChunkSubmitted", "ResultsRecorded",
                                              "CreditsRefunded", "TaskCompleted"}
    schemas = schemas_by_id()
    db = open_postgres(vec.env["VEC_STORE"])
    try:
        for line in log:
            event = applied[line["position"]]
            assert event.get_id() == line["metadata"]["event_id"]
            assert event.get_type() == "vec." + line["type"]
            assert event.get_time() == datetime.fromisoformat(line["metadata"]["occurred_at"])
            assert event.get_source() == f"urn:vec:{prefix}" and event.get_specversion() == "1.0"
            assert event.get_extension("vecstream") == event.get_extension("partitionkey") == line["stream"]
            assert int(event.get_extension("vecstreamversion")) == line["version"]
            assert event.get_datacontenttype() == "application/json"
            data = event.get_data()
            jsonschema.validate(data, schemas[event.get_dataschema()], cls=jsonschema.Draft202012Validator,
                                format_checker=jsonschema.FormatChecker())
            assert opened(db, data) == line  # personal fields travel sealed; the rest as it is
    finally:
        db.close()

    # the fleet's own topics, as docs/asyncapi.yaml describes them (its schemas are draft-07)
    messages = yaml.safe_load((DOCS / "asyncapi.yaml").read_text())["components"]["messages"]
    for record in chunks:
        work = json.loads(record.value)
        jsonschema.validate(work, messages["ChunkWork"]["payload"], cls=jsonschema.Draft7Validator)
        assert record.key.decode() == f"{work['task_id']}/{work['chunk_no']}"
    for record in results:
        jsonschema.validate(json.loads(record.value), messages["ChunkOutcome"]["payload"],
                            cls=jsonschema.Draft7Validator)
        assert record.key.decode() == task_id


def opened(db, data: dict) -> dict:
    """The message's data as `vec events` shows it: personal fields opened with the task's key
    (which only the engine holds)."""
    recorded = from_wire(json.dumps(data))
    event = decode(recorded.type, recorded.event.schema_version, recorded.event.payload(),
                   db.keyring.open_for(recorded.stream))
    return json.loads(json.dumps(dataclasses.replace(recorded, event=event).to_json()))

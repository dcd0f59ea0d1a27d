"""The scheduler's reader of PREFIX.events (consumers/fleet/worker.py EventsReader) on the
real broker: a fleet upgraded from the faust scheduler agent (group PREFIX-fleet) goes on
where that group left each partition, neither reading the topic's history again nor skipping
what came meanwhile; a new fleet reads from the earliest offset."""
from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from consumers.fleet.worker import EventsReader
from entrypoints.settings import EngineSettings
from engine.relay import ensure_topics

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


async def _publish(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=b"task-t", partition=0)
    finally:
        await producer.stop()


async def _commit_as(bootstrap: str, group: str, topic: str, offset: int) -> None:
    """What the faust scheduler agent of an older fleet left: its group's committed offset."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(offset, "")})
    finally:
        await consumer.stop()


async def _first_batch(settings: EngineSettings, legacy: str | None) -> list[bytes]:
    reader = EventsReader(settings, f"{settings.kafka_topic_prefix}-fleet-scheduler", lambda: None,
                          legacy_group=legacy)
    await reader.start()
    try:
        batches = reader.take_events(100, 0.2)
        batch = await asyncio.wait_for(batches.__anext__(), timeout=60)
        await batches.aclose()
        return [record.value for record in batch]
    finally:
        await reader.stop()


@pytest.mark.parametrize("legacy_offset", [None, 3], ids=["a new fleet", "upgraded from the faust agent"])
def test_the_scheduler_starts_where_the_faust_group_left_or_at_the_earliest(kafka_broker, legacy_offset):
    prefix = f"t{uuid.uuid4().hex[:10]}"
    settings = EngineSettings(_env_file=None, kafka_bootstrap=kafka_broker.bootstrap, kafka_topic_prefix=prefix,
                              kafka_partitions=1)
    topic = f"{prefix}.events"
    ensure_topics(kafka_broker.bootstrap, [topic], 1)
    values = [f"event {i}".encode() for i in range(5)]

    async def main() -> list[bytes]:
        await _publish(kafka_broker.bootstrap, topic, values)
        if legacy_offset is not None:
            await _commit_as(kafka_broker.bootstrap, f"{prefix}-fleet", topic, legacy_offset)
        return await _first_batch(settings, f"{prefix}-fleet")

    read = asyncio.run(main())
    assert read == values[legacy_offset or 0:]

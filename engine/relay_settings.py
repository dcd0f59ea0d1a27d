"""Kafka's settings (environment, prefix VEC_), for the relay (engine/relay.py) and the
fleet (consumers/fleet/settings.py); apart from the relay so that reading every setting
loads no Kafka or PostgreSQL client."""
from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

from engine.config import VEC_SETTINGS


class KafkaSettings(BaseSettings):
    """Kafka's, for the relay and the fleet (consumers/fleet/settings.py adds the fleet's own)."""

    model_config = VEC_SETTINGS

    kafka_bootstrap: str = Field("", description="HOST:PORT[,HOST:PORT] of the Kafka brokers; empty: no Kafka")
    kafka_topic_prefix: str = Field("vec", pattern=r"^[A-Za-z0-9._-]{1,100}$",
                                    description="topics are PREFIX.events, PREFIX.chunks, PREFIX.results")
    kafka_partitions: int = Field(8, ge=1, le=1000, description="partitions of each topic the engine creates")
    relay_batch: int = Field(1000, ge=1, description="events the relay reads and publishes at once")
    relay_poll_interval: float = Field(0.05, gt=0, description="seconds between looks at the log when idle")
    kafka_session_timeout: float = Field(10.0, ge=3, description="seconds a consumer may be silent before its "
                                         "partitions go to another member of the group")

"""The fleet's settings (environment, prefix VEC_): Kafka's (engine/relay_settings.py) and the
fleet's own claims and heartbeats."""
from __future__ import annotations

from pydantic import Field

from engine.config import CoreSettings
from engine.relay_settings import KafkaSettings


class FleetSettings(KafkaSettings):
    claim_ttl: float = Field(10.0, gt=0, description="seconds a chunk's claim lives without its worker's heartbeat")
    stop_poll_interval: float = Field(0.25, gt=0, description="seconds between a worker's looks for stopped tasks")
    worker_ttl: float = Field(10.0, gt=0, description="seconds after its last heartbeat a fleet process counts as gone")


class FleetProcessSettings(CoreSettings, FleetSettings):
    """What a fleet process reads: the engine core's settings and the fleet's."""

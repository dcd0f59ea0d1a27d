"""The webhooks' settings (environment, prefix VEC_), apart from consumers/webhooks/delivery.py so that
reading every setting (`vec`, entrypoints/settings.py) loads no feature's code."""
from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

from engine.config import VEC_SETTINGS, Schedule


class WebhookSettings(BaseSettings):
    """The webhooks' (environment, prefix VEC_)."""

    model_config = VEC_SETTINGS

    webhook_timeout: float = Field(10.0, gt=0, le=300, description="seconds one delivery attempt may take, "
                                   "resolution and answer included")
    webhook_retry_schedule: Schedule = Field("5,30,120,600,1800,3600,7200,18000,36000",
                                        description="seconds before each retry, comma-separated; the last repeats")
    webhook_max_attempts: int = Field(10, ge=1, le=100, description="attempts before a delivery fails for good")
    webhook_concurrency: int = Field(8, ge=1, le=256, description="deliveries in flight at once")
    webhook_poll_interval: float = Field(0.5, gt=0, description="seconds between looks for task ends and due "
                                         "deliveries")
    webhook_allow_loopback: bool = Field(False, description="tests only: webhooks may go to loopback addresses "
                                         "(never to private, link-local or metadata ones)")

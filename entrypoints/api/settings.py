"""The HTTP API's settings (environment, prefix VEC_): where `vec serve` listens, the admin
token, rate limits, waits and upload sizes. The request guard's limits and the dashboard's
sessions have theirs beside their code (guard.py, sessions.py)."""
from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

from engine.config import VEC_SETTINGS


class ApiSettings(BaseSettings):
    model_config = VEC_SETTINGS

    api_host: str = Field("127.0.0.1", description="where `vec serve` listens")
    api_port: int = Field(8000, ge=1, le=65535)
    admin_token: str = Field("", description="bearer token of the admin routes; empty: no admin over HTTP")
    api_rate_limit: str = Field("50/second;1000/minute", description="per key, in the `limits` notation")
    api_single_wait: float = Field(15.0, gt=0, description="seconds POST /v1/tasks/single waits for the result "
                                   "before answering 202")
    api_max_upload_bytes: int = Field(100 * 1024 * 1024, gt=0, le=100 * 1024 * 1024,
                                      description="largest bulk file accepted (at most the engine's 100 MB)")

"""Observability's settings (environment, prefix VEC_): metrics, logs, traces; apart from
consumers/metrics/exporter.py so that reading every setting loads no feature's code."""
from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings

from engine.config import VEC_SETTINGS


class ObservabilitySettings(BaseSettings):
    """Observability's (environment, prefix VEC_): Prometheus metrics, logs, traces."""

    model_config = VEC_SETTINGS

    metrics_port: int = Field(0, ge=0, le=65535, description="`vec run` serves Prometheus metrics at "
                              "http://VEC_METRICS_HOST:PORT/metrics; 0: off (`vec serve` has /metrics on the API)")
    metrics_host: str = Field("127.0.0.1", description="where `vec run` serves its metrics (0.0.0.0 in a container)")
    metrics_cache: float = Field(2.0, ge=0, description="seconds a scrape of the store's state is reused")
    metrics_mx_hosts: int = Field(20, ge=1, le=1000, description="MX hosts with a series of their own in "
                                  "vec_smtp_sessions_open; the rest add up as mx=\"other\"")
    log_format: Literal["text", "json"] = Field("text", description="logs of long-running processes: text, or "
                                                "JSON lines with task, account and correlation ids")
    tracing: Literal["auto", "off", "otlp"] = Field("auto", description="OpenTelemetry traces of long-running "
                                                    "processes, by OTLP/HTTP (engine/tracing.py): auto = on when "
                                                    "OTEL_EXPORTER_OTLP_ENDPOINT (or _TRACES_ENDPOINT) is set")

"""Engine settings, from the environment (prefix VEC_) or a .env file."""
from __future__ import annotations

import math  # parse_schedule
from typing import Literal  # log_format

from pydantic import Field, SecretStr, field_validator, model_validator  # SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class EngineSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VEC_", env_file=".env", extra="ignore")

    store: str = Field("sqlite:///./vec.db", description="where the log lives")
    chunk_size: int = Field(500, ge=1, le=100_000, description="addresses per chunk of a bulk task")
    chunk_window: int = Field(4, ge=1, description="chunks of one task in flight at once")
    workers: int = Field(8, ge=1, description="chunks verified at once across all tasks")
    chunk_retries: int = Field(3, ge=0, description="retries of a chunk the provider rejects")
    retry_backoff: float = Field(1.0, ge=0, description="seconds before the first chunk retry (doubles)")
    partial_failure_threshold: float = Field(0.1, ge=0, le=1, description="fraction of failed chunks that fails a task")
    outage_grace: float = Field(300.0, gt=0, description="seconds the engine may be down and still resume")
    provider_deadline: float = Field(120.0, gt=0, description="seconds the provider may be unreachable")
    heartbeat_interval: float = Field(1.0, gt=0)
    poll_interval: float = Field(0.2, gt=0, description="seconds between looks at the log for outside changes")
    provider: str = Field("smtp", description="smtp | instant (engine-overhead benchmarks and demos)")
    duplicate_window_hours: float = Field(24.0, ge=0)
    results_flush_interval: float = Field(0.5, gt=0, description="seconds between result batches of a chunk")
    second_pass: bool = Field(False, description="check a chunk's Unknowns again (through the fallback tier "
                              "when there is one) before they settle")
    second_pass_delay: float = Field(10.0, ge=0, description="seconds before the second look")
    driver_retries: int = Field(5, ge=0, description="tries of a task step or a chunk worker that fails with an "
                                "error of ours before the chunk (or the task) fails with its refund")
    task_stall_timeout: float = Field(900.0, gt=0, description="seconds a processing task may go without any new "
                                      "event before it fails through SystemFailure with its refund")

    # --- the HTTP API (vec serve) --------------------------------------------------------
    api_host: str = Field("127.0.0.1", description="where `vec serve` listens")
    api_port: int = Field(8000, ge=1, le=65535)
    admin_token: str = Field("", description="bearer token of the admin routes; empty: no admin over HTTP")
    api_rate_limit: str = Field("50/second;1000/minute", description="per key, in the `limits` notation")
    api_single_wait: float = Field(15.0, gt=0, description="seconds POST /v1/tasks/single waits for the result "
                                   "before answering 202")
    api_max_upload_bytes: int = Field(100 * 1024 * 1024, gt=0, le=100 * 1024 * 1024,
                                      description="largest bulk file accepted (at most the engine's 100 MB)")

    # --- the distributed mode (PostgreSQL store + Kafka) ------------------------------
    kafka_bootstrap: str = Field("", description="HOST:PORT[,HOST:PORT] of the Kafka brokers; empty: no Kafka")
    kafka_topic_prefix: str = Field("vec", pattern=r"^[A-Za-z0-9._-]{1,100}$",
                                    description="topics are PREFIX.events, PREFIX.chunks, PREFIX.results")
    kafka_partitions: int = Field(8, ge=1, le=1000, description="partitions of each topic the engine creates")
    relay_batch: int = Field(1000, ge=1, description="events the relay reads and publishes at once")
    relay_poll_interval: float = Field(0.05, gt=0, description="seconds between looks at the log when idle")
    kafka_session_timeout: float = Field(10.0, ge=3, description="seconds a consumer may be silent before its "
                                         "partitions go to another member of the group")
    claim_ttl: float = Field(10.0, gt=0, description="seconds a chunk's claim lives without its worker's heartbeat")
    stop_poll_interval: float = Field(0.25, gt=0, description="seconds between a worker's looks for stopped tasks")
    worker_ttl: float = Field(10.0, gt=0, description="seconds after its last heartbeat a fleet process counts as gone")

    # --- signed webhooks on task end (consumers/webhooks.py) ------------------------------
    webhook_timeout: float = Field(10.0, gt=0, le=300, description="seconds one delivery attempt may take, "
                                   "resolution and answer included")
    webhook_retry_schedule: str = Field("5,30,120,600,1800,3600,7200,18000,36000",
                                        description="seconds before each retry, comma-separated; the last repeats")
    webhook_max_attempts: int = Field(10, ge=1, le=100, description="attempts before a delivery fails for good")
    webhook_concurrency: int = Field(8, ge=1, le=256, description="deliveries in flight at once")
    webhook_poll_interval: float = Field(0.5, gt=0, description="seconds between looks for task ends and due "
                                         "deliveries")
    webhook_allow_loopback: bool = Field(False, description="tests only: webhooks may go to loopback addresses "
                                         "(never to private, link-local or metadata ones)")

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        parse_schedule(value)
        return value

    # --- e-mail notifications (consumers/notifications.py) ----------------------------------
    notify_smtp_host: str = Field("", description="the SMTP relay notifications go through; empty: none is "
                                  "sent (they wait in the outbox)")
    notify_smtp_port: int = Field(587, ge=1, le=65535, description="the relay's port (587 submission, 465 "
                                  "implicit TLS, 25)")
    notify_smtp_tls: Literal["starttls", "tls", "none"] = Field(
        "starttls", description="starttls: required, refused without it; tls: implicit TLS from the first byte; "
        "none: plain text (a relay on this host only)")
    notify_smtp_ca_file: str = Field("", description="PEM file of the CAs the relay's certificate is checked "
                                     "against; empty: the system's")
    notify_smtp_username: str = Field("", description="SMTP AUTH user; empty: no AUTH")
    notify_smtp_password: SecretStr = Field(SecretStr(""), description="SMTP AUTH password")
    notify_sender: str = Field("vec <notifications@localhost>", description="the From of every notification "
                               "(its address is also the envelope sender and the Message-ID's domain)")
    notify_timeout: float = Field(30.0, gt=0, le=600, description="seconds each step of one SMTP session may "
                                  "take")
    notify_retry_schedule: str = Field("5,30,120,600,1800,3600,7200,18000,36000",
                                       description="seconds before each retry while the relay is down or "
                                       "answers 4xx, comma-separated; the last repeats")
    notify_max_attempts: int = Field(10, ge=1, le=100, description="attempts before a message fails for good "
                                     "(a 5xx answer fails it at once)")
    notify_poll_interval: float = Field(0.5, gt=0, description="seconds between looks for new events and due "
                                        "messages")

    @field_validator("notify_retry_schedule")
    @classmethod
    def _notify_schedule(cls, value: str) -> str:
        parse_schedule(value)
        return value

    @field_validator("notify_sender")
    @classmethod
    def _notify_sender(cls, value: str) -> str:
        from email.utils import parseaddr

        if "@" not in parseaddr(value)[1]:
            raise ValueError(f"VEC_NOTIFY_SENDER is an address, optionally with a name: {value!r}")
        return value

    # --- observability: Prometheus metrics and structured logs (consumers/metrics.py) -------
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

    @model_validator(mode="after")
    def _stall_after_deadline(self) -> "EngineSettings":
        if self.task_stall_timeout <= self.provider_deadline:
            raise ValueError("task_stall_timeout must be longer than provider_deadline "
                             "(a paused task must get its provider deadline first)")
        return self


def parse_schedule(text: str) -> tuple[float, ...]:  # VEC_WEBHOOK_RETRY_SCHEDULE
    """'5,30,120' -> (5.0, 30.0, 120.0): seconds before each retry; the last one repeats."""
    try:
        steps = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"a retry schedule is seconds separated by commas (e.g. 5,30,120), not {text!r}") from None
    if not steps or any(not math.isfinite(s) or not 0 <= s <= 30 * 86400 for s in steps):
        raise ValueError(f"a retry schedule needs at least one step, each 0 to 2592000 seconds (30 days): {text!r}")
    return steps

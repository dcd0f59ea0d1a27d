"""Engine settings, from the environment (prefix VEC_) or a .env file."""
from __future__ import annotations

from pydantic import Field, model_validator
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
    api_max_upload_bytes: int = Field(100 * 1024 * 1024, gt=0, description="largest bulk file accepted")

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

    @model_validator(mode="after")
    def _stall_after_deadline(self) -> "EngineSettings":
        if self.task_stall_timeout <= self.provider_deadline:
            raise ValueError("task_stall_timeout must be longer than provider_deadline "
                             "(a paused task must get its provider deadline first)")
        return self

"""The engine core's settings, from the environment (prefix VEC_) or a .env file.

Each feature has a settings class of its own, beside its code, read the same way
(`VEC_SETTINGS`): the API's (entrypoints/api/settings.py), Kafka's
(engine/relay_settings.py), the fleet's (consumers/fleet/settings.py), the webhooks'
(consumers/webhooks/settings.py), the notifications' (consumers/notifications/settings.py),
observability's (consumers/metrics/settings.py). The
composition root's `EngineSettings` (entrypoints/settings.py) is all of them at once: what a
process is built with; a feature takes its own slice of it with `slice_of`.
"""
from __future__ import annotations

import math  # parse_schedule
from typing import Annotated, TypeVar

from pydantic import AfterValidator, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# every settings class reads the same way: VEC_NAME from the environment, else from .env
VEC_SETTINGS = SettingsConfigDict(env_prefix="VEC_", env_file=".env", extra="ignore")

SliceT = TypeVar("SliceT", bound=BaseSettings)


def slice_of(settings: object, cls: type[SliceT]) -> SliceT:
    """A feature's settings: the process's own when they hold that slice (the composed
    EngineSettings holds every one), else the slice alone from the environment."""
    return settings if isinstance(settings, cls) else cls()


class CoreSettings(BaseSettings):
    """The engine core's: the store, chunks, retries, deadlines, the runtime's pace."""

    model_config = VEC_SETTINGS

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
    sealing_worker: bool = Field(True, description="seal and open a big upload's addresses (and export) in a helper "
                                 "process on another core (engine/sealing_pool.py); off: all in this process")

    @model_validator(mode="after")
    def _stall_after_deadline(self) -> "CoreSettings":
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


def _schedule(text: str) -> str:
    parse_schedule(text)
    return text


# a setting that is a retry schedule (the webhooks', the notifications'): checked when read
Schedule = Annotated[str, AfterValidator(_schedule)]

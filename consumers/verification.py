"""Verifying one chunk: the worker's loop, shared by the embedded runtime and the fleet.

What a chunk's results become is the caller's `ChunkSink`: the embedded runtime records them
in the log at once; a fleet worker sends them to the results topic, where one settler per
task records them. The loop itself is the same everywhere:

- results go out in batches, every `results_flush_interval` and at the end;
- a stop (cancel, failure) cancels the loop: what was answered meanwhile still goes out
  (the task records it as late: logged, never charged);
- a provider that rejects the batch is retried with backoff, then the chunk fails;
- an outage of ours (ProviderUnavailable) is not an answer: the chunk pauses and tries what
  was not answered again; past `provider_deadline` (a clock shared by every chunk of the
  process) the task fails with its refund.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Container, Protocol, Sequence

from consumers.providers import to_result
from engine.config import CoreSettings
from engine.domain.tasks import Result
from verifier.provider import ProviderError, ProviderUnavailable

log = logging.getLogger("vec.worker")


class Provider(Protocol):
    """What verifies addresses for the engine (verifier/provider.py, or consumers/providers.py's
    instant one): each answer is handed to `on_result` as it comes, and all of them returned."""

    name: str

    async def verify(self, addresses: Sequence[str], on_result: Callable[[Any], None] | None = None) -> list[Any]:
        ...


class ChunkSink(Protocol):
    task_id: str  # whose chunk (the logs name it)
    chunk_no: int

    async def pending(self) -> list[str]:
        """The chunk's addresses still without a result, in chunk order."""

    async def record(self, results: list[Result]) -> None: ...

    async def fail_chunk(self, error: str) -> None: ...

    async def fail_task(self, reason: str) -> None: ...


class ChunkObserver(Protocol):
    """What the loop tells whoever watches it (consumers/metrics/exporter.py's CHUNK_METRICS; nothing by
    default): a hook object, so that observability is wired in, not written into the loop."""

    def chunk_started(self) -> None: ...

    def chunk_ended(self, outcome: str, seconds: float) -> None:
        """`outcome`: verified, nothing_pending, chunk_failed, task_failed, stopped or error."""

    def provider_error(self, kind: str, count: int = 1) -> None:
        """unavailable (paused), rejected (retried) or no_answer."""

    def provider_unavailable(self, down: bool) -> None: ...

    def paused(self) -> None: ...

    def system_failure(self, cause: str) -> None: ...


class SilentObserver:
    def chunk_started(self) -> None:
        pass

    def chunk_ended(self, outcome: str, seconds: float) -> None:
        pass

    def provider_error(self, kind: str, count: int = 1) -> None:
        pass

    def provider_unavailable(self, down: bool) -> None:
        pass

    def paused(self) -> None:
        pass

    def system_failure(self, cause: str) -> None:
        pass


SILENT: ChunkObserver = SilentObserver()


class OutageClock:
    """Since when the provider has been unavailable, for every chunk of one process."""

    def __init__(self, observer: ChunkObserver = SILENT) -> None:
        self.down_since: float | None = None
        self.observer = observer

    def went_down(self) -> float:
        """Records the outage (if new) and returns how long it has lasted."""
        self.down_since = self.down_since or time.monotonic()
        self.observer.provider_unavailable(True)
        return time.monotonic() - self.down_since

    def call_went_through(self, started: float) -> None:
        """A call begun after the outage began worked: the outage is over."""
        if self.down_since is not None and started > self.down_since:
            self.down_since = None
            self.observer.provider_unavailable(False)


async def verify_chunk(provider: Provider, settings: CoreSettings, sink: ChunkSink, outage: OutageClock,
                       slots: asyncio.Semaphore, label: str = "") -> None:
    # the chunk's latency by outcome, and chunks in flight (the observer is the outage clock's)
    started, outcome = time.monotonic(), "error"
    outage.observer.chunk_started()
    try:
        outcome = await _verify_chunk(provider, settings, sink, outage, slots, label)
    except asyncio.CancelledError:
        outcome = "stopped"
        raise
    finally:
        outage.observer.chunk_ended(outcome, time.monotonic() - started)


async def _verify_chunk(provider: Provider, settings: CoreSettings, sink: ChunkSink, outage: OutageClock,
                        slots: asyncio.Semaphore, label: str = "") -> str:
    """The loop; returns its outcome (a label of vec_chunk_seconds)."""
    ids = {"task_id": sink.task_id, "chunk_no": sink.chunk_no}  # for the logs
    buffer: list[Result] = []

    async def flush() -> None:
        if buffer:
            batch = buffer[:]
            buffer.clear()
            await sink.record(batch)

    async def flush_now_and_then() -> None:
        while True:
            await asyncio.sleep(settings.results_flush_interval)
            try:
                await flush()
            except Exception as error:  # noqa: BLE001 - recorded again at the end of the chunk
                log.warning("recording results of %s: %s", label, error, extra=ids)

    def on_result(answer: Any) -> None:
        buffer.append(to_result(answer))

    attempt, paused = 0, False
    while True:
        todo = await sink.pending()
        if not todo:
            return "nothing_pending" if attempt == 0 and not paused else "verified"
        flusher = asyncio.create_task(flush_now_and_then())
        try:
            async with slots:
                started = time.monotonic()
                answers = await provider.verify(todo, on_result=on_result)
            outage.call_went_through(started)
            buffer[:] = [to_result(a) for a in answers]
            answered = {r.address for r in buffer}
            missing = [a for a in todo if a not in answered]
            if missing:
                outage.observer.provider_error("no_answer", len(missing))
            buffer.extend(Result(a, "unknown", "provider_error", "the provider gave no answer", "")
                          for a in missing)
            await flush()
            return "verified"
        except asyncio.CancelledError:
            await asyncio.shield(flush())  # the task stopped: late results, logged and not charged
            raise
        except ProviderUnavailable as error:
            await flush()
            outage.observer.provider_error("unavailable")
            down_for = outage.went_down()
            if down_for > settings.provider_deadline:
                outage.observer.system_failure("provider_deadline")
                await sink.fail_task(f"provider_unreachable for {down_for:.0f}s: {error}"[:500])
                return "task_failed"
            log.warning("provider unavailable (%s); %s paused", error, label, extra=ids)
            outage.observer.paused()
            paused = True
            attempt = 0
            await asyncio.sleep(min(settings.retry_backoff, 5.0))
            continue
        except ProviderError as error:
            await flush()
            outage.observer.provider_error("rejected")
            attempt += 1
            if attempt > settings.chunk_retries:
                await sink.fail_chunk(f"{type(error).__name__}: {error}"[:500])
                return "chunk_failed"
        finally:
            flusher.cancel()
        await asyncio.sleep(min(settings.retry_backoff * 2 ** max(attempt - 1, 0), 30.0))


def unsettled(addresses: Sequence[str], pending: Container[str]) -> list[str]:
    return [a for a in addresses if a in pending]

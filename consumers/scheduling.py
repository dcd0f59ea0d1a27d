"""The chunk scheduler's side effects, shared by the embedded runtime and the fleet: submit
what the pure decision (engine/scheduler.py) allows, from the staged inputs, and drop the
staged inputs once the log holds every address (or the task stopped). Idempotent: a
second call on the same state submits nothing (the decider ignores a chunk submitted
twice)."""
from __future__ import annotations

from engine.domain.tasks import TaskState
from engine.scheduler import chunks_to_submit
from engine.service import Engine


def schedule(engine: Engine, task_id: str, provider: str, tier: str, window: int) -> TaskState:
    """Submits the chunks the window has room for; returns the task's state after."""
    return submit_window(engine, task_id, provider, tier, window)[0]


def submit_window(engine: Engine, task_id: str, provider: str, tier: str,
                  window: int) -> tuple[TaskState, list[int]]:
    """`schedule`, also returning the chunks this call submitted (not those another process
    submitted meanwhile): in the fleet, whoever submits a chunk sends its work item."""
    state = engine.task(task_id)
    if not state.exists:
        return state, []
    if not state.active:
        # the stop: nothing more will be chunked. A failed task keeps the addresses it never
        # submitted: with its failed chunks' they are its "unprocessed" download (until erased)
        if state.status != "failed":
            engine.inputs.discard(state.upload_id or task_id)
        return state, []
    submitting = chunks_to_submit(state, window)
    submitted = []
    for chunk_no in submitting:
        addresses = engine.staged_chunk(state, chunk_no)
        if engine.submit_chunk(task_id, chunk_no, addresses, provider, tier):
            submitted.append(chunk_no)
        state = engine.task(task_id)
    if submitting and state.chunks_submitted == state.total_chunks:
        engine.inputs.discard(state.upload_id or task_id)  # every address is in the log now
    return state, submitted

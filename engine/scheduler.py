"""The chunk scheduler's decision, as a pure function of the task state.

A task keeps at most `window` chunks in flight (submitted, not all settled), so one big
bulk cannot starve the others, and a cancel leaves at most `window` chunks to stop.
"""
from __future__ import annotations

from engine.domain.tasks import TaskState


def chunks_to_submit(state: TaskState, window: int) -> range:
    if not state.active:
        return range(0)
    free = max(window - len(state.pending), 0)
    return range(state.chunks_submitted, min(state.total_chunks, state.chunks_submitted + free))

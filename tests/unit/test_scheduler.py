from engine.domain import tasks
from engine.scheduler import chunks_to_submit
from events import ChunkSubmitted, TaskCancelled, TaskCreated


def task(count=10, chunk=3) -> tasks.TaskState:
    return tasks.evolve(tasks.TaskState(task_id="t"), TaskCreated("a", "bulk", count, "f", "0" * 64, chunk))


def submit(state, n):
    return tasks.evolve(state, ChunkSubmitted(n, tuple(f"u{n}-{i}@x.test" for i in range(state.chunk_length(n))),
                                              "p", "t"))


def test_fills_the_window_from_the_next_chunk():
    state = task()
    assert list(chunks_to_submit(state, 2)) == [0, 1]
    state = submit(submit(state, 0), 1)
    assert list(chunks_to_submit(state, 2)) == []
    first = next(iter(state.pending[0]))
    state = tasks.evolve(state, tasks.decide(tasks.RecordResults(0, (tasks.Result(first, "safe"),)), state)[0])
    assert list(chunks_to_submit(state, 2)) == []  # chunk 0 still has two addresses pending
    for event in tasks.decide(tasks.RecordResults(0, tuple(tasks.Result(a, "safe") for a in state.pending[0])),
                              state):
        state = tasks.evolve(state, event)
    assert list(chunks_to_submit(state, 2)) == [2]


def test_never_past_the_last_chunk_and_nothing_once_stopped():
    state = task(count=4, chunk=3)
    assert list(chunks_to_submit(state, 5)) == [0, 1]
    state = tasks.evolve(submit(state, 0), TaskCancelled(4))
    assert list(chunks_to_submit(state, 5)) == []

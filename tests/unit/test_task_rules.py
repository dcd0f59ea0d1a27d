"""The task decider at its edges: creation bounds, chunk arithmetic, the partial-failure
threshold exactly at and past it, erasure, and the invariants `evolve` enforces (written for
the mutation run, docs/mutation.md; behaviour only)."""
from __future__ import annotations

import pytest

from engine.domain.errors import (
    InvalidCommand,
    InvariantViolation,
    TaskAlreadyCancelled,
    TaskAlreadyFinished,
    TaskNotCancellable,
    TaskNotFinished,
    TaskNotFound,
)
from engine.domain.limits import MAX_CHUNK_SIZE, MAX_NAME_LENGTH, MAX_TASK_ADDRESSES
from engine.domain.tasks import (
    CancelTask,
    CreateTask,
    DeleteTask,
    EraseTaskData,
    FailChunk,
    FailForSystem,
    RecordResults,
    Result,
    SubmitChunk,
    TaskState,
    decide,
    evolve,
    refunds_for,
)
from events import (
    AddressVerified,
    ChunkFailed,
    ChunkSubmitted,
    ResultUnknown,
    ResultsRecorded,
    SystemFailure,
    TaskCancelled,
    TaskCompleted,
    TaskCreated,
    TaskDataErased,
    TaskDeleted,
    TaskFailed,
)

from tests.unit.test_tasks import ADDRESSES, chunk_of, created, run, submitted

SHA = "ab" * 32


def create(count: int = 5, chunk_size: int = 2, kind: str = "bulk", name: str = "", upload_id: str = "") -> CreateTask:
    return CreateTask("t1", "acme", kind, count, "file:x.csv", SHA, chunk_size, upload_id, name)


def answer(state: TaskState, n: int, status: str = "safe") -> tuple[list, TaskState]:
    return run(state, RecordResults(n, tuple(Result(a, status) for a in chunk_of(state, n))))


# --- creating ---------------------------------------------------------------------------

def test_create_takes_the_bounds_of_a_task():
    _, largest = run(TaskState(task_id="t1"), create(MAX_TASK_ADDRESSES, MAX_CHUNK_SIZE))
    assert (largest.address_count, largest.chunk_size) == (MAX_TASK_ADDRESSES, MAX_CHUNK_SIZE)
    assert decide(create(1, 1), TaskState())[0].chunk_size == 1
    assert decide(create(1, 1, "single"), TaskState())[0].kind == "single"


@pytest.mark.parametrize("count, chunk_size, says", [
    (0, 1, "at least one address"),
    (MAX_TASK_ADDRESSES + 1, 1, "at most"),
    (5, 0, "chunk size"),
    (5, MAX_CHUNK_SIZE + 1, "chunk size"),
])
def test_create_refuses_just_past_each_bound(count, chunk_size, says):
    with pytest.raises(InvalidCommand, match=says):
        decide(create(count, chunk_size), TaskState())


def test_a_single_task_holds_exactly_one_address_and_other_kinds_are_refused():
    with pytest.raises(InvalidCommand, match="exactly one"):
        decide(create(2, 1, "single"), TaskState())
    with pytest.raises(InvalidCommand, match="task kind"):
        decide(create(2, 1, "batch"), TaskState())


def test_a_task_name_is_up_to_the_bound_of_printable_characters_and_stored_trimmed():
    name = "x" * MAX_NAME_LENGTH
    assert decide(create(name=name), TaskState())[0].name == name
    assert decide(create(name="  March list "), TaskState())[0].name == "March list"
    for bad in ("x" * (MAX_NAME_LENGTH + 1), "line\nbreak"):
        with pytest.raises(InvalidCommand, match="name"):
            decide(create(name=bad), TaskState())


def test_a_created_task_waits_with_its_sizes_and_reads_its_upload_under_its_own_id_by_default():
    state = created(5, 2)
    assert (state.status, state.account_id, state.kind, state.address_count, state.chunk_size) == (
        "pending", "acme", "bulk", 5, 2)
    assert state.upload_id == "t1"
    assert (state.exists, state.active, state.total_chunks, state.unsettled) == (True, True, 3, 5)
    _, other = run(TaskState(task_id="t2"), create(upload_id="u9"))
    assert other.upload_id == "u9"


@pytest.mark.parametrize("count, chunk_size, chunks, last", [(4, 2, 2, 2), (5, 2, 3, 1), (1, 100, 1, 1)])
def test_chunks_cover_the_addresses_with_a_short_last_one(count, chunk_size, chunks, last):
    state = created(count, chunk_size)
    assert state.total_chunks == chunks
    assert state.chunk_length(chunks - 1) == last


def test_evolve_refuses_a_second_creation_and_a_creation_out_of_bounds():
    state = created()
    with pytest.raises(InvariantViolation, match="created twice"):
        evolve(state, TaskCreated("acme", "bulk", 5, "f", SHA, 2))
    for count, chunk_size in ((0, 1), (MAX_TASK_ADDRESSES + 1, 1), (5, 0), (5, MAX_CHUNK_SIZE + 1)):
        with pytest.raises(InvariantViolation, match="out of bounds"):
            evolve(TaskState(task_id="t9"), TaskCreated("acme", "bulk", count, "f", SHA, chunk_size))


def test_evolve_refuses_any_event_before_the_creation():
    with pytest.raises(InvariantViolation, match="before TaskCreated"):
        evolve(TaskState(task_id="t1"), ChunkSubmitted(0, ("a@example.com",), "smtp", "primary"))


# --- submitting -------------------------------------------------------------------------

def test_a_chunk_of_the_wrong_size_is_refused_with_both_sizes():
    state = created(5, 2)
    with pytest.raises(InvalidCommand, match="must hold 2 addresses, got 1"):
        decide(SubmitChunk(0, ADDRESSES[:1], "smtp", "primary"), state)
    with pytest.raises(InvalidCommand, match="must hold 2 addresses, got 3"):
        decide(SubmitChunk(0, ADDRESSES[:3], "smtp", "primary"), state)


def test_no_empty_chunk_is_taken_once_every_chunk_was_submitted():
    state = submitted(4, 2, chunks=2)
    with pytest.raises(InvalidCommand, match="chunk 2 is out of order"):
        decide(SubmitChunk(2, (), "smtp", "primary"), state)


def test_a_chunk_ahead_of_the_next_one_is_refused():
    with pytest.raises(InvalidCommand, match="out of order"):
        decide(SubmitChunk(1, ADDRESSES[2:4], "smtp", "primary"), created(5, 2))


def test_a_submitted_chunk_is_in_flight_until_each_address_settled():
    state = submitted(5, 2, chunks=2)
    assert state.in_flight() == {0: list(ADDRESSES[:2]), 1: list(ADDRESSES[2:4])}
    _, state = run(state, RecordResults(0, (Result(ADDRESSES[0], "safe"),)))
    assert state.in_flight() == {0: [ADDRESSES[1]], 1: list(ADDRESSES[2:4])}
    _, state = run(state, RecordResults(0, (Result(ADDRESSES[1], "unknown", "greylisted"),)))
    assert state.in_flight() == {1: list(ADDRESSES[2:4])}


def test_evolve_refuses_a_chunk_out_of_order():
    with pytest.raises(InvariantViolation, match="out of order"):
        evolve(created(5, 2), ChunkSubmitted(1, ADDRESSES[2:4], "smtp", "primary"))


# --- results ----------------------------------------------------------------------------

def test_results_carry_their_evidence_and_count_by_status():
    state = submitted(4, 4)
    results = (Result(ADDRESSES[0], "safe", "", "", "primary", "250 ok", "mx.example.com", ("mx_found",)),
               Result(ADDRESSES[1], "invalid", "user_unknown", "", "primary", "550 no", "mx.example.com"),
               Result(ADDRESSES[2], "risky", "", "catch_all"),
               Result(ADDRESSES[3], "unknown", "greylisted", "try later", "primary", "450 wait", "mx.example.com"))
    events, after = run(state, RecordResults(0, results))
    assert events[:4] == [
        ResultsRecorded(0, "safe", "", "primary", False, (ADDRESSES[0],), (), ("250 ok",), ("mx.example.com",),
                        ("mx_found",)),
        ResultsRecorded(0, "invalid", "user_unknown", "primary", False, (ADDRESSES[1],), (), ("550 no",),
                        ("mx.example.com",)),
        ResultsRecorded(0, "risky", "", "", False, (ADDRESSES[2],), texts=("catch_all",)),  # its text, with no reason
        ResultsRecorded(0, "unknown", "greylisted", "primary", False, (ADDRESSES[3],), ("try later",), ("450 wait",),
                        ("mx.example.com",)),
    ]
    assert events[4] == TaskCompleted({"safe": 1, "invalid": 1, "risky": 1, "unknown": 1, "failed": 0})
    assert (after.consumed, after.refunded, after.late, after.status) == (3, 1, 0, "completed")
    assert after.counts == {"safe": 1, "invalid": 1, "risky": 1, "unknown": 1, "failed": 0}


def test_a_task_completes_only_with_its_last_unsettled_address():
    state = submitted(3, 3)
    events, state = run(state, RecordResults(0, (Result(ADDRESSES[0], "safe"), Result(ADDRESSES[1], "safe"))))
    assert events == [ResultsRecorded(0, "safe", "", "", False, (ADDRESSES[0], ADDRESSES[1]))]
    assert state.status == "processing"
    events, state = run(state, RecordResults(0, (Result(ADDRESSES[2], "invalid"),)))
    assert events[-1] == TaskCompleted({"safe": 2, "invalid": 1, "risky": 0, "unknown": 0, "failed": 0})


def test_an_empty_batch_of_results_appends_nothing_and_completes_nothing():
    assert decide(RecordResults(0, ()), submitted(2, 2)) == []


def test_late_results_are_counted_apart_and_neither_consume_nor_refund():
    state = submitted(4, 2, chunks=2)
    _, state = run(state, CancelTask())
    events, state = answer(state, 0)
    _, state = answer(state, 1, "unknown")
    assert all(e.late for e in events)
    assert (state.late, state.consumed, state.refunded) == (4, 0, 4)
    assert state.counts == {"safe": 0, "invalid": 0, "risky": 0, "unknown": 0, "failed": 0}
    assert refunds_for(events) == []


def test_results_of_a_task_whose_data_was_erased_append_nothing():
    state = submitted(4, 2)
    _, state = run(state, CancelTask())
    _, state = run(state, EraseTaskData("request"))
    assert decide(RecordResults(0, (Result(ADDRESSES[0], "safe"),)), state) == []


def test_evolve_refuses_a_result_for_a_chunk_with_nothing_pending():
    state = submitted(4, 2, chunks=1)
    with pytest.raises(InvariantViolation, match="settled twice or never submitted"):
        evolve(state, AddressVerified(ADDRESSES[2], "safe", "", 1))
    _, state = answer(state, 0)
    with pytest.raises(InvariantViolation, match="settled twice"):
        evolve(state, ResultUnknown(ADDRESSES[0], "greylisted", "", 0))


def test_evolve_refuses_a_result_for_an_address_never_submitted():
    with pytest.raises(InvariantViolation, match="never submitted"):
        evolve(submitted(4, 2), AddressVerified("stranger@example.com", "safe", "", 0))
    with pytest.raises(InvariantViolation, match="never submitted"):
        evolve(submitted(4, 2), ResultUnknown(ADDRESSES[2], "greylisted", "", 0))


# --- chunk failures and the threshold -------------------------------------------------

def test_failures_up_to_the_threshold_keep_the_task_going_and_one_more_fails_it():
    state = submitted(8, 2, chunks=4)  # 4 chunks; threshold 0.5: two may fail
    events, state = run(state, FailChunk(0, "boom", 0.5))
    assert events == [ChunkFailed(0, "boom", ADDRESSES[:2])]
    events, state = run(state, FailChunk(1, "boom", 0.5))
    assert events == [ChunkFailed(1, "boom", ADDRESSES[2:4])]  # 2/4 is not past 0.5
    assert (state.status, state.failed_chunks, state.partial_failure, state.refunded) == ("processing", 2, True, 4)
    assert state.counts["failed"] == 4
    events, state = run(state, FailChunk(2, "boom", 0.5))
    assert events == [ChunkFailed(2, "boom", ADDRESSES[4:6]), TaskFailed("partial_failure", 2)]
    assert (state.status, state.refunded, state.unsettled) == ("failed", 8, 0)


def test_a_failure_leaves_only_what_other_chunks_still_hold_unsettled():
    state = submitted(6, 2, chunks=3)
    _, state = answer(state, 0)
    _, state = run(state, RecordResults(1, (Result(ADDRESSES[2], "safe"),)))
    events, state = run(state, FailChunk(2, "boom", 0.0))  # 1/3 is past 0: the task fails
    assert events == [ChunkFailed(2, "boom", ADDRESSES[4:6]), TaskFailed("partial_failure", 1)]
    assert (state.consumed, state.refunded, state.unsettled) == (3, 3, 0)


def test_every_chunk_failed_is_a_provider_error_even_under_a_lenient_threshold():
    state = submitted(2, 1, chunks=2)
    _, state = run(state, FailChunk(0, "boom", 1.0))
    events, state = run(state, FailChunk(1, "boom", 1.0))
    assert events[-1] == TaskFailed("provider_error", 0)
    assert state.status == "failed"


def test_a_failure_that_settles_the_last_addresses_completes_with_the_failed_counted():
    state = submitted(4, 2, chunks=2)
    _, state = answer(state, 0)
    events, state = run(state, FailChunk(1, "boom", 0.9))
    assert events == [ChunkFailed(1, "boom", ADDRESSES[2:4]),
                      TaskCompleted({"safe": 2, "invalid": 0, "risky": 0, "unknown": 0, "failed": 2})]
    assert state.status == "completed" and state.partial_failure


def test_a_chunk_failure_of_a_partly_answered_chunk_refunds_only_its_unanswered_addresses():
    state = submitted(4, 4)
    _, state = run(state, RecordResults(0, (Result(ADDRESSES[0], "safe"),)))
    events, _ = run(state, FailChunk(0, "boom", 1.0))
    assert events[0] == ChunkFailed(0, "boom", ADDRESSES[1:4])
    assert events[1] == TaskFailed("provider_error", 0)
    assert refunds_for(events) == [(events[0], 3, "partial_failure")]


# --- stops ------------------------------------------------------------------------------

def test_a_cancel_refunds_exactly_the_unsettled_addresses():
    state = submitted(5, 2, chunks=1)
    _, state = run(state, RecordResults(0, (Result(ADDRESSES[0], "safe"),)))
    events, state = run(state, CancelTask())
    assert events == [TaskCancelled(4)]
    assert (state.status, state.active, state.refunded, state.unsettled) == ("cancelled", False, 4, 0)


def test_a_failed_task_cannot_be_cancelled():
    _, state = run(submitted(4, 2), FailForSystem("engine_outage"))
    with pytest.raises(TaskAlreadyFinished, match="failed"):
        decide(CancelTask(), state)


def test_a_system_failure_of_a_queued_task_refunds_every_address():
    events, state = run(created(5, 2), FailForSystem("stalled"))
    assert events == [SystemFailure("stalled", 5)]
    assert (state.status, state.refunded, state.partial_failure) == ("failed", 5, False)
    assert refunds_for(events) == [(events[0], 5, "system_failure")]


def test_a_provider_failure_marks_the_task_partially_failed_and_a_system_failure_does_not():
    state = submitted(2, 1, chunks=2)
    _, failed = run(state, FailChunk(0, "boom", 0.0))
    assert failed.partial_failure
    _, stopped = run(submitted(2, 1, chunks=2), FailForSystem("stalled"))
    assert not stopped.partial_failure


def test_a_system_failure_after_a_chunk_failure_keeps_the_task_marked_partially_failed():
    state = submitted(4, 2, chunks=2)
    _, state = run(state, FailChunk(0, "boom", 0.9))
    _, state = run(state, FailForSystem("stalled"))
    assert (state.status, state.partial_failure) == ("failed", True)


def test_refunds_for_tags_the_provider_failure_of_a_task():
    assert refunds_for([TaskFailed("provider_error", 3)]) == [(TaskFailed("provider_error", 3), 3, "partial_failure")]
    assert refunds_for([ChunkFailed(0, "boom", ())]) == []


# --- delete and erase -----------------------------------------------------------------

def test_a_deleted_task_is_gone_for_every_command_but_erasure():
    _, state = answer(submitted(2, 2), 0)
    events, state = run(state, DeleteTask())
    assert events == [TaskDeleted()]
    assert (state.deleted, state.exists) == (True, False)
    with pytest.raises(TaskNotFound):
        decide(DeleteTask(), state)
    assert decide(EraseTaskData("retention"), state) == [TaskDataErased("retention")]


@pytest.mark.parametrize("reason", ["retention", "request", "account"])
def test_a_finished_task_s_data_is_erased_once_for_each_reason(reason):
    _, state = answer(submitted(2, 2), 0)
    events, state = run(state, EraseTaskData(reason))
    assert events == [TaskDataErased(reason)]
    assert state.erased
    assert decide(EraseTaskData(reason), state) == []


def test_erasing_a_cancelled_task_drops_what_was_in_flight():
    state = submitted(4, 2, chunks=2)
    _, state = run(state, CancelTask())
    assert state.in_flight()
    _, state = run(state, EraseTaskData("request"))
    assert state.in_flight() == {}


def test_erasure_is_refused_for_a_running_task_an_unknown_task_and_an_unknown_reason():
    with pytest.raises(TaskNotFinished, match="processing"):
        decide(EraseTaskData("request"), submitted(2, 2))
    with pytest.raises(TaskNotFinished, match="pending"):
        decide(EraseTaskData("request"), created(2, 2))
    with pytest.raises(TaskNotFound):
        decide(EraseTaskData("request"), TaskState(task_id="t1"))
    _, done = answer(submitted(2, 2), 0)
    with pytest.raises(InvalidCommand, match="erasure reason"):
        decide(EraseTaskData("whim"), done)


def test_evolve_refuses_an_erasure_of_a_running_task():
    with pytest.raises(InvariantViolation, match="erased while processing"):
        evolve(submitted(2, 2), TaskDataErased("request"))


def test_evolve_refuses_refunding_more_than_the_task_holds():
    with pytest.raises(InvariantViolation, match="settled more"):
        evolve(submitted(2, 2), TaskCancelled(3))


def test_a_retried_result_ahead_of_new_ones_does_not_hide_them():
    state = submitted(3, 3)
    _, state = run(state, RecordResults(0, (Result(ADDRESSES[0], "safe"),)))
    events, state = run(state, RecordResults(0, (Result(ADDRESSES[0], "safe"), Result("stranger@example.com", "safe"),
                                                 Result(ADDRESSES[1], "risky"), Result(ADDRESSES[2], "invalid"))))
    assert [e.addresses for e in events[:-1]] == [(ADDRESSES[1],), (ADDRESSES[2],)]
    assert state.status == "completed"


def test_an_unknown_result_keeps_its_flags_and_reply():
    state = submitted(1, 1)
    events, _ = run(state, RecordResults(0, (Result(ADDRESSES[0], "unknown", "antispam_block", "blocked", "backup",
                                                    "554 spam", "mx.example.com", ["role"]),)))
    assert events[0] == ResultsRecorded(0, "unknown", "antispam_block", "backup", False, (ADDRESSES[0],),
                                        ("blocked",), ("554 spam",), ("mx.example.com",), ("role",))


def test_the_completed_counts_add_the_last_batch_to_everything_counted_before():
    state = submitted(10, 2, chunks=5)
    _, state = answer(state, 0)  # 2 safe
    _, state = answer(state, 1, "unknown")  # 2 unknown
    _, state = run(state, FailChunk(2, "boom", 1.0))  # 2 failed
    _, state = run(state, RecordResults(3, (Result(ADDRESSES[6], "safe"), Result(ADDRESSES[7], "unknown"))))
    events, state = run(state, RecordResults(4, (Result(ADDRESSES[8], "safe"), Result(ADDRESSES[9], "unknown"))))
    counts = {"safe": 4, "invalid": 0, "risky": 0, "unknown": 4, "failed": 2}
    assert events[-1] == TaskCompleted(counts)
    assert state.counts == counts


def test_a_last_chunk_failure_adds_its_addresses_to_those_failed_before():
    state = submitted(6, 2, chunks=3)
    _, state = run(state, FailChunk(0, "boom", 1.0))
    _, state = answer(state, 1)
    events, _ = run(state, FailChunk(2, "boom", 1.0))
    assert events[-1] == TaskCompleted({"safe": 2, "invalid": 0, "risky": 0, "unknown": 0, "failed": 4})


# --- what a refused customer reads ----------------------------------------------------

def _says(error, command, state: TaskState) -> str:
    with pytest.raises(error) as refused:
        decide(command, state)
    return str(refused.value)


def test_each_task_refusal_says_what_was_wrong():
    new = TaskState(task_id="t1")
    assert _says(TaskNotFound, CancelTask(), new) == "no such task"
    assert _says(TaskNotFound, EraseTaskData("request"), new) == "no such task"
    assert _says(TaskNotCancellable, CancelTask(), created(1, 1, "single")) == "a single-address task cannot be cancelled"
    _, cancelled = run(created(), CancelTask())
    assert _says(TaskAlreadyCancelled, CancelTask(), cancelled) == "the task is already cancelled; cancel is irreversible"
    assert _says(TaskNotFinished, DeleteTask(), created()) == "the task is pending; only a finished task can be deleted"
    assert _says(InvalidCommand, create(0, 1), new) == "a task needs at least one address"
    assert _says(InvalidCommand, create(2, 1, "single"), new) == "a single task verifies exactly one address"
    assert _says(TypeError, "cancel", created()) == "not a task command: 'cancel'"

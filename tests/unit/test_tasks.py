"""The task decider with concrete examples: every address settles exactly once (DESIGN.md
money rules 3, 5-8), and `refunds_for` gives back exactly what was not consumed."""
from __future__ import annotations

import pytest

from engine.domain.errors import (
    InvariantViolation,
    InvalidCommand,
    TaskAlreadyCancelled,
    TaskAlreadyFinished,
    TaskNotCancellable,
    TaskNotFinished,
    TaskNotFound,
)
from engine.domain.tasks import (
    CancelTask,
    CreateTask,
    DeleteTask,
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
    TaskDeleted,
    TaskFailed,
)

ADDRESSES = tuple(f"user{i}@example.com" for i in range(10))


def apply(state: TaskState, events) -> TaskState:
    for event in events:
        state = evolve(state, event)
    return state


def run(state: TaskState, command) -> tuple[list, TaskState]:
    """Decide on a copy (decide must not depend on later mutation), then fold."""
    before = state.copy()
    events = decide(command, state)
    assert _snapshot(state) == _snapshot(before), "decide mutated the state"
    return events, apply(state, events)


def _snapshot(state: TaskState):
    return (state.status, state.consumed, state.refunded, state.late, state.chunks_submitted,
            {k: dict(v) for k, v in state.pending.items()}, dict(state.counts), state.failed_chunks)


def created(count: int = 5, chunk_size: int = 2, kind: str = "bulk") -> TaskState:
    command = CreateTask("t1", "acme", kind, count, "file:x.csv", "ab" * 32, chunk_size)
    _, state = run(TaskState(task_id="t1"), command)
    return state


def chunk_of(state: TaskState, n: int) -> tuple[str, ...]:
    start = n * state.chunk_size
    return ADDRESSES[start:start + state.chunk_length(n)]


def submitted(count: int = 5, chunk_size: int = 2, chunks: int = 1, kind: str = "bulk") -> TaskState:
    state = created(count, chunk_size, kind)
    for n in range(chunks):
        _, state = run(state, SubmitChunk(n, chunk_of(state, n), "smtp", "primary"))
    return state


def rr(chunk_no: int, *results: Result) -> RecordResults:
    return RecordResults(chunk_no, tuple(results))


def money(events) -> int:
    return sum(amount for _, amount, _ in refunds_for(events))


# --- creating -------------------------------------------------------------------------

def test_create_emits_task_created_with_every_field():
    events = decide(CreateTask("t1", "acme", "bulk", 5, "file:x.csv", "ab" * 32, 2), TaskState(task_id="t1"))
    assert events == [TaskCreated("acme", "bulk", 5, "file:x.csv", "ab" * 32, 2)]
    state = apply(TaskState(task_id="t1"), events)
    assert (state.status, state.address_count, state.total_chunks, state.unsettled) == ("pending", 5, 3, 5)


def test_create_twice_is_refused():
    with pytest.raises(InvalidCommand, match="already exists"):
        decide(CreateTask("t1", "acme", "bulk", 5, "s", "h", 2), created())


@pytest.mark.parametrize("kind, count, chunk_size", [
    ("bulk", 0, 10), ("single", 2, 1), ("batch", 3, 10), ("bulk", 3, 0),
])
def test_create_refuses_nonsense(kind, count, chunk_size):
    with pytest.raises(InvalidCommand):
        decide(CreateTask("t1", "acme", kind, count, "s", "h", chunk_size), TaskState(task_id="t1"))


@pytest.mark.parametrize("command", [
    SubmitChunk(0, ADDRESSES[:1], "p", "t"), rr(0), FailChunk(0, "x", 0.1), CancelTask(),
    FailForSystem("down"), DeleteTask(),
])
def test_commands_on_a_task_that_does_not_exist_are_refused(command):
    with pytest.raises(TaskNotFound):
        decide(command, TaskState(task_id="nope"))


# --- submitting chunks ----------------------------------------------------------------

def test_chunks_are_submitted_in_order_and_the_first_makes_the_task_processing():
    state = created(5, 2)
    events, state = run(state, SubmitChunk(0, ADDRESSES[:2], "smtp", "primary"))
    assert events == [ChunkSubmitted(0, ADDRESSES[:2], "smtp", "primary")]
    assert state.status == "processing" and state.in_flight() == {0: list(ADDRESSES[:2])}
    with pytest.raises(InvalidCommand, match="out of order"):
        decide(SubmitChunk(2, ADDRESSES[4:5], "smtp", "primary"), state)


def test_a_retried_submission_appends_nothing():
    state = submitted(5, 2, chunks=2)
    assert decide(SubmitChunk(0, ADDRESSES[:2], "smtp", "primary"), state) == []
    assert decide(SubmitChunk(1, ADDRESSES[2:4], "smtp", "primary"), state) == []


def test_no_chunk_past_the_last():
    state = submitted(5, 2, chunks=3)
    with pytest.raises(InvalidCommand):
        decide(SubmitChunk(3, ("x@example.com",), "smtp", "primary"), state)


def test_the_last_chunk_is_short():
    state = submitted(5, 2, chunks=2)
    with pytest.raises(InvalidCommand, match="must hold 1"):
        decide(SubmitChunk(2, ADDRESSES[4:6], "smtp", "primary"), state)
    events, _ = run(state, SubmitChunk(2, ADDRESSES[4:5], "smtp", "primary"))
    assert events == [ChunkSubmitted(2, ADDRESSES[4:5], "smtp", "primary")]


def test_a_chunk_may_not_repeat_an_address():
    with pytest.raises(InvalidCommand, match="repeats"):
        decide(SubmitChunk(0, (ADDRESSES[0], ADDRESSES[0]), "smtp", "primary"), created(5, 2))


def test_a_stopped_task_submits_no_new_chunk():
    state = submitted(5, 2, chunks=1)
    _, state = run(state, CancelTask())
    assert decide(SubmitChunk(1, ADDRESSES[2:4], "smtp", "primary"), state) == []


# --- results --------------------------------------------------------------------------

def test_definitive_results_consume_and_unknowns_refund_one_each():
    state = submitted(5, 2, chunks=1)
    events, state = run(state, rr(0, Result(ADDRESSES[0], "safe", tier="primary"),
                                  Result(ADDRESSES[1], "unknown", reason="greylisted", detail="450 4.7.1")))
    assert events == [
        ResultsRecorded(0, "safe", "", "primary", False, (ADDRESSES[0],)),
        ResultsRecorded(0, "unknown", "greylisted", "", False, (ADDRESSES[1],), ("450 4.7.1",)),
    ]
    assert refunds_for(events) == [(events[1], 1, "unknown")]
    assert (state.consumed, state.refunded, state.unsettled) == (1, 1, 3)
    assert state.counts["safe"] == 1 and state.counts["unknown"] == 1
    assert state.in_flight() == {}


def test_each_unknown_is_its_own_refund_of_one():
    state = submitted(3, 3, chunks=1)
    events, _ = run(state, rr(0, *(Result(a, "unknown", reason="smtp_timeout") for a in ADDRESSES[:3])))
    assert [(amount, reason) for _, amount, reason in refunds_for(events)] == [(1, "unknown")] * 3


def test_an_unknown_reason_outside_the_catalogue_becomes_provider_error():
    events = decide(rr(0, Result(ADDRESSES[0], "unknown", reason="cosmic_rays")), submitted(2, 2))
    assert events == [ResultsRecorded(0, "unknown", "provider_error", "", False, (ADDRESSES[0],))]


def test_risky_and_invalid_are_definitive_with_the_reason_as_detail():
    events = decide(rr(0, Result(ADDRESSES[0], "risky", reason="accept_all"), Result(ADDRESSES[1], "invalid")),
                    submitted(4, 2))
    assert events == [ResultsRecorded(0, "risky", "accept_all", "", False, (ADDRESSES[0],)),
                      ResultsRecorded(0, "invalid", "", "", False, (ADDRESSES[1],))]
    assert refunds_for(events) == []


def test_an_unknown_status_word_is_refused_whole():
    with pytest.raises(InvalidCommand, match="unknown result status"):
        decide(rr(0, Result(ADDRESSES[0], "safe"), Result(ADDRESSES[1], "maybe")), submitted(4, 2))


def test_results_for_already_settled_addresses_append_nothing():
    state = submitted(4, 2, chunks=1)
    _, state = run(state, rr(0, Result(ADDRESSES[0], "safe")))
    assert decide(rr(0, Result(ADDRESSES[0], "invalid")), state) == []
    assert decide(rr(0, Result(ADDRESSES[0], "unknown", reason="greylisted")), state) == []


def test_a_duplicate_result_within_one_batch_settles_once():
    events = decide(rr(0, Result(ADDRESSES[0], "unknown", reason="greylisted"), Result(ADDRESSES[0], "safe")),
                    submitted(4, 2))
    assert events == [ResultsRecorded(0, "unknown", "greylisted", "", False, (ADDRESSES[0],))]


def test_results_for_addresses_of_another_chunk_or_strangers_are_ignored():
    state = submitted(4, 2, chunks=2)
    assert decide(rr(0, Result(ADDRESSES[2], "safe"), Result("stranger@example.com", "safe")), state) == []


def test_results_for_a_chunk_never_submitted_are_refused():
    with pytest.raises(InvalidCommand, match="never submitted"):
        decide(rr(1, Result(ADDRESSES[2], "safe")), submitted(4, 2, chunks=1))


def test_the_last_result_completes_the_task_with_its_counts():
    state = submitted(3, 2, chunks=2)
    _, state = run(state, rr(0, Result(ADDRESSES[0], "safe"), Result(ADDRESSES[1], "invalid")))
    assert state.status == "processing"
    events, state = run(state, rr(1, Result(ADDRESSES[2], "unknown", reason="dns_failure")))
    assert isinstance(events[-1], TaskCompleted)
    assert events[-1].counts == {"safe": 1, "invalid": 1, "risky": 0, "unknown": 1, "failed": 0}
    assert state.status == "completed" and state.unsettled == 0


def test_all_chunks_answered_but_not_all_submitted_is_not_complete():
    state = submitted(4, 2, chunks=1)
    events, state = run(state, rr(0, Result(ADDRESSES[0], "safe"), Result(ADDRESSES[1], "safe")))
    assert not any(isinstance(e, TaskCompleted) for e in events)
    assert state.status == "processing"


def test_single_task_runs_to_completion():
    state = submitted(1, 1, chunks=1, kind="single")
    events, state = run(state, rr(0, Result(ADDRESSES[0], "safe")))
    assert [type(e) for e in events] == [ResultsRecorded, TaskCompleted]
    assert state.status == "completed"


# --- cancel ---------------------------------------------------------------------------

def test_cancel_refunds_every_address_without_a_result_in_one_event():
    state = submitted(5, 2, chunks=2)
    _, state = run(state, rr(0, Result(ADDRESSES[0], "safe"), Result(ADDRESSES[1], "unknown", reason="greylisted")))
    events, state = run(state, CancelTask())
    assert events == [TaskCancelled(3)]  # 2 in flight of chunk 1 and 1 never submitted
    assert refunds_for(events) == [(events[0], 3, "cancelled")]
    assert (state.status, state.consumed, state.refunded, state.unsettled) == ("cancelled", 1, 4, 0)


def test_cancel_of_a_queued_task_refunds_everything():
    events, state = run(created(5, 2), CancelTask())
    assert events == [TaskCancelled(5)] and money(events) == 5


def test_cancel_of_a_single_task_is_refused():
    with pytest.raises(TaskNotCancellable):
        decide(CancelTask(), submitted(1, 1, chunks=1, kind="single"))


def test_a_second_cancel_is_a_clear_error():
    _, state = run(submitted(5, 2), CancelTask())
    with pytest.raises(TaskAlreadyCancelled, match="irreversible"):
        decide(CancelTask(), state)


def test_cancel_of_a_completed_task_is_refused():
    state = submitted(2, 2)
    _, state = run(state, rr(0, Result(ADDRESSES[0], "safe"), Result(ADDRESSES[1], "safe")))
    with pytest.raises(TaskAlreadyFinished):
        decide(CancelTask(), state)


def test_late_results_after_cancel_are_logged_as_late_and_refund_nothing():
    state = submitted(4, 2, chunks=2)
    _, state = run(state, CancelTask())
    assert state.refunded == 4
    events, state = run(state, rr(1, Result(ADDRESSES[2], "safe"), Result(ADDRESSES[3], "unknown", reason="greylisted")))
    assert events == [ResultsRecorded(1, "safe", "", "", True, (ADDRESSES[2],)),
                      ResultsRecorded(1, "unknown", "greylisted", "", True, (ADDRESSES[3],))]
    assert refunds_for(events) == []
    # late results are neither charged (consumed) nor refunded again
    assert (state.consumed, state.refunded, state.late, state.status) == (0, 4, 2, "cancelled")
    # and a late one is still settled only once
    assert decide(rr(1, Result(ADDRESSES[2], "safe")), state) == []


def test_a_late_result_never_completes_a_cancelled_task():
    state = submitted(2, 2, chunks=1)
    _, state = run(state, CancelTask())
    events, state = run(state, rr(0, Result(ADDRESSES[0], "safe"), Result(ADDRESSES[1], "safe")))
    assert not any(isinstance(e, TaskCompleted) for e in events)
    assert state.status == "cancelled"


# --- chunk failures -------------------------------------------------------------------

def test_chunk_failure_under_the_threshold_refunds_its_pending_addresses_and_goes_on():
    state = submitted(10, 2, chunks=2)  # 5 chunks
    _, state = run(state, rr(0, Result(ADDRESSES[0], "safe")))
    events, state = run(state, FailChunk(0, "provider rejected", 0.5))
    assert events == [ChunkFailed(0, "provider rejected", (ADDRESSES[1],))]
    assert refunds_for(events) == [(events[0], 1, "partial_failure")]
    assert (state.status, state.partial_failure, state.failed_chunks, state.refunded) == ("processing", True, 1, 1)
    assert state.counts["failed"] == 1


def test_chunk_failure_past_the_threshold_fails_the_task_and_refunds_the_rest():
    state = submitted(10, 2, chunks=3)  # 5 chunks, 3 in flight
    _, state = run(state, rr(0, Result(ADDRESSES[0], "safe")))
    _, state = run(state, FailChunk(1, "boom", 0.3))  # 1/5 = 0.2: not yet
    assert state.status == "processing"
    events, state = run(state, FailChunk(2, "boom", 0.3))  # 2/5 = 0.4 > 0.3
    assert events == [ChunkFailed(2, "boom", ADDRESSES[4:6]), TaskFailed("partial_failure", 5)]
    # unsettled: ADDRESSES[1] in flight + 4 never submitted
    assert money(events) == 2 + 5
    assert (state.status, state.partial_failure, state.consumed, state.refunded) == ("failed", True, 1, 9)
    assert state.unsettled == 0


def test_every_chunk_failed_is_a_provider_error():
    state = submitted(2, 1, chunks=2)
    _, state = run(state, FailChunk(0, "boom", 1.0))
    events, state = run(state, FailChunk(1, "boom", 1.0))
    assert events == [ChunkFailed(1, "boom", (ADDRESSES[1],)), TaskFailed("provider_error", 0)]
    assert state.status == "failed" and state.refunded == 2


def test_a_failed_last_chunk_under_the_threshold_completes_the_task():
    state = submitted(4, 2, chunks=2)
    _, state = run(state, rr(0, Result(ADDRESSES[0], "safe"), Result(ADDRESSES[1], "invalid")))
    events, state = run(state, FailChunk(1, "boom", 0.5))
    assert [type(e) for e in events] == [ChunkFailed, TaskCompleted]
    assert events[1].counts["failed"] == 2
    assert (state.status, state.partial_failure) == ("completed", True)


def test_failing_a_settled_chunk_appends_nothing():
    state = submitted(4, 2, chunks=1)
    _, state = run(state, rr(0, Result(ADDRESSES[0], "safe"), Result(ADDRESSES[1], "unknown", reason="greylisted")))
    assert decide(FailChunk(0, "boom", 0.0), state) == []


def test_failing_a_chunk_twice_refunds_once():
    state = submitted(10, 2, chunks=1)
    _, state = run(state, FailChunk(0, "boom", 0.5))
    assert decide(FailChunk(0, "boom again", 0.5), state) == []


def test_failing_a_chunk_never_submitted_is_refused():
    with pytest.raises(InvalidCommand):
        decide(FailChunk(3, "boom", 0.5), submitted(10, 2))


def test_results_of_a_failed_chunk_are_ignored():
    state = submitted(10, 2, chunks=1)
    _, state = run(state, FailChunk(0, "boom", 0.5))
    assert decide(rr(0, Result(ADDRESSES[0], "safe")), state) == []


def test_chunk_failure_after_cancel_refunds_nothing():
    state = submitted(4, 2, chunks=1)
    _, state = run(state, CancelTask())
    assert decide(FailChunk(0, "boom", 0.0), state) == []


# --- system failure -------------------------------------------------------------------

def test_system_failure_fails_a_running_task_and_refunds_like_a_cancel():
    state = submitted(5, 2, chunks=1)
    _, state = run(state, rr(0, Result(ADDRESSES[0], "risky")))
    events, state = run(state, FailForSystem("engine down for 2h"))
    assert events == [SystemFailure("engine down for 2h", 4)]
    assert refunds_for(events) == [(events[0], 4, "system_failure")]
    assert (state.status, state.consumed, state.refunded, state.partial_failure) == ("failed", 1, 4, False)


def test_system_failure_of_a_finished_task_appends_nothing():
    _, state = run(submitted(5, 2), CancelTask())
    assert decide(FailForSystem("down"), state) == []


def test_late_results_after_system_failure_are_late():
    _, state = run(submitted(2, 2), FailForSystem("down"))
    events = decide(rr(0, Result(ADDRESSES[0], "unknown", reason="smtp_timeout")), state)
    assert events == [ResultsRecorded(0, "unknown", "smtp_timeout", "", True, (ADDRESSES[0],))]
    assert refunds_for(events) == []


# --- delete ---------------------------------------------------------------------------

@pytest.mark.parametrize("chunks", [0, 1])
def test_delete_while_queued_or_processing_is_refused(chunks):
    with pytest.raises(TaskNotFinished):
        decide(DeleteTask(), submitted(4, 2, chunks=chunks))


def test_delete_of_a_finished_task_hides_it():
    _, state = run(submitted(4, 2), CancelTask())
    events, state = run(state, DeleteTask())
    assert events == [TaskDeleted()]
    assert state.deleted and not state.exists
    with pytest.raises(TaskNotFound):
        decide(DeleteTask(), state)
    with pytest.raises(TaskNotFound):
        decide(rr(0, Result(ADDRESSES[0], "safe")), state)


# --- refunds_for ----------------------------------------------------------------------

def test_refunds_for_gives_nothing_for_empty_stops():
    assert refunds_for([TaskCancelled(0), SystemFailure("x", 0), TaskFailed("provider_error", 0),
                        ChunkFailed(0, "x", ()), AddressVerified("a@b.c", "safe", "")]) == []


def test_refunds_for_tags_each_cause():
    events = [ResultUnknown("a@b.c", "greylisted"), ChunkFailed(0, "x", ("b@b.c", "c@b.c")),
              TaskFailed("partial_failure", 3), TaskCancelled(4), SystemFailure("x", 5),
              ResultUnknown("d@b.c", "greylisted", late=True)]
    assert [(amount, reason) for _, amount, reason in refunds_for(events)] == [
        (1, "unknown"), (2, "partial_failure"), (3, "partial_failure"), (4, "cancelled"), (5, "system_failure")]


# --- evolve guards --------------------------------------------------------------------

def test_evolve_refuses_an_address_settled_twice():
    state = submitted(4, 2)
    evolve(state, AddressVerified(ADDRESSES[0], "safe", "", 0))
    with pytest.raises(InvariantViolation, match="settled twice"):
        evolve(state, ResultUnknown(ADDRESSES[0], "greylisted", "", 0))


def test_evolve_refuses_chunks_out_of_order():
    with pytest.raises(InvariantViolation):
        evolve(created(4, 2), ChunkSubmitted(1, ADDRESSES[2:4], "p", "t"))


def test_evolve_refuses_settling_more_than_was_debited():
    with pytest.raises(InvariantViolation):
        evolve(submitted(4, 2), TaskCancelled(5))


def test_copy_is_independent():
    state = submitted(4, 2)
    old = state.copy()
    evolve(state, AddressVerified(ADDRESSES[0], "safe", "", 0))
    assert ADDRESSES[0] in old.pending[0] and ADDRESSES[0] not in state.pending[0]
    assert (old.consumed, state.consumed) == (0, 1)


# --- results batched per chunk (ResultsRecorded) and the per-address events before them --------

def test_a_chunks_results_are_batched_by_status_reason_and_tier_in_first_seen_order():
    state = submitted(6, 6, chunks=1)
    events = decide(rr(0, Result(ADDRESSES[0], "safe", tier="a", reply="250 ok"),
                       Result(ADDRESSES[1], "unknown", reason="greylisted", detail="451", tier="a"),
                       Result(ADDRESSES[2], "safe", tier="a", flags=("role",)),
                       Result(ADDRESSES[3], "safe", tier="b"),
                       Result(ADDRESSES[4], "unknown", reason="greylisted", tier="a", mx_host="mx[1.2.3.4]")),
                    state)
    assert events == [
        ResultsRecorded(0, "safe", "", "a", False, (ADDRESSES[0], ADDRESSES[2]), (), ("250 ok", ""), (), ("", "role")),
        ResultsRecorded(0, "unknown", "greylisted", "a", False, (ADDRESSES[1], ADDRESSES[4]), ("451", ""), (),
                        ("", "mx[1.2.3.4]")),
        ResultsRecorded(0, "safe", "", "b", False, (ADDRESSES[3],)),
    ]
    assert [(cause, amount) for cause, amount, _ in refunds_for(events)] == [(events[1], 1), (events[1], 1)]


def test_a_batch_settles_like_its_addresses_one_by_one():
    """The same results, logged as per-address events (before batching) or as one batch,
    fold to the same state: old logs and new ones tell the same story."""
    one_by_one, batched = submitted(4, 4), submitted(4, 4)
    for event in (AddressVerified(ADDRESSES[0], "safe", "", 0), ResultUnknown(ADDRESSES[1], "greylisted", "", 0),
                  ResultUnknown(ADDRESSES[2], "greylisted", "", 0)):
        evolve(one_by_one, event)
    evolve(batched, ResultsRecorded(0, "safe", "", "", False, (ADDRESSES[0],)))
    evolve(batched, ResultsRecorded(0, "unknown", "greylisted", "", False, (ADDRESSES[1], ADDRESSES[2])))
    assert (batched.consumed, batched.refunded, batched.counts, batched.in_flight()) == (
        one_by_one.consumed, one_by_one.refunded, one_by_one.counts, one_by_one.in_flight()) == (
        1, 2, {"safe": 1, "invalid": 0, "risky": 0, "unknown": 2, "failed": 0}, {0: [ADDRESSES[3]]})


def test_a_late_batch_is_neither_charged_nor_refunded():
    events = [ResultsRecorded(0, "unknown", "greylisted", "", True, ADDRESSES[:3])]
    assert refunds_for(events) == []


def test_evolve_refuses_a_batch_settling_an_address_twice():
    state = submitted(4, 4)
    evolve(state, AddressVerified(ADDRESSES[0], "safe", "", 0))
    with pytest.raises(InvariantViolation, match="settled twice"):
        evolve(state, ResultsRecorded(0, "unknown", "greylisted", "", False, (ADDRESSES[1], ADDRESSES[0])))
    with pytest.raises(InvariantViolation, match="settled twice"):
        evolve(submitted(4, 4), ResultsRecorded(0, "safe", "", "", False, (ADDRESSES[1], ADDRESSES[1])))


def test_a_definitive_results_reason_is_its_text_and_its_detail_is_not_kept_beside_it():
    """`texts` holds a definitive entry's own text only when its batch has no reason (as
    AddressVerified's detail did); flags are comma-joined per entry."""
    events = decide(rr(0, Result(ADDRESSES[0], "risky", reason="accept_all", detail="the domain takes all"),
                       Result(ADDRESSES[1], "safe", detail="mailbox exists", flags=("role", "mx_found"))),
                    submitted(4, 2))
    assert events == [ResultsRecorded(0, "risky", "accept_all", "", False, (ADDRESSES[0],)),
                      ResultsRecorded(0, "safe", "", "", False, (ADDRESSES[1],), flags=("role,mx_found",),
                                      texts=("mailbox exists",))]


def test_an_address_with_a_space_in_its_quoted_local_part_settles_whole():
    """A pending chunk keeps its addresses split on line breaks only: '"a b"@x.org' is valid."""
    state = created(2, 2)
    spaced = ('"a b"@example.com', "c@example.com")
    _, state = run(state, SubmitChunk(0, spaced, "smtp", "primary"))
    assert list(state.pending[0]) == list(spaced)
    events, state = run(state, rr(0, Result(spaced[0], "safe")))
    assert [e.addresses for e in events if isinstance(e, ResultsRecorded)] == [(spaced[0],)]
    assert state.consumed == 1 and list(state.pending[0]) == [spaced[1]]

"""The event vocabulary: every class round-trips through JSON (and through the SQLite
store), and an old-shape TaskCreated stored as schema v1 is read back as v2."""
from __future__ import annotations

import dataclasses
import json
import types
import typing
import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import events as ev
from events import REGISTRY, NewEvent, decode, encode
from events.codec import UnknownEventType
from events.upcasters import UPCASTERS, upcast

DESIGN_EVENTS = {
    "AccountOpened", "CreditsGranted", "CreditsDebited", "CreditsRefunded", "MonthlyCreditsExpired",
    "TaskCreated", "ChunkSubmitted", "AddressVerified", "ResultUnknown", "ChunkFailed", "TaskCancelled",
    "TaskCompleted", "TaskFailed", "SystemFailure", "TaskDeleted",
}

# Text as it can reach the log: any Unicode scalar (surrogates cannot be stored as UTF-8).
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
INTS = st.integers(min_value=-(2**53), max_value=2**53)


def strategy_for(hint) -> st.SearchStrategy:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is str:
        return TEXT
    if hint is bool:
        return st.booleans()
    if hint is int:
        return INTS
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(st.none() if a is type(None) else strategy_for(a) for a in args))
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return st.lists(strategy_for(args[0]), max_size=5).map(tuple)
    if origin is dict:
        return st.dictionaries(strategy_for(args[0]), strategy_for(args[1]), max_size=5)
    raise NotImplementedError(f"no strategy for {hint!r}")


def event_strategy(cls) -> st.SearchStrategy:
    hints = typing.get_type_hints(cls)
    fields = {f.name: strategy_for(hints[f.name]) for f in dataclasses.fields(cls)}
    return st.fixed_dictionaries(fields).map(lambda kwargs: cls(**kwargs))


ANY_EVENT = st.sampled_from(sorted(REGISTRY)).flatmap(lambda name: event_strategy(REGISTRY[name]))


def test_the_registry_holds_the_whole_catalogue_of_the_design():
    assert DESIGN_EVENTS <= set(REGISTRY)
    for name, cls in REGISTRY.items():
        assert cls.type_name() == name
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen


def test_events_are_immutable():
    event = ev.CreditsDebited("t1", 1, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.payg = 0  # type: ignore[misc]


@pytest.mark.parametrize("name", sorted(REGISTRY))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_every_event_class_round_trips_through_json(name, data):
    cls = REGISTRY[name]
    event = data.draw(event_strategy(cls))
    text = encode(event)
    assert set(json.loads(text)) == {f.name for f in dataclasses.fields(cls)}
    assert json.loads(text) == json.loads(json.dumps(event.payload()))  # plain JSON, nothing exotic
    # the stored text is the payload's canonical JSON, byte for byte (the fast encoder included)
    assert text == orjson.dumps(event.payload(), option=orjson.OPT_SORT_KEYS).decode()
    back = decode(name, cls.schema_version, text)
    assert back == event
    assert type(back) is cls
    assert encode(back) == text  # canonical: encoding is stable
    # a dict payload decodes the same as its text
    assert decode(name, cls.schema_version, json.loads(text)) == event


def test_tuples_come_back_as_tuples_and_dicts_as_dicts():
    chunk = ev.ChunkSubmitted(3, ("a@x.org", "b@x.org"), "smtp", "primary")
    back = decode("ChunkSubmitted", 1, encode(chunk))
    assert back.addresses == ("a@x.org", "b@x.org") and isinstance(back.addresses, tuple)
    done = ev.TaskCompleted({"safe": 2, "unknown": 1})
    assert decode("TaskCompleted", 1, encode(done)).counts == {"safe": 2, "unknown": 1}


def test_decoding_an_unknown_type_is_a_clear_error():
    with pytest.raises(UnknownEventType):
        decode("CreditsStolen", 1, "{}")


def test_a_schema_version_newer_than_the_code_is_refused():
    with pytest.raises(ValueError, match="newer"):
        decode("TaskCreated", 4, json.dumps({"account_id": "a", "kind": "bulk", "address_count": 1,
                                             "source": "s", "sha256": "h", "chunk_size": 1}))


# --- through the store ----------------------------------------------------------------

def _store():
    from engine.store.sqlite import SqliteEventStore, connect

    return SqliteEventStore(connect(":memory:"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(ANY_EVENT, min_size=1, max_size=8),
       when=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                         timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-5, minutes=-30))])),
       correlation=st.one_of(st.none(), TEXT))
def test_every_event_round_trips_through_the_sqlite_store(events, when, correlation):
    store = _store()
    new = [NewEvent("s-1", e, uuid.uuid4(), when, correlation, None) for e in events]
    appended = store.append(new, {"s-1": 0})
    read = list(store.read_stream("s-1"))
    assert read == appended
    assert [r.event for r in read] == events
    assert all(r.occurred_at == when and r.occurred_at.utcoffset() == timedelta(0) for r in read)  # kept in UTC
    assert [r.correlation_id for r in read] == [correlation] * len(events)
    for recorded in read:
        shape = recorded.to_json()
        assert shape["type"] == type(recorded.event).__name__
        assert shape["metadata"]["schema_version"] == type(recorded.event).schema_version
        assert shape["metadata"]["event_id"] == str(recorded.event_id)
        assert json.loads(json.dumps(shape)) == shape


# --- upcasting ------------------------------------------------------------------------

V1_TASK_CREATED = {"account_id": "acme", "kind": "bulk", "address_count": 2500, "sha256": "cd" * 32}


def test_task_created_is_at_schema_version_3_with_upcasters_from_1_and_2():
    assert ev.TaskCreated.schema_version == 3
    assert ("TaskCreated", 1) in UPCASTERS and ("TaskCreated", 2) in UPCASTERS
    assert upcast("TaskCreated", 2, 3, {**V1_TASK_CREATED, "source": "s", "chunk_size": 5})["name"] == ""


def test_the_v1_upcaster_fills_the_defaults_and_keeps_the_rest():
    assert upcast("TaskCreated", 1, 2, dict(V1_TASK_CREATED)) == {
        **V1_TASK_CREATED, "source": "upload", "chunk_size": 1000}
    # a current payload passes through unchanged
    current = {**V1_TASK_CREATED, "source": "file:a.csv", "chunk_size": 50}
    assert upcast("TaskCreated", 2, 2, dict(current)) == current


def test_upcasting_does_not_mutate_the_stored_payload():
    stored = dict(V1_TASK_CREATED)
    upcast("TaskCreated", 1, 2, stored)
    assert stored == V1_TASK_CREATED


def _insert_raw(conn, stream, version, type_name, schema_version, data, position=None):
    conn.execute(
        "INSERT INTO events (event_id, stream, version, type, schema_version, data, occurred_at)"
        " VALUES (?,?,?,?,?,?,?)",
        (uuid.uuid4().bytes, stream, version, type_name, schema_version, json.dumps(data),
         "2019-06-01T08:00:00+00:00"),
    )
    conn.execute("INSERT INTO streams (stream, version) VALUES (?, ?)"
                 " ON CONFLICT (stream) DO UPDATE SET version = excluded.version", (stream, version))


def test_an_old_task_created_row_is_read_back_as_the_current_version(db):
    _insert_raw(db.events.conn, "task-old", 1, "TaskCreated", 1, V1_TASK_CREATED)
    raw = db.events.conn.execute("SELECT schema_version, data FROM events WHERE stream = 'task-old'").fetchone()
    assert raw[0] == 1 and "chunk_size" not in json.loads(raw[1])

    [recorded] = list(db.events.read_stream("task-old"))
    assert recorded.event == ev.TaskCreated("acme", "bulk", 2500, "upload", "cd" * 32, 1000)
    assert recorded.to_json()["metadata"]["schema_version"] == 3
    assert [r.event for r in db.events.read_all()] == [recorded.event]

    # the log itself is never rewritten
    assert db.events.conn.execute("SELECT schema_version, data FROM events WHERE stream = 'task-old'").fetchone() == raw


def test_an_upcast_task_folds_into_the_deciders_and_the_read_models(db):
    from engine.service import Engine

    _insert_raw(db.events.conn, "task-old", 1, "TaskCreated", 1, V1_TASK_CREATED)
    state = Engine(db).task("old")
    assert (state.address_count, state.chunk_size, state.total_chunks) == (2500, 1000, 3)
    db.catch_up()
    row = db.events.conn.execute("SELECT source, chunks_total FROM rm_tasks WHERE task_id = 'old'").fetchone()
    assert row == ("upload", 3)
    assert db.read.task("old")["total"] == 2500


def test_a_stored_event_newer_than_the_code_fails_loudly_on_read(db):
    _insert_raw(db.events.conn, "task-future", 1, "TaskCreated", 9, {**V1_TASK_CREATED, "source": "x", "chunk_size": 1})
    from engine.store import CorruptEvent

    with pytest.raises(CorruptEvent, match=r"position 1 \(task-future@1, TaskCreated\) cannot be read: .*newer"):
        list(db.events.read_stream("task-future"))


def test_a_decoder_hands_back_a_repeated_row_as_the_event_decoded_last():
    """A batch's refunds are stored one after another with the same text: decoded once,
    the one frozen event stands for each. Anything else is decoded as `decode` would."""
    from events import CreditsRefunded, Decoder, ResultUnknown
    from events.codec import decode

    decoder, refund = Decoder(), encode(CreditsRefunded("t1", 1, "unknown"))
    first, again = decoder("CreditsRefunded", 1, refund), decoder("CreditsRefunded", 1, refund)
    assert first is again and first == decode("CreditsRefunded", 1, refund)
    other = encode(CreditsRefunded("t2", 1, "unknown"))
    assert decoder("CreditsRefunded", 1, other) == CreditsRefunded("t2", 1, "unknown")
    assert decoder("CreditsRefunded", 1, refund) is not first  # decoded anew after another row
    # personal fields open with their stream's key: never handed back
    unknown = encode(ResultUnknown("a@x.test", "greylisted"), seal=str.upper)
    opened = [decoder("ResultUnknown", 2, unknown, str.lower) for _ in range(2)]
    assert opened[0] is not opened[1] and opened[0].address == "a@x.test"

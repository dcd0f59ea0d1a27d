"""The application service over a real SQLite file: optimistic concurrency between two
engines, idempotency keys, refusals that append nothing, and the money rules as the
Credits History shows them."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from engine.audit import audit
from engine.bulkfile import BadUpload
from entrypoints.settings import EngineSettings
from engine.domain.errors import (
    AccountAlreadyOpen,
    AccountNotFound,
    InsufficientCredits,
    InvalidCommand,
    TaskAlreadyCancelled,
    TaskNotCancellable,
    TaskNotFinished,
    TaskNotFound,
)
from engine.domain.tasks import Result
from engine.service import Engine
from engine.store import ConcurrencyError, IdempotencyConflict, open_database
from events import (
    CreditsDebited,
    CreditsGranted,
    CreditsRefunded,
    MonthlyCreditsExpired,
    ResultsRecorded,
    TaskCancelled,
    TaskCreated,
)
from tests.staged import staged_chunk

T0 = datetime(2026, 6, 1, 10, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self, now: datetime = T0):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def settings():
    return EngineSettings(chunk_size=2, partial_failure_threshold=0.5, duplicate_window_hours=24)


@pytest.fixture
def engine(db, settings, clock):
    return Engine(db, settings, clock)


@pytest.fixture
def second_db(db):
    """Another connection to the same file, as a second process would have."""
    other = open_database(db.url)
    yield other
    other.close()


@pytest.fixture
def csv_file(tmp_path):
    counter = iter(range(10_000))

    def write(*addresses: str, raw: bytes | None = None, header: str = "email") -> str:
        path = tmp_path / f"upload-{next(counter)}.csv"
        path.write_bytes(raw if raw is not None else (header + "\n" + "".join(f"{a}\n" for a in addresses)).encode())
        return str(path)

    return write


def staged_rows(db) -> int:
    return db.events.conn.execute("SELECT COUNT(*) FROM task_inputs").fetchone()[0]


def staged_task_ids(db) -> set[str]:
    return {r[0] for r in db.events.conn.execute("SELECT DISTINCT upload_id FROM task_inputs")}


def log_types(db, stream: str | None = None) -> list[str]:
    events = db.events.read_stream(stream) if stream else db.events.read_all()
    return [r.type for r in events]


class RacingStore:
    """The real store, with a rival's write slipped in just before our next append:
    a deterministic race between deciding and appending."""

    def __init__(self, store, rival_write):
        self._store = store
        self._rival_write = rival_write
        self.appends = 0
        self.conflicts = 0

    def append(self, events, expected, idempotency=None):
        self.appends += 1
        if self._rival_write is not None:
            rival, self._rival_write = self._rival_write, None
            rival()
        try:
            return self._store.append(events, expected, idempotency)
        except ConcurrencyError:
            self.conflicts += 1
            raise

    def __getattr__(self, name):
        return getattr(self._store, name)


def racing(engine: Engine, rival_write) -> RacingStore:
    engine.store = RacingStore(engine.store, rival_write)
    return engine.store


def assert_audit_clean(db) -> None:
    report = audit(db)
    assert report.violations == []


# --- optimistic concurrency between two engines on one file ---------------------------

def test_a_stale_engine_decides_again_and_never_double_spends(db, second_db, settings, clock, csv_file):
    a, b = Engine(db, settings, clock), Engine(second_db, settings, clock)
    a.open_account("acme")
    assert b.account("acme").total == 200  # b's cache now holds 200
    big = csv_file(*(f"u{i}@x.com" for i in range(150)))
    small = csv_file(*(f"v{i}@x.com" for i in range(100)))
    store = racing(b, lambda: a.create_bulk("acme", big))  # a spends 150 between b's load and b's append
    with pytest.raises(InsufficientCredits):
        b.create_bulk("acme", small)
    assert store.conflicts == 1 and store.appends == 1  # the second decision refused: no second append
    assert a.account("acme").total == 50 and b.account("acme").total == 50
    assert sum(isinstance(r.event, CreditsDebited) for r in db.events.read_all()) == 1
    assert len(staged_task_ids(db)) == 1  # the refused upload left nothing staged
    assert_audit_clean(db)


def test_a_stale_engine_retries_into_a_debit_that_still_fits(db, second_db, settings, clock):
    a, b = Engine(db, settings, clock), Engine(second_db, settings, clock)
    a.open_account("acme")
    b.account("acme")
    store = racing(b, lambda: a.create_single("acme", "first@x.com", task_id="t1"))
    b.create_single("acme", "second@x.com", task_id="t2")
    assert store.conflicts == 1 and store.appends == 2
    debits = [r.event for r in db.events.read_stream("account-acme") if isinstance(r.event, CreditsDebited)]
    assert debits == [CreditsDebited("t1", 0, 1), CreditsDebited("t2", 0, 1)]
    assert a.account("acme").payg == 198
    assert_audit_clean(db)


def test_the_same_unknown_recorded_by_two_engines_is_refunded_once(db, second_db, settings, clock, csv_file):
    a, b = Engine(db, settings, clock), Engine(second_db, settings, clock)
    a.open_account("acme")
    task = a.create_bulk("acme", csv_file("p@x.com", "q@x.com", "r@x.com")).task_id
    a.submit_chunk(task, 0, staged_chunk(db, task, 0, 2), "smtp", "primary")
    b.task(task)  # b caches the task with p and q pending
    unknown = [Result("p@x.com", "unknown", "greylisted")]
    store = racing(b, lambda: a.record_results(task, 0, unknown))
    assert b.record_results(task, 0, unknown) == []  # decided again: already settled
    assert store.conflicts == 1
    refunds = [r.event for r in db.events.read_all() if isinstance(r.event, CreditsRefunded)]
    assert refunds == [CreditsRefunded(task, 1, "unknown")]
    assert a.account("acme").payg == 198
    assert_audit_clean(db)


def test_a_result_raced_by_a_cancel_becomes_late_and_costs_nothing(db, second_db, settings, clock, csv_file):
    a, b = Engine(db, settings, clock), Engine(second_db, settings, clock)
    a.open_account("acme")
    task = a.create_bulk("acme", csv_file("p@x.com", "q@x.com", "r@x.com")).task_id
    a.submit_chunk(task, 0, staged_chunk(db, task, 0, 2), "smtp", "primary")
    b.task(task)
    racing(b, lambda: a.cancel_task(task))
    recorded = b.record_results(task, 0, [Result("p@x.com", "unknown", "smtp_timeout"), Result("q@x.com", "safe")])
    assert [r.event.late for r in recorded] == [True, True]
    assert not any(isinstance(r.event, CreditsRefunded) for r in recorded)
    assert a.account("acme").payg == 200  # 3 debited, 3 refunded by the cancel, nothing else
    with pytest.raises(TaskAlreadyCancelled):
        b.cancel_task(task)
    assert_audit_clean(db)


def test_two_engines_in_two_threads_spend_the_balance_exactly(db, second_db, settings, clock):
    engines = [Engine(db, settings, clock), Engine(second_db, settings, clock)]
    engines[0].open_account("acme")
    engines[0].grant_credits("acme", "payg", 20)  # 220 credits, 2 x 150 attempts
    created: list[list[str]] = [[], []]
    refused = [0, 0]
    errors: list[BaseException] = []

    def spend(n: int) -> None:
        try:
            for i in range(150):
                try:
                    created[n].append(engines[n].create_single("acme", f"e{n}-{i}@x.com", task_id=f"t{n}-{i}"))
                except InsufficientCredits:
                    refused[n] += 1
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=spend, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(created[0]) + len(created[1]) == 220
    assert refused[0] + refused[1] == 80
    state = Engine(db, settings, clock).account("acme")
    assert (state.monthly, state.payg) == (0, 0)
    debited = [r.event.task_id for r in db.events.read_all() if isinstance(r.event, CreditsDebited)]
    assert sorted(debited) == sorted(created[0] + created[1])
    reader = Engine(db, settings, clock)
    assert staged_task_ids(db) == {reader.task(t).upload_id for t in created[0] + created[1]}
    assert_audit_clean(db)


# --- idempotency keys -----------------------------------------------------------------

def test_a_retried_open_appends_nothing_new(engine, db):
    first = engine.open_account("acme", idempotency_key="open-acme")
    head = db.events.head()
    again = engine.open_account("acme", idempotency_key="open-acme")
    assert again == first
    assert db.events.head() == head == 2


def test_a_retried_grant_appends_nothing_new_even_after_a_restart(engine, db, settings, clock):
    engine.open_account("acme")
    first = engine.grant_credits("acme", "payg", 500, idempotency_key="order-17")
    head = db.events.head()
    assert engine.grant_credits("acme", "payg", 500, idempotency_key="order-17") == first
    cold = Engine(db, settings, clock)
    assert cold.grant_credits("acme", "payg", 500, idempotency_key="order-17") == first
    assert db.events.head() == head
    assert cold.account("acme").payg == 700


def test_a_retried_monthly_grant_later_in_time_still_appends_nothing(engine, db, clock):
    engine.open_account("acme")
    expires = T0 + timedelta(days=30)
    first = engine.grant_credits("acme", "monthly", 1000, "subscription", expires, idempotency_key="sub-june")
    clock.advance(hours=1)
    assert engine.grant_credits("acme", "monthly", 1000, "subscription", expires,
                                idempotency_key="sub-june") == first
    assert engine.account("acme").monthly == 1000


@pytest.mark.parametrize("other", [
    dict(bucket="payg", amount=501),
    dict(bucket="payg", amount=500, reason="support"),
    dict(bucket="monthly", amount=500, expires_at=T0 + timedelta(days=30)),
])
def test_the_same_key_with_other_content_is_a_conflict_that_appends_nothing(engine, db, other):
    engine.open_account("acme")
    engine.grant_credits("acme", "payg", 500, idempotency_key="order-17")
    head = db.events.head()
    with pytest.raises(IdempotencyConflict):
        engine.grant_credits("acme", idempotency_key="order-17", **other)
    assert db.events.head() == head


def test_a_key_used_for_another_command_is_a_conflict(engine, db):
    engine.open_account("acme", idempotency_key="k-1")
    with pytest.raises(IdempotencyConflict):
        engine.grant_credits("acme", "payg", 5, idempotency_key="k-1")
    with pytest.raises(IdempotencyConflict):
        engine.open_account("other", idempotency_key="k-1")
    assert db.events.head() == 2


def test_a_refused_command_does_not_use_up_its_key(engine, db):
    with pytest.raises(AccountNotFound):
        engine.grant_credits("ghost", "payg", 5, idempotency_key="k-2")
    engine.open_account("ghost")
    recorded = engine.grant_credits("ghost", "payg", 5, idempotency_key="k-2")
    assert [r.event for r in recorded] == [CreditsGranted("payg", 5, "purchase")]


def test_without_a_key_a_second_open_is_refused(engine, db):
    engine.open_account("acme")
    with pytest.raises(AccountAlreadyOpen):
        engine.open_account("acme")
    assert db.events.head() == 2


def test_a_key_racing_a_rival_with_the_same_key_returns_the_rivals_events(db, second_db, settings, clock):
    a, b = Engine(db, settings, clock), Engine(second_db, settings, clock)
    a.open_account("acme")
    rival: list = []
    racing(b, lambda: rival.extend(a.grant_credits("acme", "payg", 9, idempotency_key="order-9")))
    assert b.grant_credits("acme", "payg", 9, idempotency_key="order-9") == rival
    assert a.account("acme").payg == 209


def test_a_retried_bulk_upload_with_its_key_replays_the_task(engine, db, csv_file):
    engine.open_account("acme")
    path = csv_file("a@x.com", "b@x.com")
    first = engine.create_bulk("acme", path, idempotency_key="upload-1")
    head = db.events.head()
    again = engine.create_bulk("acme", path, idempotency_key="upload-1")
    assert again.task_id == first.task_id
    assert db.events.head() == head


def test_a_retried_create_with_its_key_returns_the_same_task_and_stages_nothing(engine, db, csv_file):
    engine.open_account("acme")
    single = engine.create_single("acme", "solo@x.com", idempotency_key="single-1")
    path = csv_file("a@x.com", "b@x.com")
    bulk = engine.create_bulk("acme", path, idempotency_key="bulk-1")
    head = db.events.head()
    single_again = engine.create_single("acme", "solo@x.com", idempotency_key="single-1")
    bulk_again = engine.create_bulk("acme", path, allow_duplicate=True, idempotency_key="bulk-1")
    assert db.events.head() == head
    assert staged_task_ids(db) == {single, bulk.task_id}
    assert engine.task(single_again).exists and engine.task(bulk_again.task_id).exists
    assert (single_again, bulk_again.task_id) == (single, bulk.task_id)


def test_a_create_refused_for_an_existing_task_id_keeps_that_tasks_inputs(engine, db, csv_file):
    engine.open_account("acme")
    path = csv_file("a@x.com", "b@x.com", "c@x.com")
    engine.create_bulk("acme", path, task_id="T")
    engine.create_single("acme", "s@x.com", task_id="S")
    head = db.events.head()
    with pytest.raises(BadUpload):
        engine.create_bulk("acme", path, task_id="T")  # a client's retry: refused as a duplicate
    with pytest.raises(InvalidCommand):
        engine.create_bulk("acme", csv_file("z@x.com"), task_id="T")
    with pytest.raises(InvalidCommand):
        engine.create_single("acme", "s@x.com", task_id="S")
    assert db.events.head() == head
    uploads = engine.task("T").upload_id, engine.task("S").upload_id
    assert staged_chunk(db, uploads[0], 0, 2, "T") == ["a@x.com", "b@x.com"]
    assert staged_chunk(db, uploads[1], 0, 1, "S") == ["s@x.com"]
    engine.submit_chunk("T", 0, staged_chunk(db, uploads[0], 0, 2, "T"), "smtp", "primary")


def test_the_same_create_key_with_another_file_is_a_conflict_that_stages_nothing(engine, db, csv_file):
    engine.open_account("acme")
    engine.create_bulk("acme", csv_file("a@x.com", "b@x.com"), idempotency_key="upload-1")
    head, staged = db.events.head(), staged_rows(db)
    with pytest.raises(IdempotencyConflict):
        engine.create_bulk("acme", csv_file("c@x.com"), idempotency_key="upload-1")
    with pytest.raises(IdempotencyConflict):
        engine.create_single("acme", "c@x.com", idempotency_key="upload-1")
    assert (db.events.head(), staged_rows(db)) == (head, staged)


def test_a_create_refused_for_credits_does_not_use_up_its_key(engine, db, csv_file):
    engine.open_account("acme")
    path = csv_file(*(f"u{i}@x.com" for i in range(250)))
    with pytest.raises(InsufficientCredits):
        engine.create_bulk("acme", path, idempotency_key="upload-big")
    engine.grant_credits("acme", "payg", 50)
    upload = engine.create_bulk("acme", path, idempotency_key="upload-big")
    assert engine.task(upload.task_id).address_count == 250
    assert engine.account("acme").total == 0
    assert staged_task_ids(db) == {upload.task_id}


def test_creates_racing_with_one_idempotency_key_agree_on_one_task(db, second_db, settings, clock, csv_file):
    a, b = Engine(db, settings, clock), Engine(second_db, settings, clock)
    a.open_account("acme")
    path = csv_file("x@x.com", "y@x.com")
    winner: dict = {}
    racing(b, lambda: winner.setdefault("upload", a.create_bulk("acme", path, idempotency_key="K")))
    loser = b.create_bulk("acme", path, idempotency_key="K")
    assert a.account("acme").total == 198  # charged once
    assert staged_task_ids(db) == {winner["upload"].task_id}
    assert loser.task_id == winner["upload"].task_id


def test_creates_racing_with_one_task_id_keep_the_winners_inputs(db, second_db, settings, clock, csv_file):
    a, b = Engine(db, settings, clock), Engine(second_db, settings, clock)
    a.open_account("acme")
    path = csv_file("a@x.com", "b@x.com", "c@x.com")
    racing(b, lambda: a.create_bulk("acme", path, task_id="T"))
    with pytest.raises(InvalidCommand, match="already exists"):
        b.create_bulk("acme", path, task_id="T", allow_duplicate=True)
    assert a.account("acme").total == 197
    assert staged_chunk(db, a.task("T").upload_id, 0, 2, "T") == ["a@x.com", "b@x.com"]


# --- upload refusals append nothing and stage nothing ---------------------------------

@pytest.mark.parametrize("raw, message", [
    (b"", "empty"),
    (b"\n \n\n", "empty"),
    (b"email\na@x.com\x00\n", "binary"),
    ("email\na@x.com\n".encode("utf-16"), "binary"),
    (b"email\nj\xf6rg@x.com\n", "UTF-8"),
    (b"email\n", "no e-mail addresses"),
    (b"name,phone\nJohn,555\nJane,556\n", "no e-mail addresses"),
])
def test_bad_uploads_are_refused_and_append_nothing(engine, db, csv_file, raw, message):
    engine.open_account("acme")
    head = db.events.head()
    with pytest.raises(BadUpload, match=message):
        engine.create_bulk("acme", csv_file(raw=raw))
    assert db.events.head() == head
    assert staged_rows(db) == 0
    assert engine.account("acme").total == 200


def test_a_missing_file_is_refused(engine, db, tmp_path):
    engine.open_account("acme")
    with pytest.raises(BadUpload, match="no such file"):
        engine.create_bulk("acme", tmp_path / "nope.csv")
    assert db.events.head() == 2


def test_an_upload_to_an_unknown_account_is_refused(engine, db, csv_file):
    with pytest.raises(AccountNotFound):
        engine.create_bulk("ghost", csv_file("a@x.com"))
    with pytest.raises(AccountNotFound):
        engine.create_single("ghost", "a@x.com")
    assert db.events.head() == 0 and staged_rows(db) == 0


def test_too_few_credits_refuses_the_upload_with_nothing_appended_or_staged(engine, db, csv_file):
    engine.open_account("acme")
    path = csv_file(*(f"u{i}@x.com" for i in range(201)))
    with pytest.raises(InsufficientCredits, match="needs 201 credits and the balance is 200"):
        engine.create_bulk("acme", path)
    assert db.events.head() == 2 and staged_rows(db) == 0
    # duplicates do not count: 201 rows with one case-insensitive repeat fit
    fits = csv_file(*(f"u{i}@x.com" for i in range(200)), "U0@X.COM")
    upload = engine.create_bulk("acme", fits)
    assert (upload.report.unique, upload.report.duplicates) == (200, 1)
    assert engine.account("acme").total == 0


def test_a_single_task_with_too_few_credits_is_refused(engine, db):
    engine.open_account("acme")
    for i in range(200):
        engine.create_single("acme", f"s{i}@x.com")
    head, staged = db.events.head(), staged_rows(db)
    with pytest.raises(InsufficientCredits):
        engine.create_single("acme", "one-more@x.com")
    assert (db.events.head(), staged_rows(db)) == (head, staged)


def test_a_single_task_needs_an_address(engine, db):
    engine.open_account("acme")
    with pytest.raises(InvalidCommand):
        engine.create_single("acme", "not-an-address")
    assert db.events.head() == 2 and staged_rows(db) == 0


def test_the_same_file_within_24h_needs_allow_duplicate(engine, db, csv_file, clock):
    engine.open_account("acme")
    path = csv_file("a@x.com", "b@x.com")
    first = engine.create_bulk("acme", path)
    clock.advance(hours=23, minutes=59)
    head, staged = db.events.head(), staged_rows(db)
    with pytest.raises(BadUpload, match=f"within 24 h \\(task {first.task_id}\\).*--allow-duplicate"):
        engine.create_bulk("acme", path)
    # the same bytes under another name are the same file
    with pytest.raises(BadUpload, match="allow-duplicate"):
        engine.create_bulk("acme", csv_file(raw=open(path, "rb").read()))
    assert (db.events.head(), staged_rows(db)) == (head, staged)
    assert engine.account("acme").total == 198
    second = engine.create_bulk("acme", path, allow_duplicate=True)
    assert second.task_id != first.task_id
    assert engine.account("acme").total == 196


def test_the_same_file_after_24h_or_for_another_account_is_fine(engine, db, csv_file, clock):
    engine.open_account("acme")
    engine.open_account("other")
    path = csv_file("a@x.com", "b@x.com")
    engine.create_bulk("acme", path)
    engine.create_bulk("other", path)
    clock.advance(hours=24, seconds=1)
    engine.create_bulk("acme", path)
    assert engine.account("acme").total == 196 and engine.account("other").total == 198


def test_a_different_file_with_the_same_addresses_is_not_a_duplicate(engine, csv_file):
    engine.open_account("acme")
    engine.create_bulk("acme", csv_file("a@x.com", "b@x.com"))
    engine.create_bulk("acme", csv_file("b@x.com", "a@x.com"))  # other bytes, other sha256
    assert engine.account("acme").total == 196


# --- the money rules as the Credits History shows them ---------------------------------

def test_a_mixed_bulk_settles_every_address_once_with_one_row_per_unknown(engine, db, csv_file):
    engine.open_account("acme")
    engine.grant_credits("acme", "monthly", 3, "subscription", T0 + timedelta(days=30))
    task = engine.create_bulk("acme", csv_file("a@x.com", "b@x.com", "c@x.com", "d@x.com", "e@x.com")).task_id
    for n in range(3):
        chunk = staged_chunk(db, task, n, 2)
        engine.submit_chunk(task, n, chunk, "smtp", "primary")
    engine.record_results(task, 0, [Result("a@x.com", "safe"), Result("b@x.com", "unknown", "greylisted")])
    engine.record_results(task, 1, [Result("c@x.com", "invalid"), Result("d@x.com", "unknown", "smtp_timeout"),
                                    Result("c@x.com", "unknown", "smtp_timeout")])  # c again: nothing
    recorded = engine.record_results(task, 2, [Result("e@x.com", "risky", "accept_all")])
    assert recorded[-1].type == "TaskCompleted"
    # each Unknown's refund is in the same append as its result, caused by it
    refunds = [r for r in db.events.read_all() if isinstance(r.event, CreditsRefunded)]
    causes = {str(r.event_id): r for r in db.events.read_all()
              if isinstance(r.event, ResultsRecorded) and r.event.status == "unknown"}
    assert [r.event for r in refunds] == [CreditsRefunded(task, 1, "unknown")] * 2
    for refund in refunds:
        cause = causes[refund.causation_id]
        assert refund.position == cause.position + 1
    state = engine.account("acme")
    assert (state.monthly, state.payg) == (0, 200)  # 3 monthly + 2 payg debited, 2 refunded to PAYG
    db.catch_up()
    rows = db.read.history("acme")
    assert [(r["type"], r["bucket"], r["amount"], r["description"], r["task_id"]) for r in rows[-4:]] == [
        ("debit", "monthly", -3, "Credit debit: 3 credits", task),
        ("debit", "payg", -2, "Credit debit: 2 credits", task),
        ("refund", "payg", 1, "Credit refund: 1 credits", task),
        ("refund", "payg", 1, "Credit refund: 1 credits", task),
    ]
    assert sum(r["amount"] for r in rows) == rows[-1]["balance_after"] == 200
    shown = db.read.task(task)
    assert (shown["status"], shown["debited"], shown["consumed"], shown["refunded"]) == ("completed", 5, 3, 2)
    assert_audit_clean(db)


def test_cancel_refunds_the_unverified_in_one_cancel_row_and_late_results_are_not_shown(engine, db, csv_file):
    engine.open_account("acme")
    task = engine.create_bulk("acme", csv_file(*(f"u{i}@x.com" for i in range(5)))).task_id
    engine.submit_chunk(task, 0, staged_chunk(db, task, 0, 2), "smtp", "primary")
    engine.record_results(task, 0, [Result("u0@x.com", "safe")])
    recorded = engine.cancel_task(task)
    assert [r.event for r in recorded] == [TaskCancelled(4), CreditsRefunded(task, 4, "cancelled")]
    assert engine.submit_chunk(task, 1, staged_chunk(db, task, 1, 2), "smtp", "primary") == []
    late = engine.record_results(task, 0, [Result("u1@x.com", "unknown", "greylisted")])
    assert [r.event.late for r in late] == [True]
    with pytest.raises(TaskAlreadyCancelled):
        engine.cancel_task(task)
    db.catch_up()
    rows = db.read.history("acme", "cancel")
    assert [(r["amount"], r["bucket"], r["description"]) for r in rows] == [(4, "payg", "Credit refund: 4 credits")]
    assert [r["address"] for r in db.read.results(task)] == ["u0@x.com"]
    assert engine.account("acme").payg == 199
    assert_audit_clean(db)


def test_system_failure_refunds_in_a_refund_row(engine, db, csv_file):
    engine.open_account("acme")
    task = engine.create_bulk("acme", csv_file("a@x.com", "b@x.com", "c@x.com")).task_id
    engine.submit_chunk(task, 0, staged_chunk(db, task, 0, 2), "smtp", "primary")
    engine.fail_for_system(task, "engine down past the grace period")
    assert engine.fail_for_system(task, "again") == []
    db.catch_up()
    last = db.read.history("acme")[-1]
    assert (last["type"], last["amount"], last["bucket"]) == ("refund", 3, "payg")
    assert db.read.task(task)["status"] == "failed"
    assert_audit_clean(db)


def test_chunk_failure_past_the_threshold_fails_with_the_badge(engine, db, csv_file):
    engine.open_account("acme")
    task = engine.create_bulk("acme", csv_file(*(f"u{i}@x.com" for i in range(6)))).task_id  # 3 chunks
    engine.submit_chunk(task, 0, staged_chunk(db, task, 0, 2), "smtp", "primary")
    engine.submit_chunk(task, 1, staged_chunk(db, task, 1, 2), "smtp", "primary")
    engine.record_results(task, 1, [Result("u2@x.com", "safe")])
    engine.fail_chunk(task, 0, "provider rejected the chunk")  # 1/3 <= 0.5
    assert engine.task(task).status == "processing"
    engine.fail_chunk(task, 1, "provider rejected the chunk")  # 2/3 > 0.5
    state = engine.task(task)
    assert (state.status, state.partial_failure, state.consumed, state.refunded) == ("failed", True, 1, 5)
    assert engine.account("acme").payg == 199
    db.catch_up()
    shown = db.read.task(task)
    assert (shown["status"], shown["partial_failure"], shown["failed"]) == ("failed", True, 3)
    assert_audit_clean(db)


def test_cancel_of_a_single_task_and_delete_while_processing_fail_clearly(engine, db, csv_file):
    engine.open_account("acme")
    single = engine.create_single("acme", "solo@x.com")
    bulk = engine.create_bulk("acme", csv_file("a@x.com", "b@x.com", "c@x.com")).task_id
    engine.submit_chunk(bulk, 0, staged_chunk(db, bulk, 0, 2), "smtp", "primary")
    head = db.events.head()
    with pytest.raises(TaskNotCancellable, match="cannot be cancelled"):
        engine.cancel_task(single)
    with pytest.raises(TaskNotFinished):
        engine.delete_task(bulk)
    assert db.events.head() == head
    assert staged_chunk(db, bulk, 1, 2) == ["c@x.com"]  # a refused delete keeps the inputs
    engine.cancel_task(bulk)
    engine.delete_task(bulk)
    assert db.inputs.chunk(bulk, 1, 2) == []
    with pytest.raises(TaskNotFound):
        engine.delete_task(bulk)
    db.catch_up()
    assert db.read.task(bulk) is None
    assert list(db.read.results(bulk)) == []
    # the log keeps everything but the task's data key: deleting erases its addresses
    assert log_types(db, f"task-{bulk}")[-2:] == ["TaskDeleted", "TaskDataErased"]
    assert db.keyring.store.get(bulk) is None
    assert_audit_clean(db)


def test_commands_on_an_unknown_task_are_refused(engine, db):
    for command in (lambda: engine.cancel_task("nope"), lambda: engine.delete_task("nope"),
                    lambda: engine.record_results("nope", 0, [Result("a@x.com", "safe")]),
                    lambda: engine.fail_chunk("nope", 0, "x"), lambda: engine.fail_for_system("nope", "x"),
                    lambda: engine.submit_chunk("nope", 0, ["a@x.com"], "p", "t")):
        with pytest.raises(TaskNotFound):
            command()
    assert db.events.head() == 0


def test_monthly_leftover_expires_lazily_on_debit_and_explicitly(engine, db, clock):
    engine.open_account("acme")
    engine.grant_credits("acme", "monthly", 50, "subscription", T0 + timedelta(days=30))
    engine.create_single("acme", "one@x.com")
    assert engine.expire_monthly("acme") == []
    clock.advance(days=30)
    recorded = engine.create_single("acme", "two@x.com", task_id="t2")
    types = [type(r.event) for r in db.events.read_stream("account-acme")][-2:]
    assert types == [MonthlyCreditsExpired, CreditsDebited]
    state = engine.account("acme")
    assert (state.monthly, state.payg) == (0, 199)
    assert recorded == "t2"
    engine.grant_credits("acme", "monthly", 10, "subscription", clock.now + timedelta(days=30))
    clock.advance(days=31)
    assert [r.event for r in engine.expire_monthly("acme")] == [MonthlyCreditsExpired(10)]
    assert engine.expire_monthly("acme") == []
    db.catch_up()
    expiries = db.read.history("acme", "expiry")
    assert [(r["amount"], r["bucket"]) for r in expiries] == [(-49, "monthly"), (-10, "monthly")]
    assert_audit_clean(db)


def test_the_expiry_scan_finds_a_monthly_bucket_granted_with_a_non_utc_expiry(engine, db, clock):
    engine.open_account("acme")
    karachi = timezone(timedelta(hours=5))
    expires = (T0 + timedelta(days=1)).astimezone(karachi)
    engine.grant_credits("acme", "monthly", 40, "subscription", expires)
    db.catch_up()
    assert db.read.expired_monthly_accounts(T0 + timedelta(days=1) - timedelta(seconds=1)) == []
    assert db.read.expired_monthly_accounts(T0 + timedelta(days=1, hours=1)) == ["acme"]


def test_a_cold_engine_sees_the_same_states(engine, db, settings, clock, csv_file):
    engine.open_account("acme")
    task = engine.create_bulk("acme", csv_file("a@x.com", "b@x.com", "c@x.com")).task_id
    engine.submit_chunk(task, 0, staged_chunk(db, task, 0, 2), "smtp", "primary")
    engine.record_results(task, 0, [Result("a@x.com", "unknown", "greylisted")])
    warm = engine.task(task).copy()
    cold = Engine(db, settings, clock)
    got = cold.task(task)
    assert (got.status, got.consumed, got.refunded, got.pending, got.chunks_submitted) == (
        warm.status, warm.consumed, warm.refunded, warm.pending, warm.chunks_submitted)
    assert cold.account("acme") == engine.account("acme")
    assert isinstance(next(db.events.read_stream(f"task-{task}")).event, TaskCreated)


# --- the audit sees what it must ------------------------------------------------------

@pytest.fixture
def busy_db(engine, db, csv_file):
    engine.open_account("acme")
    task = engine.create_bulk("acme", csv_file("a@x.com", "b@x.com", "c@x.com")).task_id
    engine.submit_chunk(task, 0, staged_chunk(db, task, 0, 2), "smtp", "primary")
    engine.record_results(task, 0, [Result("a@x.com", "safe"), Result("b@x.com", "unknown", "greylisted")])
    engine.cancel_task(task)
    assert audit(db).violations == []
    return db, task


def test_the_audit_names_a_tampered_balance(busy_db):
    db, _ = busy_db
    db.events.conn.execute("UPDATE rm_balances SET payg = payg + 1 WHERE account_id = 'acme'")
    assert any("rm_balances" in v for v in audit(db).violations)


def test_the_audit_names_a_lost_history_row(busy_db):
    db, _ = busy_db
    db.events.conn.execute("DELETE FROM rm_history WHERE type = 'cancel'")
    assert any("rm_history" in v for v in audit(db).violations)


def test_the_audit_names_a_refund_no_address_explains(busy_db, engine):
    db, task = busy_db
    from events import NewEvent
    import uuid

    # a refund slipped into the log behind the deciders' back (the debit still covers it)
    version = db.events.stream_version("account-acme")
    db.events.append([NewEvent("account-acme", CreditsRefunded(task, 1, "support"), uuid.uuid4(), clock_now())],
                     {"account-acme": version})
    violations = audit(db).violations
    assert any(f"task {task}" in v and "refunds" in v for v in violations), violations


def test_a_rebuild_gives_the_live_read_models_back(busy_db):
    db, _ = busy_db
    live = {table: db.projector.sorted_rows(table) for table in db.projector.specs}
    db.projector.rebuild()
    assert {table: db.projector.sorted_rows(table) for table in db.projector.specs} == live


def clock_now() -> datetime:
    return T0


def test_two_uploads_of_one_file_racing_one_wins_the_other_is_refused(db, second_db, settings, clock, csv_file):
    """Deterministic: the rival's upload lands between our duplicate check and our append."""
    first, rival = Engine(db, settings, clock), Engine(second_db, settings, clock)
    first.open_account("acme")
    path = csv_file("a@x.com", "b@x.com", "c@x.com")
    won: list[str] = []
    store = racing(first, lambda: won.append(rival.create_bulk("acme", path).task_id))
    with pytest.raises(BadUpload, match=f"within 24 h \\(task {won[0] if won else ''}"):
        first.create_bulk("acme", path)
    assert store.conflicts == 1 and len(won) == 1
    assert log_types(db).count("TaskCreated") == 1
    assert staged_task_ids(db) == {first.task(won[0]).upload_id}  # the loser's staging is gone
    assert_audit_clean(db)


def test_two_uploads_of_one_file_at_once_in_threads(db, settings, clock, csv_file):
    path = csv_file(*(f"user{i}@x.com" for i in range(300)))
    opener = Engine(db, settings, clock)
    opener.open_account("acme")
    opener.grant_credits("acme", "payg", 1000)
    engines = [Engine(open_database(db.url), settings, clock) for _ in range(2)]
    outcomes: list[object] = [None, None]
    barrier = threading.Barrier(2)

    def upload(n: int) -> None:
        barrier.wait()
        try:
            outcomes[n] = engines[n].create_bulk("acme", path).task_id
        except BaseException as error:  # noqa: BLE001
            outcomes[n] = error

    threads = [threading.Thread(target=upload, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    winners = [o for o in outcomes if isinstance(o, str)]
    losers = [o for o in outcomes if isinstance(o, BadUpload)]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    assert "--allow-duplicate" in str(losers[0])
    assert log_types(db).count("TaskCreated") == 1
    assert staged_task_ids(db) == {opener.task(winners[0]).upload_id}
    db.catch_up()
    assert db.read.balances("acme")["total"] == 1200 - 300  # charged once
    assert_audit_clean(db)
    for e in engines:
        e.db.close()


def test_an_address_that_starts_like_a_sealed_value_is_verified_and_stored_sealed(engine, db, csv_file):
    """"§x@example.com" is a valid address (SMTPUTF8). Taken for a sealed value (it starts with
    the mark), it went to the store in plain text and failed to open: the whole bulk failed."""
    engine.open_account("acme")
    task = engine.create_bulk("acme", csv_file("a@x.com", "§b@x.com", "§B@X.COM")).task_id
    chunk = staged_chunk(db, task, 0, 10)
    assert chunk == ["a@x.com", "§b@x.com"]  # the repeat, told apart case-insensitively
    engine.submit_chunk(task, 0, chunk, "smtp", "primary")
    recorded = engine.record_results(task, 0, [Result("a@x.com", "safe"), Result("§b@x.com", "invalid")])
    assert recorded[-1].type == "TaskCompleted"
    db.catch_up()
    assert [(r["address"], r["status"]) for r in db.read.results(task)] == [("a@x.com", "safe"), ("§b@x.com", "invalid")]
    stored = [r[0] for r in db.events.conn.execute("SELECT address FROM rm_results")]
    assert len(stored) == 2 and "§b@x.com" not in stored and all(a.startswith("§") for a in stored)
    assert "§b@x.com" not in str([tuple(r) for r in db.events.conn.execute("SELECT data FROM events")])
    assert_audit_clean(db)

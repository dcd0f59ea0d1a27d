"""What keeps a million-address task's memory bounded (issue 13, item 4): a submitted
chunk's pending addresses packed until looked into, the engine's recent events bounded by
the addresses they carry, and pages of stored rows bounded by their bytes."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

from hypothesis import given, strategies as st

from engine.domain.tasks import PendingChunk
from engine.service import RecentEvents
from engine.store.base import PAGE_BYTES, paged
from events import AddressVerified, ChunkSubmitted, RecordedEvent

ADDRESS = st.from_regex(r"[a-z0-9.]{1,12}@[a-z]{1,8}\.(com|org)", fullmatch=True)


@given(st.lists(ADDRESS, unique=True, max_size=40), st.lists(st.integers(min_value=0, max_value=60), max_size=30))
def test_a_pending_chunk_is_the_ordered_set_of_its_unsettled_addresses(addresses, settle_at):
    chunk, model = PendingChunk(addresses), dict.fromkeys(addresses)
    assert list(chunk) == list(model) and len(chunk) == len(model)  # packed: read in order
    for index in settle_at:
        if index < len(addresses):
            address = addresses[index]
            assert (address in chunk) == (address in model)
            chunk.pop(address, None)
            model.pop(address, None)
        assert list(chunk) == list(model) and len(chunk) == len(model) and bool(chunk) == bool(model)
    assert chunk == model
    assert "nobody@nowhere.test" not in chunk


def test_an_empty_chunk_holds_nothing():
    assert len(PendingChunk()) == 0 and list(PendingChunk()) == [] and not PendingChunk()
    assert "" not in PendingChunk()


def recorded(position: int, event) -> RecordedEvent:
    return RecordedEvent(position, "task-t1", position, uuid.uuid4(), datetime(2026, 1, 1, tzinfo=timezone.utc), event)


def submission(chunk_no: int, size: int) -> ChunkSubmitted:
    return ChunkSubmitted(chunk_no, tuple(f"a{chunk_no}.{i}@x.org" for i in range(size)), "instant", "instant")


def test_recent_events_are_bounded_by_the_addresses_they_carry():
    recent = RecentEvents(budget=2_000)
    recent.extend(recorded(p, submission(p, 500)) for p in range(1, 21))  # 10,000 addresses submitted
    held = [r.position for r, _ in recent.events]
    assert held == [17, 18, 19, 20]  # the last 2,000 addresses' worth
    assert recent.weight == 2_000
    recent.extend(recorded(p, AddressVerified(f"a{p}@x.org", "safe", "")) for p in range(21, 521))
    assert recent.weight <= 2_000 and recent.events[-1][0].position == 520


def test_recent_events_hand_a_run_without_gaps_or_nothing():
    recent = RecentEvents(budget=100)
    recent.extend(recorded(p, AddressVerified(f"a{p}@x.org", "safe", "")) for p in range(1, 11))
    assert [r.position for r in recent.between(3, 7) or []] == [4, 5, 6, 7]
    recent.extend([recorded(13, AddressVerified("b@x.org", "safe", ""))])  # 11 and 12: another process's
    assert [r.position for r in recent.between(8, 20) or []] == [9, 10]
    assert recent.between(0, 5) is not None and recent.between(10, 20) is None  # 11 is not held
    assert RecentEvents(budget=2).between(0, 5) is None


def fetcher(rows: list[tuple[int, int]], pages: list[list[tuple[int, int]]]):
    def fetch(after: int, limit: int) -> list[tuple[int, int]]:
        page = rows[after:after + limit]  # positions are 1, 2, 3...
        pages.append(page)
        return page
    return fetch


def weight(row: tuple[int, int]) -> int:
    return row[1]  # each row declares its bytes


@given(st.lists(st.integers(min_value=0, max_value=2 * PAGE_BYTES), max_size=400), st.integers(min_value=1, max_value=600))
def test_pages_yield_every_row_once_and_in_order(sizes, batch):
    rows = list(enumerate(sizes, start=1))
    pages: list[list[tuple[int, int]]] = []
    assert list(paged(fetcher(rows, pages), 0, batch, weigh=weight)) == rows
    assert all(0 < len(page) <= batch for page in pages[:-1])


@given(st.integers(min_value=1, max_value=2 * PAGE_BYTES), st.integers(min_value=1, max_value=3000),
       st.integers(min_value=1, max_value=2000))
def test_pages_of_alike_rows_weigh_at_most_the_budget(size, count, batch):
    rows = [(position, size) for position in range(1, count + 1)]
    pages: list[list[tuple[int, int]]] = []
    list(paged(fetcher(rows, pages), 0, batch, weigh=weight))
    later = pages[1:]  # the first page's few dozen rows are read before their weight is known
    assert all(sum(r[1] for r in page) <= max(PAGE_BYTES, size) for page in later)
    full = min(batch, max(1, PAGE_BYTES // size))  # as many as fit, up to the batch
    assert all(len(page) == full for page in later[:-1])


def test_pages_without_weights_are_the_batch():
    rows = [(p, "") for p in range(1, 1001)]
    limits: list[int] = []

    def fetch(after: int, limit: int) -> list[tuple[int, str]]:
        limits.append(limit)
        return [row for row in rows if row[0] > after][:limit]

    assert list(paged(fetch, 0, 300)) == rows and set(limits) == {300}

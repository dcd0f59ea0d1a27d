"""The hash chain's rule (engine/chain.py, docs/audit.md "The hash chain"), pure: the
canonical form each store hashes, and what `verify` names. The stores and the audit over
them: tests/integration/test_chain.py, test_tamper_catalogue.py, tests/unit/test_audit_rules.py."""
from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from engine import chain

EVENT_ID = uuid.UUID("0123456789abcdef0123456789abcdef")
AT = datetime(2026, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))  # 10:00 UTC
ROW = (7, EVENT_ID, "account-acme", 3, "CreditsGranted", 1, '{"amount":50}', AT, "corr", "cause", "alice")


def by_hand(previous: bytes, row: tuple) -> bytes:
    """SHA-256(previous hash ‖ the JSON array of docs/audit.md), written without engine/chain.py."""
    position, event_id, stream, version, type_name, schema_version, data, at, correlation, causation, actor = row
    canonical = ["vec-chain-1", position, event_id.hex, stream, version, type_name, schema_version, data,
                 at.astimezone(timezone.utc).isoformat(), correlation, causation, actor]
    return hashlib.sha256(previous + json.dumps(canonical, separators=(",", ":")).encode()).digest()


def test_position_one_follows_32_zero_bytes():
    assert chain.GENESIS == b"\0" * 32


def test_a_link_is_the_sha256_of_the_previous_hash_and_the_canonical_row():
    previous = hashlib.sha256(b"the event before").digest()
    assert chain.link(previous, ROW) == by_hand(previous, ROW)
    assert chain.link(chain.GENESIS, ROW) == by_hand(chain.GENESIS, ROW)


def test_each_store_s_form_of_the_id_and_time_hashes_the_same():
    """PostgreSQL reads a UUID and a datetime, SQLite 16 bytes and UTC text, drivers a memoryview."""
    sqlite_row = (*ROW[:1], EVENT_ID.bytes, *ROW[2:7], "2026-06-01T10:00:00+00:00", *ROW[8:])
    expected = chain.link(chain.GENESIS, ROW)
    assert chain.link(chain.GENESIS, sqlite_row) == expected
    for id_form in (bytearray(EVENT_ID.bytes), memoryview(EVENT_ID.bytes)):
        assert chain.link(chain.GENESIS, (*ROW[:1], id_form, *ROW[2:])) == expected


@pytest.mark.parametrize("index, value", [(0, 8), (1, uuid.UUID(int=1)), (2, "account-other"), (3, 4),
                                          (4, "CreditsDebited"), (5, 2), (6, '{"amount":51}'),
                                          (7, AT + timedelta(microseconds=1)), (8, None), (9, None), (10, "bob")])
def test_every_column_is_in_the_hash(index, value):
    changed = (*ROW[:index], value, *ROW[index + 1:])
    assert chain.link(chain.GENESIS, changed) != chain.link(chain.GENESIS, ROW)


def test_links_numbers_the_rows_from_the_first_position():
    second = (8, uuid.UUID(int=2), *ROW[2:])
    first_hash = chain.link(chain.GENESIS, ROW)
    assert chain.links(chain.GENESIS, 7, [ROW[1:], second[1:]]) == [first_hash, chain.link(first_hash, second)]
    assert chain.links(chain.GENESIS, 7, []) == []


def stored(rows: list[tuple]) -> list[tuple]:
    """The rows with their chain hash last, as the stores read them."""
    out, previous = [], chain.GENESIS
    for row in rows:
        previous = chain.link(previous, row)
        out.append((*row, previous))
    return out


LOG = [(p, uuid.UUID(int=p), f"account-{p}", 1, "AccountOpened", 1, "{}", AT, None, None, None) for p in (1, 2, 3)]


def test_a_whole_chain_verifies_and_one_after_a_known_hash_too():
    rows = stored(LOG)
    assert list(chain.verify(rows)) == []
    assert list(chain.verify(rows[1:], rows[0][-1])) == []
    assert list(chain.verify(rows[1:])) != []  # the second row does not follow the genesis


def test_an_altered_row_is_one_break_named_at_its_position():
    rows = stored(LOG)
    rows[1] = (*rows[1][:6], '{"x":1}', *rows[1][7:])
    breaks = list(chain.verify(rows))
    assert [(b.position, b.stream) for b in breaks] == [(2, "account-2")]  # goes on from the stored hash
    expected = chain.link(rows[0][-1], rows[1][:-1])
    assert str(breaks[0]) == (f"the chain breaks at position 2 (account-2): stored hash {rows[1][-1].hex()[:16]}… "
                              f"is not the hash of this row after the previous one ({expected.hex()[:16]}…)")


def test_a_row_without_a_hash_is_named_and_the_rest_checked_from_its_own():
    rows = stored(LOG)
    rows[0] = (*rows[0][:-1], None)
    breaks = list(chain.verify(rows))
    assert [str(b) for b in breaks] == ["the chain breaks at position 1 (account-1): no chain hash "
                                        "(an older log: run `vec migrate`)"]


def test_a_hash_read_as_a_memoryview_verifies():
    rows = [(*row[:-1], memoryview(row[-1])) for row in stored(LOG)]
    assert list(chain.verify(rows)) == []


@pytest.mark.parametrize("index, value, why", [
    (1, str(EVENT_ID), "an event id of type str"), (1, 5, "an event id of type int"),
    (7, 1780000000, "an occurred_at of type int"), (7, None, "an occurred_at of type NoneType"),
])
def test_a_column_of_a_type_no_store_writes_is_a_named_break(index, value, why):
    rows = stored(LOG)
    rows[1] = (*rows[1][:index], value, *rows[1][index + 1:])
    breaks = list(chain.verify(rows))
    assert [str(b) for b in breaks] == [f"the chain breaks at position 2 (account-2): a column cannot be hashed "
                                        f"({why})"]  # the next row checked from the stored hash


def test_an_unhashable_row_without_a_hash_goes_on_from_the_genesis():
    rows = stored(LOG)
    rows[0] = (*rows[0][:1], 5, *rows[0][2:-1], None)
    assert [b.position for b in chain.verify(rows)] == [1, 2]  # position 2 followed the real hash, not zeros
    second = chain.link(chain.GENESIS, rows[1][:-1])  # the rest chained on from zeros
    rows[1], rows[2] = (*rows[1][:-1], second), (*rows[2][:-1], chain.link(second, rows[2][:-1]))
    assert [b.position for b in chain.verify(rows)] == [1]


@pytest.mark.usefixtures("server_in_new_york")
def test_a_time_is_hashed_in_utc_whatever_zone_the_server_runs_in():
    """Two servers in different zones must hash one log to one chain."""
    assert chain.link(chain.GENESIS, ROW) == by_hand(chain.GENESIS, ROW)

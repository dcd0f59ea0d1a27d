"""Hostile files fed to the bulk reader: whatever the bytes, it yields addresses or refuses
with a `BadUpload` (a 4xx for the API, one line for the CLI). Never another exception."""
from __future__ import annotations

import codecs

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.bulkfile import MAX_COLUMNS, BadUpload, FileReport, read_addresses

FRAGMENTS = [
    b'"', b'""', b",", b";", b"\t", b"|", b"\n", b"\r", b"\r\n", b" ", b"\x00", codecs.BOM_UTF8, codecs.BOM_UTF16_LE,
    b"email", b"E-Mail", b"alice@example.com", b"o'brien@example.com", b"@", b"\xc3", b"\xe2\x82\xac", b"\xff",
    "caf\u00e9@example.com".encode(), "\u202e@x".encode(), b"\\", b"=cmd|' /C calc'!A0",
]
HUGE = [b'"' + b"a" * 200_000, b"b" * 200_000, b"," * (MAX_COLUMNS + 1), b"x@y.z," * 5000]


def _read(path) -> list[str]:
    return list(read_addresses(path, FileReport()))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=40)), max_size=60))
def test_any_bytes_are_read_or_refused_as_a_bad_upload(tmp_path, parts):
    path = tmp_path / "hostile.csv"
    path.write_bytes(b"".join(parts))
    try:
        addresses = _read(path)
    except BadUpload as refusal:
        assert str(refusal) and "\n" not in str(refusal)  # one line for the customer
        return
    assert all("@" in a for a in addresses)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(head=st.lists(st.sampled_from(FRAGMENTS), max_size=10), huge=st.sampled_from(HUGE),
       tail=st.lists(st.sampled_from(FRAGMENTS), max_size=10))
def test_huge_fields_and_wide_rows_are_read_or_refused(tmp_path, head, huge, tail):
    path = tmp_path / "huge.csv"
    path.write_bytes(b"".join(head) + huge + b"".join(tail))
    try:
        _read(path)
    except BadUpload:
        pass


@pytest.mark.parametrize(("data", "says"), [
    (b'email\n"alice@example.com\n' + b"a" * 200_000 + b"\n", "line 2 of the file cannot be read as CSV"),
    (b"email\nbob@example.com\n" + b"," * 1_000_000 + b"\n", "line 3 has 1,000,001 columns"),
    (b"email\nalice@example.com\n" + b"x" * 200_000 + b"\n", "line 3 of the file cannot be read as CSV"),
], ids=["unclosed-quote", "a-million-columns", "huge-field"])
def test_the_refusal_names_the_line(tmp_path, data, says):
    path = tmp_path / "bad.csv"
    path.write_bytes(data)
    with pytest.raises(BadUpload) as refusal:
        _read(path)
    assert says in str(refusal.value)

"""The streaming bulk-file reader: header or not, column picking, BOM, quotes, delimiters,
blank lines, rows without an address, duplicates, sha256 of the raw bytes, refusals."""
from __future__ import annotations

import hashlib

from datetime import datetime, timezone

import pytest

from engine.bulkfile import SNIFF_BYTES, BadUpload, FileReport, read_addresses
from engine.domain.errors import DomainError


@pytest.fixture
def read(tmp_path):
    """Writes raw bytes to a file and reads it: (addresses, report)."""
    counter = iter(range(10_000))

    def _read(data: bytes) -> tuple[list[str], FileReport]:
        path = tmp_path / f"upload-{next(counter)}.csv"
        path.write_bytes(data)
        report = FileReport()
        return list(read_addresses(path, report)), report

    return _read


# --- header or not, and which column --------------------------------------------------

def test_single_column_with_header(read):
    addresses, report = read(b"email\na@x.com\nb@x.com\n")
    assert addresses == ["a@x.com", "b@x.com"]
    assert (report.rows, report.candidates, report.rows_without_address, report.column) == (2, 2, 0, "email")


def test_single_column_without_header_keeps_the_first_row(read):
    addresses, report = read(b"a@x.com\nb@x.com\n")
    assert addresses == ["a@x.com", "b@x.com"]
    assert (report.rows, report.column) == (2, "column 1")


def test_one_address_without_a_trailing_newline(read):
    assert read(b"solo@x.com")[0] == ["solo@x.com"]


@pytest.mark.parametrize("header, column", [
    ("name,email,phone", "email"), ("Name,E-Mail,Phone", "E-Mail"), ("name,Email Address,phone", "Email Address"),
    ("name,MAIL,phone", "MAIL"), ("name, email ,phone", "email"),
])
def test_the_email_column_is_picked_by_its_header_name(read, header, column):
    data = f"{header}\nJohn,a@x.com,555\nJane,b@x.com,556\n".encode()
    addresses, report = read(data)
    assert addresses == ["a@x.com", "b@x.com"]
    assert report.column == column


def test_a_named_email_column_wins_over_a_column_with_more_at_signs(read):
    addresses, report = read(b"referrer,email\nr1@x.com,a@x.com\nr2@x.com,\nr3@x.com,b@x.com\n")
    assert addresses == ["a@x.com", "b@x.com"]
    assert (report.column, report.rows_without_address) == ("email", 1)


def test_an_unknown_header_picks_the_column_with_the_most_addresses(read):
    addresses, report = read(b"who,contact,notes\nJohn,a@x.com,x\nJane,b@x.com,c@x.com\nJim,d@x.com,\n")
    assert addresses == ["a@x.com", "b@x.com", "d@x.com"]
    assert report.column == "contact"


def test_no_header_picks_the_column_with_the_most_addresses(read):
    addresses, report = read(b"John,a@x.com\nJane,b@x.com\n")
    assert addresses == ["a@x.com", "b@x.com"]
    assert report.column == "column 2"


# --- BOM, quotes, delimiters, line endings --------------------------------------------

def test_a_utf8_bom_is_not_part_of_the_header_or_the_first_address(read):
    assert read(b"\xef\xbb\xbfemail\na@x.com\n")[0] == ["a@x.com"]
    addresses, report = read(b"\xef\xbb\xbfa@x.com\nb@x.com\n")
    assert addresses == ["a@x.com", "b@x.com"]


def test_quoted_fields_with_embedded_commas_newlines_and_quotes(read):
    data = (b'name,email,note\r\n'
            b'"Smith, John",a@x.com,"two\nlines"\r\n'
            b'"He said ""hi""",b@x.com,"a, b, c"\r\n'
            b'"multi\r\nline, with comma","c@x.com",x\r\n')
    addresses, report = read(data)
    assert addresses == ["a@x.com", "b@x.com", "c@x.com"]
    assert (report.rows, report.rows_without_address) == (3, 0)


@pytest.mark.parametrize("delimiter", [b";", b"\t", b"|"])
def test_other_delimiters(read, delimiter):
    d = delimiter
    data = b"name" + d + b"email\n" + b'"Doe' + d + b' J"' + d + b"a@x.com\nX" + d + b"b@x.com\n"
    addresses, report = read(data)
    assert addresses == ["a@x.com", "b@x.com"]
    assert report.column == "email"


def test_semicolon_file_whose_notes_hold_commas(read):
    assert read(b"email;note\na@x.com;foo,bar\nb@x.com;x,y,z\n")[0] == ["a@x.com", "b@x.com"]


@pytest.mark.parametrize("data", [
    b"email,note\na@x.com,a;b;c\nb@x.com,d;e;f\n",
    b"email,tags\na@x.com,x|y|z\nb@x.com,x|y|z\n",
    b"name,email\nDoe; John,a@x.com\nRoe; Jane,b@x.com\n",
    b"email\tname\na@x.com\tDoe, John\nb@x.com\tRoe, Jane\n",
    b"email;name\na@x.com;Doe, John, Jr\nb@x.com;Roe, Jane, Sr\n",
])
def test_other_delimiters_inside_fields_do_not_win_the_sniff(read, data):
    addresses, report = read(data)
    assert addresses == ["a@x.com", "b@x.com"]
    assert report.column == "email"


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_any_line_ending(read, newline):
    data = newline.join([b"email", b"a@x.com", b"b@x.com", b""])
    assert read(data)[0] == ["a@x.com", "b@x.com"]


def test_surrounding_spaces_are_trimmed(read):
    assert read(b"  a@x.com  \n\tb@x.com\n")[0] == ["a@x.com", "b@x.com"]


def test_apostrophes_in_names_are_plain_characters(read):
    data = b"name,email\nO'Brien,a@x.com\nD'Arcy,b@x.com\n\"O'Hara, Kim\",c@x.com\n"
    assert read(data)[0] == ["a@x.com", "b@x.com", "c@x.com"]


def test_an_apostrophe_opening_a_field_does_not_swallow_the_next_row(read):
    addresses, report = read(b"email,name\na@x.com,'Tis Me\nb@x.com,Rock 'n' Roll\n")
    assert addresses == ["a@x.com", "b@x.com"]
    assert report.rows == 2


# --- blank lines and rows without an address ------------------------------------------

def test_blank_lines_are_skipped_and_not_counted(read):
    addresses, report = read(b"\n\nemail\n\na@x.com\n   \n,,\n\nb@x.com\n\n")
    assert addresses == ["a@x.com", "b@x.com"]
    assert (report.rows, report.rows_without_address) == (2, 0)


def test_rows_without_an_address_are_counted_not_yielded(read):
    data = b"name,email\nJohn,a@x.com\nNoMail,\nShort\nJane,not-an-address\nK,b@x.com\n"
    addresses, report = read(data)
    assert addresses == ["a@x.com", "b@x.com"]
    assert (report.rows, report.rows_without_address, report.candidates) == (5, 3, 2)


def test_a_header_only_file_yields_nothing(read):
    addresses, report = read(b"email\n")
    assert addresses == [] and report.rows == 0


def test_a_file_with_no_address_at_all_yields_nothing(read):
    addresses, report = read(b"notes\nhello\nworld\n")
    assert addresses == []
    assert (report.rows, report.rows_without_address) == (2, 2)


# --- duplicates -----------------------------------------------------------------------

def test_the_reader_yields_duplicates_and_counts_them_as_candidates(read):
    addresses, report = read(b"email\nA@x.com\na@X.com\nb@x.com\na@x.com\n")
    assert addresses == ["A@x.com", "a@X.com", "b@x.com", "a@x.com"]
    assert report.candidates == 4


def test_staging_keeps_the_first_of_case_insensitive_duplicates_and_the_report_counts_them(db, tmp_path):
    path = tmp_path / "dups.csv"
    path.write_bytes("email\nA@x.com\nb@x.com\na@X.com\nB@X.COM\nJörg@x.com\njÖRG@X.com\nc@x.com\n".encode())
    report = FileReport()
    report.unique = db.inputs.stage("t1", read_addresses(path, report), datetime.now(timezone.utc))
    assert (report.candidates, report.unique, report.duplicates) == (7, 4, 3)
    assert db.inputs.chunk("t1", 0, 10) == ["A@x.com", "b@x.com", "Jörg@x.com", "c@x.com"]
    assert db.inputs.chunk("t1", 1, 3) == ["c@x.com"]


def test_the_service_charges_one_credit_per_unique_address(db, tmp_path):
    from engine.service import Engine

    path = tmp_path / "dups.csv"
    path.write_bytes(b"email\nA@x.com\na@x.com\nb@x.com\n\nnobody\n")
    engine = Engine(db)
    engine.open_account("acme")
    upload = engine.create_bulk("acme", path)
    assert (upload.report.unique, upload.report.duplicates, upload.report.rows_without_address) == (2, 1, 1)
    assert engine.account("acme").total == 198


# --- sha256 of the raw bytes ----------------------------------------------------------

@pytest.mark.parametrize("data", [
    b"email\na@x.com\n",
    b"\xef\xbb\xbfemail\r\na@x.com\r\n",
    "email\nj\u00f6rg@b\u00fccher.de\n".encode(),
])
def test_sha256_is_of_the_raw_bytes(read, data):
    assert read(data)[1].sha256 == hashlib.sha256(data).hexdigest()


def test_sha256_differs_for_the_same_addresses_with_a_bom(read):
    plain, bom = read(b"a@x.com\n")[1], read(b"\xef\xbb\xbfa@x.com\n")[1]
    assert plain.sha256 != bom.sha256


def test_sha256_covers_a_file_bigger_than_the_sniff_sample(read):
    data = ("email\n" + "".join(f"user{i}@example.com\n" for i in range(8000))).encode()
    assert len(data) > 2 * SNIFF_BYTES
    addresses, report = read(data)
    assert len(addresses) == 8000 and addresses[-1] == "user7999@example.com"
    assert report.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("offset", range(-6, 7))
def test_rows_across_the_sniff_boundary_are_read_whole(read, offset):
    """The sample ends mid-row, mid-CRLF or inside a quoted multi-line field: nothing is lost."""
    head, n = "name,email\r\n", 0
    body: list[str] = []
    size = len(head)
    while size < SNIFF_BYTES + offset - 20:
        row = f"p{n},u{n}@x.com\r\n"
        body.append(row)
        size += len(row)
        n += 1
    tail = '"line1\r\nline2, still",edge@x.com\r\nafter,after@x.com\r\n'
    data = (head + "".join(body) + tail).encode()
    addresses, report = read(data)
    assert addresses == [f"u{i}@x.com" for i in range(n)] + ["edge@x.com", "after@x.com"]
    assert (report.rows, report.rows_without_address) == (n + 2, 0)


# --- refusals -------------------------------------------------------------------------

@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"\n\n   \n\t\n", "empty"),
    (b"email\na@x.com\x00\n", "binary"),
    ("email\na@x.com\n".encode("utf-16"), "binary"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    (b"email\nj\xf6rg@x.com\n", "UTF-8"),  # Latin-1
    (b"email\na@x.com\n\xc3", "UTF-8"),  # ends inside a character
])
def test_refused_files(read, data, message):
    with pytest.raises(BadUpload, match=message):
        read(data)


def test_a_bad_byte_far_beyond_the_sniff_sample_is_still_refused(read):
    data = ("email\n" + "".join(f"user{i}@example.com\n" for i in range(8000))).encode() + b"\xff@x.com\n"
    with pytest.raises(BadUpload, match="UTF-8"):
        read(data)


def test_a_nul_far_beyond_the_sniff_sample_is_still_refused(read):
    data = ("email\n" + "".join(f"user{i}@example.com\n" for i in range(8000))).encode() + b"\x00\n"
    with pytest.raises(BadUpload, match="binary"):
        read(data)


def test_bad_upload_is_a_domain_error():
    # the service and the CLI treat every DomainError as "refused, nothing appended"
    assert issubclass(BadUpload, DomainError)

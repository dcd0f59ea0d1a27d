"""Streaming reader of customer files: CSV with or without a header, any of , ; TAB |.

It never holds the file in memory: rows stream from disk into the staging table, which
de-duplicates whole addresses case-insensitively. Refusals (empty, binary, not UTF-8)
raise `BadUpload` with a message fit for the customer.
"""
from __future__ import annotations

import codecs
import csv
import hashlib
import io
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from engine.domain.errors import BadUpload  # noqa: F401 (re-exported: the reader's refusals)

HEADER_NAMES = ("email", "e-mail", "email address", "e-mail address", "emailaddress", "mail", "address")
SAMPLE_BYTES = 64 * 1024
SNIFF_BYTES = 4 * 1024  # csv.Sniffer is quadratic-ish: a few lines tell the delimiter


@dataclass
class FileReport:
    """What the reader saw; `addresses` is filled by the staging table (unique ones)."""

    sha256: str = ""
    rows: int = 0
    rows_without_address: int = 0
    candidates: int = 0  # rows with an address, duplicates included
    unique: int = 0
    column: str = ""

    @property
    def duplicates(self) -> int:
        return self.candidates - self.unique


class _HashingReader(io.RawIOBase):
    """Hashes and vets bytes as they stream past: NUL means binary; UTF-8 is checked strictly."""

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.digest = hashlib.sha256()
        self.size = 0
        self._utf8 = codecs.getincrementaldecoder("utf-8")("strict")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:  # a writable buffer (memoryview)
        data = self.raw.read(len(buffer))
        if data:
            if b"\x00" in data:
                raise BadUpload("the file looks binary (it holds NUL bytes); upload a CSV or text file")
            try:
                self._utf8.decode(data)
            except UnicodeDecodeError:
                raise BadUpload(f"the file is not UTF-8 text (bad byte near offset {self.size}); "
                                "save it as UTF-8 CSV") from None
            self.digest.update(data)
            self.size += len(data)
        else:
            try:
                self._utf8.decode(b"", final=True)
            except UnicodeDecodeError:
                raise BadUpload("the file is not UTF-8 text (it ends inside a character)") from None
        buffer[: len(data)] = data
        return len(data)


class _Customer(csv.excel):
    """Excel's CSV with the sniffed delimiter. Only the delimiter is sniffed: a guessed quote
    character (an apostrophe in O'Brien) would swallow the rows after it."""


def _dialect(sample: str) -> type[csv.Dialect]:
    try:
        head = sample[:SNIFF_BYTES]
        head = head[: head.rfind("\n") + 1] or head  # whole lines only
        delimiter = csv.Sniffer().sniff(head, delimiters=",;\t|").delimiter
    except csv.Error:
        delimiter = ","
    return type("Sniffed", (_Customer,), {"delimiter": delimiter})


def _pick_column(first_rows: list[list[str]]) -> tuple[int, bool, str]:
    """(column index, whether the first row is a header, column label)."""
    header = first_rows[0]
    looks_like_header = not any("@" in cell for cell in header)
    if looks_like_header:
        names = [cell.strip().lower().lstrip("\ufeff") for cell in header]
        for wanted in HEADER_NAMES:
            if wanted in names:
                index = names.index(wanted)
                return index, True, header[index].strip()
    body = first_rows[1:] if looks_like_header else first_rows
    width = max((len(row) for row in body), default=len(header))
    hits = [sum(1 for row in body if i < len(row) and "@" in row[i]) for i in range(width)]
    index = max(range(width), key=lambda i: hits[i]) if width else 0
    label = header[index].strip() if looks_like_header and index < len(header) else f"column {index + 1}"
    return index, looks_like_header, label


MAX_COLUMNS = 1000  # wider rows are no address list; picking a column among more would be slow


def read_addresses(path: str | Path, report: FileReport) -> Iterator[str]:
    """Yields the address of every row that has one (duplicates included), in file order.
    Anything the CSV reader cannot read (an unclosed quote running into a huge field, a
    row of a million columns) is a `BadUpload` naming the line."""
    with open(path, "rb") as raw:
        hashing = _HashingReader(raw)
        text = io.TextIOWrapper(io.BufferedReader(hashing), encoding="utf-8-sig", newline="")
        sample = text.read(SAMPLE_BYTES)
        if not sample.strip():
            raise BadUpload("the file is empty: it holds no addresses")
        rows = csv.reader(_chain(sample, text), _dialect(sample))
        checked = _checked_rows(rows)
        first_rows: list[list[str]] = []
        for row in checked:
            if any(cell.strip() for cell in row):
                first_rows.append(row)
            if len(first_rows) >= 100:
                break
        if not first_rows:
            raise BadUpload("the file is empty: it holds no addresses")
        column, has_header, report.column = _pick_column(first_rows)
        yield from _addresses(itertools.chain(first_rows[1:] if has_header else first_rows, checked), column, report)
        report.sha256 = hashing.digest.hexdigest()


def _checked_rows(reader: Any) -> Iterator[list[str]]:
    """The reader's rows; its errors and over-wide rows said with the line the row starts on."""
    line = 0  # the line the last row ended on: the next one starts after it
    try:
        for row in reader:
            if len(row) > MAX_COLUMNS:
                raise BadUpload(f"line {line + 1} has {len(row):,} columns (at most {MAX_COLUMNS:,}); "
                                "is this an address list?")
            yield row
            line = reader.line_num
    except csv.Error as error:
        raise BadUpload(f"line {line + 1} of the file cannot be read as CSV ({error}); "
                        "check its quotes") from None


def _addresses(rows: Iterator[list[str]], column: int, report: FileReport) -> Iterator[str]:
    # a million rows in one pass: counted in locals, the address's own cell tested first (a
    # row that has one is not blank)
    without_address = candidates = 0
    try:
        for row in rows:
            value = row[column].strip() if column < len(row) else ""
            if "@" in value:
                candidates += 1
                yield value
            elif value or any(cell.strip() for cell in row):
                without_address += 1
    finally:
        report.rows += candidates + without_address
        report.rows_without_address += without_address
        report.candidates += candidates


def _chain(head: str, rest: io.TextIOBase) -> Iterator[str]:
    """Lines of `head` followed by the rest of the stream, without re-reading the sample."""
    tail = ""
    for line in io.StringIO(head, newline=""):
        tail = line
        if line.endswith(("\n", "\r")):
            yield line
            tail = ""
    first_rest = rest.readline()
    yield tail + first_rest
    yield from rest

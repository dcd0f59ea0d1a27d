"""Receiving a customer's file: the body streams straight into one temporary file, as raw
text/csv or as the `file` part of a multipart form (parsed as it arrives with
python-multipart, never spooled by the framework first), counted against the limit and
hashed on the way. A caller decides who may upload (scope, CSRF) *before* calling this, so
a refused upload leaves no byte on disk and no open file."""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, AsyncIterator

from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from engine.domain.errors import BadUpload
from entrypoints.api.problems import Problem

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks  # declared for type checkers only

RAW_TYPES = ("text/csv", "text/plain", "application/octet-stream", "")
MAX_FIELDS = 10
MAX_FIELD_BYTES = 4096
MAX_PART_HEADERS = 8
MAX_PART_HEADER_BYTES = 4096


@dataclass
class Received:
    """A file on disk (deleted by `discard`), its digest and the form's other fields."""

    path: str
    sha256: str
    size: int
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class _Sink:
    """The temporary file, opened at the first byte, closed and deleted on any failure."""

    def __init__(self, limit: int):
        self.limit, self.size = limit, 0
        self.digest = hashlib.sha256()
        self.handle: IO[bytes] | None = None

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise Problem(413, "Payload too large", f"a file is at most {self.limit:,} bytes")
        if self.handle is None:
            self.handle = tempfile.NamedTemporaryFile("wb", prefix="vec-upload-", suffix=".csv", delete=False)
        self.handle.write(data)
        self.digest.update(data)

    def finish(self, fields: dict[str, str]) -> Received:
        if self.handle is None:
            raise BadUpload("the file is empty: it holds no addresses")
        self.handle.close()
        return Received(self.handle.name, self.digest.hexdigest(), self.size, fields)

    def abandon(self) -> None:
        if self.handle is not None:
            self.handle.close()
            os.unlink(self.handle.name)
            self.handle = None


async def receive_upload(request: Request, limit: int) -> Received:
    """Streams the request's file to disk; refuses more than `limit` bytes (413), another
    media type (415) and a broken or over-full form (400/422)."""
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    kind_text = kind.decode("latin-1").lower()
    sink = _Sink(limit)
    try:
        if kind_text == "multipart/form-data":
            fields = await _multipart(request.stream(), options.get(b"boundary", b""), sink)
        elif kind_text in RAW_TYPES:
            async for chunk in request.stream():
                sink.write(chunk)
            fields = {}
        else:
            raise Problem(415, "Unsupported media type", "send the file as text/csv or multipart/form-data")
        return sink.finish(fields)
    except BaseException:
        sink.abandon()
        raise


class _Form:
    """python-multipart's callbacks: the `file` part goes to the sink, small fields to a dict."""

    def __init__(self, sink: _Sink):
        self.sink = sink
        self.fields: dict[str, str] = {}
        self.header_name, self.header_value = bytearray(), bytearray()
        self.part_name: str | None = None
        self.is_file = False
        self.files = 0
        self.value = bytearray()

    def callbacks(self) -> MultipartCallbacks:
        return {"on_part_begin": self.part_begin, "on_header_field": self.header_field,
                "on_header_value": self.header_value_part, "on_header_end": self.header_end,
                "on_part_data": self.part_data, "on_part_end": self.part_end}

    def part_begin(self) -> None:
        self.part_name, self.is_file, self.value = None, False, bytearray()

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def header_value_part(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def header_end(self) -> None:
        if bytes(self.header_name).lower() == b"content-disposition":
            _, options = parse_options_header(bytes(self.header_value))
            self.part_name = options.get(b"name", b"").decode("utf-8", "replace")
            self.is_file = self.part_name == "file"
            if self.is_file:
                self.files += 1
                if self.files > 1:
                    raise Problem(422, "Bad upload", "send one file per upload")
        self.header_name, self.header_value = bytearray(), bytearray()

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self.is_file:
            self.sink.write(data[start:end])
            return
        self.value += data[start:end]
        if len(self.value) > MAX_FIELD_BYTES:
            raise Problem(422, "Bad upload", f"a form field is at most {MAX_FIELD_BYTES} bytes")

    def part_end(self) -> None:
        if not self.is_file and self.part_name is not None:
            if len(self.fields) >= MAX_FIELDS:
                raise Problem(422, "Bad upload", f"a form has at most {MAX_FIELDS} fields")
            self.fields[self.part_name] = self.value.decode("utf-8", "replace")


async def _multipart(chunks: AsyncIterator[bytes], boundary: bytes, sink: _Sink) -> dict[str, str]:
    if not boundary:
        raise Problem(400, "Bad request", "a multipart form without a boundary")
    form = _Form(sink)
    parser = MultipartParser(boundary, form.callbacks(), max_header_count=MAX_PART_HEADERS,
                             max_header_size=MAX_PART_HEADER_BYTES)
    try:
        async for chunk in chunks:
            parser.write(chunk)
        parser.finalize()
    except FormParserError as error:
        raise Problem(400, "Bad request", f"the multipart form cannot be read: {error}") from None
    if form.files == 0:
        raise Problem(422, "Bad upload", "the multipart form needs a `file` part holding the addresses")
    return form.fields

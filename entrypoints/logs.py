"""The logs of the `vec` processes: text for people, or JSON lines for machines
(`vec --log-format json ...` or VEC_LOG_FORMAT=json).

A JSON line holds `time` (UTC, ISO 8601), `level`, `logger`, `message`, `pid`, and the ids
the log call knows: `task_id`, `account_id`, `correlation_id`, `chunk_no`, `worker_id`
(consumers pass them with `extra=`, see consumers.metrics.exporter.task_ids), plus `exc` (the
traceback) on errors. So one task can be followed across processes:

    vec --log-format json run 2>&1 | jq -c 'select(.task_id == "TASK")'

Ids can also be bound for a whole block of code (and the asyncio tasks it starts) with
`log_context(task_id=...)`: every line logged inside carries them.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
from datetime import datetime, timezone
from typing import Any, Iterator, TextIO

IDS = ("task_id", "account_id", "correlation_id", "chunk_no", "worker_id")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("vec_log_context", default={})


@contextlib.contextmanager
def log_context(**ids: Any) -> Iterator[None]:
    """Binds ids to every log line of the block (and of the asyncio tasks created in it)."""
    token = _context.set({**_context.get(), **{k: v for k, v in ids.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process or os.getpid(),
        }
        bound = _context.get()
        for name in IDS:
            value = getattr(record, name, None)
            if value is None:
                value = bound.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class _Handler(logging.StreamHandler[TextIO]):
    """The handler `configure` installs (and replaces on a second call)."""


def configure(log_format: str = "text", level: int = logging.WARNING, stream: TextIO | None = None) -> None:
    """The root logger of this process: one handler on stderr, text or JSON lines. Like
    logging.basicConfig, it leaves a root logger that someone else set up (a test
    harness) alone; a handler of its own from an earlier call is replaced."""
    root = logging.getLogger()
    if any(not isinstance(h, _Handler) for h in root.handlers):
        return
    handler = _Handler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)

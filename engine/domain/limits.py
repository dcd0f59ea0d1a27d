"""Upper bounds of every amount and count the engine accepts.

Each bound keeps every balance, sum and counter far inside a signed 64-bit integer, the
widest column SQLite and PostgreSQL hold, so no accepted command can produce an event that
a read model cannot store. A command that would cross a bound is refused before anything
is appended.
"""
from __future__ import annotations

MAX_BALANCE = 10**12  # credits in a bucket, and in both buckets together
MAX_TASK_ADDRESSES = 1_000_000  # unique addresses in one task (the product's documented limit)
MAX_UPLOAD_BYTES = 100 * 1024 * 1024  # a bulk file (the product's documented limit)
MAX_CHUNK_SIZE = 100_000  # addresses in one chunk
MAX_ID_LENGTH = 128  # account and task ids
MAX_NAME_LENGTH = 200  # a task's name

# How long a finished task's per-address data is kept (the product's data_retention_days).
DEFAULT_RETENTION_DAYS = 15
MIN_RETENTION_DAYS = 1
MAX_RETENTION_DAYS = 3650

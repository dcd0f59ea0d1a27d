"""A big upload's addresses sealed, and its chunks opened, on the machine's other core.

AES-SIV holds the GIL: with its base64, 1.5 µs an address, so a million-address upload
spent 1.5 s sealing and 1.5 s opening its chunks, on one core of two. Past the first
IN_PROCESS_FIRST addresses, a worker process does that work a batch ahead, while this
process reads the file, stages and submits; each result lands in the task's sealer's memo
(engine/keyring.py), where the engine finds it as if it had sealed or opened it itself.
Sealing is deterministic, so the worker's texts are the engine's to the byte: a worker that
cannot start or dies costs speed, never a result (the engine seals in process again).
"""
from __future__ import annotations

import collections
import itertools
import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from engine.domain.errors import InvariantViolation
from engine.keyring import Sealer

log = logging.getLogger("vec.sealing")

IN_PROCESS_FIRST = 20_000  # addresses sealed here before a worker is worth its start (~50 ms)
SEAL_BATCH = 2000  # addresses a job: the memo holds one batch (and its lower cases) at a time
SEAL_AHEAD = 2  # jobs in flight while this process stages
CHUNKS_AHEAD = 2  # chunks opened ahead of the one being submitted
MIN_CHUNKS = 20  # a task of fewer chunks opens them here
MAX_FAILURES = 3  # workers lost before this process stops asking for one
PARENT_CHECK_S = 0.5  # how soon a worker whose engine was killed ends


def _worker_start(engine_pid: int) -> None:
    """In the worker: Ctrl-C is the engine's to handle (it stops the worker), never a
    traceback here; and the worker ends with its engine, even one killed outright."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(engine_pid,), name="exit-with-engine", daemon=True).start()


def _exit_with(engine_pid: int) -> None:
    while os.getppid() == engine_pid:
        time.sleep(PARENT_CHECK_S)
    os._exit(0)  # orphaned: nobody will ask for work again


def seal_batch(key: bytes, texts: list[str]) -> tuple[list[str], list[str]]:
    """In the worker: (the texts and the lower cases that differ from them, each one sealed)."""
    sealer = Sealer(key)  # not kept: a task's key lives in the worker for one batch (erasure)
    plains = texts + [lower for text in texts if (lower := text.lower()) != text]
    return plains, [sealer.seal(text) for text in plains]


def open_batch(key: bytes, sealed: list[str]) -> list[str]:
    """In the worker: each sealed text opened (InvariantViolation if one does not open)."""
    sealer = Sealer(key)
    return [sealer.open(text) for text in sealed]


@dataclass(frozen=True)
class _Job:
    future: Future[Any]
    executor: ProcessPoolExecutor  # the worker's: the jobs of a lost worker fail together, one loss


class SealingPool:
    """One worker process, started on first need; thread-safe."""

    def __init__(self) -> None:
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._failures = 0
        self._closed = False  # for good: the process is ending
        # (upload id, chunk no) -> its sealed texts and the job opening them, oldest first
        self._ahead: collections.OrderedDict[tuple[str, int], tuple[list[str], _Job | None]] = \
            collections.OrderedDict()

    def seal_ahead(self, sealer: Sealer, texts: Iterable[str]) -> Iterator[str]:
        """`texts` as they come; past the first IN_PROCESS_FIRST, each is yielded with its
        sealed form and its lower case's already in `sealer`'s memo."""
        it = iter(texts)
        yield from itertools.islice(it, IN_PROCESS_FIRST)
        pending: collections.deque[tuple[list[str], _Job | None]] = collections.deque()
        while True:
            batch = list(itertools.islice(it, SEAL_BATCH))
            if batch:
                pending.append((batch, self._submit(seal_batch, sealer.key, batch)))
            if not pending:
                return
            if len(pending) > SEAL_AHEAD or not batch:
                done, job = pending.popleft()
                sealed = self._result(job)
                if sealed is not None:
                    sealer.remember_many(*sealed)
                yield from done

    def open_chunk(self, sealer: Sealer, upload_id: str, chunk_no: int, chunks: int,
                   read: Callable[[int], list[str]]) -> list[str]:
        """The chunk's addresses opened, each pair in `sealer`'s memo (its results seal them
        again); the next chunks are read (`read`: a chunk's sealed texts) and opened ahead."""
        with self._lock:
            sealed, job = self._ahead.pop((upload_id, chunk_no), ([], None))
        if job is None:
            sealed = read(chunk_no)
        if chunks >= MIN_CHUNKS:
            self._open_next(sealer, upload_id, chunk_no, chunks, read)
        opened = self._result(job)
        plains: list[str] = [sealer.open(text) for text in sealed] if opened is None else opened
        sealer.remember_many(plains, sealed)
        return plains

    def _open_next(self, sealer: Sealer, upload_id: str, chunk_no: int, chunks: int,
                   read: Callable[[int], list[str]]) -> None:
        for ahead in range(chunk_no + 1, min(chunk_no + 1 + CHUNKS_AHEAD, chunks)):
            with self._lock:
                if (upload_id, ahead) in self._ahead:
                    continue
            sealed = read(ahead)
            job = self._submit(open_batch, sealer.key, sealed)
            with self._lock:
                self._ahead[(upload_id, ahead)] = (sealed, job)
                while len(self._ahead) > 4 * CHUNKS_AHEAD:  # chunks never asked for (a task stopped)
                    self._ahead.popitem(last=False)

    def open_blocks(self, sealer: Sealer, blocks: Iterable[list[Any]]) -> Iterator[list[Any]]:
        """Each block of values opened (None and "" kept), in order; past the first
        IN_PROCESS_FIRST values, the worker opens them SEAL_AHEAD blocks ahead (an export)."""
        it, opened_here = iter(blocks), 0
        while opened_here < IN_PROCESS_FIRST:
            block = next(it, None)
            if block is None:
                return
            yield [sealer.open(value) if value else value for value in block]
            opened_here += len(block)
        pending: collections.deque[tuple[list[Any], list[str], _Job | None]] = collections.deque()
        while True:
            block = next(it, None)
            if block is not None:
                sealed = [value for value in block if value]
                pending.append((block, sealed, self._submit(open_batch, sealer.key, sealed)))
            if not pending:
                return
            if len(pending) > SEAL_AHEAD or block is None:
                done, sealed, job = pending.popleft()
                opened = self._result(job)
                plain = iter([sealer.open(value) for value in sealed] if opened is None else opened)
                yield [next(plain) if value else value for value in done]

    def _submit(self, work: Callable[..., Any], *args: object) -> _Job | None:
        with self._lock:
            if self._failures >= MAX_FAILURES or self._closed:
                return None
            try:
                if self._executor is None:
                    # spawn, not fork: the engine may run threads (a server, the progress bar)
                    self._executor = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                                         initializer=_worker_start, initargs=(os.getpid(),))
                return _Job(self._executor.submit(work, *args), self._executor)
            except Exception as error:  # noqa: BLE001 (no process to spare: the work stays here)
                self._lost(error)
                return None

    def _result(self, job: _Job | None) -> Any:
        """The job's result, or None: the caller then does the work itself (a text that does
        not open fails there, as it would have without a worker)."""
        if job is None:
            return None
        try:
            return job.future.result()
        except InvariantViolation:
            return None
        except Exception as error:  # noqa: BLE001 (a lost worker)
            with self._lock:
                if job.executor is self._executor:  # its other jobs' failures are the same loss
                    self._lost(error)
            return None

    def _lost(self, error: BaseException) -> None:
        self._failures += 1
        log.warning("the sealing worker failed (%s: %s); sealing in this process%s", type(error).__name__, error,
                    "" if self._failures < MAX_FAILURES else " from now on")
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def close(self) -> None:
        """Stops the worker for good: whatever asks after this is sealed in process."""
        with self._lock:
            self._closed = True
            self._ahead.clear()
            if self._executor is not None:
                self._executor.shutdown(wait=True, cancel_futures=True)
                self._executor = None


POOL = SealingPool()  # one per process: one core to spare

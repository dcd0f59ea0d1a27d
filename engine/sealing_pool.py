"""A big upload's addresses sealed, and its chunks opened, on the machine's other core.

AES-SIV holds the GIL: with its base64, 1.5 µs an address, so a million-address upload
spent 1.5 s sealing and 1.5 s opening its chunks, on one core of two. Past the first
IN_PROCESS_FIRST addresses, a worker process does that work a batch ahead, while this
process reads the file, stages and submits; each result lands in the task's sealer's memo
(engine/keyring.py), where the engine finds it as if it had sealed or opened it itself.
Sealing is deterministic, so the worker's texts are the engine's to the byte: a worker that
cannot start or dies costs speed, never a result (the engine seals in process again).

The worker is this module run as a program (`serve`, at the end).
"""
from __future__ import annotations

import collections
import itertools
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterable, Iterator, TypeVar

from engine.domain.errors import InvariantViolation
from engine.keyring import Sealer
from engine.store.base import staged_row

log = logging.getLogger("vec.sealing")
T = TypeVar("T")

IN_PROCESS_FIRST = 20_000  # addresses sealed here before a worker is worth its start (~50 ms)
SEAL_BATCH = 2000  # addresses a job: the memo holds one batch (and its lower cases) at a time
SEAL_AHEAD = 2  # jobs in flight while this process stages
CHUNKS_AHEAD = 2  # chunks opened ahead of the one being submitted
MIN_CHUNKS = 20  # a task of fewer chunks opens them here
MAX_FAILURES = 3  # workers lost before this process stops asking for one


def seal_batch(key: bytes, texts: list[str]) -> tuple[list[str], list[str]]:
    """In the worker: (every text staging will seal for these addresses, each one sealed),
    found by staging's own rule (`staged_row`: the address and its key)."""
    sealer = Sealer(key)  # not kept: a task's key lives in the worker for one batch (erasure)
    pairs: dict[str, str] = {}

    def seal(text: str) -> str:
        pairs[text] = sealed = sealer.seal(text)
        return sealed

    for text in texts:
        staged_row(text, seal)
    return list(pairs), list(pairs.values())


def open_batch(key: bytes, sealed: list[str]) -> list[str]:
    """In the worker: each sealed text opened (InvariantViolation if one does not open)."""
    sealer = Sealer(key)
    return [sealer.open(text) for text in sealed]


class WorkerLost(Exception):
    """The worker process ended (or could not be reached) with jobs in hand."""


class _Worker:
    """`python -m engine.sealing_pool`, jobs to its stdin and results from its stdout, each a
    length-prefixed pickle. Not multiprocessing: that re-imports the main module in the child,
    and a script without a `__main__` guard would run again there (a second bulk). The worker
    ends when its stdin closes: when this process closes it, or dies, however."""

    def __init__(self) -> None:
        # this process's own import path, and not the working directory's (-P): the worker
        # must run the engine's code, never a package that happens to sit where vec was run
        path = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
        self.process = subprocess.Popen(
            [sys.executable, "-P", "-m", "engine.sealing_pool"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": path})
        self._jobs: dict[int, Future[Any]] = {}
        self._next = 0
        self._lock = threading.Lock()  # the jobs; never held while a pipe blocks
        self._writing = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="sealing-results", daemon=True)
        self._reader.start()

    def submit(self, work: str, key: bytes, texts: list[str]) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            job, self._next = self._next, self._next + 1
            self._jobs[job] = future
        with self._writing:  # may wait for the worker to read: the results keep flowing meanwhile
            _write(self.process.stdin, (job, work, key, texts))  # BrokenPipeError: the worker is gone
        return future

    def _read(self) -> None:
        out = self.process.stdout
        while (answer := _read(out)) is not None:
            job, ok, value = answer
            with self._lock:
                future = self._jobs.pop(job)
            if ok:
                future.set_result(value)
            else:
                kind, text = value
                future.set_exception(InvariantViolation(text) if kind == "invariant" else WorkerLost(text))
        with self._lock:  # the worker ended: whatever it held is lost
            lost, self._jobs = self._jobs, {}
        for future in lost.values():
            future.set_exception(WorkerLost(f"the sealing worker ended (status {self.process.poll()})"))

    def close(self, wait: bool = True) -> None:
        if self.process.stdin is not None:
            try:
                self.process.stdin.close()
            except OSError:
                pass
        if not wait:
            self.process.kill()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=5)


def _write(pipe: IO[bytes] | None, message: object) -> None:
    if pipe is None:
        raise WorkerLost("the sealing worker has no input")
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    pipe.write(len(data).to_bytes(4, "big") + data)
    pipe.flush()


def _read(pipe: IO[bytes] | None) -> Any:
    """The next message, or None at the end of the stream."""
    head = pipe.read(4) if pipe is not None else b""
    if len(head) < 4:
        return None
    return pickle.loads(pipe.read(int.from_bytes(head, "big")))  # type: ignore[union-attr]


JOBS: dict[str, Callable[[bytes, list[str]], Any]] = {"seal": seal_batch, "open": open_batch}


def serve() -> None:
    """The worker: jobs until its input ends. Ctrl-C is the engine's to handle; nothing is
    printed here (an error goes back to the engine as the job's)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while (message := _read(sys.stdin.buffer)) is not None:
        job, work, key, texts = message
        try:
            answer = (job, True, JOBS[work](key, texts))
        except InvariantViolation as error:
            answer = (job, False, ("invariant", str(error)))
        except Exception as error:  # noqa: BLE001 (told to the engine, which does the work itself)
            answer = (job, False, ("error", f"{type(error).__name__}: {error}"))
        _write(sys.stdout.buffer, answer)


@dataclass(frozen=True)
class _Job:
    future: Future[Any]
    worker: _Worker  # the jobs of a lost worker fail together: one loss


class SealingPool:
    """One worker process, started on first need; thread-safe."""

    def __init__(self) -> None:
        self._worker: _Worker | None = None
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
        batches = iter(lambda: list(itertools.islice(it, SEAL_BATCH)), [])
        for batch, _, sealed in self._jobs_ahead("seal", sealer.key, batches, lambda batch: batch):
            if sealed is not None:
                sealer.remember_many(*sealed)
            yield from batch

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
            job = self._submit("open", sealer.key, sealed)
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
        for block, sealed, opened in self._jobs_ahead("open", sealer.key, it, lambda block: [v for v in block if v]):
            plain = iter([sealer.open(value) for value in sealed] if opened is None else opened)
            yield [next(plain) if value else value for value in block]

    def _jobs_ahead(self, work: str, key: bytes, items: Iterator[T],
                    texts_of: Callable[[T], list[str]]) -> Iterator[tuple[T, list[str], Any]]:
        """Each item with its texts and the worker's result for them (None: the caller does the
        work itself), in order, SEAL_AHEAD jobs in flight while the caller uses the earlier."""
        pending: collections.deque[tuple[T, list[str], _Job | None]] = collections.deque()
        while True:
            item = next(items, None)
            if item is not None:
                texts = texts_of(item)
                pending.append((item, texts, self._submit(work, key, texts)))
            if not pending:
                return
            if len(pending) > SEAL_AHEAD or item is None:
                done, texts, job = pending.popleft()
                yield done, texts, self._result(job)

    def _submit(self, work: str, key: bytes, texts: list[str]) -> _Job | None:
        with self._lock:
            if self._failures >= MAX_FAILURES or self._closed:
                return None
            try:
                if self._worker is None:
                    self._worker = _Worker()
                return _Job(self._worker.submit(work, key, texts), self._worker)
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
                if job.worker is self._worker:  # its other jobs' failures are the same loss
                    self._lost(error)
            return None

    def _lost(self, error: BaseException) -> None:
        self._failures += 1
        log.warning("the sealing worker failed (%s: %s); sealing in this process%s", type(error).__name__, error,
                    "" if self._failures < MAX_FAILURES else " from now on")
        if self._worker is not None:
            self._worker.close(wait=False)
            self._worker = None

    def close(self) -> None:
        """Stops the worker for good: whatever asks after this is sealed in process."""
        with self._lock:
            self._closed = True
            self._ahead.clear()
            if self._worker is not None:
                self._worker.close()
                self._worker = None


POOL = SealingPool()  # one per process: one core to spare


if __name__ == "__main__":
    serve()

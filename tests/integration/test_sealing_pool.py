"""engine/sealing_pool.py with a real worker process: a big upload sealed, and its chunks
opened, by the worker give the engine exactly what it would have computed itself, and a
worker that dies or cannot start costs speed, never a result."""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from engine import sealing_pool
from engine.domain.errors import InvariantViolation
from engine.keyring import Sealer
from engine.service import Engine
from entrypoints.settings import EngineSettings
from tests.api.server import base_env, running, start_server

KEY = AESSIV.generate_key(512)


class Counting:
    """The sealer's cipher, counting the calls made in this process."""

    def __init__(self, aead: AESSIV):
        self.aead, self.encrypts, self.decrypts = aead, 0, 0

    def encrypt(self, data: bytes, associated: object) -> bytes:
        self.encrypts += 1
        return self.aead.encrypt(data, associated)  # type: ignore[arg-type]

    def decrypt(self, data: bytes, associated: object) -> bytes:
        self.decrypts += 1
        return self.aead.decrypt(data, associated)  # type: ignore[arg-type]


def counted_sealer() -> tuple[Sealer, Counting]:
    sealer = Sealer(KEY)
    counting = Counting(sealer._aead)
    sealer._aead = counting  # type: ignore[assignment]
    return sealer, counting


@pytest.fixture
def pool(monkeypatch):
    monkeypatch.setattr(sealing_pool, "IN_PROCESS_FIRST", 50)
    monkeypatch.setattr(sealing_pool, "SEAL_BATCH", 40)
    monkeypatch.setattr(sealing_pool, "MIN_CHUNKS", 3)
    pool = sealing_pool.SealingPool()
    yield pool
    pool.close()


def texts(count: int) -> list[str]:
    return [f"User{i}@Example.test" if i % 3 else f"user{i}@example.test" for i in range(count)]


def test_past_the_first_addresses_the_worker_seals_them_and_the_engine_finds_each_one(pool):
    sealer, counting = counted_sealer()
    reference = Sealer(KEY)
    seen = []
    for text in pool.seal_ahead(sealer, texts(500)):
        seen.append(text)
        assert sealer.seal(text) == reference.seal(text)  # what staging asks, address then key
        assert sealer.seal(text.lower()) == reference.seal(text.lower())
    assert seen == texts(500)
    in_process = texts(50)
    assert counting.encrypts == len(in_process) + sum(1 for t in in_process if t.lower() != t)


def test_a_worker_killed_mid_upload_leaves_every_sealed_text_right(pool, caplog):
    sealer, counting = counted_sealer()
    reference = Sealer(KEY)
    stream = pool.seal_ahead(sealer, texts(1000))
    with caplog.at_level(logging.WARNING, "vec.sealing"):
        for n, text in enumerate(stream):
            if n == 60:  # the worker has batches in hand
                os.kill(pool._worker.process.pid, signal.SIGKILL)
            assert sealer.seal(text) == reference.seal(text)
    assert caplog.text.count("the sealing worker failed") == 1  # its jobs in flight: one loss
    assert pool._failures == 1
    in_process = texts(50)
    assert counting.encrypts > len(in_process) + sum(1 for t in in_process if t.lower() != t)  # redone here
    assert pool._worker is not None  # a new worker took the batches after them


def test_chunks_are_opened_ahead_by_the_worker(pool):
    reference = Sealer(KEY)
    chunks = [[reference.seal(t) for t in texts(1000)[n * 100:(n + 1) * 100]] for n in range(10)]
    sealer, counting = counted_sealer()
    reads = []

    def read(n: int) -> list[str]:
        reads.append(n)
        return chunks[n]

    opened = [pool.open_chunk(sealer, "u-1", n, len(chunks), read) for n in range(len(chunks))]
    assert opened == [texts(1000)[n * 100:(n + 1) * 100] for n in range(10)]
    assert counting.decrypts == 100  # the first chunk only: the worker opened the others
    assert sorted(reads) == list(range(10))  # each read once
    assert sealer.seal(texts(1000)[-1]) == chunks[-1][-1] and counting.encrypts == 0  # remembered


def test_a_chunk_that_does_not_open_fails_as_without_a_worker(pool):
    reference = Sealer(KEY)
    chunks = [[reference.seal(t) for t in texts(30)[n * 10:(n + 1) * 10]] for n in range(3)]
    chunks[2][4] = chunks[2][4][:-3] + "AAA"  # altered in the store
    sealer = Sealer(KEY)
    assert pool.open_chunk(sealer, "u-2", 0, 3, chunks.__getitem__) == texts(30)[:10]
    assert pool.open_chunk(sealer, "u-2", 1, 3, chunks.__getitem__) == texts(30)[10:20]
    with pytest.raises(InvariantViolation):
        pool.open_chunk(sealer, "u-2", 2, 3, chunks.__getitem__)
    assert pool._failures == 0  # the worker is not to blame


def test_a_big_upload_stages_and_chunks_as_without_a_worker(pool, monkeypatch, db, tmp_path):
    """Through the engine and the SQLite store: repeats in another case dropped (first seen
    wins), every chunk's addresses in order."""
    monkeypatch.setattr(sealing_pool, "POOL", pool)
    engine = Engine(db, EngineSettings(chunk_size=25), lambda: datetime(2026, 6, 1, tzinfo=timezone.utc))
    engine.open_account("acme")
    engine.grant_credits("acme", "payg", 1000)
    raw = texts(600) + [t.upper() for t in texts(600)[::7]]
    path = tmp_path / "list.csv"
    path.write_text("email\n" + "".join(f"{t}\n" for t in raw))
    upload = engine.create_bulk("acme", str(path))
    assert upload.report.unique == 600
    state = engine.task(upload.task_id)
    staged = [a for n in range(state.total_chunks) for a in engine.staged_chunk(state, n)]
    assert staged == texts(600)


ENGINE_WITH_A_WORKER = """
import sys, time
from engine.sealing_pool import SealingPool
pool = SealingPool()
try:
    pool._submit("open", b"k" * 64, []).future.result()  # the worker is up
    print(pool._worker.process.pid, flush=True)
    time.sleep(60)
except KeyboardInterrupt:
    pool.close()
    sys.exit(130)
"""


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ", 1)[1].startswith("Z")  # a zombie: exited, not yet reaped


def wait_until(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_the_worker_ends_with_an_engine_killed_outright():
    engine = subprocess.Popen([sys.executable, "-c", ENGINE_WITH_A_WORKER], stdout=subprocess.PIPE, text=True)
    worker = int(engine.stdout.readline())
    assert not gone(worker)
    engine.kill()
    engine.wait()
    assert wait_until(lambda: gone(worker))


def test_ctrl_c_stops_the_engine_and_its_worker_without_a_traceback():
    engine = subprocess.Popen([sys.executable, "-c", ENGINE_WITH_A_WORKER], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    worker = int(engine.stdout.readline())
    os.killpg(engine.pid, signal.SIGINT)  # what a terminal sends to the whole group
    _, errors = engine.communicate(timeout=30)
    assert engine.returncode == 130
    assert "Traceback" not in errors
    assert wait_until(lambda: gone(worker))


def test_an_exports_blocks_are_opened_ahead_by_the_worker_empty_cells_kept(pool):
    reference = Sealer(KEY)
    plain = [[t if i % 4 else ("" if i % 8 else None) for i, t in enumerate(texts(1000)[n * 40:(n + 1) * 40])]
             for n in range(25)]
    sealed = [[reference.seal(v) if v else v for v in block] for block in plain]
    sealer, counting = counted_sealer()
    assert list(pool.open_blocks(sealer, iter(sealed))) == plain
    assert counting.decrypts == 60  # the first 50 values' blocks (two of 30 each): the worker opened the rest


def test_an_export_with_a_value_that_does_not_open_fails_as_without_a_worker(pool):
    reference = Sealer(KEY)
    sealed = [[reference.seal(t) for t in texts(1000)[n * 40:(n + 1) * 40]] for n in range(25)]
    sealed[20][3] = sealed[20][3][:-3] + "AAA"
    opened = pool.open_blocks(Sealer(KEY), iter(sealed))
    with pytest.raises(InvariantViolation):
        for n, _ in enumerate(opened):
            assert n < 20


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().split(") ", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
    return found


@pytest.mark.parametrize("worker", ["true", "false"])
def test_vec_serve_stopped_after_a_big_upload_leaves_no_worker_and_says_nothing(tmp_path, worker):
    """uvicorn re-raises the SIGTERM it shut down on, so the process ends without its exit
    handlers: the API's shutdown stops the worker, or its semaphores are reported leaked.
    With VEC_SEALING_WORKER=false there is no worker, and the same results."""
    api = start_server("embedded", tmp_path, base_env(VEC_CHUNK_SIZE="500", VEC_CHUNK_WINDOW="4",
                                                      VEC_API_MAX_UPLOAD_BYTES=str(4 * 1024 * 1024),
                                                      VEC_SEALING_WORKER=worker))
    with running(api):
        account = api.new_account(payg=30_000)
        key = api.new_key(account)["key"]
        client = api.client(key)
        upload = "email\n" + "".join(f"user{i}@d{i % 40}.test\n" for i in range(25_000))
        created = client.post("/v1/tasks/bulk", content=upload, headers={"content-type": "text/csv"})
        assert created.status_code == 201, created.text
        task_id = created.json()["task"]["task_id"]
        workers = children(api.process.pid)
        assert bool(workers) == (worker == "true"), "a 25,000-address upload starts the sealing worker, if allowed"
        assert api.wait_task(task_id, client)["status"] == "completed"
        csv = client.get(f"/v1/tasks/{task_id}/results", params={"format": "csv"})
        assert csv.text.count("\n") == 25_001
    assert wait_until(lambda: all(gone(pid) for pid in workers))
    log = api.log.read_text()
    assert "leaked" not in log and "Traceback" not in log, log[-2000:]


def test_a_script_without_a_main_guard_runs_once(tmp_path):
    """An operator's script that uses the engine straight away, with no `if __name__ ==
    "__main__":`: the worker must not run it again (multiprocessing's spawn would, and a
    second bulk with it)."""
    marker = tmp_path / "runs.txt"
    script = tmp_path / "unguarded.py"
    script.write_text(f"""
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from engine.keyring import Sealer
from engine.sealing_pool import SealingPool
with open({str(marker)!r}, "a") as runs:
    runs.write("ran\\n")
pool, sealer = SealingPool(), Sealer(AESSIV.generate_key(512))
texts = [f"user{{i}}@example.test" for i in range(30_000)]
assert [t for t in pool.seal_ahead(sealer, texts) if sealer.seal(t)] == texts
assert pool._worker is not None and pool._failures == 0
pool.close()
""")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert marker.read_text() == "ran\n"

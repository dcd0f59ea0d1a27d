"""Reading a task's staged inputs in tests: they are stored sealed with the task's key."""
from __future__ import annotations


def staged_chunk(db, upload_id: str, chunk_no: int, chunk_size: int, task_id: str | None = None) -> list[str]:
    """The chunk's addresses, opened with the task's key (`task_id`, or the upload id when the
    task was created with a fresh id, which then serves as both)."""
    sealer = db.keyring.sealer(task_id or upload_id)
    return db.inputs.chunk(upload_id, chunk_no, chunk_size, sealer.open if sealer else None)

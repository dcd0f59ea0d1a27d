from enum import StrEnum

class TaskStatus(StrEnum):
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    DELETED = "deleted"
    FAILED = "failed"
    PENDING = "pending"
    PROCESSING = "processing"

    def __str__(self) -> str:
        return str(self.value)

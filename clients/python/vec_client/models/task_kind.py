from enum import StrEnum

class TaskKind(StrEnum):
    BULK = "bulk"
    SINGLE = "single"

    def __str__(self) -> str:
        return str(self.value)

from enum import StrEnum

class ResultsV1TasksTaskIdResultsGetStatusType0(StrEnum):
    INVALID = "invalid"
    RISKY = "risky"
    SAFE = "safe"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return str(self.value)

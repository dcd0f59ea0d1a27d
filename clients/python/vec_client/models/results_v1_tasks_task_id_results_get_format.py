from enum import StrEnum

class ResultsV1TasksTaskIdResultsGetFormat(StrEnum):
    CSV = "csv"
    JSON = "json"
    TXT = "txt"

    def __str__(self) -> str:
        return str(self.value)

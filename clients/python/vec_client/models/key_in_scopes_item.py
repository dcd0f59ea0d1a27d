from enum import StrEnum

class KeyInScopesItem(StrEnum):
    AUDIT = "audit"
    READ = "read"
    WRITE = "write"

    def __str__(self) -> str:
        return str(self.value)

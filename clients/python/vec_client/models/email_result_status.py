from enum import StrEnum

class EmailResultStatus(StrEnum):
    CATCH_ALL = "catch_all"
    DISABLED = "disabled"
    DISPOSABLE = "disposable"
    INBOX_FULL = "inbox_full"
    INVALID = "invalid"
    ROLE_ACCOUNT = "role_account"
    SAFE = "safe"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return str(self.value)

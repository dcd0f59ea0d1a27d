from enum import StrEnum

class GrantInBucket(StrEnum):
    MONTHLY = "monthly"
    PAYG = "payg"

    def __str__(self) -> str:
        return str(self.value)

from enum import StrEnum

class GrantInReasonType0(StrEnum):
    PURCHASE = "purchase"
    SUBSCRIPTION = "subscription"
    SUPPORT = "support"

    def __str__(self) -> str:
        return str(self.value)

from enum import StrEnum

class HistoryV1AccountsAccountIdHistoryGetTypeType0(StrEnum):
    CANCEL = "cancel"
    DEBIT = "debit"
    EXPIRY = "expiry"
    PURCHASE = "purchase"
    REFUND = "refund"
    SUBSCRIPTION = "subscription"
    SUPPORT = "support"
    WELCOME = "welcome"

    def __str__(self) -> str:
        return str(self.value)

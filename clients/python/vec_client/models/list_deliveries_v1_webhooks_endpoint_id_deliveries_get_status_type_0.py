from enum import StrEnum

class ListDeliveriesV1WebhooksEndpointIdDeliveriesGetStatusType0(StrEnum):
    DELIVERED = "delivered"
    FAILED = "failed"
    PENDING = "pending"

    def __str__(self) -> str:
        return str(self.value)

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, BinaryIO, TextIO, TYPE_CHECKING, Generator

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

from ..models.delivery_detail_status import DeliveryDetailStatus
from typing import cast

if TYPE_CHECKING:
  from ..models.attempt import Attempt
  from ..models.delivery_detail_payload import DeliveryDetailPayload





T = TypeVar("T", bound="DeliveryDetail")



@_attrs_define
class DeliveryDetail:
    """ 
        Attributes:
            account (str):
            attempt_log (list[Attempt]):
            attempts (int):
            created_at (str):
            delivered_at (None | str):
            delivery_id (str): the webhook-id header: the same on every attempt
            endpoint_id (str):
            event_id (str):
            event_type (str):
            last_error (None | str):
            last_status_code (int | None):
            next_attempt_at (None | str):
            payload (DeliveryDetailPayload): the body that was signed and sent
            position (int):
            status (DeliveryDetailStatus):
            task_id (str):
     """

    account: str
    attempt_log: list[Attempt]
    attempts: int
    created_at: str
    delivered_at: None | str
    delivery_id: str
    endpoint_id: str
    event_id: str
    event_type: str
    last_error: None | str
    last_status_code: int | None
    next_attempt_at: None | str
    payload: DeliveryDetailPayload
    position: int
    status: DeliveryDetailStatus
    task_id: str
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)





    def to_dict(self) -> dict[str, Any]:
        from ..models.attempt import Attempt # noqa: PLC0415
        from ..models.delivery_detail_payload import DeliveryDetailPayload # noqa: PLC0415
        account = self.account

        attempt_log = []
        for attempt_log_item_data in self.attempt_log:
            attempt_log_item = attempt_log_item_data.to_dict()
            attempt_log.append(attempt_log_item)



        attempts = self.attempts

        created_at = self.created_at

        delivered_at: None | str
        delivered_at = self.delivered_at

        delivery_id = self.delivery_id

        endpoint_id = self.endpoint_id

        event_id = self.event_id

        event_type = self.event_type

        last_error: None | str
        last_error = self.last_error

        last_status_code: int | None
        last_status_code = self.last_status_code

        next_attempt_at: None | str
        next_attempt_at = self.next_attempt_at

        payload = self.payload.to_dict()

        position = self.position

        status = self.status.value

        task_id = self.task_id


        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update({
            "account": account,
            "attempt_log": attempt_log,
            "attempts": attempts,
            "created_at": created_at,
            "delivered_at": delivered_at,
            "delivery_id": delivery_id,
            "endpoint_id": endpoint_id,
            "event_id": event_id,
            "event_type": event_type,
            "last_error": last_error,
            "last_status_code": last_status_code,
            "next_attempt_at": next_attempt_at,
            "payload": payload,
            "position": position,
            "status": status,
            "task_id": task_id,
        })

        return field_dict



    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.attempt import Attempt # noqa: PLC0415
        from ..models.delivery_detail_payload import DeliveryDetailPayload # noqa: PLC0415
        d = dict(src_dict)
        account = d.pop("account")

        attempt_log = []
        _attempt_log = d.pop("attempt_log")
        for attempt_log_item_data in (_attempt_log):
            attempt_log_item = Attempt.from_dict(attempt_log_item_data)



            attempt_log.append(attempt_log_item)


        attempts = d.pop("attempts")

        created_at = d.pop("created_at")

        def _parse_delivered_at(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        delivered_at = _parse_delivered_at(d.pop("delivered_at"))


        delivery_id = d.pop("delivery_id")

        endpoint_id = d.pop("endpoint_id")

        event_id = d.pop("event_id")

        event_type = d.pop("event_type")

        def _parse_last_error(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        last_error = _parse_last_error(d.pop("last_error"))


        def _parse_last_status_code(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        last_status_code = _parse_last_status_code(d.pop("last_status_code"))


        def _parse_next_attempt_at(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        next_attempt_at = _parse_next_attempt_at(d.pop("next_attempt_at"))


        payload = DeliveryDetailPayload.from_dict(d.pop("payload"))




        position = d.pop("position")

        status = DeliveryDetailStatus(d.pop("status"))




        task_id = d.pop("task_id")

        delivery_detail = cls(
            account=account,
            attempt_log=attempt_log,
            attempts=attempts,
            created_at=created_at,
            delivered_at=delivered_at,
            delivery_id=delivery_id,
            endpoint_id=endpoint_id,
            event_id=event_id,
            event_type=event_type,
            last_error=last_error,
            last_status_code=last_status_code,
            next_attempt_at=next_attempt_at,
            payload=payload,
            position=position,
            status=status,
            task_id=task_id,
        )


        delivery_detail.additional_properties = d
        return delivery_detail

    @property
    def additional_keys(self) -> list[str]:
        return list(self.additional_properties.keys())

    def __getitem__(self, key: str) -> Any:
        return self.additional_properties[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.additional_properties[key] = value

    def __delitem__(self, key: str) -> None:
        del self.additional_properties[key]

    def __contains__(self, key: str) -> bool:
        return key in self.additional_properties

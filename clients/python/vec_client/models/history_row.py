from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, BinaryIO, TextIO, TYPE_CHECKING, Generator

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

from typing import cast






T = TypeVar("T", bound="HistoryRow")



@_attrs_define
class HistoryRow:
    """ 
        Attributes:
            actor (None | str):
            amount (int):
            balance_after (int):
            bucket (str):
            description (str):
            seq (int):
            task_id (None | str):
            time (str):
            type_ (str):
     """

    actor: None | str
    amount: int
    balance_after: int
    bucket: str
    description: str
    seq: int
    task_id: None | str
    time: str
    type_: str
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)





    def to_dict(self) -> dict[str, Any]:
        actor: None | str
        actor = self.actor

        amount = self.amount

        balance_after = self.balance_after

        bucket = self.bucket

        description = self.description

        seq = self.seq

        task_id: None | str
        task_id = self.task_id

        time = self.time

        type_ = self.type_


        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update({
            "actor": actor,
            "amount": amount,
            "balance_after": balance_after,
            "bucket": bucket,
            "description": description,
            "seq": seq,
            "task_id": task_id,
            "time": time,
            "type": type_,
        })

        return field_dict



    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        def _parse_actor(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        actor = _parse_actor(d.pop("actor"))


        amount = d.pop("amount")

        balance_after = d.pop("balance_after")

        bucket = d.pop("bucket")

        description = d.pop("description")

        seq = d.pop("seq")

        def _parse_task_id(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        task_id = _parse_task_id(d.pop("task_id"))


        time = d.pop("time")

        type_ = d.pop("type")

        history_row = cls(
            actor=actor,
            amount=amount,
            balance_after=balance_after,
            bucket=bucket,
            description=description,
            seq=seq,
            task_id=task_id,
            time=time,
            type_=type_,
        )


        history_row.additional_properties = d
        return history_row

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

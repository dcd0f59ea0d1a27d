from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, BinaryIO, TextIO, TYPE_CHECKING, Generator

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset







T = TypeVar("T", bound="Retention")



@_attrs_define
class Retention:
    """ 
        Attributes:
            data_retention_days (int):
     """

    data_retention_days: int





    def to_dict(self) -> dict[str, Any]:
        data_retention_days = self.data_retention_days


        field_dict: dict[str, Any] = {}

        field_dict.update({
            "data_retention_days": data_retention_days,
        })

        return field_dict



    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        data_retention_days = d.pop("data_retention_days")

        retention = cls(
            data_retention_days=data_retention_days,
        )

        return retention


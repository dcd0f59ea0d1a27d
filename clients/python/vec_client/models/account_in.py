from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, BinaryIO, TextIO, TYPE_CHECKING, Generator

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset







T = TypeVar("T", bound="AccountIn")



@_attrs_define
class AccountIn:
    """ 
        Attributes:
            account_id (str):
     """

    account_id: str





    def to_dict(self) -> dict[str, Any]:
        account_id = self.account_id


        field_dict: dict[str, Any] = {}

        field_dict.update({
            "account_id": account_id,
        })

        return field_dict



    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        account_id = d.pop("account_id")

        account_in = cls(
            account_id=account_id,
        )

        return account_in


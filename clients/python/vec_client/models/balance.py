from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, BinaryIO, TextIO, TYPE_CHECKING, Generator

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

from ..types import UNSET, Unset
from typing import cast






T = TypeVar("T", bound="Balance")



@_attrs_define
class Balance:
    """ 
        Attributes:
            account (str):
            monthly (int):
            payg (int):
            total (int):
            monthly_expires_at (None | str | Unset):
     """

    account: str
    monthly: int
    payg: int
    total: int
    monthly_expires_at: None | str | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)





    def to_dict(self) -> dict[str, Any]:
        account = self.account

        monthly = self.monthly

        payg = self.payg

        total = self.total

        monthly_expires_at: None | str | Unset
        if isinstance(self.monthly_expires_at, Unset):
            monthly_expires_at = UNSET
        else:
            monthly_expires_at = self.monthly_expires_at


        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update({
            "account": account,
            "monthly": monthly,
            "payg": payg,
            "total": total,
        })
        if monthly_expires_at is not UNSET:
            field_dict["monthly_expires_at"] = monthly_expires_at

        return field_dict



    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        account = d.pop("account")

        monthly = d.pop("monthly")

        payg = d.pop("payg")

        total = d.pop("total")

        def _parse_monthly_expires_at(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        monthly_expires_at = _parse_monthly_expires_at(d.pop("monthly_expires_at", UNSET))


        balance = cls(
            account=account,
            monthly=monthly,
            payg=payg,
            total=total,
            monthly_expires_at=monthly_expires_at,
        )


        balance.additional_properties = d
        return balance

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

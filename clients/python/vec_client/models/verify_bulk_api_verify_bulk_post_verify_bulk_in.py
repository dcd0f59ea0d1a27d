from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, BinaryIO, TextIO, TYPE_CHECKING, Generator

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

from ..types import UNSET, Unset
from typing import cast






T = TypeVar("T", bound="VerifyBulkApiVerifyBulkPostVerifyBulkIn")



@_attrs_define
class VerifyBulkApiVerifyBulkPostVerifyBulkIn:
    """ 
        Attributes:
            emails (list[str]): the addresses to verify (duplicates are verified and charged once)
            name (str | Unset): a friendly name for the task Default: ''.
     """

    emails: list[str]
    name: str | Unset = ''
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)





    def to_dict(self) -> dict[str, Any]:
        emails = self.emails



        name = self.name


        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update({
            "emails": emails,
        })
        if name is not UNSET:
            field_dict["name"] = name

        return field_dict



    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        emails = cast(list[str], d.pop("emails"))


        name = d.pop("name", UNSET)

        verify_bulk_api_verify_bulk_post_verify_bulk_in = cls(
            emails=emails,
            name=name,
        )


        verify_bulk_api_verify_bulk_post_verify_bulk_in.additional_properties = d
        return verify_bulk_api_verify_bulk_post_verify_bulk_in

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

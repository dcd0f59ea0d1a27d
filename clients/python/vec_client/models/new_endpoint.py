from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, BinaryIO, TextIO, TYPE_CHECKING, Generator

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

from typing import cast






T = TypeVar("T", bound="NewEndpoint")



@_attrs_define
class NewEndpoint:
    """ 
        Attributes:
            account (str):
            created_at (str):
            created_by (None | str):
            description (str):
            disabled_at (None | str):
            endpoint_id (str):
            secret (str): the Standard Webhooks signing secret (whsec_...): shown once
            url (str):
     """

    account: str
    created_at: str
    created_by: None | str
    description: str
    disabled_at: None | str
    endpoint_id: str
    secret: str
    url: str
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)





    def to_dict(self) -> dict[str, Any]:
        account = self.account

        created_at = self.created_at

        created_by: None | str
        created_by = self.created_by

        description = self.description

        disabled_at: None | str
        disabled_at = self.disabled_at

        endpoint_id = self.endpoint_id

        secret = self.secret

        url = self.url


        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update({
            "account": account,
            "created_at": created_at,
            "created_by": created_by,
            "description": description,
            "disabled_at": disabled_at,
            "endpoint_id": endpoint_id,
            "secret": secret,
            "url": url,
        })

        return field_dict



    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        account = d.pop("account")

        created_at = d.pop("created_at")

        def _parse_created_by(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        created_by = _parse_created_by(d.pop("created_by"))


        description = d.pop("description")

        def _parse_disabled_at(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        disabled_at = _parse_disabled_at(d.pop("disabled_at"))


        endpoint_id = d.pop("endpoint_id")

        secret = d.pop("secret")

        url = d.pop("url")

        new_endpoint = cls(
            account=account,
            created_at=created_at,
            created_by=created_by,
            description=description,
            disabled_at=disabled_at,
            endpoint_id=endpoint_id,
            secret=secret,
            url=url,
        )


        new_endpoint.additional_properties = d
        return new_endpoint

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

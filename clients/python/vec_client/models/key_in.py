from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, BinaryIO, TextIO, TYPE_CHECKING, Generator

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

from ..models.key_in_scopes_item import KeyInScopesItem
from ..types import UNSET, Unset
from typing import cast






T = TypeVar("T", bound="KeyIn")



@_attrs_define
class KeyIn:
    """ 
        Attributes:
            label (str | Unset):  Default: ''.
            scopes (list[KeyInScopesItem] | Unset):
     """

    label: str | Unset = ''
    scopes: list[KeyInScopesItem] | Unset = UNSET





    def to_dict(self) -> dict[str, Any]:
        label = self.label

        scopes: list[str] | Unset = UNSET
        if not isinstance(self.scopes, Unset):
            scopes = []
            for scopes_item_data in self.scopes:
                scopes_item = scopes_item_data.value
                scopes.append(scopes_item)




        field_dict: dict[str, Any] = {}

        field_dict.update({
        })
        if label is not UNSET:
            field_dict["label"] = label
        if scopes is not UNSET:
            field_dict["scopes"] = scopes

        return field_dict



    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        label = d.pop("label", UNSET)

        _scopes = d.pop("scopes", UNSET)
        scopes: list[KeyInScopesItem] | Unset = UNSET
        if _scopes is not UNSET:
            scopes = []
            for scopes_item_data in _scopes:
                scopes_item = KeyInScopesItem(scopes_item_data)



                scopes.append(scopes_item)


        key_in = cls(
            label=label,
            scopes=scopes,
        )

        return key_in


from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, BinaryIO, TextIO, TYPE_CHECKING, Generator

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

from typing import cast

if TYPE_CHECKING:
  from ..models.task import Task





T = TypeVar("T", bound="Upload")



@_attrs_define
class Upload:
    """ 
        Attributes:
            addresses (int):
            column (str):
            duplicates (int):
            rows_without_address (int):
            task (Task):
     """

    addresses: int
    column: str
    duplicates: int
    rows_without_address: int
    task: Task
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)





    def to_dict(self) -> dict[str, Any]:
        from ..models.task import Task # noqa: PLC0415
        addresses = self.addresses

        column = self.column

        duplicates = self.duplicates

        rows_without_address = self.rows_without_address

        task = self.task.to_dict()


        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update({
            "addresses": addresses,
            "column": column,
            "duplicates": duplicates,
            "rows_without_address": rows_without_address,
            "task": task,
        })

        return field_dict



    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.task import Task # noqa: PLC0415
        d = dict(src_dict)
        addresses = d.pop("addresses")

        column = d.pop("column")

        duplicates = d.pop("duplicates")

        rows_without_address = d.pop("rows_without_address")

        task = Task.from_dict(d.pop("task"))




        upload = cls(
            addresses=addresses,
            column=column,
            duplicates=duplicates,
            rows_without_address=rows_without_address,
            task=task,
        )


        upload.additional_properties = d
        return upload

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

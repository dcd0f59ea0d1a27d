from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, BinaryIO, TextIO, TYPE_CHECKING, Generator

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset







T = TypeVar("T", bound="BulkTask")



@_attrs_define
class BulkTask:
    """ 
        Attributes:
            credits_refunded (int):
            duplicates (int): addresses given more than once (charged once)
            failed_emails_count (int):
            is_chunked (bool):
            message (str):
            name (str):
            partial_failure (bool):
            status (str): pending | processing | completed | failed | cancelled
            task_id (str):
            total_chunks (int):
            total_emails (int): unique addresses, one credit each
     """

    credits_refunded: int
    duplicates: int
    failed_emails_count: int
    is_chunked: bool
    message: str
    name: str
    partial_failure: bool
    status: str
    task_id: str
    total_chunks: int
    total_emails: int
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)





    def to_dict(self) -> dict[str, Any]:
        credits_refunded = self.credits_refunded

        duplicates = self.duplicates

        failed_emails_count = self.failed_emails_count

        is_chunked = self.is_chunked

        message = self.message

        name = self.name

        partial_failure = self.partial_failure

        status = self.status

        task_id = self.task_id

        total_chunks = self.total_chunks

        total_emails = self.total_emails


        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update({
            "credits_refunded": credits_refunded,
            "duplicates": duplicates,
            "failed_emails_count": failed_emails_count,
            "is_chunked": is_chunked,
            "message": message,
            "name": name,
            "partial_failure": partial_failure,
            "status": status,
            "task_id": task_id,
            "total_chunks": total_chunks,
            "total_emails": total_emails,
        })

        return field_dict



    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        credits_refunded = d.pop("credits_refunded")

        duplicates = d.pop("duplicates")

        failed_emails_count = d.pop("failed_emails_count")

        is_chunked = d.pop("is_chunked")

        message = d.pop("message")

        name = d.pop("name")

        partial_failure = d.pop("partial_failure")

        status = d.pop("status")

        task_id = d.pop("task_id")

        total_chunks = d.pop("total_chunks")

        total_emails = d.pop("total_emails")

        bulk_task = cls(
            credits_refunded=credits_refunded,
            duplicates=duplicates,
            failed_emails_count=failed_emails_count,
            is_chunked=is_chunked,
            message=message,
            name=name,
            partial_failure=partial_failure,
            status=status,
            task_id=task_id,
            total_chunks=total_chunks,
            total_emails=total_emails,
        )


        bulk_task.additional_properties = d
        return bulk_task

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

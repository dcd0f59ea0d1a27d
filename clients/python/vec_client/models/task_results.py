from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, BinaryIO, TextIO, TYPE_CHECKING, Generator

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

from typing import cast

if TYPE_CHECKING:
  from ..models.email_result import EmailResult





T = TypeVar("T", bound="TaskResults")



@_attrs_define
class TaskResults:
    """ 
        Attributes:
            completed_at (None | str):
            created_at (str):
            credits_refunded (int):
            credits_used (int):
            failed_emails_count (int): addresses whose chunk failed (refunded)
            name (str):
            partial_failure (bool):
            processed_emails (int):
            progress (float): percent of the addresses settled
            results (list[EmailResult]): every result, once the task finished (else empty)
            status (str): pending | processing | completed | failed | cancelled | deleted
            task_id (str):
            total_emails (int):
     """

    completed_at: None | str
    created_at: str
    credits_refunded: int
    credits_used: int
    failed_emails_count: int
    name: str
    partial_failure: bool
    processed_emails: int
    progress: float
    results: list[EmailResult]
    status: str
    task_id: str
    total_emails: int
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)





    def to_dict(self) -> dict[str, Any]:
        from ..models.email_result import EmailResult # noqa: PLC0415
        completed_at: None | str
        completed_at = self.completed_at

        created_at = self.created_at

        credits_refunded = self.credits_refunded

        credits_used = self.credits_used

        failed_emails_count = self.failed_emails_count

        name = self.name

        partial_failure = self.partial_failure

        processed_emails = self.processed_emails

        progress = self.progress

        results = []
        for results_item_data in self.results:
            results_item = results_item_data.to_dict()
            results.append(results_item)



        status = self.status

        task_id = self.task_id

        total_emails = self.total_emails


        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update({
            "completed_at": completed_at,
            "created_at": created_at,
            "credits_refunded": credits_refunded,
            "credits_used": credits_used,
            "failed_emails_count": failed_emails_count,
            "name": name,
            "partial_failure": partial_failure,
            "processed_emails": processed_emails,
            "progress": progress,
            "results": results,
            "status": status,
            "task_id": task_id,
            "total_emails": total_emails,
        })

        return field_dict



    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.email_result import EmailResult # noqa: PLC0415
        d = dict(src_dict)
        def _parse_completed_at(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        completed_at = _parse_completed_at(d.pop("completed_at"))


        created_at = d.pop("created_at")

        credits_refunded = d.pop("credits_refunded")

        credits_used = d.pop("credits_used")

        failed_emails_count = d.pop("failed_emails_count")

        name = d.pop("name")

        partial_failure = d.pop("partial_failure")

        processed_emails = d.pop("processed_emails")

        progress = d.pop("progress")

        results = []
        _results = d.pop("results")
        for results_item_data in (_results):
            results_item = EmailResult.from_dict(results_item_data)



            results.append(results_item)


        status = d.pop("status")

        task_id = d.pop("task_id")

        total_emails = d.pop("total_emails")

        task_results = cls(
            completed_at=completed_at,
            created_at=created_at,
            credits_refunded=credits_refunded,
            credits_used=credits_used,
            failed_emails_count=failed_emails_count,
            name=name,
            partial_failure=partial_failure,
            processed_emails=processed_emails,
            progress=progress,
            results=results,
            status=status,
            task_id=task_id,
            total_emails=total_emails,
        )


        task_results.additional_properties = d
        return task_results

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

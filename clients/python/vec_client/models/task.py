from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, BinaryIO, TextIO, TYPE_CHECKING, Generator

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

from ..models.task_kind import TaskKind
from ..models.task_status import TaskStatus
from ..types import UNSET, Unset
from typing import cast






T = TypeVar("T", bound="Task")



@_attrs_define
class Task:
    """ 
        Attributes:
            account (str):
            consumed (int):
            created_at (str):
            created_by (None | str):
            debited (int):
            failed (int):
            finished_at (None | str):
            kind (TaskKind):
            late (int):
            partial_failure (bool):
            refunded (int):
            status (TaskStatus):
            task_id (str):
            total (int):
            unknown (int):
            url (str):
            verified (int):
            name (str | Unset):  Default: ''.
            results_deleted_at (None | str | Unset):
     """

    account: str
    consumed: int
    created_at: str
    created_by: None | str
    debited: int
    failed: int
    finished_at: None | str
    kind: TaskKind
    late: int
    partial_failure: bool
    refunded: int
    status: TaskStatus
    task_id: str
    total: int
    unknown: int
    url: str
    verified: int
    name: str | Unset = ''
    results_deleted_at: None | str | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)





    def to_dict(self) -> dict[str, Any]:
        account = self.account

        consumed = self.consumed

        created_at = self.created_at

        created_by: None | str
        created_by = self.created_by

        debited = self.debited

        failed = self.failed

        finished_at: None | str
        finished_at = self.finished_at

        kind = self.kind.value

        late = self.late

        partial_failure = self.partial_failure

        refunded = self.refunded

        status = self.status.value

        task_id = self.task_id

        total = self.total

        unknown = self.unknown

        url = self.url

        verified = self.verified

        name = self.name

        results_deleted_at: None | str | Unset
        if isinstance(self.results_deleted_at, Unset):
            results_deleted_at = UNSET
        else:
            results_deleted_at = self.results_deleted_at


        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update({
            "account": account,
            "consumed": consumed,
            "created_at": created_at,
            "created_by": created_by,
            "debited": debited,
            "failed": failed,
            "finished_at": finished_at,
            "kind": kind,
            "late": late,
            "partial_failure": partial_failure,
            "refunded": refunded,
            "status": status,
            "task_id": task_id,
            "total": total,
            "unknown": unknown,
            "url": url,
            "verified": verified,
        })
        if name is not UNSET:
            field_dict["name"] = name
        if results_deleted_at is not UNSET:
            field_dict["results_deleted_at"] = results_deleted_at

        return field_dict



    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        account = d.pop("account")

        consumed = d.pop("consumed")

        created_at = d.pop("created_at")

        def _parse_created_by(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        created_by = _parse_created_by(d.pop("created_by"))


        debited = d.pop("debited")

        failed = d.pop("failed")

        def _parse_finished_at(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        finished_at = _parse_finished_at(d.pop("finished_at"))


        kind = TaskKind(d.pop("kind"))




        late = d.pop("late")

        partial_failure = d.pop("partial_failure")

        refunded = d.pop("refunded")

        status = TaskStatus(d.pop("status"))




        task_id = d.pop("task_id")

        total = d.pop("total")

        unknown = d.pop("unknown")

        url = d.pop("url")

        verified = d.pop("verified")

        name = d.pop("name", UNSET)

        def _parse_results_deleted_at(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        results_deleted_at = _parse_results_deleted_at(d.pop("results_deleted_at", UNSET))


        task = cls(
            account=account,
            consumed=consumed,
            created_at=created_at,
            created_by=created_by,
            debited=debited,
            failed=failed,
            finished_at=finished_at,
            kind=kind,
            late=late,
            partial_failure=partial_failure,
            refunded=refunded,
            status=status,
            task_id=task_id,
            total=total,
            unknown=unknown,
            url=url,
            verified=verified,
            name=name,
            results_deleted_at=results_deleted_at,
        )


        task.additional_properties = d
        return task

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

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, BinaryIO, TextIO, TYPE_CHECKING, Generator

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

from ..models.email_result_deliverability import EmailResultDeliverability
from ..models.email_result_status import EmailResultStatus
from typing import cast






T = TypeVar("T", bound="EmailResult")



@_attrs_define
class EmailResult:
    """ Result taxonomy: one verified address as the product's public API shows it (POST
    /api/verify-single, and each item of GET /api/get-results/{task_id}); see
    projections/taxonomy.py for how the detailed result and the scores are derived.

        Attributes:
            credits_used (int): 1, or 0 when the result is unknown (refunded)
            deliverability (EmailResultDeliverability):
            domain (str):
            email (str):
            is_catch_all (bool):
            is_disposable (bool):
            is_free_email (bool): a free webmail domain (recorded by the provider when it verified)
            is_role_account (bool):
            is_valid (bool): true if the email is deliverable (safe, role_account)
            mx_found (bool):
            reason (str): a human-readable explanation
            risk_score (int): 0-100, higher is riskier: 100 - the result's score
            status (EmailResultStatus): the detailed result; its money status alone decides the charge: unknown is refunded
            task_id (str):
            verified_at (None | str): when the task finished (single); null in a bulk task's list
     """

    credits_used: int
    deliverability: EmailResultDeliverability
    domain: str
    email: str
    is_catch_all: bool
    is_disposable: bool
    is_free_email: bool
    is_role_account: bool
    is_valid: bool
    mx_found: bool
    reason: str
    risk_score: int
    status: EmailResultStatus
    task_id: str
    verified_at: None | str
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)





    def to_dict(self) -> dict[str, Any]:
        credits_used = self.credits_used

        deliverability = self.deliverability.value

        domain = self.domain

        email = self.email

        is_catch_all = self.is_catch_all

        is_disposable = self.is_disposable

        is_free_email = self.is_free_email

        is_role_account = self.is_role_account

        is_valid = self.is_valid

        mx_found = self.mx_found

        reason = self.reason

        risk_score = self.risk_score

        status = self.status.value

        task_id = self.task_id

        verified_at: None | str
        verified_at = self.verified_at


        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update({
            "credits_used": credits_used,
            "deliverability": deliverability,
            "domain": domain,
            "email": email,
            "is_catch_all": is_catch_all,
            "is_disposable": is_disposable,
            "is_free_email": is_free_email,
            "is_role_account": is_role_account,
            "is_valid": is_valid,
            "mx_found": mx_found,
            "reason": reason,
            "risk_score": risk_score,
            "status": status,
            "task_id": task_id,
            "verified_at": verified_at,
        })

        return field_dict



    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        credits_used = d.pop("credits_used")

        deliverability = EmailResultDeliverability(d.pop("deliverability"))




        domain = d.pop("domain")

        email = d.pop("email")

        is_catch_all = d.pop("is_catch_all")

        is_disposable = d.pop("is_disposable")

        is_free_email = d.pop("is_free_email")

        is_role_account = d.pop("is_role_account")

        is_valid = d.pop("is_valid")

        mx_found = d.pop("mx_found")

        reason = d.pop("reason")

        risk_score = d.pop("risk_score")

        status = EmailResultStatus(d.pop("status"))




        task_id = d.pop("task_id")

        def _parse_verified_at(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        verified_at = _parse_verified_at(d.pop("verified_at"))


        email_result = cls(
            credits_used=credits_used,
            deliverability=deliverability,
            domain=domain,
            email=email,
            is_catch_all=is_catch_all,
            is_disposable=is_disposable,
            is_free_email=is_free_email,
            is_role_account=is_role_account,
            is_valid=is_valid,
            mx_found=mx_found,
            reason=reason,
            risk_score=risk_score,
            status=status,
            task_id=task_id,
            verified_at=verified_at,
        )


        email_result.additional_properties = d
        return email_result

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

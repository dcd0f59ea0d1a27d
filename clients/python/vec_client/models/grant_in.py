from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, BinaryIO, TextIO, TYPE_CHECKING, Generator

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

from ..models.grant_in_bucket import GrantInBucket
from ..models.grant_in_reason_type_0 import GrantInReasonType0
from ..types import UNSET, Unset
from typing import cast
import datetime






T = TypeVar("T", bound="GrantIn")



@_attrs_define
class GrantIn:
    """ 
        Attributes:
            amount (int):
            bucket (GrantInBucket):
            expires_at (datetime.datetime | None | Unset): monthly credits only; with a time zone
            reason (GrantInReasonType0 | None | Unset):
     """

    amount: int
    bucket: GrantInBucket
    expires_at: datetime.datetime | None | Unset = UNSET
    reason: GrantInReasonType0 | None | Unset = UNSET





    def to_dict(self) -> dict[str, Any]:
        amount = self.amount

        bucket = self.bucket.value

        expires_at: None | str | Unset
        if isinstance(self.expires_at, Unset):
            expires_at = UNSET
        elif isinstance(self.expires_at, datetime.datetime):
            expires_at = self.expires_at.isoformat()
        else:
            expires_at = self.expires_at

        reason: None | str | Unset
        if isinstance(self.reason, Unset):
            reason = UNSET
        elif isinstance(self.reason, GrantInReasonType0):
            reason = self.reason.value
        else:
            reason = self.reason


        field_dict: dict[str, Any] = {}

        field_dict.update({
            "amount": amount,
            "bucket": bucket,
        })
        if expires_at is not UNSET:
            field_dict["expires_at"] = expires_at
        if reason is not UNSET:
            field_dict["reason"] = reason

        return field_dict



    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        amount = d.pop("amount")

        bucket = GrantInBucket(d.pop("bucket"))




        def _parse_expires_at(data: object) -> datetime.datetime | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                expires_at_type_0 = datetime.datetime.fromisoformat(data)



                return expires_at_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(datetime.datetime | None | Unset, data)

        expires_at = _parse_expires_at(d.pop("expires_at", UNSET))


        def _parse_reason(data: object) -> GrantInReasonType0 | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                reason_type_0 = GrantInReasonType0(data)



                return reason_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(GrantInReasonType0 | None | Unset, data)

        reason = _parse_reason(d.pop("reason", UNSET))


        grant_in = cls(
            amount=amount,
            bucket=bucket,
            expires_at=expires_at,
            reason=reason,
        )

        return grant_in


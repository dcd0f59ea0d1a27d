from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, BinaryIO, TextIO, TYPE_CHECKING, Generator

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

from ..types import UNSET, Unset
from typing import cast






T = TypeVar("T", bound="RateLimitedBody")



@_attrs_define
class RateLimitedBody:
    """ 
        Attributes:
            current (int): requests in the window, this one included
            error (str): what went wrong; stable, safe to match on
            limit (int): requests allowed in the window
            retry_after_seconds (int): seconds to wait before retrying
            window (str): e.g. "1 minute"
            message (None | str | Unset): a human-readable hint
     """

    current: int
    error: str
    limit: int
    retry_after_seconds: int
    window: str
    message: None | str | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)





    def to_dict(self) -> dict[str, Any]:
        current = self.current

        error = self.error

        limit = self.limit

        retry_after_seconds = self.retry_after_seconds

        window = self.window

        message: None | str | Unset
        if isinstance(self.message, Unset):
            message = UNSET
        else:
            message = self.message


        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update({
            "current": current,
            "error": error,
            "limit": limit,
            "retry_after_seconds": retry_after_seconds,
            "window": window,
        })
        if message is not UNSET:
            field_dict["message"] = message

        return field_dict



    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        current = d.pop("current")

        error = d.pop("error")

        limit = d.pop("limit")

        retry_after_seconds = d.pop("retry_after_seconds")

        window = d.pop("window")

        def _parse_message(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        message = _parse_message(d.pop("message", UNSET))


        rate_limited_body = cls(
            current=current,
            error=error,
            limit=limit,
            retry_after_seconds=retry_after_seconds,
            window=window,
            message=message,
        )


        rate_limited_body.additional_properties = d
        return rate_limited_body

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

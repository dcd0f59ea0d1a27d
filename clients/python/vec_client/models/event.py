from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, BinaryIO, TextIO, TYPE_CHECKING, Generator

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

from typing import cast

if TYPE_CHECKING:
  from ..models.event_data import EventData
  from ..models.event_metadata import EventMetadata





T = TypeVar("T", bound="Event")



@_attrs_define
class Event:
    """ 
        Attributes:
            data (EventData):
            metadata (EventMetadata):
            position (int):
            stream (str):
            type_ (str):
            version (int):
     """

    data: EventData
    metadata: EventMetadata
    position: int
    stream: str
    type_: str
    version: int
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)





    def to_dict(self) -> dict[str, Any]:
        from ..models.event_data import EventData # noqa: PLC0415
        from ..models.event_metadata import EventMetadata # noqa: PLC0415
        data = self.data.to_dict()

        metadata = self.metadata.to_dict()

        position = self.position

        stream = self.stream

        type_ = self.type_

        version = self.version


        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update({
            "data": data,
            "metadata": metadata,
            "position": position,
            "stream": stream,
            "type": type_,
            "version": version,
        })

        return field_dict



    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.event_data import EventData # noqa: PLC0415
        from ..models.event_metadata import EventMetadata # noqa: PLC0415
        d = dict(src_dict)
        data = EventData.from_dict(d.pop("data"))




        metadata = EventMetadata.from_dict(d.pop("metadata"))




        position = d.pop("position")

        stream = d.pop("stream")

        type_ = d.pop("type")

        version = d.pop("version")

        event = cls(
            data=data,
            metadata=metadata,
            position=position,
            stream=stream,
            type_=type_,
            version=version,
        )


        event.additional_properties = d
        return event

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

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DocumentEvent(_message.Message):
    __slots__ = ("op", "doc_id", "version", "tenant", "lang", "title", "text", "metadata", "event_time_ms", "profile")
    class Op(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OP_UNSPECIFIED: _ClassVar[DocumentEvent.Op]
        OP_UPSERT: _ClassVar[DocumentEvent.Op]
        OP_DELETE: _ClassVar[DocumentEvent.Op]
    OP_UNSPECIFIED: DocumentEvent.Op
    OP_UPSERT: DocumentEvent.Op
    OP_DELETE: DocumentEvent.Op
    OP_FIELD_NUMBER: _ClassVar[int]
    DOC_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    LANG_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    op: DocumentEvent.Op
    doc_id: str
    version: int
    tenant: str
    lang: str
    title: str
    text: str
    metadata: _struct_pb2.Struct
    event_time_ms: int
    profile: str
    def __init__(self, op: _Optional[_Union[DocumentEvent.Op, str]] = ..., doc_id: _Optional[str] = ..., version: _Optional[int] = ..., tenant: _Optional[str] = ..., lang: _Optional[str] = ..., title: _Optional[str] = ..., text: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., event_time_ms: _Optional[int] = ..., profile: _Optional[str] = ...) -> None: ...

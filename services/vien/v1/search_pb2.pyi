from google.protobuf import struct_pb2 as _struct_pb2
from vien.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SearchMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEARCH_MODE_UNSPECIFIED: _ClassVar[SearchMode]
    SEARCH_MODE_DENSE: _ClassVar[SearchMode]
    SEARCH_MODE_HYBRID: _ClassVar[SearchMode]
    SEARCH_MODE_SPARSE: _ClassVar[SearchMode]
SEARCH_MODE_UNSPECIFIED: SearchMode
SEARCH_MODE_DENSE: SearchMode
SEARCH_MODE_HYBRID: SearchMode
SEARCH_MODE_SPARSE: SearchMode

class SearchRequest(_message.Message):
    __slots__ = ("query", "top_k", "tenant", "lang", "metadata_filter", "profile", "mode", "score_threshold", "dimensions", "no_accent_restoration")
    class MetadataFilterEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    LANG_FIELD_NUMBER: _ClassVar[int]
    METADATA_FILTER_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    NO_ACCENT_RESTORATION_FIELD_NUMBER: _ClassVar[int]
    query: str
    top_k: int
    tenant: str
    lang: str
    metadata_filter: _containers.ScalarMap[str, str]
    profile: str
    mode: SearchMode
    score_threshold: float
    dimensions: int
    no_accent_restoration: bool
    def __init__(self, query: _Optional[str] = ..., top_k: _Optional[int] = ..., tenant: _Optional[str] = ..., lang: _Optional[str] = ..., metadata_filter: _Optional[_Mapping[str, str]] = ..., profile: _Optional[str] = ..., mode: _Optional[_Union[SearchMode, str]] = ..., score_threshold: _Optional[float] = ..., dimensions: _Optional[int] = ..., no_accent_restoration: _Optional[bool] = ...) -> None: ...

class SearchHit(_message.Message):
    __slots__ = ("doc_id", "chunk_index", "text", "score", "title", "metadata", "lang", "version", "tenant")
    DOC_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    LANG_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    doc_id: str
    chunk_index: int
    text: str
    score: float
    title: str
    metadata: _struct_pb2.Struct
    lang: str
    version: int
    tenant: str
    def __init__(self, doc_id: _Optional[str] = ..., chunk_index: _Optional[int] = ..., text: _Optional[str] = ..., score: _Optional[float] = ..., title: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., lang: _Optional[str] = ..., version: _Optional[int] = ..., tenant: _Optional[str] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits", "profile", "query_lang", "timings", "mode", "restored_query", "restore_confidence")
    HITS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    QUERY_LANG_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    RESTORED_QUERY_FIELD_NUMBER: _ClassVar[int]
    RESTORE_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[SearchHit]
    profile: str
    query_lang: str
    timings: _common_pb2.Timings
    mode: SearchMode
    restored_query: str
    restore_confidence: float
    def __init__(self, hits: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ..., profile: _Optional[str] = ..., query_lang: _Optional[str] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ..., mode: _Optional[_Union[SearchMode, str]] = ..., restored_query: _Optional[str] = ..., restore_confidence: _Optional[float] = ...) -> None: ...

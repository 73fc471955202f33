from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StoreQueryMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STORE_QUERY_MODE_DENSE: _ClassVar[StoreQueryMode]
    STORE_QUERY_MODE_SPARSE: _ClassVar[StoreQueryMode]
    STORE_QUERY_MODE_HYBRID: _ClassVar[StoreQueryMode]
STORE_QUERY_MODE_DENSE: StoreQueryMode
STORE_QUERY_MODE_SPARSE: StoreQueryMode
STORE_QUERY_MODE_HYBRID: StoreQueryMode

class StoreSparseVector(_message.Message):
    __slots__ = ("indices", "values")
    INDICES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    indices: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, indices: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class StorePoint(_message.Message):
    __slots__ = ("id", "vector", "payload", "sparse", "payload_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SPARSE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    vector: bytes
    payload: _struct_pb2.Struct
    sparse: StoreSparseVector
    payload_json: bytes
    def __init__(self, id: _Optional[str] = ..., vector: _Optional[bytes] = ..., payload: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., sparse: _Optional[_Union[StoreSparseVector, _Mapping]] = ..., payload_json: _Optional[bytes] = ...) -> None: ...

class StoreFilter(_message.Message):
    __slots__ = ("tenant", "lang", "metadata", "doc_id")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TENANT_FIELD_NUMBER: _ClassVar[int]
    LANG_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    DOC_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    lang: str
    metadata: _containers.ScalarMap[str, str]
    doc_id: str
    def __init__(self, tenant: _Optional[str] = ..., lang: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., doc_id: _Optional[str] = ...) -> None: ...

class StoreHit(_message.Message):
    __slots__ = ("id", "score", "payload", "payload_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    score: float
    payload: _struct_pb2.Struct
    payload_json: bytes
    def __init__(self, id: _Optional[str] = ..., score: _Optional[float] = ..., payload: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., payload_json: _Optional[bytes] = ...) -> None: ...

class EnsureCollectionRequest(_message.Message):
    __slots__ = ("collection", "dims", "sparse")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DIMS_FIELD_NUMBER: _ClassVar[int]
    SPARSE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    dims: int
    sparse: bool
    def __init__(self, collection: _Optional[str] = ..., dims: _Optional[int] = ..., sparse: _Optional[bool] = ...) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("collection", "points")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    points: _containers.RepeatedCompositeFieldContainer[StorePoint]
    def __init__(self, collection: _Optional[str] = ..., points: _Optional[_Iterable[_Union[StorePoint, _Mapping]]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("collection", "ids", "tenant", "doc_id")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DOC_ID_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    tenant: str
    doc_id: str
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., tenant: _Optional[str] = ..., doc_id: _Optional[str] = ...) -> None: ...

class DocChunksRequest(_message.Message):
    __slots__ = ("collection", "tenant", "doc_id", "payload_json")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DOC_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    collection: str
    tenant: str
    doc_id: str
    payload_json: bool
    def __init__(self, collection: _Optional[str] = ..., tenant: _Optional[str] = ..., doc_id: _Optional[str] = ..., payload_json: _Optional[bool] = ...) -> None: ...

class QueryRequest(_message.Message):
    __slots__ = ("collection", "mode", "vector", "sparse", "top_k", "filter", "prefetch_k", "payload_json", "payload_fields", "full_head")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    SPARSE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_K_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELDS_FIELD_NUMBER: _ClassVar[int]
    FULL_HEAD_FIELD_NUMBER: _ClassVar[int]
    collection: str
    mode: StoreQueryMode
    vector: bytes
    sparse: StoreSparseVector
    top_k: int
    filter: StoreFilter
    prefetch_k: int
    payload_json: bool
    payload_fields: PayloadFields
    full_head: int
    def __init__(self, collection: _Optional[str] = ..., mode: _Optional[_Union[StoreQueryMode, str]] = ..., vector: _Optional[bytes] = ..., sparse: _Optional[_Union[StoreSparseVector, _Mapping]] = ..., top_k: _Optional[int] = ..., filter: _Optional[_Union[StoreFilter, _Mapping]] = ..., prefetch_k: _Optional[int] = ..., payload_json: _Optional[bool] = ..., payload_fields: _Optional[_Union[PayloadFields, _Mapping]] = ..., full_head: _Optional[int] = ...) -> None: ...

class PayloadFields(_message.Message):
    __slots__ = ("fields",)
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, fields: _Optional[_Iterable[str]] = ...) -> None: ...

class RetrieveRequest(_message.Message):
    __slots__ = ("collection", "ids", "filter", "payload_json")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    filter: StoreFilter
    payload_json: bool
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., filter: _Optional[_Union[StoreFilter, _Mapping]] = ..., payload_json: _Optional[bool] = ...) -> None: ...

class HitsResponse(_message.Message):
    __slots__ = ("hits",)
    HITS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[StoreHit]
    def __init__(self, hits: _Optional[_Iterable[_Union[StoreHit, _Mapping]]] = ...) -> None: ...

class CountRequest(_message.Message):
    __slots__ = ("collection", "filter")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    collection: str
    filter: StoreFilter
    def __init__(self, collection: _Optional[str] = ..., filter: _Optional[_Union[StoreFilter, _Mapping]] = ...) -> None: ...

class CountResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CollectionSummary(_message.Message):
    __slots__ = ("name", "dims", "points", "sparse")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIMS_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    SPARSE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dims: int
    points: int
    sparse: bool
    def __init__(self, name: _Optional[str] = ..., dims: _Optional[int] = ..., points: _Optional[int] = ..., sparse: _Optional[bool] = ...) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("collections",)
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[CollectionSummary]
    def __init__(self, collections: _Optional[_Iterable[_Union[CollectionSummary, _Mapping]]] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DropCollectionRequest(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    def __init__(self, collection: _Optional[str] = ...) -> None: ...

class DropCollectionResponse(_message.Message):
    __slots__ = ("dropped",)
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    dropped: bool
    def __init__(self, dropped: _Optional[bool] = ...) -> None: ...

class OptimizeRequest(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    def __init__(self, collection: _Optional[str] = ...) -> None: ...

class OptimizeResponse(_message.Message):
    __slots__ = ("changed", "seconds")
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    changed: bool
    seconds: float
    def __init__(self, changed: _Optional[bool] = ..., seconds: _Optional[float] = ...) -> None: ...

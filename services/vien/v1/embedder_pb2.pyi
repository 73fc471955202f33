from vien.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EncodeRequest(_message.Message):
    __slots__ = ("texts", "profile", "dimensions", "strict", "bypass_cache")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    STRICT_FIELD_NUMBER: _ClassVar[int]
    BYPASS_CACHE_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    profile: str
    dimensions: int
    strict: bool
    bypass_cache: bool
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., profile: _Optional[str] = ..., dimensions: _Optional[int] = ..., strict: _Optional[bool] = ..., bypass_cache: _Optional[bool] = ...) -> None: ...

class EncodedText(_message.Message):
    __slots__ = ("vector", "dims", "token_count", "truncated", "cache_hit")
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    DIMS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    vector: bytes
    dims: int
    token_count: int
    truncated: bool
    cache_hit: bool
    def __init__(self, vector: _Optional[bytes] = ..., dims: _Optional[int] = ..., token_count: _Optional[int] = ..., truncated: _Optional[bool] = ..., cache_hit: _Optional[bool] = ...) -> None: ...

class EncodeResponse(_message.Message):
    __slots__ = ("results", "model_id", "timings")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[EncodedText]
    model_id: str
    timings: _common_pb2.Timings
    def __init__(self, results: _Optional[_Iterable[_Union[EncodedText, _Mapping]]] = ..., model_id: _Optional[str] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...

from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EmbedKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EMBED_KIND_UNSPECIFIED: _ClassVar[EmbedKind]
    EMBED_KIND_QUERY: _ClassVar[EmbedKind]
    EMBED_KIND_DOCUMENT: _ClassVar[EmbedKind]
EMBED_KIND_UNSPECIFIED: EmbedKind
EMBED_KIND_QUERY: EmbedKind
EMBED_KIND_DOCUMENT: EmbedKind

class Embedding(_message.Message):
    __slots__ = ("vector", "dims", "profile", "model_id", "lang", "token_count", "truncated", "cache_hit", "lang_score", "restored_text", "restore_confidence", "sparse")
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    DIMS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    LANG_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    LANG_SCORE_FIELD_NUMBER: _ClassVar[int]
    RESTORED_TEXT_FIELD_NUMBER: _ClassVar[int]
    RESTORE_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    SPARSE_FIELD_NUMBER: _ClassVar[int]
    vector: bytes
    dims: int
    profile: str
    model_id: str
    lang: str
    token_count: int
    truncated: bool
    cache_hit: bool
    lang_score: float
    restored_text: str
    restore_confidence: float
    sparse: LexicalSparseVector
    def __init__(self, vector: _Optional[bytes] = ..., dims: _Optional[int] = ..., profile: _Optional[str] = ..., model_id: _Optional[str] = ..., lang: _Optional[str] = ..., token_count: _Optional[int] = ..., truncated: _Optional[bool] = ..., cache_hit: _Optional[bool] = ..., lang_score: _Optional[float] = ..., restored_text: _Optional[str] = ..., restore_confidence: _Optional[float] = ..., sparse: _Optional[_Union[LexicalSparseVector, _Mapping]] = ...) -> None: ...

class LexicalSparseVector(_message.Message):
    __slots__ = ("indices", "values")
    INDICES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    indices: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, indices: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("total_ms", "stage_ms")
    class StageMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    STAGE_MS_FIELD_NUMBER: _ClassVar[int]
    total_ms: float
    stage_ms: _containers.ScalarMap[str, float]
    def __init__(self, total_ms: _Optional[float] = ..., stage_ms: _Optional[_Mapping[str, float]] = ...) -> None: ...

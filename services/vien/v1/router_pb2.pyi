from vien.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EmbedRequest(_message.Message):
    __slots__ = ("texts", "kind", "profile", "dimensions", "strict", "lang", "bypass_cache", "sparse", "no_accent_restoration", "accent_tenant")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    STRICT_FIELD_NUMBER: _ClassVar[int]
    LANG_FIELD_NUMBER: _ClassVar[int]
    BYPASS_CACHE_FIELD_NUMBER: _ClassVar[int]
    SPARSE_FIELD_NUMBER: _ClassVar[int]
    NO_ACCENT_RESTORATION_FIELD_NUMBER: _ClassVar[int]
    ACCENT_TENANT_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    kind: _common_pb2.EmbedKind
    profile: str
    dimensions: int
    strict: bool
    lang: str
    bypass_cache: bool
    sparse: bool
    no_accent_restoration: bool
    accent_tenant: str
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., kind: _Optional[_Union[_common_pb2.EmbedKind, str]] = ..., profile: _Optional[str] = ..., dimensions: _Optional[int] = ..., strict: _Optional[bool] = ..., lang: _Optional[str] = ..., bypass_cache: _Optional[bool] = ..., sparse: _Optional[bool] = ..., no_accent_restoration: _Optional[bool] = ..., accent_tenant: _Optional[str] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("embeddings", "timings")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    embeddings: _containers.RepeatedCompositeFieldContainer[_common_pb2.Embedding]
    timings: _common_pb2.Timings
    def __init__(self, embeddings: _Optional[_Iterable[_Union[_common_pb2.Embedding, _Mapping]]] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...

class DetectLanguageRequest(_message.Message):
    __slots__ = ("texts",)
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, texts: _Optional[_Iterable[str]] = ...) -> None: ...

class DetectedLanguage(_message.Message):
    __slots__ = ("lang", "score", "profile")
    LANG_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    lang: str
    score: float
    profile: str
    def __init__(self, lang: _Optional[str] = ..., score: _Optional[float] = ..., profile: _Optional[str] = ...) -> None: ...

class DetectLanguageResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[DetectedLanguage]
    def __init__(self, results: _Optional[_Iterable[_Union[DetectedLanguage, _Mapping]]] = ...) -> None: ...

class ListProfilesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ProfileInfo(_message.Message):
    __slots__ = ("name", "dims", "allowed_dims", "min_dims", "query_model", "document_model", "collection", "max_tokens")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIMS_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_DIMS_FIELD_NUMBER: _ClassVar[int]
    MIN_DIMS_FIELD_NUMBER: _ClassVar[int]
    QUERY_MODEL_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_MODEL_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    name: str
    dims: int
    allowed_dims: _containers.RepeatedScalarFieldContainer[int]
    min_dims: int
    query_model: str
    document_model: str
    collection: str
    max_tokens: int
    def __init__(self, name: _Optional[str] = ..., dims: _Optional[int] = ..., allowed_dims: _Optional[_Iterable[int]] = ..., min_dims: _Optional[int] = ..., query_model: _Optional[str] = ..., document_model: _Optional[str] = ..., collection: _Optional[str] = ..., max_tokens: _Optional[int] = ...) -> None: ...

class ListProfilesResponse(_message.Message):
    __slots__ = ("profiles", "routing", "default_profile")
    class RoutingEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PROFILES_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PROFILE_FIELD_NUMBER: _ClassVar[int]
    profiles: _containers.RepeatedCompositeFieldContainer[ProfileInfo]
    routing: _containers.ScalarMap[str, str]
    default_profile: str
    def __init__(self, profiles: _Optional[_Iterable[_Union[ProfileInfo, _Mapping]]] = ..., routing: _Optional[_Mapping[str, str]] = ..., default_profile: _Optional[str] = ...) -> None: ...

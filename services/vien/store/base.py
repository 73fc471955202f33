"""The vector store interface: one collection per profile, points = document chunks.

Both adapters (`EdgeStore` on qdrant-edge-py, `QdrantStore` on qdrant-client) implement `VectorStore`
and pass the same behavioural suite (tests/test_store.py). The interface is synchronous; async
services call it through `asyncio.to_thread`.

Collection layout (the same in both engines):
- a named dense vector ``"dense"`` (cosine, `dims` components);
- optionally a named sparse vector ``"lexical"`` (BM25-style term weights, IDF applied by the engine at
  query time), queried alone with `search_sparse` or fused with the dense one by RRF in `search_hybrid`;
- keyword payload indexes on ``tenant`` (marked as the tenant key), ``lang``, ``doc_id`` and an integer
  index on ``version``.

Payload written by the ingest worker (`vien.documents.payload.ChunkPayload`): tenant, doc_id, chunk_index, lang, title,
text, metadata (dict of str -> str), version (int), content_hash (str), n_chunks (int). Metadata filters
match ``metadata.<key>`` exactly.

Acknowledgement: when `upsert`/`delete*` return, the change is visible to searches and durable (Edge
flushes to disk; Qdrant server is called with ``wait=True``), so the ingest worker may commit its offset.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from vien.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable

DENSE = "dense"
SPARSE = "lexical"
DISTANCE = "cosine"
# Default k of reciprocal rank fusion (the value of the RRF paper, and Qdrant server's default).
RRF_K = 60

# Payload indexes created with every collection: field -> "keyword" | "tenant" (keyword, tenant key) | "integer".
PAYLOAD_INDEXES: dict[str, str] = {"tenant": "tenant", "lang": "keyword", "doc_id": "keyword", "version": "integer"}

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_META_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")
_FIELD_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")
MAX_PAYLOAD_FIELDS = 32
MAX_RETRIEVE = 10_000


# --------------------------------------------------------------------------------------------- errors


class CollectionNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"collection {name!r} does not exist")
        self.name = name


class CollectionMismatch(FailedPrecondition):
    """A collection exists with a different shape (dims, sparse vector) than the caller expects."""


class StoreUnavailable(Unavailable):
    """The engine cannot be reached or opened right now (server down, Edge shard locked by another process)."""


# ------------------------------------------------------------------------------------------ data types


@dataclass(frozen=True, slots=True)
class SparseVector:
    """Non-zero term weights: `indices` (term ids, unique, ≥ 0, < 2**32) and their `values`."""

    indices: list[int]
    values: list[float]

    def __post_init__(self) -> None:
        if len(self.indices) != len(self.values):
            raise InvalidArgument("sparse", f"{len(self.indices)} indices but {len(self.values)} values")
        if len(set(self.indices)) != len(self.indices):
            raise InvalidArgument("sparse.indices", "must be unique")
        for i in self.indices:
            if not 0 <= int(i) < 2**32:
                raise InvalidArgument("sparse.indices", f"{i} is outside [0, 2**32)")
        for v in self.values:
            if not math.isfinite(v):
                raise InvalidArgument("sparse.values", "must be finite")


@dataclass(slots=True)
class Point:
    """One chunk: `id` is a UUID string (uuid5(doc_id, chunk) in the ingest worker)."""

    id: str
    vector: np.ndarray
    payload: dict[str, Any] = field(default_factory=dict)
    sparse: SparseVector | None = None


@dataclass(frozen=True, slots=True)
class SearchFilter:
    """Conjunction of exact matches. `metadata` keys match payload ``metadata.<key>``."""

    tenant: str | None = None
    lang: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    doc_id: str | None = None

    def conditions(self) -> list[tuple[str, str]]:
        """(payload path, exact keyword value) pairs, validated; what each adapter turns into its filter."""
        out: list[tuple[str, str]] = []
        for key, value in (("tenant", self.tenant), ("lang", self.lang), ("doc_id", self.doc_id)):
            if value is not None:
                if not isinstance(value, str):
                    raise InvalidArgument(f"filter.{key}", "must be a string")
                out.append((key, value))
        for key, value in sorted(self.metadata.items()):
            if not isinstance(key, str) or not _META_KEY_RE.match(key):
                raise InvalidArgument(
                    "filter.metadata", f"key {key!r} must match {_META_KEY_RE.pattern} (no dots or brackets)"
                )
            if not isinstance(value, str):
                raise InvalidArgument(f"filter.metadata.{key}", "value must be a string")
            out.append((f"metadata.{key}", value))
        return out


@dataclass(frozen=True, slots=True)
class Hit:
    id: str
    score: float
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    name: str
    dims: int
    distance: str
    sparse: bool
    points: int


# ------------------------------------------------------------------------------------------- protocol


@runtime_checkable
class VectorStore(Protocol):
    def ensure_collection(self, name: str, dims: int, sparse: bool = True) -> None:
        """Create the collection (dense `dims`, cosine; sparse "lexical" if `sparse`) with its payload
        indexes. Idempotent; raises `CollectionMismatch` if it exists with other dims or without the
        requested sparse vector."""
        ...

    def drop_collection(self, name: str) -> bool:
        """Remove the collection and its data; False if it did not exist."""
        ...

    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        """Insert or replace points by id. Visible and durable when it returns."""
        ...

    def delete(self, collection: str, ids: Sequence[str]) -> None: ...

    def delete_by_doc(self, collection: str, tenant: str, doc_id: str) -> None:
        """Remove every chunk of one document of one tenant."""
        ...

    def doc_chunks(self, collection: str, tenant: str, doc_id: str) -> list[Hit]:
        """Every stored chunk of a document (score 0.0), sorted by chunk_index, payload included."""
        ...

    def search(self, collection: str, vector: np.ndarray, top_k: int, flt: SearchFilter | None = None,
               payload_fields: Sequence[str] | None = None, full_head: int = 0) -> list[Hit]:
        """Dense nearest neighbours by cosine similarity, best first.

        `payload_fields`: None = every hit with its full payload; a list = only those top-level payload
        fields (none when empty): candidates for a fusion that reads a field or two, whose full payloads
        (the chunk text, ~1 KB) are then fetched for the final hits only, with `retrieve`. `full_head`:
        the first `full_head` hits carry their full payload all the same (one engine call in the same
        request, no extra round trip for a caller that reads the best hit's text)."""
        ...

    def search_sparse(
        self, collection: str, sparse: SparseVector, top_k: int, flt: SearchFilter | None = None,
        payload_fields: Sequence[str] | None = None, full_head: int = 0,
    ) -> list[Hit]:
        """Lexical search on the "lexical" sparse vector (dot product of weights, IDF applied).
        `payload_fields`, `full_head`: as in `search`."""
        ...

    def retrieve(self, collection: str, ids: Sequence[str],
                 flt: SearchFilter | None = None) -> dict[str, dict[str, Any]]:
        """Full payloads of the given points: canonical id -> payload. Points that do not exist (deleted
        since they were found) or do not match `flt` are left out: ids come from a tenant-filtered search,
        and the same filter is checked again here on each payload, so an id of another tenant's point
        never returns that point's payload. At most `MAX_RETRIEVE` ids."""
        ...

    def search_hybrid(
        self,
        collection: str,
        vector: np.ndarray,
        sparse: SparseVector,
        top_k: int,
        flt: SearchFilter | None = None,
        prefetch_k: int | None = None,
    ) -> list[Hit]:
        """Dense and sparse candidates (`prefetch_k` each) fused by reciprocal rank fusion."""
        ...

    def count(self, collection: str, flt: SearchFilter | None = None) -> int: ...

    def collections(self) -> dict[str, int]:
        """Collection name -> dense dims."""
        ...

    def collection_info(self, name: str) -> CollectionInfo: ...

    def optimize(self, collection: str) -> bool:
        """Build indexes / merge segments now (Edge has no background optimizer; no-op on a server).
        On Edge this blocks the whole process (GIL held) for seconds to minutes: see vien.store.edge."""
        ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------------- shared validation


def check_collection_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidArgument("collection", f"{name!r} must match {_NAME_RE.pattern}")
    return name


def check_dims(dims: int) -> int:
    if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= 65536:
        raise InvalidArgument("dims", f"{dims!r} must be an integer in [1, 65536]")
    return dims


def check_top_k(top_k: int) -> int:
    if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= 10_000:
        raise InvalidArgument("top_k", f"{top_k!r} must be an integer in [1, 10000]")
    return top_k


def point_id(value: str) -> str:
    """Canonical UUID string; raises InvalidArgument for anything else."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise InvalidArgument("id", f"{value!r} is not a UUID") from None


def dense(vector: np.ndarray, dims: int, what: str = "vector") -> list[float]:
    """A finite, non-zero float32 vector of `dims` components, as a list for the engines."""
    return dense_batch([vector], dims, what)[0]


def dense_batch(vectors: Sequence[np.ndarray], dims: int, what: str = "vector") -> list[list[float]]:
    """`dense` for a whole batch at once (validated as one array: ~20x cheaper than per vector)."""
    try:
        a = np.stack([np.asarray(v, dtype=np.float32) for v in vectors])
    except ValueError:
        raise InvalidArgument(what, f"every vector must have shape ({dims},)") from None
    if a.ndim != 2 or a.shape[1] != dims:
        raise InvalidArgument(what, f"shape {tuple(a.shape[1:])} does not match collection dims ({dims},)")
    if not np.isfinite(a).all():
        raise InvalidArgument(what, "must be finite")
    if not a.any(axis=1).all():
        raise InvalidArgument(what, "must not be all zeros (cosine is undefined)")
    out: list[list[float]] = a.tolist()
    return out


def check_payload_fields(fields: Sequence[str] | None) -> list[str] | None:
    """None (the full payload) or a list of top-level payload field names."""
    if fields is None:
        return None
    out = list(fields)
    if len(out) > MAX_PAYLOAD_FIELDS:
        raise InvalidArgument("payload_fields", f"{len(out)} fields exceeds the limit of {MAX_PAYLOAD_FIELDS}")
    for f in out:
        if not isinstance(f, str) or not _FIELD_RE.match(f):
            raise InvalidArgument("payload_fields", f"{f!r} must match {_FIELD_RE.pattern} (a top-level field)")
    return out


def payload_selector(fields: list[str] | None) -> bool | list[str]:
    """`with_payload` of an engine query (both engines take this form): everything (None), nothing ([])
    or those top-level fields."""
    return True if fields is None else (fields or False)


def check_full_head(full_head: int) -> int:
    if not isinstance(full_head, int) or isinstance(full_head, bool) or not 0 <= full_head <= 10_000:
        raise InvalidArgument("full_head", f"{full_head!r} must be an integer in [0, 10000]")
    return full_head


def check_ids(ids: Sequence[str]) -> list[str]:
    """Canonical point ids for `retrieve`, at most MAX_RETRIEVE."""
    if len(ids) > MAX_RETRIEVE:
        raise InvalidArgument("ids", f"{len(ids)} ids exceeds the limit of {MAX_RETRIEVE}")
    return [point_id(i) for i in ids]


def matches(payload: dict[str, Any], flt: SearchFilter | None) -> bool:
    """Whether a payload passes `flt` (the engines' exact keyword match, a list matching any element)."""
    if flt is None:
        return True
    for path, value in flt.conditions():
        v: Any = payload
        for key in path.split("."):
            v = v.get(key) if isinstance(v, dict) else None
        if not (v == value or (isinstance(v, list) and value in v)):
            return False
    return True


def with_full_head(hits: list[Hit], full: dict[str, dict[str, Any]]) -> list[Hit]:
    """`hits` with the payloads found in `full` (those of `retrieve`) in place of their selected fields."""
    return [Hit(h.id, h.score, full[h.id]) if h.id in full else h for h in hits]


def sort_chunks(hits: list[Hit]) -> list[Hit]:
    return sorted(hits, key=lambda h: (h.payload.get("chunk_index", 0), h.id))

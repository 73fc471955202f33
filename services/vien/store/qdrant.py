"""`VectorStore` on qdrant-client: a Qdrant server over gRPC in production, local mode in tests.

`QdrantStore(url="http://qdrant:6334")` talks gRPC to that port (the URL's port is the gRPC port when
`prefer_grpc`; REST is only used by qdrant-client's optional version check, which is off).
`QdrantStore(location=":memory:")` is qdrant-client's local mode: pure Python, no payload indexes, for
small data only; it exercises the same client calls as the server path.

Writes use ``wait=True``: the server answers once the operation is applied and in its WAL.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit

import grpc
import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as m
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from vien.runtime.errors import InvalidArgument, VienError
from vien.store.base import (
    DENSE,
    DISTANCE,
    PAYLOAD_INDEXES,
    RRF_K,
    SPARSE,
    CollectionInfo,
    CollectionMismatch,
    CollectionNotFound,
    Hit,
    Point,
    SearchFilter,
    SparseVector,
    StoreUnavailable,
    check_collection_name,
    check_dims,
    check_full_head,
    check_ids,
    check_payload_fields,
    check_top_k,
    dense,
    dense_batch,
    matches,
    payload_selector,
    point_id,
    sort_chunks,
    with_full_head,
)
from vien.store.indexing import IndexSettings

T = TypeVar("T")
_SCROLL_PAGE = 256
_TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}


def _filter(flt: SearchFilter | None) -> m.Filter | None:
    if flt is None:
        return None
    conds = flt.conditions()
    if not conds:
        return None
    return m.Filter(must=[m.FieldCondition(key=k, match=m.MatchValue(value=v)) for k, v in conds])


def _sparse(sv: SparseVector) -> m.SparseVector:
    return m.SparseVector(indices=[int(i) for i in sv.indices], values=[float(v) for v in sv.values])


def _index_schema(kind: str) -> Any:
    if kind == "tenant":
        return m.KeywordIndexParams(type=m.KeywordIndexType.KEYWORD, is_tenant=True)
    if kind == "keyword":
        return m.PayloadSchemaType.KEYWORD
    if kind == "integer":
        return m.PayloadSchemaType.INTEGER
    raise ValueError(kind)


def _hits(points: Sequence[Any]) -> list[Hit]:
    return [Hit(id=str(p.id), score=float(p.score), payload=dict(p.payload or {})) for p in points]


class QdrantStore:
    """Thread-safe (local mode is serialised with a lock; the gRPC client is thread-safe itself)."""

    def __init__(
        self,
        url: str | None = None,
        location: str | None = None,
        api_key: str | None = None,
        prefer_grpc: bool = True,
        path: str | None = None,
        timeout: int = 30,
        hnsw_ef: int | None = None,
        index: IndexSettings | None = None,
    ) -> None:
        # The same index the embedded store builds (vien.store.indexing), sent at collection creation.
        self.index = index or IndexSettings.from_env()
        quant = (m.QuantizationSearchParams(rescore=True, oversampling=self.index.oversampling)
                 if self.index.quantization != "none" else None)
        self._params = m.SearchParams(hnsw_ef=hnsw_ef or self.index.hnsw_ef, quantization=quant)
        self.local = url is None
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise InvalidArgument("url", f"{url!r} must look like http://host:6334")
            https = parts.scheme == "https"
            if prefer_grpc:
                self.client = QdrantClient(
                    host=parts.hostname,
                    grpc_port=parts.port or 6334,
                    https=https,
                    prefer_grpc=True,
                    api_key=api_key,
                    timeout=timeout,
                    check_compatibility=False,
                )
            else:
                self.client = QdrantClient(url=url, api_key=api_key, timeout=timeout, check_compatibility=False)
        elif path is not None:
            self.client = QdrantClient(path=path)
        else:
            self.client = QdrantClient(location=location or ":memory:")
        self._lock: threading.RLock | None = threading.RLock() if self.local else None
        self._dims: dict[str, int] = {}
        self._has_sparse: dict[str, bool] = {}

    # --------------------------------------------------------------------------------------- plumbing

    def _call(self, collection: str | None, fn: Callable[[], T]) -> T:
        try:
            if self._lock is not None:
                with self._lock:
                    return fn()
            return fn()
        except VienError:
            raise
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            if code == grpc.StatusCode.NOT_FOUND and collection is not None:
                self._forget(collection)
                raise CollectionNotFound(collection) from exc
            if code is not None and code in _TRANSIENT:
                raise StoreUnavailable(
                    f"qdrant: {code.name}: {exc.details() if hasattr(exc, 'details') else exc}"
                ) from exc
            raise
        except UnexpectedResponse as exc:
            if exc.status_code == 404 and collection is not None:
                self._forget(collection)
                raise CollectionNotFound(collection) from exc
            if exc.status_code in (502, 503, 504, 429):
                raise StoreUnavailable(f"qdrant: HTTP {exc.status_code}") from exc
            raise
        except ResponseHandlingException as exc:
            raise StoreUnavailable(f"qdrant unreachable: {exc.source}") from exc
        except ValueError as exc:  # local mode: "Collection x not found"
            if collection is not None and "not found" in str(exc).lower():
                self._forget(collection)
                raise CollectionNotFound(collection) from exc
            raise

    def _forget(self, collection: str) -> None:
        self._dims.pop(collection, None)
        self._has_sparse.pop(collection, None)

    def _shape(self, name: str) -> tuple[int, bool]:
        """(dims, has sparse) of an existing collection, cached after the first look-up."""
        if name not in self._dims:
            info = self._call(name, lambda: self.client.get_collection(name))
            vectors = info.config.params.vectors
            if not isinstance(vectors, dict) or DENSE not in vectors:
                raise CollectionMismatch(f"collection {name!r} has no named {DENSE!r} vector")
            self._dims[name] = int(vectors[DENSE].size)
            self._has_sparse[name] = SPARSE in (info.config.params.sparse_vectors or {})
        return self._dims[name], self._has_sparse[name]

    # -------------------------------------------------------------------------------------- collections

    def ensure_collection(self, name: str, dims: int, sparse: bool = True) -> None:
        check_collection_name(name)
        check_dims(dims)
        if not self._call(None, lambda: self.client.collection_exists(name)):
            try:
                self._call(
                    None,
                    lambda: self.client.create_collection(
                        name,
                        vectors_config={DENSE: m.VectorParams(size=dims, distance=m.Distance.COSINE)},
                        sparse_vectors_config={SPARSE: m.SparseVectorParams(modifier=m.Modifier.IDF)}
                        if sparse
                        else None,
                        **self._index_config(dims),
                    ),
                )
            except (ValueError, UnexpectedResponse, grpc.RpcError):
                # lost a creation race with another process: fall through to the shape check
                if not self._call(None, lambda: self.client.collection_exists(name)):
                    raise
        self._forget(name)
        have_dims, have_sparse = self._shape(name)
        if have_dims != dims:
            raise CollectionMismatch(f"collection {name!r} exists with dims {have_dims}, not {dims}")
        if sparse and not have_sparse:
            raise CollectionMismatch(f"collection {name!r} exists without the {SPARSE!r} sparse vector")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Payload indexes have no effect")
            for field, kind in PAYLOAD_INDEXES.items():  # idempotent on the server
                index = partial(
                    self.client.create_payload_index, name, field, field_schema=_index_schema(kind), wait=True
                )
                self._call(name, index)

    def _index_config(self, dims: int) -> dict[str, Any]:
        """HNSW (global + per-tenant graphs), int8 quantization and the indexing threshold of a new collection."""
        ix = self.index
        out: dict[str, Any] = {"hnsw_config": m.HnswConfigDiff(m=ix.m, payload_m=ix.payload_m,
                                                               ef_construct=ix.ef_construct)}
        if ix.quantization == "int8":
            out["quantization_config"] = m.ScalarQuantization(
                scalar=m.ScalarQuantizationConfig(type=m.ScalarType.INT8, quantile=0.99, always_ram=True))
        if ix.threshold > 0:  # Qdrant counts its threshold in KB of vectors
            kb = max(1, ix.threshold * dims * 4 // 1024)
            out["optimizers_config"] = m.OptimizersConfigDiff(indexing_threshold=kb)
        return out

    def drop_collection(self, name: str) -> bool:
        check_collection_name(name)
        self._forget(name)
        if not self._call(None, lambda: self.client.collection_exists(name)):
            return False
        return bool(self._call(None, lambda: self.client.delete_collection(name)))

    def collections(self) -> dict[str, int]:
        names = [c.name for c in self._call(None, lambda: self.client.get_collections()).collections]
        out: dict[str, int] = {}
        for n in sorted(names):
            try:
                out[n] = self._shape(n)[0]
            except (CollectionMismatch, CollectionNotFound):
                continue  # not one of ours, or dropped meanwhile
        return out

    def collection_info(self, name: str) -> CollectionInfo:
        check_collection_name(name)
        dims, has_sparse = self._shape(name)
        return CollectionInfo(name=name, dims=dims, distance=DISTANCE, sparse=has_sparse, points=self.count(name))

    def optimize(self, collection: str) -> bool:
        self._shape(check_collection_name(collection))
        return False  # the server optimizes in the background; local mode has no indexes

    # ------------------------------------------------------------------------------------------ writes

    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        check_collection_name(collection)
        dims, has_sparse = self._shape(collection)
        if not points:
            return
        batch = []
        vectors = dense_batch([p.vector for p in points], dims)
        for p, v in zip(points, vectors, strict=True):
            vec: dict[str, Any] = {DENSE: v}
            if p.sparse is not None:
                if not has_sparse:
                    raise CollectionMismatch(f"collection {collection!r} has no {SPARSE!r} sparse vector")
                vec[SPARSE] = _sparse(p.sparse)
            batch.append(m.PointStruct(id=point_id(p.id), vector=vec, payload=dict(p.payload)))
        self._call(collection, lambda: self.client.upsert(collection, points=batch, wait=True))

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        check_collection_name(collection)
        if not ids:
            return
        sel = m.PointIdsList(points=[point_id(i) for i in ids])
        self._call(collection, lambda: self.client.delete(collection, points_selector=sel, wait=True))

    def delete_by_doc(self, collection: str, tenant: str, doc_id: str) -> None:
        check_collection_name(collection)
        flt = _filter(SearchFilter(tenant=tenant, doc_id=doc_id))
        assert flt is not None
        sel = m.FilterSelector(filter=flt)
        self._call(collection, lambda: self.client.delete(collection, points_selector=sel, wait=True))

    # ------------------------------------------------------------------------------------------- reads

    def doc_chunks(self, collection: str, tenant: str, doc_id: str) -> list[Hit]:
        check_collection_name(collection)
        flt = _filter(SearchFilter(tenant=tenant, doc_id=doc_id))
        out: list[Hit] = []
        offset: Any = None
        while True:
            page = partial(
                self.client.scroll,
                collection,
                scroll_filter=flt,
                limit=_SCROLL_PAGE,
                offset=offset,
                with_payload=True,
                with_vectors=False,
            )
            records, offset = self._call(collection, page)
            out.extend(Hit(id=str(r.id), score=0.0, payload=dict(r.payload or {})) for r in records)
            if offset is None:
                return sort_chunks(out)

    def search(self, collection: str, vector: np.ndarray, top_k: int, flt: SearchFilter | None = None,
               payload_fields: Sequence[str] | None = None, full_head: int = 0) -> list[Hit]:
        check_collection_name(collection)
        fields, head = check_payload_fields(payload_fields), check_full_head(full_head)
        dims, _ = self._shape(collection)
        q = dense(vector, dims)
        limit, f = check_top_k(top_k), _filter(flt)
        res = self._call(
            collection,
            lambda: self.client.query_points(
                collection,
                query=q,
                using=DENSE,
                query_filter=f,
                search_params=self._params,
                limit=limit,
                with_payload=payload_selector(fields),
            ),
        )
        return self._full_head(collection, _hits(res.points), fields, head)

    def search_sparse(
        self, collection: str, sparse: SparseVector, top_k: int, flt: SearchFilter | None = None,
        payload_fields: Sequence[str] | None = None, full_head: int = 0,
    ) -> list[Hit]:
        self._need_sparse(collection)
        fields, head = check_payload_fields(payload_fields), check_full_head(full_head)
        limit, f, q = check_top_k(top_k), _filter(flt), _sparse(sparse)
        res = self._call(
            collection,
            lambda: self.client.query_points(
                collection, query=q, using=SPARSE, query_filter=f, limit=limit, with_payload=payload_selector(fields)
            ),
        )
        return self._full_head(collection, _hits(res.points), fields, head)

    def _full_head(self, collection: str, hits: list[Hit], fields: list[str] | None, head: int) -> list[Hit]:
        if fields is None or not head or not hits:
            return hits
        return with_full_head(hits, self._payloads(collection, [h.id for h in hits[:head]]))

    def _payloads(self, collection: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        records = self._call(collection, lambda: self.client.retrieve(collection, ids=ids, with_payload=True,
                                                                      with_vectors=False))
        return {str(r.id): dict(r.payload or {}) for r in records}

    def retrieve(self, collection: str, ids: Sequence[str],
                 flt: SearchFilter | None = None) -> dict[str, dict[str, Any]]:
        check_collection_name(collection)
        wanted = check_ids(ids)
        if not wanted:
            self._shape(collection)
            return {}
        # the filter is checked on each payload, as in the Edge adapter (a single code path for both)
        return {i: p for i, p in self._payloads(collection, wanted).items() if matches(p, flt)}

    def search_hybrid(
        self,
        collection: str,
        vector: np.ndarray,
        sparse: SparseVector,
        top_k: int,
        flt: SearchFilter | None = None,
        prefetch_k: int | None = None,
    ) -> list[Hit]:
        dims = self._need_sparse(collection)
        limit = check_top_k(top_k)
        pk = check_top_k(prefetch_k or max(limit * 4, 20))
        f = _filter(flt)
        prefetch = [
            m.Prefetch(query=dense(vector, dims), using=DENSE, limit=pk, filter=f, params=self._params),
            m.Prefetch(query=_sparse(sparse), using=SPARSE, limit=pk, filter=f),
        ]
        res = self._call(
            collection,
            lambda: self.client.query_points(
                collection,
                prefetch=prefetch,
                query=m.RrfQuery(rrf=m.Rrf(k=RRF_K)),
                query_filter=f,
                limit=limit,
                with_payload=True,
            ),
        )
        return _hits(res.points)

    def _need_sparse(self, collection: str) -> int:
        check_collection_name(collection)
        dims, has_sparse = self._shape(collection)
        if not has_sparse:
            raise CollectionMismatch(
                f"collection {collection!r} has no {SPARSE!r} sparse vector (created before lexical search); "
                "dense search still works, re-index into a new collection for sparse or hybrid"
            )
        return dims

    def count(self, collection: str, flt: SearchFilter | None = None) -> int:
        check_collection_name(collection)
        f = _filter(flt)
        return int(self._call(collection, lambda: self.client.count(collection, count_filter=f, exact=True)).count)

    # ------------------------------------------------------------------------------------------ close

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> QdrantStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

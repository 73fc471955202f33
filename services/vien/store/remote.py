"""`RemoteStore`: the VectorStore interface over the local store service (vien.v1.VectorStore).

Used by search and ingest under `vien up`, where one `store` process owns the Qdrant Edge shards.
Status codes come back as the same domain errors the in-process adapters raise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np

from vien.runtime.config import Settings
from vien.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable, UpstreamError, VienError
from vien.runtime.telemetry import traced_channel
from vien.runtime.tls import channel_for
from vien.store import wire
from vien.store.base import (
    CollectionInfo,
    Hit,
    Point,
    SearchFilter,
    SparseVector,
    StoreUnavailable,
    check_full_head,
)
from vien.v1 import store_pb2, store_pb2_grpc

_ERRORS: dict[grpc.StatusCode, type[VienError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAVAILABLE: StoreUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: StoreUnavailable,
}


class RemoteStore:
    def __init__(self, address: str, timeout_s: float = 600.0) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._raw = channel_for(address, Settings.from_env(), [("grpc.max_send_message_length", 64 << 20),
                                                               ("grpc.max_receive_message_length", 64 << 20)])
        self._stub = store_pb2_grpc.VectorStoreStub(traced_channel(self._raw))

    def _call(self, method: str, request: object) -> Any:  # the stub method's reply message
        try:
            return getattr(self._stub, method)(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                field, _, problem = details.partition(": ")
                raise InvalidArgument(field, problem or details) from None
            cls = _ERRORS.get(code)
            if cls is Unavailable or cls is StoreUnavailable:
                raise StoreUnavailable(f"store at {self.address}: {details}") from None
            if cls is not None:
                raise cls(details) from None
            raise UpstreamError(code, f"store at {self.address}: {details}") from None

    def ensure_collection(self, name: str, dims: int, sparse: bool = True) -> None:
        self._call("EnsureCollection", store_pb2.EnsureCollectionRequest(collection=name, dims=dims, sparse=sparse))

    def drop_collection(self, name: str) -> bool:
        resp = self._call("DropCollection", store_pb2.DropCollectionRequest(collection=name))
        return bool(resp.dropped)

    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        self._call("Upsert", store_pb2.UpsertRequest(collection=collection,
                                                     points=[wire.point_to_pb(p) for p in points]))

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        self._call("Delete", store_pb2.DeleteRequest(collection=collection, ids=list(ids)))

    def delete_by_doc(self, collection: str, tenant: str, doc_id: str) -> None:
        self._call("Delete", store_pb2.DeleteRequest(collection=collection, tenant=tenant, doc_id=doc_id))

    def doc_chunks(self, collection: str, tenant: str, doc_id: str) -> list[Hit]:
        resp = self._call("DocChunks", store_pb2.DocChunksRequest(collection=collection, tenant=tenant, doc_id=doc_id,
                                                                  payload_json=True))
        assert isinstance(resp, store_pb2.HitsResponse)
        return wire.hits_from_pb(resp)

    def _query(self, collection: str, mode: store_pb2.StoreQueryMode, top_k: int, flt: SearchFilter | None,
               vector: np.ndarray | None = None, sparse: SparseVector | None = None,
               prefetch_k: int | None = None, payload_fields: Sequence[str] | None = None,
               full_head: int = 0) -> list[Hit]:
        req = store_pb2.QueryRequest(collection=collection, mode=mode, top_k=top_k, prefetch_k=prefetch_k or 0,
                                     payload_json=True)
        if payload_fields is not None:
            req.payload_fields.fields.extend(payload_fields)
            req.full_head = check_full_head(full_head)  # uint32 on the wire: refused here, named
        if vector is not None:
            req.vector = np.asarray(vector, "<f4").tobytes()
        if sparse is not None:
            req.sparse.CopyFrom(wire.sparse_to_pb(sparse))
        if flt is not None:
            req.filter.CopyFrom(wire.filter_to_pb(flt))
        resp = self._call("Query", req)
        assert isinstance(resp, store_pb2.HitsResponse)
        return wire.hits_from_pb(resp)

    def search(self, collection: str, vector: np.ndarray, top_k: int, flt: SearchFilter | None = None,
               payload_fields: Sequence[str] | None = None, full_head: int = 0) -> list[Hit]:
        return self._query(collection, store_pb2.STORE_QUERY_MODE_DENSE, top_k, flt, vector=vector,
                           payload_fields=payload_fields, full_head=full_head)

    def search_sparse(self, collection: str, sparse: SparseVector, top_k: int, flt: SearchFilter | None = None,
                      payload_fields: Sequence[str] | None = None, full_head: int = 0) -> list[Hit]:
        return self._query(collection, store_pb2.STORE_QUERY_MODE_SPARSE, top_k, flt, sparse=sparse,
                           payload_fields=payload_fields, full_head=full_head)

    def retrieve(self, collection: str, ids: Sequence[str],
                 flt: SearchFilter | None = None) -> dict[str, dict[str, Any]]:
        req = store_pb2.RetrieveRequest(collection=collection, ids=list(ids), payload_json=True)
        if flt is not None:
            req.filter.CopyFrom(wire.filter_to_pb(flt))
        resp = self._call("Retrieve", req)
        assert isinstance(resp, store_pb2.HitsResponse)
        return {h.id: h.payload for h in wire.hits_from_pb(resp)}

    def search_hybrid(self, collection: str, vector: np.ndarray, sparse: SparseVector, top_k: int,
                      flt: SearchFilter | None = None, prefetch_k: int | None = None) -> list[Hit]:
        return self._query(collection, store_pb2.STORE_QUERY_MODE_HYBRID, top_k, flt, vector=vector,
                           sparse=sparse, prefetch_k=prefetch_k)

    def count(self, collection: str, flt: SearchFilter | None = None) -> int:
        req = store_pb2.CountRequest(collection=collection)
        if flt is not None:
            req.filter.CopyFrom(wire.filter_to_pb(flt))
        resp = self._call("Count", req)
        assert isinstance(resp, store_pb2.CountResponse)
        return int(resp.count)

    def _summaries(self) -> list[store_pb2.CollectionSummary]:
        resp = self._call("ListCollections", store_pb2.ListCollectionsRequest())
        assert isinstance(resp, store_pb2.ListCollectionsResponse)
        return list(resp.collections)

    def collections(self) -> dict[str, int]:
        return {c.name: c.dims for c in self._summaries()}

    def collection_info(self, name: str) -> CollectionInfo:
        for c in self._summaries():
            if c.name == name:
                return CollectionInfo(c.name, c.dims, "cosine", c.sparse, int(c.points))
        raise NotFound(f"collection {name!r} does not exist")

    def optimize(self, collection: str) -> bool:
        resp = self._call("Optimize", store_pb2.OptimizeRequest(collection=collection))
        assert isinstance(resp, store_pb2.OptimizeResponse)
        return bool(resp.changed)

    def close(self) -> None:
        self._raw.close()

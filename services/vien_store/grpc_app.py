"""gRPC layer of the local store: a thin translation onto a VectorStore (Qdrant Edge by default)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import grpc

from vien.documents.identity import check_doc_id, check_tenant
from vien.runtime import env
from vien.runtime.config import Settings
from vien.runtime.errors import InvalidArgument
from vien.runtime.grpc_server import HealthReporter
from vien.runtime.telemetry import annotate
from vien.store import wire
from vien.store.base import Hit, VectorStore
from vien.store.factory import open_store
from vien.v1 import store_pb2

Ctx: TypeAlias = grpc.aio.ServicerContext
T = TypeVar("T")


class StoreServicer:
    def __init__(self, app: StoreApp) -> None:
        self.app = app

    @property
    def store(self) -> VectorStore:
        return self.app.store

    async def EnsureCollection(self, r: store_pb2.EnsureCollectionRequest, c: Ctx) -> store_pb2.Ack:
        await asyncio.to_thread(self.store.ensure_collection, r.collection, r.dims, r.sparse)
        return store_pb2.Ack()

    async def DropCollection(self, r: store_pb2.DropCollectionRequest, c: Ctx) -> store_pb2.DropCollectionResponse:
        dropped = await asyncio.to_thread(self.store.drop_collection, r.collection)
        return store_pb2.DropCollectionResponse(dropped=dropped)

    async def Upsert(self, r: store_pb2.UpsertRequest, c: Ctx) -> store_pb2.Ack:
        points = [wire.point_from_pb(p, f"points[{i}]") for i, p in enumerate(r.points)]
        annotate({"vien.collection": r.collection, "vien.points": len(points)})
        await asyncio.to_thread(self.store.upsert, r.collection, points)
        return store_pb2.Ack()

    async def Delete(self, r: store_pb2.DeleteRequest, c: Ctx) -> store_pb2.Ack:
        if r.ids:
            await asyncio.to_thread(self.store.delete, r.collection, list(r.ids))
        elif r.tenant or r.doc_id:
            check_tenant(r.tenant)
            check_doc_id(r.doc_id)
            await asyncio.to_thread(self.store.delete_by_doc, r.collection, r.tenant, r.doc_id)
        else:
            raise InvalidArgument("ids", "give point ids, or tenant and doc_id")
        return store_pb2.Ack()

    async def DocChunks(self, r: store_pb2.DocChunksRequest, c: Ctx) -> store_pb2.HitsResponse:
        check_tenant(r.tenant)
        check_doc_id(r.doc_id)
        hits = await asyncio.to_thread(self.store.doc_chunks, r.collection, r.tenant, r.doc_id)
        return wire.hits_to_pb(hits, r.payload_json)

    async def Query(self, r: store_pb2.QueryRequest, c: Ctx) -> store_pb2.HitsResponse:
        flt = wire.filter_from_pb(r.filter, r.HasField("filter"))
        vec = wire.vector_from_bytes(r.vector) if r.vector else None
        sparse = wire.sparse_from_pb(r.sparse, r.HasField("sparse"))
        annotate({"vien.collection": r.collection, "vien.top_k": r.top_k,
                  "vien.query_mode": int(r.mode)})
        # Called on the event loop, not through asyncio.to_thread: Qdrant Edge holds the GIL for the whole
        # query (measured: a 1 ms ticker thread stalls for the query's full duration), so a worker thread
        # would add its hand-off (~0.1-0.5 ms) and no concurrency. A remote engine (qdrant:) blocks on I/O
        # instead: it keeps the thread.
        call = self._inline if self.app.inline_reads else asyncio.to_thread
        fields = list(r.payload_fields.fields) if r.HasField("payload_fields") else None
        if r.mode == store_pb2.STORE_QUERY_MODE_SPARSE:
            if sparse is None:
                raise InvalidArgument("sparse", "is required for a sparse query")
            hits = await call(self.store.search_sparse, r.collection, sparse, r.top_k, flt, fields, r.full_head)
        elif r.mode == store_pb2.STORE_QUERY_MODE_HYBRID:
            if vec is None or sparse is None:
                raise InvalidArgument("vector", "a hybrid query needs both vector and sparse")
            if fields is not None:
                raise InvalidArgument("payload_fields", "is for DENSE and SPARSE queries only")
            hits = await call(self.store.search_hybrid, r.collection, vec, sparse, r.top_k, flt, r.prefetch_k or None)
        elif r.mode == store_pb2.STORE_QUERY_MODE_DENSE:
            if vec is None:
                raise InvalidArgument("vector", "is required for a dense query")
            hits = await call(self.store.search, r.collection, vec, r.top_k, flt, fields, r.full_head)
        else:
            raise InvalidArgument("mode", f"unknown query mode number {r.mode}; expected DENSE, SPARSE or HYBRID")
        return wire.hits_to_pb(hits, r.payload_json)

    async def Retrieve(self, r: store_pb2.RetrieveRequest, c: Ctx) -> store_pb2.HitsResponse:
        flt = wire.filter_from_pb(r.filter, r.HasField("filter"))
        annotate({"vien.collection": r.collection, "vien.points": len(r.ids)})
        call = self._inline if self.app.inline_reads else asyncio.to_thread  # as Query
        found = await call(self.store.retrieve, r.collection, list(r.ids), flt)
        return wire.hits_to_pb([Hit(i, 0.0, p) for i, p in found.items()], r.payload_json)

    @staticmethod
    async def _inline(fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)

    async def Count(self, r: store_pb2.CountRequest, c: Ctx) -> store_pb2.CountResponse:
        flt = wire.filter_from_pb(r.filter, r.HasField("filter"))
        return store_pb2.CountResponse(count=await asyncio.to_thread(self.store.count, r.collection, flt))

    async def Optimize(self, r: store_pb2.OptimizeRequest, c: Ctx) -> store_pb2.OptimizeResponse:
        t0 = time.perf_counter()
        changed = await asyncio.to_thread(self.store.optimize, r.collection)
        return store_pb2.OptimizeResponse(changed=changed, seconds=time.perf_counter() - t0)

    async def ListCollections(self, r: store_pb2.ListCollectionsRequest, c: Ctx) -> store_pb2.ListCollectionsResponse:
        def summaries() -> list[store_pb2.CollectionSummary]:
            out = []
            for name in sorted(self.store.collections()):
                info = self.store.collection_info(name)
                out.append(store_pb2.CollectionSummary(name=name, dims=info.dims, points=info.points,
                                                       sparse=info.sparse))
            return out

        return store_pb2.ListCollectionsResponse(collections=await asyncio.to_thread(summaries))


def default_store_spec() -> str:
    return env.get("VIEN_STORE_BACKEND") or f"edge:{Path.home() / '.cache' / 'vien' / 'store'}"


class StoreApp:
    name = "store"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: VectorStore
        self.inline_reads = False  # Edge queries hold the GIL: run them on the loop (see Query)

    def services(self) -> list[tuple[object, object]]:
        return [(store_pb2.DESCRIPTOR.services_by_name["VectorStore"], StoreServicer(self))]

    async def start(self, health: HealthReporter) -> None:
        spec = default_store_spec()
        self.store = await asyncio.to_thread(open_store, spec)
        self.inline_reads = spec.strip().lower().startswith("edge:")

    async def stop(self) -> None:
        if hasattr(self, "store"):
            await asyncio.to_thread(self.store.close)

"""gRPC layer of search: translate messages; the query is embedded by the router over gRPC."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
from google.protobuf import struct_pb2

from vien.runtime.auth import caller_tenant, forward_metadata
from vien.runtime.config import Settings
from vien.runtime.errors import InvalidArgument, UpstreamError
from vien.runtime.grpc_client import aio_channel, remaining_timeout
from vien.runtime.grpc_server import HealthReporter
from vien.runtime.telemetry import ATTR_LANG, ATTR_PROFILE, annotate
from vien.store.base import VectorStore
from vien.store.factory import open_store
from vien.v1 import common_pb2, router_pb2, router_pb2_grpc, search_pb2
from vien_search.logic import QueryVector, Searcher


class RouterQueryEmbedder:
    def __init__(self, stub: router_pb2_grpc.RouterStub) -> None:
        self.stub = stub

    async def embed_query(self, text: str, profile: str, dimensions: int, timeout: float,
                          restore_accents: bool = True, tenant: str = "") -> QueryVector:
        req = router_pb2.EmbedRequest(texts=[text], kind=common_pb2.EMBED_KIND_QUERY, profile=profile,
                                      dimensions=dimensions, no_accent_restoration=not restore_accents,
                                      accent_tenant=tenant)
        try:
            # The caller's own key goes on to the router (an edge too), so the router checks the real caller.
            resp = await self.stub.Embed(req, timeout=timeout, metadata=forward_metadata() or None)
        except grpc.aio.AioRpcError as exc:
            details = (exc.details() or "").replace("texts[0]", "query")
            raise UpstreamError(exc.code(), details) from None
        e = resp.embeddings[0]
        return QueryVector(np.frombuffer(e.vector, "<f4"), e.profile, e.lang, e.restored_text, e.restore_confidence)


def _struct(d: dict) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(d)
    return s


_MODES = {search_pb2.SEARCH_MODE_UNSPECIFIED: "", search_pb2.SEARCH_MODE_DENSE: "dense",
          search_pb2.SEARCH_MODE_HYBRID: "hybrid", search_pb2.SEARCH_MODE_SPARSE: "sparse"}
_MODE_ENUM = {name: enum for enum, name in _MODES.items() if name}


class SearchServicer:
    def __init__(self, app: SearchApp) -> None:
        self.app = app

    async def Search(self, request: search_pb2.SearchRequest, context: grpc.aio.ServicerContext
                     ) -> search_pb2.SearchResponse:
        mode = _MODES.get(request.mode)
        if mode is None:
            raise InvalidArgument("mode", f"unknown SearchMode {request.mode}")
        # With API keys the key's tenant is THE tenant: an empty field means the caller's, another is refused.
        tenant = caller_tenant(request.tenant)
        res = await self.app.searcher.search(
            request.query, tenant, request.top_k, request.lang, dict(request.metadata_filter),
            request.profile, request.dimensions, request.score_threshold, remaining_timeout(context, 30.0), mode,
            restore_accents=not request.no_accent_restoration,
        )
        annotate({ATTR_PROFILE: res.profile, ATTR_LANG: res.query_lang, "vien.tenant": tenant,
                  "vien.top_k": request.top_k, "vien.hits": len(res.hits), "vien.mode": res.mode})
        return search_pb2.SearchResponse(
            hits=[search_pb2.SearchHit(doc_id=h.doc_id, chunk_index=h.chunk_index, text=h.text, score=h.score,
                                       title=h.title, metadata=_struct(h.metadata), lang=h.lang,
                                       version=h.version, tenant=h.tenant) for h in res.hits],
            profile=res.profile, query_lang=res.query_lang,
            timings=common_pb2.Timings(total_ms=res.stage_ms["total"], stage_ms=res.stage_ms),
            mode=_MODE_ENUM[res.mode], restored_query=res.restored_query, restore_confidence=res.restore_confidence,
        )


class SearchApp:
    name = "search"
    edge = True  # API keys checked by run_app; the key's tenant scopes every search

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.searcher: Searcher
        self._store: VectorStore | None = None
        self._channel: grpc.aio.Channel | None = None

    def services(self) -> list[tuple[object, object]]:
        return [(search_pb2.DESCRIPTOR.services_by_name["Search"], SearchServicer(self))]

    async def start(self, health: HealthReporter) -> None:
        s = self.settings
        self._store = await asyncio.to_thread(open_store, s.vector_store_spec)
        self._channel = aio_channel(s.router_addr, s)
        self.searcher = Searcher(s.config, RouterQueryEmbedder(router_pb2_grpc.RouterStub(self._channel)),
                                 self._store)

    async def stop(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        if self._store is not None:
            await asyncio.to_thread(self._store.close)

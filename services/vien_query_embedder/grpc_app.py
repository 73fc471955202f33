"""gRPC layer of the query-embedder: translate messages, nothing else."""

from __future__ import annotations

import grpc

from vien.embedding.cache import QueryCache
from vien.embedding.vectors import pack
from vien.runtime.config import Settings
from vien.runtime.grpc_server import HealthReporter
from vien.runtime.metrics import RPC_LATENCY
from vien.v1 import common_pb2, embedder_pb2
from vien_query_embedder.logic import QueryEmbedder


class QueryEmbedderServicer:
    def __init__(self, logic: QueryEmbedder) -> None:
        self.logic = logic

    async def Encode(self, request: embedder_pb2.EncodeRequest, context: grpc.aio.ServicerContext
                     ) -> embedder_pb2.EncodeResponse:
        with RPC_LATENCY.labels("query-embedder", "Encode").time():
            res = await self.logic.encode(list(request.texts), request.profile, request.dimensions,
                                          request.strict, request.bypass_cache, timeout=context.time_remaining())
        return embedder_pb2.EncodeResponse(
            results=[
                embedder_pb2.EncodedText(vector=pack(i.vector), dims=int(i.vector.shape[-1]),
                                         token_count=i.token_count, truncated=i.truncated, cache_hit=i.cache_hit)
                for i in res.items
            ],
            model_id=res.model_id,
            timings=common_pb2.Timings(total_ms=res.stage_ms["total"], stage_ms=res.stage_ms),
        )


class QueryEmbedderApp:
    name = "query-embedder"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.logic = QueryEmbedder(settings, settings.config, QueryCache(settings.redis_url))

    def services(self) -> list[tuple[object, object]]:
        return [(embedder_pb2.DESCRIPTOR.services_by_name["QueryEmbedder"], QueryEmbedderServicer(self.logic))]

    async def start(self, health: HealthReporter) -> None:
        await self.logic.start()

    async def stop(self) -> None:
        await self.logic.close()

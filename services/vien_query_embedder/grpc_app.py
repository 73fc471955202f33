"""gRPC layer of the query-embedder: translate messages, nothing else."""

from __future__ import annotations

import grpc

from vien.embedding.cache import QueryCache
from vien.embedding.results import encode_response
from vien.runtime.config import Settings
from vien.runtime.grpc_server import HealthReporter
from vien.runtime.telemetry import ATTR_BATCH_SIZE, ATTR_CACHE_HIT, ATTR_CACHE_HITS, ATTR_PROFILE, ATTR_TOKENS, annotate
from vien.v1 import embedder_pb2
from vien_query_embedder.logic import QueryEmbedder


class QueryEmbedderServicer:
    def __init__(self, logic: QueryEmbedder) -> None:
        self.logic = logic

    async def Encode(self, request: embedder_pb2.EncodeRequest, context: grpc.aio.ServicerContext
                     ) -> embedder_pb2.EncodeResponse:
        res = await self.logic.encode(list(request.texts), request.profile, request.dimensions,
                                      request.strict, request.bypass_cache, timeout=context.time_remaining())
        hits = sum(i.cache_hit for i in res.items)
        annotate({ATTR_PROFILE: request.profile, ATTR_BATCH_SIZE: len(res.items),
                  ATTR_TOKENS: sum(i.token_count for i in res.items), ATTR_CACHE_HITS: hits,
                  ATTR_CACHE_HIT: bool(res.items) and hits == len(res.items)})
        return encode_response(res)


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

"""gRPC layer of the doc-embedder: translate messages, nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from vien.embedding.vectors import pack
from vien.runtime.config import Settings
from vien.runtime.grpc_server import HealthReporter
from vien.runtime.telemetry import ATTR_BATCH_SIZE, ATTR_PROFILE, ATTR_TOKENS, annotate
from vien.v1 import common_pb2, embedder_pb2
from vien_doc_embedder.logic import DocEmbedder, DocResult


def _response(res: DocResult, profile: str) -> embedder_pb2.EncodeResponse:
    annotate({ATTR_PROFILE: profile, ATTR_BATCH_SIZE: len(res.items),
              ATTR_TOKENS: sum(i.token_count for i in res.items)})
    return embedder_pb2.EncodeResponse(
        results=[
            embedder_pb2.EncodedText(vector=pack(i.vector), dims=int(i.vector.shape[-1]),
                                     token_count=i.token_count, truncated=i.truncated)
            for i in res.items
        ],
        model_id=res.model_id,
        timings=common_pb2.Timings(total_ms=res.stage_ms["total"], stage_ms=res.stage_ms),
    )


class DocEmbedderServicer:
    def __init__(self, logic: DocEmbedder) -> None:
        self.logic = logic

    async def Encode(self, request: embedder_pb2.EncodeRequest, context: grpc.aio.ServicerContext
                     ) -> embedder_pb2.EncodeResponse:
        res = await self.logic.encode(list(request.texts), request.profile, request.dimensions,
                                      request.strict)
        return _response(res, request.profile)

    async def EncodeStream(self, requests: AsyncIterator[embedder_pb2.EncodeRequest],
                           context: grpc.aio.ServicerContext) -> AsyncIterator[embedder_pb2.EncodeResponse]:
        async for request in requests:
            res = await self.logic.encode(list(request.texts), request.profile, request.dimensions,
                                          request.strict)
            yield _response(res, request.profile)


class DocEmbedderApp:
    name = "doc-embedder"

    def __init__(self, settings: Settings) -> None:
        self.logic = DocEmbedder(settings, settings.config)

    def services(self) -> list[tuple[object, object]]:
        return [(embedder_pb2.DESCRIPTOR.services_by_name["DocEmbedder"], DocEmbedderServicer(self.logic))]

    async def start(self, health: HealthReporter) -> None:
        async def on_health(serving: bool, reason: str) -> None:
            # the space guard decides; run_app leaves a held-down state alone after start()
            if serving:
                await health.release()
            else:
                await health.hold_down(reason)

        await self.logic.start(on_health)

    async def stop(self) -> None:
        await self.logic.close()

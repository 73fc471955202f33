"""gRPC layer of the doc-embedder: translate messages, nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from vien.embedding.results import EncodeResult, encode_response
from vien.runtime.config import Settings
from vien.runtime.grpc_server import HealthReporter
from vien.runtime.telemetry import ATTR_BATCH_SIZE, ATTR_PROFILE, ATTR_TOKENS, annotate
from vien.v1 import embedder_pb2
from vien_doc_embedder.logic import DocEmbedder


def _response(res: EncodeResult, profile: str) -> embedder_pb2.EncodeResponse:
    annotate({ATTR_PROFILE: profile, ATTR_BATCH_SIZE: len(res.items),
              ATTR_TOKENS: sum(i.token_count for i in res.items)})
    return encode_response(res)


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

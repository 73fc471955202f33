"""gRPC layer of the router: thin translation plus the clients of the two embedders."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from vien.embedding.cache import QueryCache
from vien.embedding.requests import PB_TO_KIND, check_texts
from vien.runtime.auth import caller_tenant
from vien.runtime.config import LANGS, Settings
from vien.runtime.errors import upstream_error
from vien.runtime.grpc_client import aio_channel, remaining_timeout
from vien.runtime.grpc_server import HealthReporter
from vien.runtime.telemetry import (
    ATTR_BATCH_SIZE,
    ATTR_CACHE_HIT,
    ATTR_CACHE_HITS,
    ATTR_LANG,
    ATTR_PROFILE,
    ATTR_TOKENS,
    annotate,
    joined,
)
from vien.text.accent_stats import ALL, AccentRestorer, open_accent_stats
from vien.v1 import common_pb2, embedder_pb2, embedder_pb2_grpc, router_pb2
from vien_router.logic import Encoded, EncodedText, Router


class GrpcEmbedderClient:
    """EmbedderClient over gRPC; downstream statuses become UpstreamError with the same code."""

    def __init__(self, name: str, address: str,
                 stub: embedder_pb2_grpc.QueryEmbedderStub | embedder_pb2_grpc.DocEmbedderStub) -> None:
        self.name = name
        self.address = address
        self.stub = stub

    async def encode(self, texts: list[str], profile: str, dimensions: int, strict: bool,
                     bypass_cache: bool, timeout: float) -> Encoded:
        req = embedder_pb2.EncodeRequest(texts=texts, profile=profile, dimensions=dimensions, strict=strict,
                                         bypass_cache=bypass_cache)
        try:
            resp = await self.stub.Encode(req, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise upstream_error(exc, f"{self.name} at {self.address}") from None
        return Encoded(
            [EncodedText(r.vector, r.dims, r.token_count, r.truncated, r.cache_hit) for r in resp.results],
            resp.model_id,
        )


class RouterServicer:
    def __init__(self, app: RouterApp) -> None:
        self.app = app

    async def _embed(self, request: router_pb2.EmbedRequest, context: grpc.aio.ServicerContext
                     ) -> router_pb2.EmbedResponse:
        kind = PB_TO_KIND.get(request.kind, f"<{request.kind}>")
        res = await self.app.router.embed(
            list(request.texts), kind=kind, profile=request.profile, dimensions=request.dimensions,
            strict=request.strict, lang=request.lang, bypass_cache=request.bypass_cache,
            timeout=remaining_timeout(context, 30.0), sparse=request.sparse,
            restore_accents=not request.no_accent_restoration,
            accent_scope=caller_tenant(request.accent_tenant, "accent_tenant") or ALL,
        )
        hits = sum(e.cache_hit for e in res.embeddings)
        annotate({ATTR_PROFILE: joined(e.profile for e in res.embeddings),
                  ATTR_LANG: joined(e.lang for e in res.embeddings), ATTR_BATCH_SIZE: len(res.embeddings),
                  ATTR_TOKENS: sum(e.token_count for e in res.embeddings), "vien.kind": kind,
                  ATTR_CACHE_HITS: hits, ATTR_CACHE_HIT: bool(res.embeddings) and hits == len(res.embeddings)})
        return router_pb2.EmbedResponse(
            embeddings=[
                common_pb2.Embedding(vector=e.vector, dims=e.dims, profile=e.profile, model_id=e.model_id,
                                     lang=e.lang, lang_score=e.lang_score, token_count=e.token_count,
                                     truncated=e.truncated, cache_hit=e.cache_hit, restored_text=e.restored_text,
                                     restore_confidence=e.restore_confidence,
                                     sparse=None if e.sparse is None else common_pb2.LexicalSparseVector(
                                         indices=e.sparse.indices, values=e.sparse.values))
                for e in res.embeddings
            ],
            timings=common_pb2.Timings(total_ms=res.stage_ms["total"], stage_ms=res.stage_ms),
        )

    async def Embed(self, request: router_pb2.EmbedRequest, context: grpc.aio.ServicerContext
                    ) -> router_pb2.EmbedResponse:
        return await self._embed(request, context)

    async def EmbedStream(self, requests: AsyncIterator[router_pb2.EmbedRequest],
                          context: grpc.aio.ServicerContext) -> AsyncIterator[router_pb2.EmbedResponse]:
        async for request in requests:
            yield await self._embed(request, context)

    async def DetectLanguage(self, request: router_pb2.DetectLanguageRequest,
                             context: grpc.aio.ServicerContext) -> router_pb2.DetectLanguageResponse:
        texts = check_texts(list(request.texts), self.app.router.config.limits)
        return router_pb2.DetectLanguageResponse(results=[
            router_pb2.DetectedLanguage(lang=lg, score=score, profile=prof)
            for lg, score, prof in self.app.router.detect_languages(texts)
        ])

    async def ListProfiles(self, request: router_pb2.ListProfilesRequest,
                           context: grpc.aio.ServicerContext) -> router_pb2.ListProfilesResponse:
        cfg = self.app.router.config
        return router_pb2.ListProfilesResponse(
            profiles=[
                router_pb2.ProfileInfo(
                    name=n, dims=p.dims, min_dims=p.min_dims if p.mrl else p.dims,
                    allowed_dims=[] if p.mrl else [p.dims],
                    query_model=cfg.encoders[p.query_encoder].model,
                    document_model=cfg.encoders[p.document_encoder].model,
                    collection=p.collection, max_tokens=p.max_tokens,
                )
                for n, p in sorted(cfg.profiles.items())
            ],
            routing={lg: cfg.route(lg) for lg in LANGS},
            default_profile=cfg.routing.default,
        )


class RouterApp:
    name = "router"
    edge = True  # API keys checked by run_app (vien.runtime.auth); the embedders behind it trust the mesh

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._channels: list[grpc.aio.Channel] = []
        self._cache: QueryCache | None = None
        self._restorer: AccentRestorer | None = None
        self.router: Router

    def services(self) -> list[tuple[object, object]]:
        return [(router_pb2.DESCRIPTOR.services_by_name["Router"], RouterServicer(self))]

    async def start(self, health: HealthReporter) -> None:
        s = self.settings
        q_ch = aio_channel(s.query_embedder_addr, s)
        d_ch = aio_channel(s.doc_embedder_addr, s)
        self._channels = [q_ch, d_ch]
        self._cache = QueryCache(s.redis_url) if s.redis_url else None
        if any(p.accents.restore for p in s.config.profiles.values()):
            stats = (open_accent_stats(s.redis_url)
                     if any(p.accents.document_statistics for p in s.config.profiles.values()) else None)
            self._restorer = AccentRestorer.from_models_dir(s.models_dir, stats)
        self.router = Router(
            s.config,
            GrpcEmbedderClient("query-embedder", s.query_embedder_addr,
                               embedder_pb2_grpc.QueryEmbedderStub(q_ch)),
            GrpcEmbedderClient("doc-embedder", s.doc_embedder_addr, embedder_pb2_grpc.DocEmbedderStub(d_ch)),
            cache=self._cache, restorer=self._restorer,
        )

    async def stop(self) -> None:
        for ch in self._channels:
            await ch.close()
        if self._cache is not None:
            await self._cache.close()
        if self._restorer is not None:
            await self._restorer.close()

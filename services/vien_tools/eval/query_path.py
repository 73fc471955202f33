"""The services' query path in one process: Searcher -> Router (language detection, routing, dims) ->
QueryEmbedder (profile prompt, query encoder, batching), with the gRPC hops replaced by direct calls.

The adapters translate exactly what the gRPC layers translate (vectors as packed float32, the
query-embedder's model id), so routing, prompts and dims are the services' own.
"""

from __future__ import annotations

from vien.embedding.vectors import pack, unpack
from vien.runtime.config import QUERY
from vien.runtime.errors import FailedPrecondition
from vien.text.accent_stats import ALL
from vien_query_embedder.logic import QueryEmbedder
from vien_router.logic import Encoded, EncodedText, Router
from vien_search.logic import QueryVector


class InProcessQueryClient:
    """The router's client of the query-embedder (`EmbedderClient`), calling its logic directly."""

    def __init__(self, embedder: QueryEmbedder) -> None:
        self.embedder = embedder

    async def encode(self, texts: list[str], profile: str, dimensions: int, strict: bool,
                     bypass_cache: bool, timeout: float) -> Encoded:
        res = await self.embedder.encode(texts, profile, dimensions, strict, bypass_cache)
        return Encoded([EncodedText(pack(i.vector), int(i.vector.shape[-1]), i.token_count, i.truncated, i.cache_hit)
                        for i in res.items], res.model_id)


class NoDocumentClient:
    """Evaluation indexes documents through the ingest processor, never through the router."""

    async def encode(self, texts: list[str], profile: str, dimensions: int, strict: bool,
                     bypass_cache: bool, timeout: float) -> Encoded:
        raise FailedPrecondition("document embedding through the router is not used by the evaluation")


class RoutedQueryEmbedder:
    """Search's `QueryEmbedder` over the router logic (what search's RouterQueryEmbedder does over gRPC)."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def embed_query(self, text: str, profile: str, dimensions: int, timeout: float,
                          restore_accents: bool = True, tenant: str = "") -> QueryVector:
        res = await self.router.embed([text], kind=QUERY, profile=profile, dimensions=dimensions, timeout=timeout,
                                      restore_accents=restore_accents, accent_scope=tenant or ALL)
        e = res.embeddings[0]
        return QueryVector(unpack(e.vector), e.profile, e.lang, e.restored_text, e.restore_confidence)

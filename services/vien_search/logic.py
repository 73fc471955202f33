"""Search without transport: validate, embed the query through the router, search the profile's
collection with the tenant filter always applied, shape the hits."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from vien.runtime.config import LANGS, VienConfig
from vien.runtime.errors import InvalidArgument, NotFound
from vien.store.base import Hit, SearchFilter, VectorStore

TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")
MAX_TOP_K = 100
DEFAULT_TOP_K = 10
MAX_QUERY_CHARS = 4096
KNOWN_TENANT_TTL_S = 30.0


@dataclass(frozen=True)
class QueryVector:
    vector: np.ndarray
    profile: str
    lang: str


class QueryEmbedder(Protocol):
    async def embed_query(self, text: str, profile: str, dimensions: int, timeout: float) -> QueryVector: ...


@dataclass(frozen=True)
class SearchHit:
    doc_id: str
    chunk_index: int
    text: str
    score: float
    title: str
    metadata: dict[str, Any]
    lang: str
    version: int
    tenant: str


@dataclass
class SearchResult:
    hits: list[SearchHit]
    profile: str
    query_lang: str
    stage_ms: dict[str, float] = field(default_factory=dict)


def check_tenant(tenant: str, field_name: str = "tenant") -> str:
    if not tenant:
        raise InvalidArgument(field_name, "is required (documents are always scoped to a tenant)")
    if not TENANT_RE.match(tenant):
        raise InvalidArgument(field_name, f"{tenant!r} must match {TENANT_RE.pattern}")
    return tenant


def to_hit(h: Hit) -> SearchHit:
    p = h.payload
    return SearchHit(doc_id=str(p.get("doc_id", "")), chunk_index=int(p.get("chunk_index", 0)),
                     text=str(p.get("text", "")), score=float(h.score), title=str(p.get("title", "")),
                     metadata=dict(p.get("metadata") or {}), lang=str(p.get("lang", "")),
                     version=int(p.get("version", 0)), tenant=str(p.get("tenant", "")))


class Searcher:
    def __init__(self, config: VienConfig, embedder: QueryEmbedder, store: VectorStore) -> None:
        self.config = config
        self.embedder = embedder
        self.store = store
        self._known_tenants: dict[tuple[str, str], float] = {}

    async def _tenant_known(self, collection: str, tenant: str) -> bool:
        key = (collection, tenant)
        if time.monotonic() - self._known_tenants.get(key, -1e9) < KNOWN_TENANT_TTL_S:
            return True
        try:
            n = await asyncio.to_thread(self.store.count, collection, SearchFilter(tenant=tenant))
        except NotFound:
            return False
        if n > 0:
            self._known_tenants[key] = time.monotonic()
        return n > 0

    async def search(self, query: str, tenant: str, top_k: int = 0, lang: str = "",
                     metadata: dict[str, str] | None = None, profile: str = "", dimensions: int = 0,
                     score_threshold: float = 0.0, timeout: float = 30.0) -> SearchResult:
        t_start = time.perf_counter()
        if not query or not query.strip():
            raise InvalidArgument("query", "must not be empty")
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidArgument("query", f"{len(query)} characters exceeds the limit of {MAX_QUERY_CHARS}")
        check_tenant(tenant)
        top_k = top_k or DEFAULT_TOP_K
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidArgument("top_k", f"{top_k} is out of range; allowed 1..{MAX_TOP_K}")
        if lang and lang not in LANGS:
            raise InvalidArgument("lang", f"unknown language {lang!r}; expected one of {', '.join(LANGS)}")
        if profile and profile not in self.config.profiles:
            raise InvalidArgument("profile", f"unknown profile {profile!r} "
                                  f"(known: {', '.join(sorted(self.config.profiles))})")
        if score_threshold and not -1.0 <= score_threshold <= 1.0:
            raise InvalidArgument("score_threshold", f"{score_threshold} is out of range; allowed -1..1")
        flt = SearchFilter(tenant=tenant, lang=lang or None, metadata=dict(metadata or {}))
        flt.conditions()  # validates metadata keys/values -> InvalidArgument naming the key

        t0 = time.perf_counter()
        qv = await self.embedder.embed_query(query, profile, dimensions, timeout)
        t_embed = time.perf_counter() - t0
        prof = self.config.profiles[qv.profile]
        if qv.vector.shape[-1] != prof.dims:
            raise InvalidArgument("dimensions", f"must be {prof.dims}, the dims of collection {prof.collection!r}")
        if not await self._tenant_known(prof.collection, tenant):
            raise InvalidArgument("tenant", f"unknown tenant {tenant!r}: no documents in profile {qv.profile!r}")
        t0 = time.perf_counter()
        hits = await asyncio.to_thread(self.store.search, prof.collection, qv.vector, top_k, flt)
        t_store = time.perf_counter() - t0
        out = [to_hit(h) for h in hits if h.score >= score_threshold and h.payload.get("tenant") == tenant]
        stage = {"embed": t_embed * 1e3, "store": t_store * 1e3, "total": (time.perf_counter() - t_start) * 1e3}
        return SearchResult(out, qv.profile, qv.lang, stage)

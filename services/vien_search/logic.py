"""Search without transport: validate, embed the query through the router and/or encode its lexical
terms, search the profile's collection with the tenant filter always applied, fuse, shape the hits.

Modes: "dense" (embedding only), "sparse" (BM25 terms only: no query embedder involved; the profile
comes from the request or from routing the locally detected language), "hybrid" (both, fused as the
profile's `search.fusion` says). "" = the profile's `search.mode`."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from vien.documents.identity import check_tenant
from vien.documents.payload import ChunkPayload
from vien.lexical import LexicalEncoder
from vien.lexical.tokens import fold, words
from vien.runtime.config import LANGS, ProfileConfig, VienConfig
from vien.runtime.errors import InvalidArgument, NotFound
from vien.store.base import Hit, SearchFilter, SparseVector, VectorStore
from vien.text.langid import detect
from vien_search import fusion

MAX_TOP_K = 100
DEFAULT_TOP_K = 10
MAX_QUERY_CHARS = 4096
KNOWN_TENANT_TTL_S = 30.0
# Below this share of dense candidates in the query's language a hybrid search counts as cross-lingual.
CROSS_LINGUAL_SHARE = 0.1
MODES = ("dense", "hybrid", "sparse")


@dataclass(frozen=True)
class QueryVector:
    vector: np.ndarray
    profile: str
    lang: str
    restored_text: str = ""          # the query with its accents restored, when the router did so
    restore_confidence: float = 0.0


class QueryEmbedder(Protocol):
    async def embed_query(self, text: str, profile: str, dimensions: int, timeout: float,
                          restore_accents: bool = True, tenant: str = "") -> QueryVector: ...


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
    mode: str = "dense"  # the mode that answered (the profile's default when the request named none)
    restored_query: str = ""         # what the dense side embedded instead of the query (accents restored)
    restore_confidence: float = 0.0


def is_unaccented(text: str) -> bool:
    """No letter carries a diacritic (nor is đ): how Vietnamese is often typed on a plain keyboard."""
    return all(c.isascii() for c in text if c.isalpha())


def word_coverage(query: str, text: str) -> float:
    """Share of the query's distinct words present in `text` (compared without diacritics when the query
    has none): how much of the query a lexical hit really matches."""
    q = set(words(query))
    if not q:
        return 0.0
    d = set(words(text))
    if is_unaccented(query):
        q, d = {fold(w) for w in q}, {fold(w) for w in d}
    return len(q & d) / len(q)


def to_hit(h: Hit) -> SearchHit:
    p = ChunkPayload.from_dict(h.payload)
    return SearchHit(doc_id=p.doc_id, chunk_index=p.chunk_index, text=p.text, score=float(h.score), title=p.title,
                     metadata=p.metadata, lang=p.lang, version=p.version, tenant=p.tenant)


class Searcher:
    def __init__(self, config: VienConfig, embedder: QueryEmbedder, store: VectorStore) -> None:
        self.config = config
        self.embedder = embedder
        self.store = store
        self._known_tenants: dict[tuple[str, str], float] = {}
        self._lexical = {name: LexicalEncoder(p.lexical) for name, p in config.profiles.items()}

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

    def _resolve_mode(self, mode: str, profile: str, query: str) -> tuple[str, str, str]:
        """(mode, profile, query lang) known before embedding; profile and lang are "" when the router
        decides them. Only a sparse search routes here (the router's language detector, in process)."""
        if mode and mode not in MODES:
            raise InvalidArgument("mode", f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        if mode in ("dense", "hybrid"):
            return mode, profile, ""
        if not mode and not any(p.search.mode == "sparse" for p in self.config.profiles.values()):
            return "", profile, ""  # the default of whichever profile the router picks
        lang = detect(query)
        name = profile or self.config.route(lang)
        if (mode or self.config.profiles[name].search.mode) == "sparse":
            return "sparse", name, lang
        return mode, profile, ""

    @staticmethod
    def _check_lexical(mode: str, name: str, prof: ProfileConfig) -> None:
        if mode != "dense" and not prof.lexical.enabled:
            raise InvalidArgument("mode", f"{mode!r} needs lexical vectors, but profile {name!r} has lexical.enabled: "
                                  "false; use mode 'dense'")

    async def _hybrid(self, prof: ProfileConfig, vector: np.ndarray, sv: SparseVector, top_k: int,
                      flt: SearchFilter, query: str = "", query_lang: str = "", restored: bool = False) -> list[Hit]:
        cfg, coll = prof.search, prof.collection
        if not sv.indices:  # nothing lexical to match (e.g. only punctuation): dense alone
            return await asyncio.to_thread(self.store.search, coll, vector, top_k, flt)
        pk = max(cfg.prefetch_k, top_k)
        if cfg.fusion == "engine_rrf":
            return await asyncio.to_thread(self.store.search_hybrid, coll, vector, sv, top_k, flt, pk)
        # Candidates carry only what the fusion reads (full chunk payloads of 2 × prefetch_k candidates
        # through the store service cost more than the searches; bench/RESULTS.md): `lang` of the dense ones
        # (cross-language factor), and the first top_k of each list their full payload (where the final
        # hits nearly always are; the best lexical one's text is read for the word coverage). A final hit
        # from further down either list gets its payload from one `retrieve` after the fusion.
        cross = cfg.cross_language_sparse_factor != 1.0 and bool(query_lang)
        head = self._full_head(top_k)
        dense, sparse = await asyncio.gather(
            asyncio.to_thread(self.store.search, coll, vector, pk, flt, ["lang"] if cross else [], head),
            asyncio.to_thread(self.store.search_sparse, coll, sv, pk, flt, [], head))
        dense_weight, sparse_weight = cfg.dense_weight, cfg.sparse_weight
        if restored:  # the dense vector is of the query with its accents restored
            dense_weight *= cfg.restored_dense_factor
        elif query_lang == "vi" and cfg.unaccented_dense_factor != 1.0 and is_unaccented(query):
            dense_weight *= cfg.unaccented_dense_factor
        if cross and dense and sum(
                h.payload.get("lang") == query_lang for h in dense) < CROSS_LINGUAL_SHARE * len(dense):
            # (Almost) nothing in the query's language near it: a cross-lingual search, where shared names
            # and numbers are the only lexical matches and they pull up the wrong sentences. A share, not
            # "none": name-heavy sentences are sometimes detected as the other language.
            sparse_weight *= cfg.cross_language_sparse_factor
        if cfg.sparse_coverage and sparse:
            # square root: a partial match still counts (measured: +0.003 nDCG@10 on vi-vi over the plain share)
            sparse_weight *= word_coverage(query, str(sparse[0].payload.get("text", ""))) ** 0.5
        lists = [(dense, dense_weight), (sparse, sparse_weight)]
        fused = fusion.rrf(lists, cfg.rrf_k) if cfg.fusion == "rrf" else fusion.weighted_sum(lists)
        return await self._full_payloads(coll, fused[:top_k], flt, dense[:head] + sparse[:head])

    @staticmethod
    def _full_head(top_k: int) -> int:
        """Candidates of each list that come with their full payload (≥ 1: the word coverage reads the
        best lexical hit's text)."""
        return top_k

    async def _full_payloads(self, coll: str, hits: list[Hit], flt: SearchFilter, known: list[Hit]) -> list[Hit]:
        """`hits` with their full payloads: those of `known` (fetched whole already), any other in one
        `retrieve`, tenant filter included. A hit whose point was deleted since the candidate query is
        dropped (as a search a moment later would not have found it)."""
        full = {h.id: h.payload for h in known}
        missing = [h.id for h in hits if h.id not in full]
        if missing:
            full.update(await asyncio.to_thread(self.store.retrieve, coll, missing, flt))
        return [Hit(h.id, h.score, full[h.id]) for h in hits if h.id in full]

    async def search(self, query: str, tenant: str, top_k: int = 0, lang: str = "",
                     metadata: dict[str, str] | None = None, profile: str = "", dimensions: int = 0,
                     score_threshold: float = 0.0, timeout: float = 30.0, mode: str = "",
                     restore_accents: bool = True) -> SearchResult:
        t_start = time.perf_counter()
        if not query or not query.strip():
            raise InvalidArgument("query", "must not be empty")
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidArgument("query", f"{len(query)} characters exceeds the limit of {MAX_QUERY_CHARS}")
        check_tenant(tenant)  # the one tenant rule; INVALID_ARGUMENT naming the field
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
        mode, pname, query_lang = self._resolve_mode(mode, profile, query)
        if pname:
            self._check_lexical(mode, pname, self.config.profiles[pname])

        stage: dict[str, float] = {}
        vector: np.ndarray | None = None
        restored, confidence = "", 0.0
        if mode != "sparse":
            t0 = time.perf_counter()
            # The tenant's own documents guide the accent restoration of an unaccented Vietnamese query.
            qv = await self.embedder.embed_query(query, profile, dimensions, timeout, restore_accents, tenant)
            stage["embed"] = (time.perf_counter() - t0) * 1e3
            pname, query_lang, vector = qv.profile, qv.lang, qv.vector
            restored, confidence = qv.restored_text, qv.restore_confidence
        prof = self.config.profiles[pname]
        mode = mode or prof.search.mode  # routed by the router: its profile's default
        self._check_lexical(mode, pname, prof)
        if vector is not None and vector.shape[-1] != prof.dims:
            raise InvalidArgument("dimensions", f"must be {prof.dims}, the dims of collection {prof.collection!r}")
        if not await self._tenant_known(prof.collection, tenant):
            # a valid tenant that has indexed nothing (yet) gets what it owns: no hits, not an error
            stage["total"] = (time.perf_counter() - t_start) * 1e3
            return SearchResult([], pname, query_lang, stage, mode)
        sv = SparseVector([], [])
        if mode != "dense":
            t0 = time.perf_counter()
            sv = self._lexical[pname].query(query)  # folded terms of the query as typed
            stage["lexical"] = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        if mode == "sparse":
            hits = (await asyncio.to_thread(self.store.search_sparse, prof.collection, sv, top_k, flt)
                    if sv.indices else [])
        else:
            assert vector is not None
            if mode == "hybrid":
                hits = await self._hybrid(prof, vector, sv, top_k, flt, query, query_lang, bool(restored))
            else:
                hits = await asyncio.to_thread(self.store.search, prof.collection, vector, top_k, flt)
        stage["store"] = (time.perf_counter() - t0) * 1e3
        out = [to_hit(h) for h in hits if h.score >= score_threshold and h.payload.get("tenant") == tenant]
        stage["total"] = (time.perf_counter() - t_start) * 1e3
        return SearchResult(out, pname, query_lang, stage, mode, restored, confidence)

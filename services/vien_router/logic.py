"""Routing without transport: detect languages, pick profiles by policy, fan out, reassemble."""

from __future__ import annotations

import asyncio
import re
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from vien.embedding.cache import QueryCache, cache_key
from vien.embedding.requests import check_texts, resolve_dims, resolve_profile
from vien.embedding.vectors import pack, truncate
from vien.lexical import LexicalEncoder
from vien.runtime.config import DOCUMENT, LANGS, QUERY, VienConfig
from vien.runtime.errors import InvalidArgument, UpstreamError
from vien.store.base import SparseVector
from vien.text.accent_stats import ALL, AccentRestorer
from vien.text.accents import restore
from vien.text.langid import detect_with_score, is_english_word

_INDEXED_FIELD = re.compile(r"^texts\[(\d+)\]")
# How long the router trusts the model identity it learned from the query-embedder's last answer before
# forwarding a request again to refresh it (so a model upgrade never keeps serving old cached vectors).
IDENTITY_TTL_S = 30.0


@dataclass(frozen=True)
class EncodedText:
    vector: bytes
    dims: int
    token_count: int
    truncated: bool
    cache_hit: bool


@dataclass(frozen=True)
class Encoded:
    results: list[EncodedText]
    model_id: str


class EmbedderClient(Protocol):
    async def encode(self, texts: list[str], profile: str, dimensions: int, strict: bool,
                     bypass_cache: bool, timeout: float) -> Encoded: ...


@dataclass(frozen=True)
class RoutedEmbedding:
    text_index: int
    vector: bytes
    dims: int
    profile: str
    model_id: str
    lang: str
    lang_score: float
    token_count: int
    truncated: bool
    cache_hit: bool
    restored_text: str = ""          # what was embedded instead of the text (accents restored), else ""
    restore_confidence: float = 0.0
    sparse: SparseVector | None = None  # only when asked for (embed(sparse=True))


@dataclass(frozen=True)
class RouteResult:
    embeddings: list[RoutedEmbedding]
    stage_ms: dict[str, float]


def _remap_field(message: str, indices: list[int]) -> str:
    """An embedder names texts[i] of the sub-list it got; name the caller's index instead."""
    m = _INDEXED_FIELD.match(message)
    if not m or int(m.group(1)) >= len(indices):
        return message
    return f"texts[{indices[int(m.group(1))]}]" + message[m.end():]


class Router:
    def __init__(self, config: VienConfig, query: EmbedderClient, document: EmbedderClient,
                 detect: Callable[[str], tuple[str, float]] = detect_with_score,
                 cache: QueryCache | None = None, restorer: AccentRestorer | None = None) -> None:
        self.config = config
        self.restorer = restorer  # None: no accent restoration
        self.clients = {QUERY: query, DOCUMENT: document}
        self.detect = detect
        # Read-only view of the query-embedder's cache: a query whose vector is cached is answered here,
        # saving the second gRPC hop. Writes stay with the query-embedder.
        self.cache = cache
        self._identity: dict[str, tuple[str, str, float]] = {}  # profile -> (model_id, revision, learned at)
        # The lexical encoders ingest and search use, for clients that ask for the sparse vector too.
        self._lexical = {n: LexicalEncoder(p.lexical) for n, p in config.profiles.items() if p.lexical.enabled}

    def _learn_identity(self, profile: str, model_id: str) -> None:
        name, _, revision = model_id.rpartition("@")
        if name:
            self._identity[profile] = (name, revision, time.monotonic())

    def _identity_fresh(self, profile: str) -> bool:
        ident = self._identity.get(profile)
        return self.cache is not None and ident is not None and time.monotonic() - ident[2] <= IDENTITY_TTL_S

    async def _from_cache(self, profile: str, texts: list[str], dimensions: int, strict: bool) -> Encoded | None:
        """All texts of this group from the cache, or None (then the embedder answers the whole group)."""
        ident = self._identity.get(profile)
        if self.cache is None or ident is None:
            return None
        prof = self.config.profiles[profile]
        variant = self.config.encoders[prof.query_encoder].variant
        keys = [cache_key(ident[0], ident[1], variant, prof.prompt(QUERY, t)) for t in texts]
        hits = await self.cache.get_many(keys, prof.dims)
        if any(h is None or (strict and h.truncated) for h in hits):
            return None
        dims = prof.check_dims(dimensions)
        return Encoded([EncodedText(pack(truncate(h.vector, dims)), dims, h.token_count, h.truncated, True)
                        for h in hits if h is not None], f"{ident[0]}@{ident[1]}")

    def _restore(self, texts: list[str], langs: list[tuple[str, float]], groups: dict[str, list[int]],
                 scope: str) -> dict[int, tuple[str, float]]:
        """Text index -> (restored text, confidence) for the Vietnamese queries typed without diacritics whose
        profile restores accents; the restored text is what gets embedded (and is the cache key)."""
        assert self.restorer is not None
        out: dict[int, tuple[str, float]] = {}
        for pname, idx in groups.items():
            acc = self.config.profiles[pname].accents
            if not acc.restore:
                continue
            model = self.restorer.model(scope if acc.document_statistics else "")
            if not model.has_counts and not acc.restore_without_documents:
                continue
            for i in idx:
                if langs[i][0] != "vi":
                    continue
                r = restore(texts[i], model, keep_lone=is_english_word)
                if r.restored and r.confidence >= acc.min_confidence:
                    out[i] = (r.text, r.confidence)
        return out

    def detect_languages(self, texts: list[str]) -> list[tuple[str, float, str]]:
        out = []
        for t in texts:
            lang, score = self.detect(t)
            out.append((lang, score, self.config.route(lang)))
        return out

    async def embed(self, texts: list[str], kind: str = QUERY, profile: str = "", dimensions: int = 0,
                    strict: bool = False, lang: str = "", bypass_cache: bool = False,
                    timeout: float = 30.0, sparse: bool = False, restore_accents: bool = True,
                    accent_scope: str = ALL) -> RouteResult:
        t_start = time.perf_counter()
        if kind not in self.clients:
            raise InvalidArgument("kind", f"must be QUERY or DOCUMENT, got {kind!r}")
        check_texts(texts, self.config.limits)
        if lang and lang not in LANGS:
            raise InvalidArgument("lang", f"unknown language {lang!r}; expected one of {', '.join(LANGS)}")
        if profile:
            resolve_dims(*resolve_profile(self.config, profile), dimensions)

        t0 = time.perf_counter()
        langs = [(lang, 1.0)] * len(texts) if lang else [self.detect(t) for t in texts]
        t_lang = time.perf_counter() - t0

        groups: dict[str, list[int]] = defaultdict(list)
        for i, (lg, _) in enumerate(langs):
            groups[profile or self.config.route(lg)].append(i)
        for pname in groups:
            resolve_dims(pname, self.config.profiles[pname], dimensions)
            if sparse and pname not in self._lexical:
                raise InvalidArgument("sparse", f"profile {pname!r} has no lexical vectors (lexical.enabled is "
                                                "false in its config); ask without sparse")

        t0 = time.perf_counter()
        restored: dict[int, tuple[str, float]] = {}
        if kind == QUERY and restore_accents and self.restorer is not None:
            restored = self._restore(texts, langs, groups, accent_scope)
        t_acc = time.perf_counter() - t0

        client = self.clients[kind]
        t0 = time.perf_counter()

        async def call(pname: str, idx: list[int]) -> tuple[str, list[int], Encoded]:
            group = [restored[i][0] if i in restored else texts[i] for i in idx]
            skip_lookup = bypass_cache
            if kind == QUERY and not bypass_cache and self._identity_fresh(pname):
                cached = await self._from_cache(pname, group, dimensions, strict)
                if cached is not None:
                    return pname, idx, cached
                skip_lookup = True  # looked up here already: the embedder only computes and writes
            try:
                enc = await client.encode(group, pname, dimensions, strict, skip_lookup, timeout)
            except UpstreamError as exc:
                raise UpstreamError(exc.code, _remap_field(exc.message, idx)) from None
            if kind == QUERY:
                self._learn_identity(pname, enc.model_id)
            return pname, idx, enc

        replies = await asyncio.gather(*(call(p, idx) for p, idx in groups.items()))
        t_fwd = time.perf_counter() - t0

        t0 = time.perf_counter()
        out: list[RoutedEmbedding | None] = [None] * len(texts)
        for pname, idx, enc in replies:
            lexical = self._lexical[pname] if sparse else None
            for i, r in zip(idx, enc.results, strict=True):
                lg, score = langs[i]
                sv = None
                if lexical is not None:
                    sv = lexical.query(texts[i]) if kind == QUERY else lexical.document(texts[i])
                rt, rc = restored.get(i, ("", 0.0))
                out[i] = RoutedEmbedding(i, r.vector, r.dims, pname, enc.model_id, lg, score, r.token_count,
                                         r.truncated, r.cache_hit, rt, rc, sv)
        stage = {"langid": t_lang * 1e3, "forward": t_fwd * 1e3}
        if sparse:
            stage["lexical"] = (time.perf_counter() - t0) * 1e3
        if restored or t_acc >= 1e-4:
            stage["accents"] = t_acc * 1e3
        stage["total"] = (time.perf_counter() - t_start) * 1e3
        return RouteResult([e for e in out if e is not None], stage)

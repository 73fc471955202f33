"""Realistic bench data: points derived from real e5 embeddings of real text, with lexical vectors.

Base set (computed once, cached in ``~/.cache/vien/bench/base-<profile>-<n>.npz``): passages of the eval
corpora (``VIEN_EVAL_DIR``, default /work/shared/eval: viquad_vi, scifact_en, xquadr_sent_mixed; read, never
copied) go through the real ingest logic (`IngestProcessor`: routing, chunking, the document prompt, lexical
vectors) with the eval's caching document encoder: the chunks `vien eval` already embedded come from its
cache (~/.cache/vien/eval) and the others are left out; only if fewer than 1,000 are cached are up to 3,000
passages embedded once in process (ONNX, minutes on 2 cores). What the processor would write to the store
is captured: chunk vector, lexical vector, payload.

Synthetic points (`points`): each is a mixture of one base chunk and one of its 8 nearest base
neighbours (weight 0.55-1.0 on the first) plus Gaussian noise scaled to the base set's spread around its
mean, renormalised: it stays inside the clusters the real embeddings form, and its nearest neighbours are
about as close as real near-duplicates are. It keeps the base chunk's payload texts and its lexical vector
with ~20 % of the terms dropped and the weights jittered (so copies of one chunk do not tie exactly).
Tenants are unequal (`tenant_shares`: the searched tenant, then a Zipf tail).

Queries (`queries`): a mixture of two base neighbours with more noise (so no query equals a point), and the
lexical query vector of the first one's leading words; labelled "derived", not real query embeddings.
`random_points` is the labelled worst case: independent random unit vectors.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vien.runtime import env
from vien.store.base import Point, SparseVector

EVAL_DIR: Path = env.get("VIEN_EVAL_DIR")
DATASETS = ("viquad_vi", "scifact_en", "xquadr_sent_mixed")
CACHE_DIR = Path.home() / ".cache" / "vien" / "bench"
SEARCHED = "bench-search"


@dataclass
class Base:
    vectors: np.ndarray            # (B, dims) unit float32
    sparse: list[SparseVector | None]
    payloads: list[dict[str, Any]]  # title, text, lang of the chunk
    neighbours: np.ndarray         # (B, 8) indices of each chunk's nearest other chunks
    spread: float                  # mean distance of a chunk from the base mean
    source: str


class _Capture:
    """A VectorStore stand-in that only records what the ingest processor writes (no search needed)."""

    def __init__(self) -> None:
        self.points: list[Point] = []

    def ensure_collection(self, name: str, dims: int, sparse: bool = True) -> None:
        return None

    def doc_chunks(self, collection: str, tenant: str, doc_id: str) -> list[Any]:
        return []

    def upsert(self, collection: str, points: list[Point]) -> None:
        self.points.extend(p for p in points if np.any(p.vector))  # zeros: not cached, left out


async def _embed_corpora(max_docs: int, profile: str, cached_only: bool) -> tuple[list[Point], int, int]:
    from vien.runtime.config import Settings
    from vien.text.langid import detect
    from vien_doc_embedder.logic import DocEmbedder
    from vien_ingest.grpc_app import token_counters
    from vien_ingest.processor import IngestProcessor, Record
    from vien_tools.eval.datasets import load_dataset
    from vien_tools.eval.embedding_cache import CachingDocEncoder, EmbeddingCache
    from vien_tools.eval.eval_config import derive_configs
    from vien_tools.eval.runner import _event

    settings = Settings.from_env()
    cfgs = derive_configs(settings.config, profile)
    cache = EmbeddingCache(Path.home() / ".cache" / "vien" / "eval" / "doc_embeddings.sqlite")
    docs = DocEmbedder(settings, cfgs.docs)
    await docs.start()
    capture = _Capture()
    try:
        encoder = CachingDocEncoder(docs, cfgs.docs, cache, cfgs.dims)
        if cached_only:  # what `vien eval` already embedded; the rest is left out (zeros, dropped)
            real = encoder.embedder

            class _NoEmbed:
                backends = real.backends

                async def encode(self, texts: list[str], profile: str) -> Any:
                    raise LookupError

            async def cached(texts: list[str], profile: str) -> list[np.ndarray]:
                keys = [encoder.key(profile, t) for t in texts]
                found = cache.get_many(keys, cfgs.docs.profiles[profile].dims)
                encoder.hits += len(found)
                return [np.asarray(found[k], np.float32) if k in found else np.zeros(cfgs.dims[profile], np.float32)
                        for k in keys]

            encoder.embedder = _NoEmbed()  # type: ignore[assignment]
            encoder.encode = cached  # type: ignore[method-assign]
        counters = token_counters(cfgs.index, settings)
        proc = IngestProcessor(cfgs.index, capture, encoder, counters, detect)  # type: ignore[arg-type]
        per = max(1, max_docs // len(DATASETS))
        offset = 0
        for name in DATASETS:
            ds = load_dataset(EVAL_DIR / name, "dev")
            events = [_event(d, profile) for d in list(ds.corpus.values())[:per]]
            for b in range(0, len(events), 128):
                recs = [Record("bench", 0, offset + i, e.SerializeToString()) for i, e in enumerate(events[b:b + 128])]
                offset += len(recs)
                await proc.process(recs)
        return capture.points, encoder.hits, encoder.encoded
    finally:
        await docs.close()
        cache.close()


def load_base(max_docs: int = 6000, profile: str = "") -> Base:
    """The base set, from its cache file or computed now (minutes the first time if nothing is cached)."""
    from vien.runtime.config import Settings

    profile = profile or Settings.from_env().config.routing.default
    key = hashlib.sha256(f"{profile}|{max_docs}|{','.join(DATASETS)}|v1".encode()).hexdigest()[:12]
    path = CACHE_DIR / f"base-{profile}-{max_docs}-{key}.npz"
    if not path.is_file():
        points, hits, encoded = asyncio.run(_embed_corpora(max_docs, profile, cached_only=True))
        if len(points) < 1000:  # the eval cache is (nearly) empty: embed once, in process (minutes)
            points, hits, encoded = asyncio.run(_embed_corpora(min(max_docs, 3000), profile, cached_only=False))
        X = np.stack([np.asarray(p.vector, np.float32) for p in points])
        idx = np.concatenate([np.asarray(p.sparse.indices if p.sparse else [], np.uint32) for p in points])
        val = np.concatenate([np.asarray(p.sparse.values if p.sparse else [], np.float32) for p in points])
        lens = np.asarray([len(p.sparse.indices) if p.sparse else 0 for p in points], np.int64)
        meta = [{"title": p.payload.get("title", ""), "text": p.payload.get("text", ""),
                 "lang": p.payload.get("lang", "")} for p in points]
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, X=X, idx=idx, val=val, lens=lens, meta=np.asarray(json.dumps(meta)),
                 info=np.asarray(json.dumps({"cache_hits": hits, "encoded": encoded, "datasets": DATASETS})))
        os.replace(tmp, path)
    z = np.load(path)
    X = z["X"].astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    offs = np.concatenate([[0], np.cumsum(z["lens"])])
    sparse: list[SparseVector | None] = [
        SparseVector(z["idx"][a:b].tolist(), z["val"][a:b].tolist()) if b > a else None
        for a, b in itertools.pairwise(offs)]
    nbrs = np.empty((len(X), 8), np.int64)
    for a in range(0, len(X), 1024):
        sims = X[a:a + 1024] @ X.T
        sims[np.arange(len(sims)), np.arange(a, a + len(sims))] = -2.0
        nbrs[a:a + 1024] = np.argpartition(-sims, 8, axis=1)[:, :8]
    mu = X.mean(axis=0)
    spread = float(np.linalg.norm(X - mu, axis=1).mean())
    info = json.loads(str(z["info"]))
    return Base(X, sparse, json.loads(str(z["meta"])), nbrs, spread,
                f"{len(X)} real e5 chunk vectors of {', '.join(info['datasets'])} ({path.name})")


def tenant_shares(searched: float, others: int = 9) -> list[tuple[str, float]]:
    """The searched tenant's share, then `others` tenants sharing the rest by Zipf (1/rank)."""
    w = np.asarray([1.0 / r for r in range(1, others + 1)])
    rest = (1.0 - searched) * w / w.sum()
    return [(SEARCHED, searched)] + [(f"bench-t{r + 1}", float(s)) for r, s in enumerate(rest)]


def points(base: Base | None, n: int, dims: int, searched_share: float, batch: int = 1000,
           seed: int = 3, noise: float = 0.6) -> Iterator[list[Point]]:
    """Batches of synthetic points (see the module doc); `base=None`: random unit vectors (worst case)."""
    from vien.documents.events import point_id

    rng = np.random.default_rng(seed)
    shares = tenant_shares(searched_share)
    names = [t for t, _ in shares]
    cum = np.cumsum([s for _, s in shares])
    for b in range(0, n, batch):
        m = min(batch, n - b)
        tenants = np.searchsorted(cum, rng.random(m) * cum[-1]).clip(0, len(names) - 1)
        if base is None:
            V = rng.standard_normal((m, dims)).astype(np.float32)
            rows = rng.integers(0, 1, m)
        else:
            rows = rng.integers(0, len(base.vectors), m)
            mates = base.neighbours[rows, rng.integers(0, 8, m)]
            a = rng.uniform(0.55, 1.0, (m, 1)).astype(np.float32)
            V = a * base.vectors[rows] + (1 - a) * base.vectors[mates]
            V += rng.standard_normal(V.shape).astype(np.float32) * (noise * base.spread / np.sqrt(dims))
        V /= np.linalg.norm(V, axis=1, keepdims=True)
        out = []
        for j in range(m):
            i = b + j
            tenant = names[int(tenants[j])]
            meta = base.payloads[int(rows[j])] if base is not None else {"title": "", "text": f"chunk {i}",
                                                                         "lang": "vi"}
            doc_id = f"doc-{i}"
            out.append(Point(point_id(tenant, doc_id, 0), V[j], {
                "tenant": tenant, "doc_id": doc_id, "chunk_index": 0, "lang": meta["lang"] or "vi",
                "title": meta["title"], "text": meta["text"], "metadata": {"topic": f"t{i % 8}", "source": "bench"},
                "version": 1, "content_hash": f"{i:032x}", "n_chunks": 1,
            }, _jitter(rng, base.sparse[int(rows[j])]) if base is not None else None))
        yield out


def _jitter(rng: np.random.Generator, sv: SparseVector | None) -> SparseVector | None:
    """The base chunk's lexical vector with ~20 % of its terms dropped and weights scaled by 0.8-1.2: the
    copies of one base chunk must not all score the same (exact ties would make hybrid recall arbitrary)."""
    if sv is None or not sv.indices:
        return sv
    keep = rng.random(len(sv.indices)) >= 0.2
    keep[int(rng.integers(0, len(keep)))] = True
    scale = rng.uniform(0.8, 1.2, len(sv.indices))
    return SparseVector([i for i, k in zip(sv.indices, keep, strict=True) if k],
                        [float(v * c) for v, c, k in zip(sv.values, scale, keep, strict=True) if k])


def queries(base: Base | None, n: int, dims: int, seed: int = 17,
            noise: float = 0.6) -> list[tuple[np.ndarray, SparseVector]]:
    """Derived queries: dense vector + lexical query vector (see the module doc)."""
    from vien.lexical import LexicalEncoder

    rng = np.random.default_rng(seed)
    enc = LexicalEncoder()
    out = []
    for _ in range(n):
        if base is None:
            v = rng.standard_normal(dims).astype(np.float32)
            sv = SparseVector([int(rng.integers(0, 2**31))], [1.0])
        else:
            i = int(rng.integers(0, len(base.vectors)))
            j = int(base.neighbours[i, rng.integers(0, 8)])
            v = 0.7 * base.vectors[i] + 0.3 * base.vectors[j]
            v = v + rng.standard_normal(dims).astype(np.float32) * (noise * base.spread / np.sqrt(dims))
            words = (base.payloads[i]["text"] or "x").split()
            start = int(rng.integers(0, max(1, len(words) - 6)))
            sv = enc.query(" ".join(words[start:start + 6]))
            if not sv.indices:
                sv = SparseVector([1], [1.0])
        out.append(((v / np.linalg.norm(v)).astype(np.float32), sv))
    return out

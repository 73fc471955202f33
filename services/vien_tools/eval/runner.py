"""`vien eval`: index a dataset's corpus and run its queries through the services' own logic, in one process.

Indexing: each document becomes a `DocumentEvent` (tenant "eval") and goes through
`vien_ingest.processor.IngestProcessor` (language detection, routing, chunking, embedding, store writes)
with the doc-embedder's logic as its encoder (behind the on-disk embedding cache) and Qdrant Edge in a
temporary directory as the store. Searching: `vien_search.logic.Searcher` with the router and the
query-embedder logic in process (`query_path.py`), top_k 100 (search's maximum); chunk hits are reduced
to documents (a document keeps its best rank) and scored with `metrics.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vien.embedding.cache import QueryCache
from vien.runtime.config import Settings
from vien.store.base import VectorStore
from vien.store.edge import EdgeStore
from vien.store.indexing import IndexSettings
from vien.text.accent_stats import AccentRestorer, MemoryAccentStats
from vien.text.accents import syllable_accuracy
from vien.text.langid import detect
from vien.v1.documents_pb2 import DocumentEvent
from vien_doc_embedder.logic import DocEmbedder
from vien_ingest.grpc_app import token_counters
from vien_ingest.processor import IngestProcessor, Record
from vien_query_embedder.logic import QueryEmbedder
from vien_router.logic import Router
from vien_search.logic import MAX_TOP_K, Searcher
from vien_tools.eval.datasets import Dataset, Doc, load_dataset
from vien_tools.eval.diacritics import strip_diacritics
from vien_tools.eval.embedding_cache import CachingDocEncoder, EmbeddingCache
from vien_tools.eval.eval_config import derive_configs
from vien_tools.eval.metrics import METRICS, dedupe_doc_ids, mean_scores, score_query
from vien_tools.eval.query_path import InProcessQueryClient, NoDocumentClient, RoutedQueryEmbedder

TENANT = "eval"
MODES = ("dense", "hybrid", "sparse")
INGEST_BATCH = 256   # documents per IngestProcessor.process call (it pools their chunks into 64-text requests)


class EvalError(Exception):
    """The run cannot go on; the message says why (printed as one line by the CLI)."""


@dataclass(frozen=True)
class EvalOptions:
    dataset: Path
    split: str = ""
    profile: str = ""
    mode: str = "dense"
    dims: int = 0
    query_encoder: str = ""
    doc_prompt: str = ""              # replaces every profile's document prompt ("" = the profile's own)
    query_prompt: str = ""            # replaces every profile's query prompt
    strip_diacritics: bool = False
    restore_accents: bool = True      # the router restores unaccented Vietnamese queries (statistics: the corpus)
    limit_queries: int = 0
    cache_dir: Path | None = None     # None: no embedding cache
    label: str = ""
    concurrency: int = 8              # queries in flight (the query-embedder batches them)
    progress: bool = True


def default_cache_dir() -> Path:
    from vien.runtime import env

    data = env.get("VIEN_DATA_DIR")
    return (data / "eval") if data else Path.home() / ".cache" / "vien" / "eval"


class _NoBar:
    def update(self, n: int = 1) -> None: ...

    def set_postfix(self, **kw: Any) -> None: ...

    def close(self) -> None: ...


def _progress(total: int, desc: str, unit: str, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        raise EvalError("progress bars need tqdm: pip install 'vien[eval]' (or pass --no-progress)") from None
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                mininterval=0.5)


def _event(doc: Doc, profile: str) -> DocumentEvent:
    # A title the text already starts with (BEIR corpora repeat it) would be embedded twice.
    title = doc.title if doc.title and not doc.text.startswith(doc.title) else ""
    return DocumentEvent(op=DocumentEvent.OP_UPSERT, doc_id=doc.id, version=1, tenant=TENANT, text=doc.text,
                         title=title, profile=profile)


def _batches(items: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def variant_label(opts: EvalOptions) -> str:
    parts = [opts.mode]
    if opts.dims:
        parts.append(f"d{opts.dims}")
    if opts.query_encoder:
        parts.append(f"q={opts.query_encoder}")
    if opts.query_prompt:
        parts.append(f"queries={opts.query_prompt!r}")
    if opts.doc_prompt:
        parts.append(f"docs={opts.doc_prompt!r}")
    if opts.strip_diacritics:
        parts.append("unaccented")
    if not opts.restore_accents:
        parts.append("no-restore")
    return " ".join(parts)


def _search_kwargs(searcher: Searcher, mode: str) -> dict[str, Any]:
    """The mode is always named where search knows modes (a profile's default mode may not be dense); a
    search without modes is dense-only."""
    if "mode" in inspect.signature(searcher.search).parameters:
        return {"mode": mode}
    if mode != "dense":
        raise EvalError(f"--mode {mode}: this build's search has no lexical (sparse/hybrid) retrieval")
    return {}


class EvalRun:
    def __init__(self, opts: EvalOptions, settings: Settings) -> None:
        if opts.mode not in MODES:
            raise EvalError(f"--mode: {opts.mode!r} is not one of {', '.join(MODES)}")
        self.opts = opts
        self.settings = settings
        self.cfgs = derive_configs(settings.config, opts.profile, opts.query_encoder, opts.dims,
                                   opts.doc_prompt, opts.query_prompt)
        self.timings: dict[str, float] = {}

    async def run(self) -> dict[str, Any]:
        t_all = time.perf_counter()
        t0 = time.perf_counter()
        ds = load_dataset(self.opts.dataset, self.opts.split)
        self.timings["load"] = time.perf_counter() - t0
        if ds.unknown.rows:
            print(f"vien eval: warning: {ds.files['qrels']}: {ds.unknown.rows} judgment(s) name unknown ids "
                  f"({len(ds.unknown.query_ids)} query ids, {len(ds.unknown.doc_ids)} doc ids); left out of "
                  "scoring", file=sys.stderr)
        logging.getLogger("vien.cache").setLevel(logging.ERROR)  # no Redis in process: the warning is noise

        cache_path = self.opts.cache_dir / "doc_embeddings.sqlite" if self.opts.cache_dir else None
        cache = EmbeddingCache(cache_path)
        tmp_root = self.opts.cache_dir
        if tmp_root is not None:
            tmp_root.mkdir(parents=True, exist_ok=True)
        docs = DocEmbedder(self.settings, self.cfgs.docs)
        qemb = QueryEmbedder(self.settings, self.cfgs.queries, QueryCache(None))
        try:
            with tempfile.TemporaryDirectory(prefix="vien-eval-store-", dir=tmp_root) as tmp:
                t0 = time.perf_counter()
                await docs.start()
                ok, reason = docs.serving()
                if not ok:
                    raise EvalError(f"doc-embedder not ready: {reason}")
                await qemb.start()
                # exact search, never an index built mid-run: quality figures must not depend on HNSW recall
                store = await asyncio.to_thread(EdgeStore, tmp, index=IndexSettings(threshold=0))
                try:
                    self.timings["start"] = time.perf_counter() - t0
                    encoder = CachingDocEncoder(docs, self.cfgs.docs, cache, self.cfgs.dims)
                    # The corpus is the tenant's documents: ingest counts its syllables for accent restoration.
                    stats = MemoryAccentStats()
                    index = await self._index(ds, store, encoder, stats)
                    restorer = AccentRestorer.from_models_dir(self.settings.models_dir, stats)
                    await restorer.refresh(TENANT)
                    router = Router(self.cfgs.queries, InProcessQueryClient(qemb), NoDocumentClient(),
                                    restorer=restorer)
                    searcher = Searcher(self.cfgs.index, RoutedQueryEmbedder(router), store)
                    per_query = await self._search(ds, searcher)
                finally:
                    await asyncio.to_thread(store.close)  # before its directory is removed
        finally:
            with contextlib.suppress(Exception):
                await qemb.close()
            with contextlib.suppress(Exception):
                await docs.close()
            cache.close()
        self.timings["total"] = time.perf_counter() - t_all
        return {"summary": self._summary(ds, index, per_query, encoder), "per_query": per_query}

    async def _index(self, ds: Dataset, store: VectorStore, encoder: CachingDocEncoder,
                     stats: MemoryAccentStats) -> dict[str, Any]:
        t0 = time.perf_counter()
        counters = await asyncio.to_thread(token_counters, self.cfgs.index, self.settings)
        proc = IngestProcessor(self.cfgs.index, store, encoder, counters, detect, accent_stats=stats)
        events = [_event(d, self.opts.profile) for d in ds.corpus.values()]
        chunks, dead = 0, []
        bar = _progress(len(events), f"index {ds.name}", "doc", self.opts.progress)
        offset = 0
        try:
            for batch in _batches(events, INGEST_BATCH):
                records = [Record("eval", 0, offset + i, e.SerializeToString()) for i, e in enumerate(batch)]
                offset += len(batch)
                out = await proc.process(records)
                chunks += out.chunks
                dead += [(DocumentEvent.FromString(r.value or b"").doc_id, reason) for r, reason, _ in out.dead]
                bar.update(len(batch))
                bar.set_postfix(chunks=chunks, cached=encoder.hits, encoded=encoder.encoded, refresh=False)
        finally:
            bar.close()
        if dead:
            print(f"vien eval: warning: {len(dead)} document(s) were not indexed, e.g. {dead[0][0]!r}: {dead[0][1]}",
                  file=sys.stderr)
        self.timings["index"] = time.perf_counter() - t0
        return {"docs": len(events), "chunks": chunks, "dead": len(dead),
                "dead_examples": [{"doc_id": d, "reason": r} for d, r in dead[:5]]}

    async def _search(self, ds: Dataset, searcher: Searcher) -> list[dict[str, Any]]:
        t0 = time.perf_counter()
        queries = ds.judged_queries()
        if self.opts.limit_queries:
            queries = queries[:self.opts.limit_queries]
        kwargs = _search_kwargs(searcher, self.opts.mode)
        sem = asyncio.Semaphore(self.opts.concurrency)
        bar = _progress(len(queries), f"search {ds.name}", "query", self.opts.progress)

        async def one(q: Any) -> dict[str, Any]:
            text = strip_diacritics(q.text) if self.opts.strip_diacritics else q.text
            async with sem:
                res = await searcher.search(text, TENANT, top_k=MAX_TOP_K, profile=self.opts.profile,
                                            dimensions=self.opts.dims, restore_accents=self.opts.restore_accents,
                                            **kwargs)
            ranked = dedupe_doc_ids([h.doc_id for h in res.hits])
            rels = ds.qrels[q.id]
            bar.update(1)
            return {"id": q.id, "lang": q.lang, "detected_lang": res.query_lang, "profile": res.profile,
                    **score_query(ranked, rels), "n_relevant": sum(1 for r in rels.values() if r > 0),
                    "top10": ranked[:10], **self._restoration(q.text, text, res)}

        try:
            out = list(await asyncio.gather(*(one(q) for q in queries)))
        finally:
            bar.close()
        self.timings["search"] = time.perf_counter() - t0
        return out

    def _restoration(self, original: str, typed: str, res: Any) -> dict[str, Any]:
        """Per query: the restored text, its confidence, and (queries stripped here, the original being the
        truth) how many of its syllables came back right."""
        if not self.opts.strip_diacritics:
            return {}
        out: dict[str, Any] = {"restored": res.restored_query, "restore_confidence": res.restore_confidence}
        if typed != original:
            out["syllables"], out["syllables_right"] = syllable_accuracy(original, res.restored_query or typed)
        return out

    @staticmethod
    def _restoration_summary(per_query: list[dict[str, Any]]) -> dict[str, Any]:
        judged = [q for q in per_query if "syllables" in q]
        if not judged:
            return {}
        n = sum(q["syllables"] for q in judged)
        restored = [q for q in judged if q["restored"]]
        return {"accent_restoration": {
            "queries_changed_by_stripping": len(judged), "queries_restored": len(restored),
            "syllables": n, "syllable_accuracy": round(sum(q["syllables_right"] for q in judged) / n, 6) if n else None,
            "mean_confidence": round(sum(q["restore_confidence"] for q in restored) / len(restored), 4)
            if restored else None}}

    def _summary(self, ds: Dataset, index: dict[str, Any], per_query: list[dict[str, Any]],
                 encoder: CachingDocEncoder) -> dict[str, Any]:
        o, cfgs = self.opts, self.cfgs
        profiles = sorted({q["profile"] for q in per_query}) or cfgs.profiles
        by_lang: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for q in per_query:
            by_lang[q["lang"] or "?"].append(q)
        confusion: dict[str, Counter[str]] = defaultdict(Counter)
        for q in per_query:
            if q["lang"]:
                confusion[q["lang"]][q["detected_lang"]] += 1
        n_lang = sum(sum(c.values()) for c in confusion.values())
        correct = sum(c[g] for g, c in confusion.items())
        means = mean_scores(per_query)
        dims = sorted({cfgs.dims[p] for p in profiles})
        return {
            "dataset": ds.name, "split": ds.split, "mode": o.mode, "profile": ",".join(profiles),
            "label": o.label or variant_label(o),
            "dims": dims[0] if len(dims) == 1 else dims,
            "query_encoder": ",".join(sorted({cfgs.query_encoders[p] for p in profiles})),
            "document_encoder": ",".join(sorted({cfgs.docs.profiles[p].document_encoder for p in profiles})),
            "query_prompt": ",".join(sorted({cfgs.queries.profiles[p].query_prompt for p in profiles})),
            "document_prompt": ",".join(sorted({cfgs.docs.profiles[p].document_prompt for p in profiles})),
            "strip_diacritics": o.strip_diacritics,
            **{m: round(means[m], 6) for m in METRICS},
            "n_queries": len(per_query),
            "n_queries_in_file": len(ds.queries),
            "queries_without_relevant": len(ds.queries) - len(ds.judged_queries()),
            "n_docs": index["docs"], "n_chunks": index["chunks"], "docs_not_indexed": index["dead"],
            "unknown_qrels": ds.unknown.as_dict(),
            "by_lang": {lg: {"n": len(qs), **{m: round(v, 6) for m, v in mean_scores(qs).items()}}
                        for lg, qs in sorted(by_lang.items())},
            "langid_accuracy": round(correct / n_lang, 6) if n_lang else None,
            "langid_confusion": {g: dict(sorted(c.items())) for g, c in sorted(confusion.items())},
            "embedding_cache": {"hits": encoder.hits, "encoded": encoder.encoded,
                                "path": str(encoder.cache.path) if encoder.cache.path else None},
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "search_qps": round(len(per_query) / self.timings["search"], 1) if self.timings.get("search") else None,
            **self._restoration_summary(per_query),
        }

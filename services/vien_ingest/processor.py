"""One batch of document events -> store changes, without Kafka (the worker is a thin loop around it).

At-least-once with idempotent writes: point ids are uuid5(tenant/doc_id#chunk), so re-processing a
batch after a crash rewrites the same points. Within a batch the newest event of each document wins
(versions first, then offsets); against the store, an event older than the stored version is skipped
and unchanged content (same hash) is not re-embedded. Permanent problems of one event become
`dead` entries for the DLQ; transient ones (embedder or store down) raise, and the caller retries the
whole batch without committing.

Tracing: every record gets a CONSUMER span "process <topic>" whose parent is the producer's context from
its Kafka headers, so a document's trace runs from `vien publish` into ingest. The batched calls (embed,
store write) serve several documents at once: each is a child of the first document's process span and
links the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
from google.protobuf import json_format
from opentelemetry import trace

from vien.documents.events import PoisonEvent, decode_event, event_content_hash, point_id
from vien.documents.payload import TOMBSTONE_COLLECTION, TOMBSTONE_DIMS, ChunkPayload, Tombstone
from vien.kafka.tracing import extract_context
from vien.lexical import LexicalEncoder
from vien.runtime.config import DOCUMENT, VienConfig
from vien.runtime.errors import InvalidArgument, NotFound, UpstreamError
from vien.runtime.telemetry import ATTR_BATCH_SIZE, ATTR_LANG, ATTR_PROFILE, tracing_enabled
from vien.store.base import Point, SparseVector, VectorStore
from vien.text.accent_stats import AccentStats
from vien.text.accents import SyllableCounts
from vien.v1.documents_pb2 import DocumentEvent
from vien_ingest.chunking import chunk_text

log = logging.getLogger("vien.ingest")
tracer = trace.get_tracer("vien.ingest")

UPSERT, DELETE = DocumentEvent.OP_UPSERT, DocumentEvent.OP_DELETE
_TOMBSTONE_VECTOR = np.ones(TOMBSTONE_DIMS, np.float32)
T = TypeVar("T")


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]] = ()


class DocEncoder(Protocol):
    async def encode(self, texts: list[str], profile: str) -> list[np.ndarray]: ...


CountTokens = Callable[[list[str]], list[int]]


@dataclass
class BatchOutcome:
    events: int = 0
    upserted_docs: int = 0
    deleted_docs: int = 0
    stale: int = 0
    unchanged: int = 0
    chunks: int = 0
    tokens: int = 0
    dead: list[tuple[Record, str, str]] = field(default_factory=list)  # record, reason, code
    stage_s: dict[str, float] = field(default_factory=dict)  # lookup, chunk, embed, write


@dataclass
class _Doc:
    record: Record
    event: DocumentEvent
    profile: str = ""
    lang: str = ""
    content_hash: str = ""
    chunks: list[str] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    stored_chunks: int = 0
    stored_collection: str = ""
    span: trace.Span = trace.INVALID_SPAN  # its "process" span (consumer side of the publish span)
    verdict: str = ""  # "todo" | "stale" | "unchanged" | "dead", decided against the store in `prepare`
    dead: tuple[str, str] = ("", "")  # reason, code when verdict == "dead"
    sparse: list[SparseVector | None] = field(default_factory=list)  # lexical vector per chunk


@dataclass
class PreparedBatch:
    """A batch decoded and decided against the store, chunked, lexical vectors computed: what `complete`
    embeds and writes. The worker prepares batch N+1 while batch N embeds; `refresh` re-decides the
    documents batch N also touched, once N is written."""

    records: Sequence[Record]
    spans: list[trace.Span]
    latest: dict[tuple[str, str], _Doc]
    out: BatchOutcome


class IngestProcessor:
    def __init__(self, config: VienConfig, store: VectorStore, encoder: DocEncoder,
                 counters: dict[str, CountTokens], detect: Callable[[str], str],
                 overlap_tokens: int = 32, concurrency: int = 3, request_texts: int = 64,
                 accent_stats: AccentStats | None = None) -> None:
        self.config = config
        self.store = store
        self.encoder = encoder
        self.counters = counters          # profile -> token counter of its document side
        self.detect = detect
        self.overlap_tokens = overlap_tokens
        self.request_texts = request_texts
        self._sem = asyncio.Semaphore(concurrency)
        self._lookups = asyncio.Semaphore(32)
        self._ensured: set[str] = set()
        self._tracing = tracing_enabled()
        self.accent_stats = accent_stats  # syllable counts of what is written, per tenant (accent restoration)
        self._lexical = {name: LexicalEncoder(p.lexical) for name, p in config.profiles.items() if p.lexical.enabled}

    # ------------------------------------------------------------------ tracing
    def _process_span(self, rec: Record) -> trace.Span:
        if not self._tracing:
            return trace.INVALID_SPAN
        return tracer.start_span(
            f"process {rec.topic}", context=extract_context(rec.headers), kind=trace.SpanKind.CONSUMER,
            attributes={"messaging.system": "kafka", "messaging.operation.type": "process",
                        "messaging.destination.name": rec.topic,
                        "messaging.destination.partition.id": str(rec.partition),
                        "messaging.kafka.offset": rec.offset})

    @staticmethod
    def _batch_parent(docs: Sequence[_Doc]) -> tuple[Any, list[trace.Link]]:
        """Context of the first document's process span, and links to the others' (for a batched call)."""
        uniq = list({id(d): d for d in docs}.values())
        if not uniq:
            return None, []
        links = [trace.Link(d.span.get_span_context()) for d in uniq[1:] if d.span.get_span_context().is_valid]
        return trace.set_span_in_context(uniq[0].span), links

    @staticmethod
    def _end_spans(spans: list[trace.Span], records: Sequence[Record], latest: dict[Any, _Doc],
                   out: BatchOutcome) -> None:
        dead = {id(rec): (reason, code) for rec, reason, code in out.dead}
        kept = {id(d.record): d for d in latest.values()}
        for rec, span in zip(records, spans, strict=True):
            if not span.is_recording():
                continue
            if id(rec) in dead:
                reason, code = dead[id(rec)]
                span.set_attribute("vien.dlq_code", code)
                span.set_status(trace.StatusCode.ERROR, reason)
            doc = kept.get(id(rec))
            if doc is not None and doc.profile:
                span.set_attributes({ATTR_PROFILE: doc.profile, ATTR_LANG: doc.lang, "vien.chunks": len(doc.chunks)})
            span.end()

    # ------------------------------------------------------------------ helpers
    async def _ensure_collection(self, profile: str) -> str:
        prof = self.config.profiles[profile]
        if prof.collection not in self._ensured:
            await asyncio.to_thread(self.store.ensure_collection, prof.collection, prof.dims, True)
            self._ensured.add(prof.collection)
        return prof.collection

    async def _ensure_tombstones(self) -> None:
        if TOMBSTONE_COLLECTION not in self._ensured:
            await asyncio.to_thread(self.store.ensure_collection, TOMBSTONE_COLLECTION, TOMBSTONE_DIMS, False)
            self._ensured.add(TOMBSTONE_COLLECTION)

    def _route(self, ev: DocumentEvent) -> tuple[str, str]:
        lang = ev.lang or self.detect(f"{ev.title}\n{ev.text[:2000]}")
        profile = ev.profile or self.config.route(lang)
        if profile not in self.config.profiles:
            raise PoisonEvent(f"profile: unknown profile {profile!r}", code="unknown_profile")
        return profile, lang

    def _chunk(self, doc: _Doc) -> list[str]:
        prof = self.config.profiles[doc.profile]
        count = self.counters[doc.profile]

        def count_prompted(texts: list[str]) -> list[int]:
            return count([prof.prompt(DOCUMENT, t) for t in texts])

        body = f"{doc.event.title}\n{doc.event.text}" if doc.event.title else doc.event.text
        return [c.text for c in chunk_text(body, count_prompted, prof.max_tokens, self.overlap_tokens)]

    async def _stored_state(self, doc: _Doc) -> tuple[int, str, int, str]:
        """(version, content hash, chunk count, collection) of what the store holds for this doc; for a
        deleted doc, its tombstone's version (so an older upsert replayed after the delete stays skipped)."""
        ev = doc.event
        for prof in self.config.profiles.values():
            try:
                hits = await asyncio.to_thread(self.store.doc_chunks, prof.collection, ev.tenant, ev.doc_id)
            except NotFound:
                continue
            if hits:
                p = ChunkPayload.from_dict(hits[0].payload)
                return p.version, p.content_hash, len(hits), prof.collection
        try:
            tomb = await asyncio.to_thread(self.store.doc_chunks, TOMBSTONE_COLLECTION, ev.tenant, ev.doc_id)
        except NotFound:
            tomb = []
        return (Tombstone.from_dict(tomb[0].payload).version if tomb else -1), "", 0, ""

    async def _bounded(self, coro: Awaitable[T]) -> T:
        async with self._lookups:
            return await coro

    @staticmethod
    async def _in_span(span: trace.Span, coro: Awaitable[T]) -> T:
        """Run `coro` with `span` current, so its calls (gRPC to the store) become the span's children."""
        with trace.use_span(span, end_on_exit=False):
            return await coro

    @staticmethod
    def _rejected(r: BaseException) -> bool:
        # Only a rejection of the text itself is permanent. FAILED_PRECONDITION (e.g. a failed space
        # guard) is the service's state, not the event's: retried like an outage, never dead-lettered.
        return isinstance(r, InvalidArgument) or (isinstance(r, UpstreamError) and r.code.name == "INVALID_ARGUMENT")

    async def _embed_docs(self, docs: list[_Doc], out: BatchOutcome) -> list[_Doc]:
        """Embed every chunk of `docs`; returns the docs that were rejected (dead-lettered).

        Chunks of all documents are pooled per profile, sorted by length and sent `request_texts` at a
        time, so the doc-embedder gets full, evenly padded batches instead of one small request per
        document (measured: that left a third of its throughput on the table).
        """
        by_profile: dict[str, list[tuple[_Doc, int]]] = {}
        for d in docs:
            d.vectors = [np.empty(0, np.float32)] * len(d.chunks)
            by_profile.setdefault(d.profile, []).extend((d, i) for i in range(len(d.chunks)))
        requests: list[tuple[str, list[tuple[_Doc, int]]]] = []
        for profile, items in by_profile.items():
            items.sort(key=lambda x: len(x[0].chunks[x[1]]))
            requests += [(profile, items[i:i + self.request_texts]) for i in range(0, len(items), self.request_texts)]

        async def send(profile: str, items: list[tuple[_Doc, int]]) -> None:
            async with self._sem:
                parent, links = self._batch_parent([d for d, _ in items])
                with tracer.start_as_current_span("ingest.embed", context=parent, links=links,
                                                  attributes={ATTR_PROFILE: profile, ATTR_BATCH_SIZE: len(items),
                                                              "vien.docs": len(links) + 1}):
                    vecs = await self.encoder.encode([d.chunks[i] for d, i in items], profile)
                    for (d, i), v in zip(items, vecs, strict=True):
                        d.vectors[i] = v

        results = await asyncio.gather(*(send(p, items) for p, items in requests), return_exceptions=True)
        failed: set[int] = set()
        for (_, items), r in zip(requests, results, strict=True):
            if isinstance(r, BaseException):
                if not self._rejected(r):
                    raise r  # transient: the caller backs off and retries the batch, nothing committed
                failed.update(id(d) for d, _ in items)
        rejected: list[_Doc] = []
        # A rejected request may mix good and bad documents: embed its documents one by one to find the bad.
        for d in [d for d in docs if id(d) in failed]:
            try:
                d.vectors = await self._in_span(d.span, self.encoder.encode(d.chunks, d.profile))
            except Exception as exc:
                if not self._rejected(exc):
                    raise
                assert isinstance(exc, InvalidArgument | UpstreamError)
                out.dead.append((d.record, f"embedding rejected: {exc.message}", "embedding_rejected"))
                rejected.append(d)
        return rejected

    def _sparse_of(self, d: _Doc) -> list[SparseVector | None]:
        """The lexical vector of every chunk (None where the profile has lexical off or the chunk has no
        words): the chunk text as embedded (title included), without the model's prompt."""
        enc = self._lexical.get(d.profile) if d.event.op == UPSERT else None
        vecs = [enc.document(text) for text in d.chunks] if enc is not None else [None] * len(d.chunks)
        return [v if v is not None and v.indices else None for v in vecs]

    # ------------------------------------------------------------------ the batch
    async def process(self, records: Sequence[Record]) -> BatchOutcome:
        """prepare + complete, one after the other (the worker overlaps them across batches)."""
        return await self.complete(await self.prepare(records))

    async def prepare(self, records: Sequence[Record]) -> PreparedBatch:
        """Decode, keep the newest event per document, decide each against the store (stale, unchanged,
        poison), chunk and compute lexical vectors: everything but the embedder and the writes."""
        out = BatchOutcome(events=len(records))
        latest: dict[tuple[str, str], _Doc] = {}
        spans = [self._process_span(rec) for rec in records]
        batch = PreparedBatch(records, spans, latest, out)
        try:
            for rec, span in zip(records, spans, strict=True):
                try:
                    ev = decode_event(rec.value, rec.headers)
                except PoisonEvent as exc:
                    out.dead.append((rec, exc.reason, exc.code))
                    continue
                if span.is_recording():
                    span.set_attributes({"vien.tenant": ev.tenant, "vien.doc_id": ev.doc_id, "vien.version": ev.version,
                                         "vien.op": "delete" if ev.op == DELETE else "upsert"})
                key = (ev.tenant, ev.doc_id)
                prev = latest.get(key)
                if prev is None or ev.version >= prev.event.version:
                    latest[key] = _Doc(rec, ev, span=span)  # a later offset of the same version wins too
                if prev is not None:
                    out.stale += 1  # one of the two is superseded within this batch
            t0 = time.perf_counter()
            await self._decide(list(latest.values()))
            out.stage_s["prepare"] = time.perf_counter() - t0
        except BaseException as exc:
            self._fail(batch, exc)
            raise
        return batch

    async def refresh(self, batch: PreparedBatch, touched: set[tuple[str, str]]) -> int:
        """Decide again the documents of `batch` that a batch written after its preparation also had
        (their stored version, hash and chunk count changed). Returns how many were re-decided."""
        docs = [d for key, d in batch.latest.items() if key in touched]
        if docs:
            try:
                await self._decide(docs)
            except BaseException as exc:
                self._fail(batch, exc)
                raise
        return len(docs)

    async def complete(self, batch: PreparedBatch) -> BatchOutcome:
        """Embed and write a prepared batch. When it returns, the store acknowledged every change."""
        out, latest = batch.out, batch.latest
        try:
            todo: list[_Doc] = []
            for d in latest.values():
                if d.verdict == "stale":
                    out.stale += 1
                elif d.verdict == "unchanged":
                    out.unchanged += 1
                elif d.verdict == "dead":
                    out.dead.append((d.record, *d.dead))
                else:
                    todo.append(d)
            t0 = time.perf_counter()
            for d in await self._embed_docs([d for d in todo if d.event.op == UPSERT], out):
                todo.remove(d)
            out.stage_s["embed"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            await self._write(todo, out)
            out.stage_s["write"] = time.perf_counter() - t0
            if self.accent_stats is not None:
                await self._count_syllables([d for d in todo if d.event.op == UPSERT])
        except BaseException as exc:
            self._fail(batch, exc)
            raise
        self._end_spans(batch.spans, batch.records, latest, out)
        return out

    @staticmethod
    def _fail(batch: PreparedBatch, exc: BaseException) -> None:
        # transient (the worker retries the batch; the retry gets fresh spans) or cancelled at shutdown
        for span in batch.spans:
            if span.is_recording():
                span.set_status(trace.StatusCode.ERROR, f"batch not applied: {type(exc).__name__}: {exc}")
                span.end()

    async def _decide(self, docs: list[_Doc]) -> None:
        # Store lookups run concurrently: done one by one they left the embedder idle between batches.
        states = await asyncio.gather(*(self._bounded(self._in_span(d.span, self._stored_state(d))) for d in docs))
        for doc, (version, stored_hash, n_stored, collection) in zip(docs, states, strict=True):
            ev = doc.event
            doc.stored_chunks, doc.stored_collection = n_stored, collection
            doc.verdict, doc.chunks, doc.sparse = "todo", [], []
            if ev.version < version:
                doc.verdict = "stale"
                continue
            if ev.op == DELETE:
                continue
            try:
                doc.profile, doc.lang = self._route(ev)
            except PoisonEvent as exc:
                doc.verdict, doc.dead = "dead", (exc.reason, exc.code)
                continue
            doc.content_hash = event_content_hash(ev, doc.profile)
            target = self.config.profiles[doc.profile].collection
            if doc.content_hash == stored_hash and collection == target:
                doc.verdict = "unchanged"
                continue
            try:
                doc.chunks = await asyncio.to_thread(self._chunk, doc)  # off the event loop
            except ValueError as exc:
                doc.verdict, doc.dead = "dead", (f"text: cannot be chunked ({exc})", "chunking")
                continue
            if not doc.chunks:
                doc.verdict, doc.dead = "dead", ("text: nothing to embed after normalisation", "empty_text")
                continue
            doc.sparse = await asyncio.to_thread(self._sparse_of, doc)  # ~1 ms a chunk: off the event loop

    async def _count_syllables(self, docs: list[_Doc]) -> None:
        """Add the syllable counts of the documents just written to their tenants' accent statistics (after
        the store acknowledged; a redelivered batch counts twice, which only scales a tenant's counts)."""
        assert self.accent_stats is not None
        texts: dict[str, list[str]] = {}
        for d in docs:
            if d.profile and self.config.profiles[d.profile].accents.document_statistics:
                texts.setdefault(d.event.tenant, []).append(f"{d.event.title}\n{d.event.text}")
        for tenant, ts in texts.items():
            counts = await asyncio.to_thread(SyllableCounts().add_texts, ts)
            await self.accent_stats.add(tenant, counts)

    async def _write(self, docs: list[_Doc], out: BatchOutcome) -> None:
        by_collection: dict[str, list[Point]] = {}
        surplus: dict[str, list[str]] = {}
        deletes: list[tuple[str, str, str]] = []
        tombstones: list[Point] = []
        for d in docs:
            ev = d.event
            if ev.op == DELETE:
                tomb = Tombstone(ev.tenant, ev.doc_id, int(ev.version))
                tombstones.append(Point(tomb.point_id, _TOMBSTONE_VECTOR, tomb.to_dict()))
                if d.stored_collection:
                    deletes.append((d.stored_collection, ev.tenant, ev.doc_id))
                out.deleted_docs += 1
                continue
            collection = await self._in_span(d.span, self._ensure_collection(d.profile))
            meta: dict[str, Any] = (json_format.MessageToDict(ev.metadata) if ev.HasField("metadata") else {})
            n = len(d.chunks)
            for i, (text, vec, sv) in enumerate(zip(d.chunks, d.vectors, d.sparse, strict=True)):
                payload = ChunkPayload(tenant=ev.tenant, doc_id=ev.doc_id, chunk_index=i, lang=d.lang,
                                       title=ev.title, text=text, metadata=meta, version=int(ev.version),
                                       content_hash=d.content_hash, n_chunks=n)
                by_collection.setdefault(collection, []).append(
                    Point(point_id(ev.tenant, ev.doc_id, i), vec, payload.to_dict(), sv))
            if d.stored_collection and d.stored_collection != collection:
                deletes.append((d.stored_collection, ev.tenant, ev.doc_id))  # re-routed to another profile
            elif d.stored_chunks > n:
                surplus.setdefault(collection, []).extend(
                    point_id(ev.tenant, ev.doc_id, i) for i in range(n, d.stored_chunks))
            out.upserted_docs += 1
            out.chunks += n
        if not docs:
            return
        parent, links = self._batch_parent(docs)
        with tracer.start_as_current_span("ingest.store_write", context=parent, links=links,
                                          attributes={"vien.docs": len(docs)}) as span:
            t0 = time.perf_counter()
            for collection, points in by_collection.items():
                span.set_attribute("vien.points", len(points))
                await asyncio.to_thread(self.store.upsert, collection, points)
            if tombstones:  # before the chunks go: a crash in between replays both
                await self._ensure_tombstones()
                await asyncio.to_thread(self.store.upsert, TOMBSTONE_COLLECTION, tombstones)
            for collection, ids in surplus.items():
                await asyncio.to_thread(self.store.delete, collection, ids)
            for collection, tenant, doc_id in deletes:
                await asyncio.to_thread(self.store.delete_by_doc, collection, tenant, doc_id)
            span.set_attribute("vien.store_ms", (time.perf_counter() - t0) * 1e3)

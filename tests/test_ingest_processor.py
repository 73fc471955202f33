"""IngestProcessor with the real ONNX encoder and a real Qdrant engine (qdrant-client local mode): the
at-least-once rules without Kafka in the way."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest
from google.protobuf import struct_pb2

from vien.documents.events import point_id
from vien.documents.payload import TOMBSTONE_COLLECTION, ChunkPayload
from vien.embedding.encoders import load_onnx_encoder
from vien.store.base import SearchFilter
from vien.store.factory import open_store
from vien.text.langid import detect
from vien.v1.documents_pb2 import DocumentEvent
from vien_ingest.grpc_app import token_counters
from vien_ingest.processor import IngestProcessor, Record

COLL = "vien_e5_small"


class LocalDocEncoder:
    """The document side of the profile, in process (the doc-embedder's own ONNX model)."""

    def __init__(self, settings) -> None:
        cfg = settings.config
        self.profile = cfg.profiles["e5-small"]
        self.encoder = load_onnx_encoder(cfg.encoders[self.profile.document_encoder], settings)
        self.calls = 0

    async def encode(self, texts: list[str], profile: str) -> list[np.ndarray]:
        self.calls += 1
        ids = self.encoder.tokenize([self.profile.prompt("document", t) for t in texts], max_tokens=512)
        return list(self.encoder.embed_ids(ids))


@pytest.fixture
def env(settings):
    store = open_store("memory")
    enc = LocalDocEncoder(settings)
    proc = IngestProcessor(settings.config, store, enc, token_counters(settings.config, settings), detect,
                           overlap_tokens=16)
    yield proc, store, enc
    store.close()


def event(doc_id: str, text: str = "", version: int = 1, tenant: str = "t1", op: int = DocumentEvent.OP_UPSERT,
          **kw) -> DocumentEvent:
    return DocumentEvent(op=op, doc_id=doc_id, version=version, tenant=tenant, text=text, **kw)


_offset = iter(range(10**9))


def records(*events: DocumentEvent | bytes) -> list[Record]:
    return [Record("vien.documents", 0, next(_offset), e if isinstance(e, bytes) else e.SerializeToString())
            for e in events]


def run(proc, *events):
    return asyncio.run(proc.process(records(*events)))


def chunks_of(store, doc_id: str, tenant: str = "t1") -> list:
    return store.doc_chunks(COLL, tenant, doc_id)


LONG = " ".join(f"Đoạn văn số {i} nói về lịch sử và văn hóa của Việt Nam qua nhiều thế kỷ." for i in range(120))


def test_upsert_chunks_long_documents_and_reupsert_removes_surplus(env):
    proc, store, _ = env
    out = run(proc, event("long", LONG, title="Lịch sử"))
    hits = chunks_of(store, "long")
    assert out.upserted_docs == 1 and len(hits) == out.chunks > 2
    assert [h.payload["chunk_index"] for h in hits] == list(range(len(hits)))
    assert all(h.payload["n_chunks"] == len(hits) and h.payload["lang"] == "vi" for h in hits)
    assert hits[0].id == point_id("t1", "long", 0)

    run(proc, event("long", "Bây giờ chỉ còn một đoạn ngắn.", version=2))
    hits = chunks_of(store, "long")
    assert len(hits) == 1 and hits[0].payload["version"] == 2 and store.count(COLL) == 1


def test_redelivery_is_idempotent_and_stale_or_unchanged_events_are_skipped(env):
    proc, store, enc = env
    a = event("a", "Hà Nội là thủ đô của Việt Nam.", version=3, metadata=struct_pb2.Struct())
    run(proc, a)
    calls = enc.calls
    again = run(proc, a)  # at-least-once redelivery of the same event
    assert again.unchanged == 1 and enc.calls == calls, "unchanged content must not be re-embedded"
    old = run(proc, event("a", "Nội dung cũ hơn.", version=2))
    assert old.stale == 1 and chunks_of(store, "a")[0].payload["text"].startswith("Hà Nội")
    assert store.count(COLL) == 1


def test_newest_event_of_a_doc_wins_within_a_batch_and_deletes_remove_everything(env):
    proc, store, _ = env
    out = run(proc, event("d", "bản một", version=1), event("d", "bản hai", version=2),
              event("d", op=DocumentEvent.OP_DELETE, version=3), event("e", "giữ lại", version=1))
    assert out.stale == 2 and chunks_of(store, "d") == [] and len(chunks_of(store, "e")) == 1
    run(proc, event("e", op=DocumentEvent.OP_DELETE, version=1))
    assert chunks_of(store, "e") == [] and store.count(COLL) == 0


def test_tenants_with_the_same_doc_id_never_collide(env):
    proc, store, _ = env
    run(proc, event("1", "tài liệu của A", tenant="A"), event("1", "document of B", tenant="B"))
    assert store.count(COLL, SearchFilter(tenant="A")) == 1 and store.count(COLL, SearchFilter(tenant="B")) == 1
    run(proc, event("1", op=DocumentEvent.OP_DELETE, tenant="A", version=5))
    assert store.count(COLL, SearchFilter(tenant="A")) == 0 and store.count(COLL, SearchFilter(tenant="B")) == 1


def test_poison_events_are_reported_and_the_rest_is_applied(env):
    proc, store, _ = env
    out = run(proc, b"\xff\x00garbage", event("", "no id"), event("ok", "hợp lệ"), event("x", "", tenant="t1"),
              event("p", "unknown profile", profile="ghost"))
    reasons = sorted(reason for _, reason, _ in out.dead)
    assert len(out.dead) == 4, reasons
    assert any("doc_id" in r for r in reasons) and any("profile" in r for r in reasons)
    assert len(chunks_of(store, "ok")) == 1


def test_transient_store_failure_raises_so_nothing_is_committed(env, monkeypatch):
    proc, store, _ = env
    from vien.store.base import StoreUnavailable

    def down(*a, **k):
        raise StoreUnavailable("store is down")

    monkeypatch.setattr(store, "upsert", down)
    with pytest.raises(StoreUnavailable):
        run(proc, event("z", "sẽ thử lại"))


def test_a_delete_leaves_a_tombstone_so_an_older_upsert_replayed_after_it_stays_deleted(env):
    proc, store, _ = env
    run(proc, event("t", "phiên bản bốn", version=4))
    run(proc, event("t", op=DocumentEvent.OP_DELETE, version=5))
    assert chunks_of(store, "t") == []
    late = run(proc, event("t", "phiên bản bốn", version=4))  # replayed / re-sent after the delete
    assert late.stale == 1 and late.upserted_docs == 0 and chunks_of(store, "t") == []
    tomb = store.doc_chunks(TOMBSTONE_COLLECTION, "t1", "t")
    assert len(tomb) == 1 and tomb[0].payload["version"] == 5
    assert run(proc, event("t", "phiên bản sáu", version=6)).upserted_docs == 1  # a newer version comes back
    assert chunks_of(store, "t")[0].payload["version"] == 6
    # the tombstone is per tenant: the same doc id of another tenant is untouched
    assert run(proc, event("t", "của tenant khác", version=1, tenant="t2")).upserted_docs == 1


def test_chunk_payload_is_the_one_definition_ingest_writes_and_search_reads(env):
    from vien_search.logic import to_hit

    proc, store, _ = env
    run(proc, event("p", "Hà Nội là thủ đô.", version=7, title="Thủ đô",
                    metadata=struct_pb2.Struct(fields={"src": struct_pb2.Value(string_value="wiki")})))
    hit = chunks_of(store, "p")[0]
    assert set(hit.payload) == {f.name for f in dataclasses.fields(ChunkPayload)}
    p = ChunkPayload.from_dict(hit.payload)
    meta = {"src": "wiki"}
    assert (p.tenant, p.doc_id, p.version, p.title, p.metadata, p.n_chunks) == ("t1", "p", 7, "Thủ đô", meta, 1)
    h = to_hit(hit)
    assert (h.doc_id, h.version, h.title, h.metadata, h.tenant, h.text) == ("p", 7, "Thủ đô", meta, "t1", p.text)

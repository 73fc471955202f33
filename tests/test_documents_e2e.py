"""The document path end to end on real parts: `vien publish` -> tansu (Kafka protocol) -> ingest ->
doc-embedder -> store (Qdrant Edge) <- search <- router <- query-embedder, all started by `vien up`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from vien.ingest_logic.dlq import REASON
from vien.v1 import search_pb2, search_pb2_grpc
from vien.v1.documents_pb2 import DocumentEvent

SAMPLES = Path(__file__).resolve().parents[1] / "services" / "vien" / "samples" / "documents.jsonl"


def vien(*args: str, env_extra: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "vien", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def stats(mesh) -> dict:
    out = vien("stats", "--store", mesh.addrs["store"], "--kafka", mesh.addrs["kafka"])
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def wait_for(pred, timeout: float = 120.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def search(mesh, query: str, tenant: str, **kw) -> search_pb2.SearchResponse:
    with grpc.insecure_channel(mesh.addrs["search"]) as ch:
        return search_pb2_grpc.SearchStub(ch).Search(search_pb2.SearchRequest(query=query, tenant=tenant, **kw),
                                                      timeout=30)


def drained(mesh) -> bool:
    s = stats(mesh)
    return s["lag"] == 0


@pytest.fixture(scope="module")
def published(mesh):
    out = vien("publish", str(SAMPLES), "--kafka", mesh.addrs["kafka"])
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["published"] == 12 and summary["invalid"] == 0
    wait_for(lambda: drained(mesh) and stats(mesh)["points"] >= 10, what="the samples to be ingested")
    return summary


def test_published_documents_are_searchable_per_tenant(mesh, published):
    r = search(mesh, "làm hộ chiếu mất bao lâu", "demo", top_k=3)
    assert r.hits and r.hits[0].doc_id in ("vi-visa", "en-passport"), [h.doc_id for h in r.hits]
    assert r.query_lang == "vi" and r.profile == "e5-small"
    cross = search(mesh, "how long does a passport renewal take", "demo", top_k=3)
    assert {"vi-visa", "en-passport"} & {h.doc_id for h in cross.hits}
    assert all(h.tenant == "demo" for h in search(mesh, "vé máy bay nhân viên Acme", "demo", top_k=20).hits)
    acme = search(mesh, "vé máy bay", "acme", top_k=20)
    assert [h.doc_id for h in acme.hits] == ["vi-other-tenant"]
    hit = r.hits[0]
    assert hit.text and hit.title and hit.metadata.fields["topic"].string_value and hit.version == 1


def test_deleted_documents_are_gone_and_filters_apply(mesh, published):
    ids = {h.doc_id for h in search(mesh, "lịch nghỉ Tết", "demo", top_k=50).hits}
    assert "vi-draft" not in ids and len(ids) == 9
    en = search(mesh, "travel", "demo", top_k=50, lang="en")
    assert en.hits and all(h.lang == "en" for h in en.hits)
    topic = search(mesh, "món ăn", "demo", top_k=50, metadata_filter={"topic": "am-thuc"})
    assert [h.doc_id for h in topic.hits] == ["vi-pho"]


def test_cli_search_prints_hits_json(mesh, published):
    out = vien("search", "--search", mesh.addrs["search"], "--tenant", "demo", "--top-k", "2", "cà phê sữa đá")
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert len(body["hits"]) == 2 and {"doc_id", "score", "text", "title", "metadata"} <= set(body["hits"][0])
    assert body["hits"][0]["doc_id"] == "en-coffee"


def test_search_modes_over_grpc_and_cli(mesh, published):
    sparse = search(mesh, "cach nau pho bo ha noi", "demo", top_k=3, mode=search_pb2.SEARCH_MODE_SPARSE)
    assert sparse.mode == search_pb2.SEARCH_MODE_SPARSE and sparse.hits[0].doc_id == "vi-pho"
    assert "embed" not in sparse.timings.stage_ms  # lexical only: the router was not asked
    hybrid = search(mesh, "phin filter condensed milk", "demo", top_k=3, mode=search_pb2.SEARCH_MODE_HYBRID)
    assert hybrid.mode == search_pb2.SEARCH_MODE_HYBRID and hybrid.hits[0].doc_id == "en-coffee"
    assert search(mesh, "phin", "demo", top_k=1).mode == search_pb2.SEARCH_MODE_DENSE  # the profile's default
    out = vien("search", "--search", mesh.addrs["search"], "--tenant", "demo", "--top-k", "1", "--mode", "sparse",
               "phin")
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["mode"] == "sparse" and [h["doc_id"] for h in body["hits"]] == ["en-coffee"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"query": "", "tenant": "demo"}, "query"),
        ({"query": "x", "tenant": ""}, "tenant"),
        ({"query": "x", "tenant": "nobody"}, "tenant"),
        ({"query": "x", "tenant": "demo", "top_k": 1000}, "top_k"),
        ({"query": "x", "tenant": "demo", "lang": "fr"}, "lang"),
        ({"query": "x", "tenant": "demo", "metadata_filter": {"bad.key": "v"}}, "filter.metadata"),
        ({"query": "x", "tenant": "demo", "profile": "ghost"}, "profile"),
        ({"query": "x", "tenant": "demo", "mode": 9}, "mode"),
    ],
)
def test_search_bad_input_names_the_field(mesh, published, kwargs, field):
    with grpc.insecure_channel(mesh.addrs["search"]) as ch, pytest.raises(grpc.RpcError) as err:
        search_pb2_grpc.SearchStub(ch).Search(search_pb2.SearchRequest(**kwargs), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"{field}"), err.value.details()


def test_poison_events_go_to_the_dlq_with_a_reason_and_consumption_goes_on(mesh, published):
    async def scenario() -> list[tuple[bytes | None, dict[str, bytes]]]:
        producer = AIOKafkaProducer(bootstrap_servers=mesh.addrs["kafka"])
        await producer.start()
        try:
            await producer.send_and_wait("vien.documents", b"\x08\x01\x12garbage-not-protobuf", key=b"bad")
            missing = DocumentEvent(op=DocumentEvent.OP_UPSERT, doc_id="no-tenant", text="x").SerializeToString()
            await producer.send_and_wait("vien.documents", missing, key=b"bad2")
            ok = DocumentEvent(op=DocumentEvent.OP_UPSERT, doc_id="after-poison", tenant="demo", version=1,
                               text="Tài liệu hợp lệ gửi sau sự kiện lỗi.").SerializeToString()
            await producer.send_and_wait("vien.documents", ok, key=b"demo/after-poison")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer("vien.documents.dlq", bootstrap_servers=mesh.addrs["kafka"],
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        got = []
        try:
            deadline = time.monotonic() + 60
            while len(got) < 2 and time.monotonic() < deadline:
                for msgs in (await consumer.getmany(timeout_ms=500)).values():
                    got += [(m.value, dict(m.headers)) for m in msgs]
        finally:
            await consumer.stop()
        return got

    dead = asyncio.run(scenario())
    assert len(dead) == 2
    reasons = [h[REASON].decode() for _, h in dead]
    assert any("tenant" in r for r in reasons), reasons
    assert b"\x08\x01\x12garbage-not-protobuf" in [v for v, _ in dead]  # the original bytes are kept
    wait_for(lambda: any(h.doc_id == "after-poison" for h in search(mesh, "tài liệu hợp lệ", "demo", top_k=5).hits),
             what="the event after the poison ones")
    assert stats(mesh)["dlq"] == 2


def _jsonl(path: Path, n: int, prefix: str) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"op": "upsert", "doc_id": f"{prefix}-{i}", "version": 1, "tenant": "bulk",
                                "text": f"Văn bản số {i} về chủ đề {i % 17} trong kho tài liệu thử nghiệm."},
                               ensure_ascii=False) + "\n")
        for i in range(0, n, 10):  # every tenth document is deleted again
            f.write(json.dumps({"op": "delete", "doc_id": f"{prefix}-{i}", "version": 2, "tenant": "bulk"}) + "\n")
    return path


def _ingest_pid(mesh) -> int:
    out = subprocess.run(["ps", "--ppid", str(mesh.proc.pid), "-o", "pid=,args="], capture_output=True,
                         text=True).stdout
    return next(int(line.split()[0]) for line in out.splitlines() if "serve ingest " in line)


def test_kill_9_of_the_ingest_worker_mid_stream_loses_and_duplicates_nothing(mesh, published, tmp_path):
    n = 600
    from vien.store.base import SearchFilter
    from vien.store.remote import RemoteStore

    store = RemoteStore(mesh.addrs["store"])
    out = vien("publish", str(_jsonl(tmp_path / "bulk.jsonl", n, "k9")), "--kafka", mesh.addrs["kafka"])
    assert out.returncode == 0, out.stderr
    for _ in range(2):  # kill it twice, at different points of the stream
        before = store.count("vien_e5_small", SearchFilter(tenant="bulk"))
        wait_for(lambda b=before: store.count("vien_e5_small", SearchFilter(tenant="bulk")) > b + 40,
                 what="ingest progress")
        os.kill(_ingest_pid(mesh), signal.SIGKILL)
        time.sleep(1.0)
    expected = {f"k9-{i}" for i in range(n) if i % 10}
    wait_for(lambda: drained(mesh) and store.count("vien_e5_small", SearchFilter(tenant="bulk")) == len(expected),
             timeout=300, what="every bulk document after the kills")
    seen: dict[str, int] = {}
    for doc_id in sorted(expected)[:60] + [f"k9-{i}" for i in range(0, n, 10)]:
        seen[doc_id] = len(store.doc_chunks("vien_e5_small", "bulk", doc_id))
    assert all(seen[d] == 1 for d in sorted(expected)[:60]), "a document is missing or duplicated"
    assert all(seen[f"k9-{i}"] == 0 for i in range(0, n, 10)), "a deleted document came back"
    store.close()

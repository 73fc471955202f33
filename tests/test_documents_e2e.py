"""The document path end to end on real parts: `vien publish` -> tansu (Kafka protocol) -> ingest ->
doc-embedder -> store (Qdrant Edge) <- search <- router <- query-embedder, all started by `vien up`."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from conftest import child_processes

from vien.v1 import search_pb2, search_pb2_grpc
from vien.v1.documents_pb2 import DocumentEvent
from vien_ingest.dlq import REASON
from vien_tools.cli.processes import grpc_serving

SAMPLES = Path(__file__).resolve().parents[1] / "services" / "vien" / "samples" / "documents.jsonl"


def vien(*args: str, env_extra: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "vien_tools", *args], capture_output=True, text=True, timeout=timeout,
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
    assert search(mesh, "phin", "demo", top_k=1).mode == search_pb2.SEARCH_MODE_HYBRID  # the profile's default
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
        ({"query": "x", "tenant": "acme corp"}, "tenant"),
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


def test_a_valid_tenant_without_documents_gets_no_hits(mesh, published):
    with grpc.insecure_channel(mesh.addrs["search"]) as ch:
        r = search_pb2_grpc.SearchStub(ch).Search(search_pb2.SearchRequest(query="x", tenant="nobody"), timeout=30)
    assert list(r.hits) == [] and r.profile


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


def mixed_stream(seed: int, docs: int, events: int, tenant: str) -> tuple[list[dict], dict[str, dict | None]]:
    """A seeded stream of upserts, updates and deletes (short texts: cheap to embed) and the expected end
    state: doc_id -> its newest upsert event, or None when its newest event is a delete."""
    rng = random.Random(seed)
    version = {f"f{i}": 0 for i in range(docs)}
    out: list[dict] = []
    for i in range(docs):  # every document is created once; updates, deletes and re-creations follow
        version[f"f{i}"] = 1
        out.append({"op": "upsert", "doc_id": f"f{i}", "version": 1, "tenant": tenant,
                    "text": f"Tài liệu {i} về chủ đề {i % 23}, bản 1."})
    while len(out) < events:
        doc = f"f{rng.randrange(docs)}"
        version[doc] += 1
        v = version[doc]
        if rng.random() < 0.25:
            out.append({"op": "delete", "doc_id": doc, "version": v, "tenant": tenant})
        else:
            out.append({"op": "upsert", "doc_id": doc, "version": v, "tenant": tenant,
                        "text": f"Tài liệu {doc} cập nhật lần {v}: chủ đề {rng.randrange(50)}."})
    # Documents interleaved at random, each document's events in version order (creation first): the
    # broker keeps per-document order (key = tenant/doc_id), the test keeps it in the stream.
    per_doc: dict[str, list[dict]] = {}
    for e in out:
        per_doc.setdefault(e["doc_id"], []).append(e)
    order: list[dict] = []
    queues = list(per_doc.values())
    while queues:
        i = rng.randrange(len(queues))
        order.append(queues[i].pop(0))
        if not queues[i]:
            queues[i] = queues[-1]
            queues.pop()
    expected: dict[str, dict | None] = {}
    for e in order:
        expected[e["doc_id"]] = e if e["op"] == "upsert" else None
    return order, expected


def wrong_documents(store, coll: str, tenant: str, expected: dict[str, dict | None]) -> list[str]:
    """What differs from the expected end state (see mixed_stream): every live document exactly once, at its
    newest version and text; every deleted one absent."""
    wrong: list[str] = []
    for doc_id, e in expected.items():
        hits = store.doc_chunks(coll, tenant, doc_id)
        if e is None:
            if hits:
                wrong.append(f"{doc_id}: deleted but present")
        elif len(hits) != 1:
            wrong.append(f"{doc_id}: {len(hits)} points")
        elif hits[0].payload["version"] != e["version"] or e["text"] not in hits[0].payload["text"]:
            wrong.append(f"{doc_id}: version {hits[0].payload['version']}, expected {e['version']}")
    return wrong


def _ingest_pid(mesh) -> int | None:
    """The running ingest worker's pid; None while the supervisor has not restarted it yet."""
    return next((pid for pid, argv in child_processes(mesh.proc.pid) if "serve ingest " in " ".join(argv)),
                None)


@pytest.mark.slow
def test_kill_9_of_the_ingest_worker_at_random_points_loses_and_duplicates_nothing(mesh, published, tmp_path):
    """5,000 events (3,000 documents created, then updated or deleted at random) while the ingest worker
    is killed with SIGKILL 4 times at seeded random points. After the restarts every live document is
    there exactly once with its newest version and text; every deleted one is absent."""
    from vien.store.base import SearchFilter
    from vien.store.remote import RemoteStore

    seed, tenant, coll = 20261123, "bulk", "vien_e5_small"
    events, expected = mixed_stream(seed, docs=3000, events=5000, tenant=tenant)
    path = tmp_path / "stream.jsonl"
    path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events), encoding="utf-8")
    live = {d: e for d, e in expected.items() if e is not None}
    store = RemoteStore(mesh.addrs["store"])
    t0 = time.monotonic()
    out = vien("publish", str(path), "--kafka", mesh.addrs["kafka"])
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["published"] == 5000
    rng = random.Random(seed)
    thresholds = sorted(rng.sample(range(150, int(len(live) * 0.8)), 4))
    kills = []
    for th in thresholds:  # kill at a random progress point, plus a random delay into the next batch
        wait_for(lambda t=th: store.count(coll, SearchFilter(tenant=tenant)) >= t, timeout=240,
                 what=f"ingest progress to {th} points")
        # a worker to kill: the one restarted after the previous kill may still be starting (two thresholds can
        # fall within one batch, faster since ingest overlaps batches)
        wait_for(lambda: _ingest_pid(mesh) is not None and grpc_serving(mesh.addrs["ingest"]), timeout=120,
                 what="the restarted ingest worker")
        time.sleep(rng.uniform(0.0, 1.5))
        pid = _ingest_pid(mesh)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        kills.append(round(time.monotonic() - t0, 1))
        time.sleep(1.0)  # the supervisor sees it exit and restarts it with back-off
    wait_for(lambda: drained(mesh) and store.count(coll, SearchFilter(tenant=tenant)) == len(live),
             timeout=400, what="every live document after the kills")
    took = time.monotonic() - t0
    wrong = wrong_documents(store, coll, tenant, expected)
    store.close()
    print(f"kill-9 test: 5000 events, {len(live)} live docs, kills at {kills}s, all ingested after {took:.1f}s")
    assert not wrong, wrong[:20]

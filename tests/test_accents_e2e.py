"""Accent restoration end to end on real parts (`vien up`): documents of a tenant go in through Kafka and
ingest, which counts their syllables in Redis; the router restores an unaccented Vietnamese query with them
before embedding (gRPC Embed, `vien embed`, the OpenAI-compatible HTTP gateway) and search embeds the
restored query while its lexical side matches the folded terms."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from test_documents_e2e import drained, search, vien, wait_for

from vien.v1 import common_pb2, router_pb2, router_pb2_grpc

TENANT = "accents-e2e"
DOCS = [
    ("flights", "Giá vé máy bay đi Đà Nẵng tháng này rẻ hơn tháng trước. Vé máy bay giá rẻ bán hết rất nhanh."),
    ("passport", "Làm hộ chiếu mất bao lâu? Thủ tục làm hộ chiếu ở Hà Nội mất khoảng tám ngày làm việc."),
    ("ghost", "Câu chuyện về bóng ma trong lâu đài cổ làm bọn trẻ sợ. Bóng ma xuất hiện lúc nửa đêm."),
    ("mother", "Má tôi nấu cơm rất ngon. Ba má tôi sống ở quê."),
]
QUERY = "gia ve may bay di Da Nang"
RESTORED = "giá vé máy bay đi Đà Nẵng"


def _embed(mesh, texts: list[str], **kw) -> router_pb2.EmbedResponse:
    with grpc.insecure_channel(mesh.router) as ch:
        return router_pb2_grpc.RouterStub(ch).Embed(
            router_pb2.EmbedRequest(texts=texts, kind=common_pb2.EMBED_KIND_QUERY, **kw), timeout=60)


def _vec(e: common_pb2.Embedding) -> np.ndarray:
    return np.frombuffer(e.vector, "<f4")


@pytest.fixture(scope="module")
def indexed(mesh, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = Path(tmp_path_factory.mktemp("accents")) / "docs.jsonl"
    path.write_text("".join(json.dumps({"op": "upsert", "doc_id": d, "version": 1, "tenant": TENANT, "text": t},
                                       ensure_ascii=False) + "\n" for d, t in DOCS), encoding="utf-8")
    out = vien("publish", str(path), "--kafka", mesh.addrs["kafka"])
    assert out.returncode == 0, out.stderr
    wait_for(lambda: drained(mesh) and search(mesh, "bóng ma", TENANT, top_k=1).hits, what="the documents")


def _restored(mesh, **kw) -> common_pb2.Embedding | None:
    e = _embed(mesh, [QUERY], **kw).embeddings[0]
    return e if e.restored_text else None


def test_router_restores_with_the_tenants_documents_and_embeds_the_restored_text(mesh, indexed) -> None:
    # The router loads the tenant's counts in the background: the first requests may still go without.
    e = wait_for(lambda: _restored(mesh, accent_tenant=TENANT), timeout=90, what="a restored query")
    assert e.restored_text == RESTORED and 0.5 < e.restore_confidence <= 1.0 and e.lang == "vi"
    direct = _embed(mesh, [RESTORED]).embeddings[0]
    assert not direct.restored_text                        # accented text is never altered
    assert float(_vec(e) @ _vec(direct)) > 0.9999          # what was embedded is the restored text
    again = _embed(mesh, [QUERY], accent_tenant=TENANT).embeddings[0]
    assert again.cache_hit and again.restored_text == RESTORED  # the cache key is the restored text
    off = _embed(mesh, [QUERY], accent_tenant=TENANT, no_accent_restoration=True).embeddings[0]
    assert not off.restored_text and float(_vec(off) @ _vec(direct)) < 0.99
    resp = _embed(mesh, ["cheap flights to Da Nang", "review laptop gaming", "Giá vé máy bay", "ma toi nau com"],
                  accent_tenant=TENANT)
    assert [e.restored_text for e in resp.embeddings] == ["", "", "", "má tôi nấu cơm"]
    assert "accents" in resp.timings.stage_ms


def test_documents_are_never_restored(mesh, indexed) -> None:
    with grpc.insecure_channel(mesh.router) as ch:
        resp = router_pb2_grpc.RouterStub(ch).Embed(router_pb2.EmbedRequest(
            texts=[QUERY], kind=common_pb2.EMBED_KIND_DOCUMENT, accent_tenant=TENANT), timeout=60)
    assert not resp.embeddings[0].restored_text


def test_search_embeds_the_restored_query_and_says_so(mesh, indexed) -> None:
    res = wait_for(lambda: (r := search(mesh, "bong ma xuat hien luc nua dem", TENANT, top_k=2)).restored_query and r,
                   timeout=90, what="a restored search")
    assert res.restored_query == "bóng ma xuất hiện lúc nửa đêm" and res.restore_confidence > 0.5
    assert res.hits[0].doc_id == "ghost"
    off = search(mesh, "bong ma xuat hien luc nua dem", TENANT, top_k=2, no_accent_restoration=True)
    assert not off.restored_query and off.hits[0].doc_id == "ghost"  # the folded lexical terms still match
    accented = search(mesh, "bóng ma xuất hiện lúc nửa đêm", TENANT, top_k=2)
    assert not accented.restored_query


def test_vien_embed_prints_the_restored_text(mesh, indexed) -> None:
    def run() -> dict | None:
        out = vien("embed", "--router", mesh.router, QUERY, "cheap flights")
        assert out.returncode == 0, out.stderr
        rows = [json.loads(line) for line in out.stdout.splitlines()]
        assert "restored_text" not in rows[1]
        return rows[0] if "restored_text" in rows[0] else None
    # no key and no tenant: the router uses every tenant's documents together (open mode)
    row = wait_for(run, timeout=90, what="vien embed to restore")
    assert row["restored_text"] == RESTORED and row["text"] == QUERY and 0.5 < row["restore_confidence"] <= 1.0


def test_http_embeddings_of_an_unaccented_query_are_those_of_the_restored_text(mesh, indexed) -> None:
    url = f"http://{mesh.addrs['http']}/v1/embeddings"

    def vector(text: str) -> np.ndarray:
        r = httpx.post(url, json={"model": "text-embedding-3-small", "input": text}, timeout=60)
        assert r.status_code == 200, r.text
        return np.asarray(r.json()["data"][0]["embedding"], np.float32)

    accented = vector(RESTORED)
    deadline = time.monotonic() + 90
    while float(vector(QUERY) @ accented) < 0.9999:
        assert time.monotonic() < deadline, "the gateway's query was never restored"
        time.sleep(1)

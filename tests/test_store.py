"""The vector store contract, run against both adapters: Qdrant Edge (on disk in tmp_path) and
qdrant-client's local mode (":memory:"). Small data only (≤ 2,000 points)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from vien.runtime.errors import InvalidArgument, NotFound
from vien.store import (
    CollectionMismatch,
    CollectionNotFound,
    Point,
    SearchFilter,
    SparseVector,
    StoreUnavailable,
    VectorStore,
    open_store,
)
from vien.store.edge import EdgeStore
from vien.store.indexing import IndexSettings
from vien.store.qdrant import QdrantStore

D = 64
C = "e5_small"


def unit(rng: np.random.Generator, n: int, d: int = D) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def chunk_id(tenant: str, doc: str, i: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant}/{doc}/{i}"))


def chunk(
    vec: np.ndarray,
    tenant: str,
    doc: str,
    i: int,
    *,
    n: int = 1,
    lang: str = "vi",
    version: int = 1,
    metadata: dict[str, str] | None = None,
    sparse: SparseVector | None = None,
) -> Point:
    payload = {
        "tenant": tenant,
        "doc_id": doc,
        "chunk_index": i,
        "lang": lang,
        "title": f"title {doc}",
        "text": f"text {doc} {i}",
        "metadata": metadata or {},
        "version": version,
        "content_hash": f"h{version}",
        "n_chunks": n,
    }
    return Point(id=chunk_id(tenant, doc, i), vector=vec, payload=payload, sparse=sparse)


@pytest.fixture(params=["edge", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    s: VectorStore = EdgeStore(tmp_path / "edge") if request.param == "edge" else QdrantStore(location=":memory:")
    yield s
    s.close()


@pytest.fixture
def corpus(store: VectorStore) -> tuple[VectorStore, np.ndarray, list[Point]]:
    """600 chunks: tenants a/b/c, langs vi/en, metadata source=web|pdf, 10 chunks per doc."""
    rng = np.random.default_rng(7)
    X = unit(rng, 600)
    pts = [
        chunk(
            X[k],
            "abc"[k % 3],
            f"doc{k // 30}",
            (k // 3) % 10,
            n=10,
            lang="vi" if k % 2 else "en",
            metadata={"source": "web" if k % 5 else "pdf"},
        )
        for k in range(600)
    ]
    store.ensure_collection(C, D)
    for b in range(0, len(pts), 200):
        store.upsert(C, pts[b : b + 200])
    return store, X, pts


# ------------------------------------------------------------------------------------------- collections


def test_create_is_idempotent_and_listed(store: VectorStore) -> None:
    assert store.collections() == {}
    store.ensure_collection(C, D)
    store.ensure_collection(C, D)
    store.ensure_collection("other", 384, sparse=False)
    assert store.collections() == {C: D, "other": 384}
    info = store.collection_info(C)
    assert (info.dims, info.distance, info.sparse, info.points) == (D, "cosine", True, 0)
    assert store.collection_info("other").sparse is False
    assert store.count(C) == 0
    assert store.drop_collection("other") is True
    assert store.drop_collection("other") is False
    assert store.collections() == {C: D}


def test_wrong_dims_and_missing_sparse_are_refused(store: VectorStore) -> None:
    store.ensure_collection(C, D)
    with pytest.raises(CollectionMismatch, match="dims 64, not 384"):
        store.ensure_collection(C, 384)
    store.ensure_collection("dense_only", D, sparse=False)
    with pytest.raises(CollectionMismatch, match="sparse"):
        store.ensure_collection("dense_only", D, sparse=True)
    rng = np.random.default_rng(0)
    p = chunk(unit(rng, 1)[0], "a", "d", 0, sparse=SparseVector([1], [1.0]))
    with pytest.raises(CollectionMismatch):
        store.upsert("dense_only", [p])
    with pytest.raises(CollectionMismatch, match="sparse"):
        store.search_sparse("dense_only", SparseVector([1], [1.0]), 5)


def test_missing_collection_and_bad_input(store: VectorStore) -> None:
    rng = np.random.default_rng(1)
    v = unit(rng, 1)[0]
    with pytest.raises(CollectionNotFound):
        store.search("nope", v, 5)
    with pytest.raises(CollectionNotFound):
        store.count("nope")
    with pytest.raises(CollectionNotFound):
        store.upsert("nope", [chunk(v, "a", "d", 0)])
    with pytest.raises(InvalidArgument, match="collection"):
        store.ensure_collection("../escape", D)
    store.ensure_collection(C, D)
    with pytest.raises(InvalidArgument, match="does not match"):
        store.upsert(C, [chunk(unit(rng, 1, 32)[0], "a", "d", 0)])
    with pytest.raises(InvalidArgument, match="does not match"):
        store.search(C, unit(rng, 1, 32)[0], 5)
    with pytest.raises(InvalidArgument, match="zeros"):
        store.upsert(C, [chunk(np.zeros(D, np.float32), "a", "d", 0)])
    with pytest.raises(InvalidArgument, match="UUID"):
        store.upsert(C, [Point(id="chunk-1", vector=v, payload={})])
    with pytest.raises(InvalidArgument, match="top_k"):
        store.search(C, v, 0)
    with pytest.raises(InvalidArgument, match="metadata"):
        store.search(C, v, 5, SearchFilter(metadata={"a.b": "x"}))
    with pytest.raises(InvalidArgument):
        SparseVector([1, 1], [1.0, 2.0])
    assert store.count(C) == 0


# ------------------------------------------------------------------------------------------------ search


def test_search_ranks_by_cosine(corpus: tuple[VectorStore, np.ndarray, list[Point]]) -> None:
    store, X, pts = corpus
    rng = np.random.default_rng(3)
    for q in rng.integers(0, len(pts), 10):
        query = X[q] + 0.05 * unit(rng, 1)[0]
        hits = store.search(C, query * 3.0, 10)  # scale must not matter for cosine
        qn = query / np.linalg.norm(query)
        truth = np.argsort(-(X @ qn))[:10]
        assert hits[0].id == pts[q].id
        assert [h.id for h in hits] == [pts[i].id for i in truth]
        np.testing.assert_allclose([h.score for h in hits], (X @ qn)[truth], atol=1e-4)
        assert hits[0].payload["text"] == pts[q].payload["text"]


def test_tenant_isolation(corpus: tuple[VectorStore, np.ndarray, list[Point]]) -> None:
    store, X, pts = corpus
    for q in range(0, 60, 7):
        if pts[q].payload["tenant"] == "a":
            continue
        hits = store.search(C, X[q], 50, SearchFilter(tenant="a"))  # a vector of tenant b/c, filtered to a
        assert len(hits) == 50
        assert all(h.payload["tenant"] == "a" for h in hits)
        assert pts[q].id not in {h.id for h in hits}
    assert store.search(C, X[0], 10, SearchFilter(tenant="nobody")) == []
    assert store.count(C, SearchFilter(tenant="a")) == 200
    assert store.count(C, SearchFilter(tenant="b")) == 200


def test_lang_and_metadata_filters(corpus: tuple[VectorStore, np.ndarray, list[Point]]) -> None:
    store, X, pts = corpus
    flt = SearchFilter(tenant="b", lang="vi", metadata={"source": "pdf"})
    want = {
        p.id
        for p in pts
        if p.payload["tenant"] == "b" and p.payload["lang"] == "vi" and p.payload["metadata"]["source"] == "pdf"
    }
    hits = store.search(C, X[1], 100, flt)
    assert {h.id for h in hits} == want and len(want) == 20
    assert store.count(C, flt) == len(want)
    assert store.count(C, SearchFilter(lang="en")) == 300
    assert store.count(C, SearchFilter(metadata={"source": "web"})) == 480
    assert store.count(C, SearchFilter(metadata={"missing_key": "x"})) == 0


# ----------------------------------------------------------------------------------------------- writes


def test_delete_by_doc_removes_every_chunk_of_that_tenant_only(store: VectorStore) -> None:
    rng = np.random.default_rng(4)
    store.ensure_collection(C, D)
    X = unit(rng, 30)
    # the same doc_id under two tenants, plus another doc
    store.upsert(C, [chunk(X[i], "a", "shared", i, n=10) for i in range(10)])
    store.upsert(C, [chunk(X[10 + i], "b", "shared", i, n=10) for i in range(10)])
    store.upsert(C, [chunk(X[20 + i], "a", "other", i, n=10) for i in range(10)])
    store.delete_by_doc(C, "a", "shared")
    assert store.doc_chunks(C, "a", "shared") == []
    assert len(store.doc_chunks(C, "b", "shared")) == 10
    assert len(store.doc_chunks(C, "a", "other")) == 10
    assert store.count(C) == 20
    assert all(h.payload["doc_id"] != "shared" or h.payload["tenant"] == "b" for h in store.search(C, X[0], 30))
    store.delete(C, [chunk_id("a", "other", 0), chunk_id("a", "other", 1)])
    store.delete(C, [chunk_id("a", "never", 0)])  # absent ids are fine
    assert store.count(C, SearchFilter(tenant="a")) == 8


def test_reupsert_same_ids_replaces(store: VectorStore) -> None:
    rng = np.random.default_rng(5)
    store.ensure_collection(C, D)
    X1, X2 = unit(rng, 5), unit(rng, 5)
    store.upsert(C, [chunk(X1[i], "a", "d", i, n=5, version=1) for i in range(5)])
    store.upsert(C, [chunk(X2[i], "a", "d", i, n=5, version=2) for i in range(5)])
    assert store.count(C) == 5
    chunks = store.doc_chunks(C, "a", "d")
    assert [h.payload["version"] for h in chunks] == [2] * 5
    assert [h.payload["content_hash"] for h in chunks] == ["h2"] * 5
    top = store.search(C, X2[3], 1)[0]
    assert top.id == chunk_id("a", "d", 3) and top.score == pytest.approx(1.0, abs=1e-5)
    assert store.search(C, X1[3], 1)[0].score < 0.9  # the old vector is gone


def test_doc_chunks_returns_payloads_in_order_across_pages(store: VectorStore) -> None:
    rng = np.random.default_rng(6)
    store.ensure_collection(C, D)
    X = unit(rng, 300)
    order = rng.permutation(300)
    store.upsert(C, [chunk(X[i], "t", "big", int(i), n=300, metadata={"k": "v"}) for i in order])
    store.upsert(C, [chunk(X[0], "t", "small", 0)])
    got = store.doc_chunks(C, "t", "big")
    assert [h.payload["chunk_index"] for h in got] == list(range(300))
    assert got[7].id == chunk_id("t", "big", 7)
    p = got[7].payload
    assert (p["tenant"], p["doc_id"], p["n_chunks"], p["version"], p["metadata"]) == ("t", "big", 300, 1, {"k": "v"})
    assert store.doc_chunks(C, "other", "big") == []


def test_concurrent_calls_from_threads(store: VectorStore) -> None:
    """Services call the store through asyncio.to_thread: writes and reads from many threads at once."""
    rng = np.random.default_rng(8)
    store.ensure_collection(C, D)
    X = unit(rng, 400)

    def write(b: int) -> None:
        store.upsert(C, [chunk(X[i], "a", f"d{i}", 0) for i in range(b, b + 50)])

    def read(i: int) -> int:
        return len(store.search(C, X[i], 5, SearchFilter(tenant="a")))

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(write, b) for b in range(0, 400, 50)] + [pool.submit(read, i) for i in range(40)]
        for f in futures:
            f.result()
    assert store.count(C) == 400


# ----------------------------------------------------------------------------------------------- sparse


def test_sparse_and_hybrid_search(store: VectorStore) -> None:
    rng = np.random.default_rng(9)
    store.ensure_collection(C, D)
    X = unit(rng, 40)
    # point i carries terms {i, 1000} (1000 is in every point: low IDF)
    pts = [
        chunk(X[i], "a" if i < 30 else "b", f"d{i}", 0, sparse=SparseVector([i, 1000], [1.0, 1.0])) for i in range(40)
    ]
    pts.append(chunk(X[0], "a", "dense_only", 0))  # a point without a sparse vector is allowed
    store.upsert(C, pts)
    hits = store.search_sparse(C, SparseVector([7, 1000], [1.0, 1.0]), 5)
    assert hits[0].id == pts[7].id
    assert hits[0].score > hits[1].score  # the rare term outweighs the common one (IDF)
    assert all(
        h.payload["tenant"] == "b"
        for h in store.search_sparse(C, SparseVector([7, 1000], [1, 1]), 5, SearchFilter(tenant="b"))
    )
    # hybrid: dense prefers point 3, lexical prefers point 12; RRF puts both on top
    hyb = store.search_hybrid(C, X[3], SparseVector([12], [1.0]), 5)
    assert {h.id for h in hyb[:2]} == {pts[3].id, pts[12].id}
    assert all(
        h.payload["tenant"] == "b"
        for h in store.search_hybrid(C, X[3], SparseVector([12], [1.0]), 5, SearchFilter(tenant="b"))
    )


def check_payload_selection(store: VectorStore) -> None:
    """Candidates with chosen payload fields, full payloads by id: what the search service's fusion uses.
    Same ids, order and scores whatever the selection; `retrieve` re-checks the filter on every point."""
    rng = np.random.default_rng(12)
    store.ensure_collection("sel", D)
    X = unit(rng, 60)
    pts = [chunk(X[i], "ab"[i % 2], f"d{i}", 0, lang="vi" if i % 3 else "en", metadata={"k": str(i % 4)},
                 sparse=SparseVector([i, 1000], [1.0, 0.5])) for i in range(60)]
    store.upsert("sel", pts)
    by_id = {p.id: p.payload for p in pts}
    a = SearchFilter(tenant="a")
    sv = SparseVector([4, 6, 1000], [1.0, 0.8, 0.3])
    for run in (lambda **kw: store.search("sel", X[4], 20, a, **kw),
                lambda **kw: store.search_sparse("sel", sv, 20, a, **kw)):
        full = run()
        assert len(full) == 20 and all(h.payload == by_id[h.id] for h in full)
        for fields, head in (([], 0), (["lang"], 0), (["lang", "tenant", "no_such_field"], 0), ([], 1), (["lang"], 3)):
            got = run(payload_fields=fields, full_head=head)
            assert [(h.id, h.score) for h in got] == [(h.id, h.score) for h in full]
            for i, h in enumerate(got):
                want = by_id[h.id] if i < head else {f: by_id[h.id][f] for f in fields if f in by_id[h.id]}
                assert h.payload == want, (fields, head, i)
        assert run(payload_fields=None, full_head=5) == full  # full_head only narrows a selection
    # retrieve: full payloads by id, absent ids and other tenants' points left out
    ids = [p.id for p in pts[:10]]
    gone = chunk_id("a", "never-written", 0)
    assert store.retrieve("sel", [*ids, gone]) == {i: by_id[i] for i in ids}
    assert store.retrieve("sel", ids, a) == {i: by_id[i] for i in ids if by_id[i]["tenant"] == "a"}
    picked = {i: by_id[i] for i in ids
              if (by_id[i]["tenant"], by_id[i]["lang"], by_id[i]["metadata"]["k"]) == ("a", "vi", "2")}
    assert picked and store.retrieve("sel", ids, SearchFilter(tenant="a", lang="vi", metadata={"k": "2"})) == picked
    assert store.retrieve("sel", ids, SearchFilter(tenant="nobody")) == {}
    assert store.retrieve("sel", []) == {}
    store.delete("sel", ids[:2])
    assert set(store.retrieve("sel", ids)) == set(ids[2:])
    with pytest.raises(InvalidArgument, match="UUID"):
        store.retrieve("sel", ["chunk-1"])
    with pytest.raises(InvalidArgument, match="payload_fields"):
        store.search("sel", X[0], 5, payload_fields=["metadata.k"])
    with pytest.raises(InvalidArgument, match="full_head"):
        store.search_sparse("sel", sv, 5, payload_fields=[], full_head=-1)
    with pytest.raises(NotFound):  # CollectionNotFound in process, NotFound through the store service
        store.retrieve("nope", ids)


def test_payload_selection_and_retrieve(store: VectorStore) -> None:
    check_payload_selection(store)


# ------------------------------------------------------------------------------------------- Edge only


def test_edge_persists_across_close_and_reopen(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    X = unit(rng, 200)
    s = EdgeStore(tmp_path / "e")
    s.ensure_collection(C, D)
    s.ensure_collection("sm", 384, sparse=False)
    s.upsert(
        C, [chunk(X[i], "ab"[i % 2], f"d{i // 10}", i % 10, n=10, sparse=SparseVector([i], [1.0])) for i in range(200)]
    )
    s.delete_by_doc(C, "a", "d0")
    s.close()
    with pytest.raises(StoreUnavailable):
        s.count(C)

    s = EdgeStore(tmp_path / "e")
    assert s.collections() == {C: D, "sm": 384}
    assert s.count(C) == 195 and s.count(C, SearchFilter(tenant="b")) == 100
    assert s.search(C, X[42], 1)[0].id == chunk_id("a", "d4", 2)
    assert s.search_sparse(C, SparseVector([43], [1.0]), 1)[0].id == chunk_id("b", "d4", 3)
    with pytest.raises(CollectionMismatch):
        s.ensure_collection(C, 384)
    info = s._shards[C].shard.info()  # payload indexes survived the reopen
    assert {"tenant", "lang", "doc_id", "version"} <= set(info.payload_schema)
    # optimize builds the HNSW index; answers stay the same
    s.optimize(C)
    assert s.search(C, X[42], 1)[0].id == chunk_id("a", "d4", 2)
    s.close()
    s = EdgeStore(tmp_path / "e")
    assert s.count(C) == 195
    s.close()


def test_edge_builds_its_index_in_the_background_and_keeps_answering(tmp_path: Path) -> None:
    """Past the threshold the index is built in a child process on a copy: searches are answered during
    the build, writes made during it are replayed onto the built shard, writes after it are found at once,
    and the swapped shard is what a reopen finds."""
    rng = np.random.default_rng(11)
    X = unit(rng, 3000)
    settings = IndexSettings(threshold=1500, m=8, payload_m=8, ef_construct=32, hnsw_ef=64)
    s = EdgeStore(tmp_path / "e", index=settings)
    s.ensure_collection(C, D)
    pts = [chunk(X[i], "ab"[i % 2], f"d{i}", 0, sparse=SparseVector([i], [1.0])) for i in range(3000)]
    for b in range(0, 1500, 500):
        s.upsert(C, pts[b:b + 500])
    assert s.index_status(C)["building"]  # the upsert that crossed the threshold started it
    answered_during, k = 0, 1500
    while s.index_status(C)["building"]:
        j = int(rng.integers(0, k))
        hit = s.search(C, X[j], 1, SearchFilter(tenant="ab"[j % 2]))[0]
        assert hit.id == pts[j].id
        answered_during += 1
        if k < 2000:  # written while the build runs: journaled, replayed onto the built shard
            s.upsert(C, pts[k:k + 50])
            k += 50
    assert answered_during >= 1 and k > 1500
    assert s.wait_index(C, 120)
    st = s.index_status(C)
    assert st["builds"] == 1 and st["indexed"] >= 1500 and st["points"] == k
    for j in [*range(1500, k, 7), 0, 1499]:  # during-build writes are in the built shard
        assert s.search(C, X[j], 1)[0].id == pts[j].id
    s.upsert(C, pts[k:k + 10])  # after the swap: searchable at once
    assert s.search(C, X[k + 3], 1)[0].id == pts[k + 3].id
    assert s.search_exact(C, X[k + 3], 1)[0].id == pts[k + 3].id
    assert s.search_hybrid(C, X[5], SparseVector([5], [1.0]), 1)[0].id == pts[5].id
    assert s.index_status(C)["unindexed"] > 0
    assert s.optimize(C) is True  # `vien optimize`: the same build, now, for the tail
    assert s.index_status(C)["unindexed"] == 0 and s.index_status(C)["builds"] == 2
    assert s.optimize(C) is False  # nothing written since
    s.close()
    shards = sorted(p.name for p in (tmp_path / "e").iterdir() if p.is_dir())
    assert len(shards) == 1 and shards[0].startswith(f"{C}@")  # the replaced shard was removed
    s = EdgeStore(tmp_path / "e", index=settings)
    assert s.count(C) == k + 10 and s.index_status(C)["indexed"] >= 1500
    assert s.search(C, X[k + 3], 1)[0].id == pts[k + 3].id
    s.close()


def test_edge_short_indexed_answer_is_answered_again_exactly_fake_short_walk(tmp_path: Path) -> None:
    """Fault injection on the real engine (a fake short HNSW walk: the indexed query's answer is cut to 2
    hits, as seen once end to end): the store notices that more points match the filter and answers the
    search exactly, counted in vien_store_short_answers_total. A short answer that is right (a tenant with
    3 points) is returned as it is, without the exact pass."""
    from vien.runtime.metrics import SHORT_INDEXED_ANSWERS

    rng = np.random.default_rng(5)
    X = unit(rng, 300)
    s = EdgeStore(tmp_path / "e", index=IndexSettings(threshold=0, m=8, payload_m=8, ef_construct=32, hnsw_ef=64))
    s.ensure_collection(C, D)
    s.upsert(C, [chunk(X[i], "big" if i < 297 else "tiny", f"d{i}", 0) for i in range(300)])
    assert s.optimize(C)
    truth = [h.id for h in s.search_exact(C, X[7], 10, SearchFilter(tenant="big"))]
    held = s._get(C)
    real, calls = held.shard, []

    class Walk:  # the engine's shard, its indexed answers optionally cut to 2 hits
        def __init__(self, cut: bool) -> None:
            self.cut = cut

        def __getattr__(self, name):
            return getattr(real, name)

        def query(self, req):
            exact = bool(req.params is not None and req.params.exact)
            calls.append(exact)
            out = real.query(req)
            return out if exact or not self.cut else out[:2]

    before = SHORT_INDEXED_ANSWERS._value.get()
    try:
        held.shard = Walk(cut=True)
        assert [h.id for h in s.search(C, X[7], 10, SearchFilter(tenant="big"))] == truth
        assert calls == [False, True] and SHORT_INDEXED_ANSWERS._value.get() == before + 1
        held.shard, calls[:] = Walk(cut=False), []
        assert len(s.search(C, X[298], 10, SearchFilter(tenant="tiny"))) == 3  # all it has
        assert calls == [False] and SHORT_INDEXED_ANSWERS._value.get() == before + 1
    finally:
        held.shard = real
        s.close()


def test_edge_build_interrupted_by_close_leaves_the_shard_whole(tmp_path: Path) -> None:
    """Closing the store while its index builds kills the child; the build's copy is removed and the
    shard reopens with every acknowledged point (what a crash mid-build also leaves: see _open_all)."""
    rng = np.random.default_rng(12)
    X = unit(rng, 1200)
    s = EdgeStore(tmp_path / "e", index=IndexSettings(threshold=1000, m=8, payload_m=8, ef_construct=32))
    s.ensure_collection(C, D)
    s.upsert(C, [chunk(X[i], "a", f"d{i}", 0) for i in range(1200)])
    assert s.index_status(C)["building"]
    s.close()
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == [C]
    s = EdgeStore(tmp_path / "e", index=IndexSettings(threshold=0))
    assert s.count(C) == 1200 and s.search(C, X[7], 1)[0].id == chunk_id("a", "d7", 0)
    assert s.index_status(C)["indexed"] == 0
    s.close()


def test_edge_directory_has_one_owner(tmp_path: Path) -> None:
    """A second open of the same Edge shard (same process or another) is refused while the first holds it;
    after close (or the owner's exit) it opens again."""
    s = EdgeStore(tmp_path / "e")
    s.ensure_collection(C, D)
    with pytest.raises(StoreUnavailable, match="another process"):
        EdgeStore(tmp_path / "e")
    code = textwrap.dedent(
        f"""
        from vien.store import open_store, StoreUnavailable
        try:
            open_store("edge:{tmp_path / "e"}")
        except StoreUnavailable as e:
            print("LOCKED", e)
        else:
            print("OPENED")
        """
    )
    env_path = str(Path(__file__).resolve().parents[1] / "services")
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.startswith("LOCKED"), out.stdout + out.stderr
    s.close()
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.startswith("OPENED"), out.stdout + out.stderr


# ------------------------------------------------------------------------------------------------ factory


def test_open_store_specs(tmp_path: Path) -> None:
    s = open_store("memory")
    assert isinstance(s, QdrantStore) and s.local
    s.close()
    e = open_store(f"edge:{tmp_path / 'x'}")
    assert isinstance(e, EdgeStore) and (tmp_path / "x").is_dir()
    e.close()
    q = open_store("qdrant:http://127.0.0.1:1")  # nothing listens there: a transient, retryable error
    assert isinstance(q, QdrantStore) and not q.local
    with pytest.raises(StoreUnavailable):
        q.count(C)
    q.close()
    for bad in ("", "edge:", "qdrant:", "qdrant:localhost:6334", "redis://x"):
        with pytest.raises(InvalidArgument):
            open_store(bad)


def test_qdrant_grpc_requests_on_the_wire_against_fake_qdrant_server() -> None:
    """FAKE Qdrant server (no Qdrant server binary can be installed here): the production path
    (qdrant-client over gRPC) against a stand-in that records requests, so the messages on the wire
    are checked: named vectors, wait=True, the payload filter and RRF k=60, and the index settings the
    embedded store builds (HNSW m / payload_m, int8 quantization) sent at collection creation."""
    import grpc
    from google.protobuf.json_format import MessageToDict
    from qdrant_client.grpc import collections_pb2, collections_service_pb2_grpc, points_pb2, points_service_pb2_grpc

    seen: dict[str, list[dict]] = {}

    class FakePoints(points_service_pb2_grpc.PointsServicer):
        def _rec(self, name: str, req: object) -> None:
            seen.setdefault(name, []).append(MessageToDict(req))  # type: ignore[arg-type]

        def Upsert(self, req, ctx):
            self._rec("upsert", req)
            return points_pb2.PointsOperationResponse(
                result=points_pb2.UpdateResult(operation_id=1, status=points_pb2.Completed)
            )

        def Delete(self, req, ctx):
            self._rec("delete", req)
            return points_pb2.PointsOperationResponse(
                result=points_pb2.UpdateResult(operation_id=2, status=points_pb2.Completed)
            )

        def Query(self, req, ctx):
            self._rec("query", req)
            return points_pb2.QueryResponse()

        def Count(self, req, ctx):
            self._rec("count", req)
            return points_pb2.CountResponse(result=points_pb2.CountResult(count=7))

    class FakeCollections(collections_service_pb2_grpc.CollectionsServicer):
        def CollectionExists(self, req, ctx):
            return collections_pb2.CollectionExistsResponse(result=collections_pb2.CollectionExists(exists=False))

        def Create(self, req, ctx):
            seen.setdefault("create", []).append(MessageToDict(req))
            return collections_pb2.CollectionOperationResponse(result=True)

        def Get(self, req, ctx):  # not faked further: ensure_collection stops at its shape check
            ctx.abort(grpc.StatusCode.NOT_FOUND, "fake server keeps no collections")

    server = grpc.server(ThreadPoolExecutor(2))
    points_service_pb2_grpc.add_PointsServicer_to_server(FakePoints(), server)
    collections_service_pb2_grpc.add_CollectionsServicer_to_server(FakeCollections(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    store = open_store(f"qdrant:http://127.0.0.1:{port}")
    try:
        assert isinstance(store, QdrantStore)
        with pytest.raises(CollectionNotFound):
            store.ensure_collection(C, 8)
        store._dims[C], store._has_sparse[C] = 8, True  # skip GetCollectionInfo (not faked)
        v = np.ones(8, np.float32)
        store.upsert(C, [chunk(v, "a", "d", 0, sparse=SparseVector([3, 5], [0.5, 1.0]))])
        flt = SearchFilter(tenant="a", metadata={"source": "pdf"})
        assert store.search(C, v, 5, flt) == []
        assert store.search_hybrid(C, v, SparseVector([3], [1.0]), 5, flt) == []
        assert store.count(C, flt) == 7
        store.delete_by_doc(C, "a", "d")
    finally:
        store.close()
        server.stop(None)

    create = seen["create"][0]
    ix = IndexSettings.from_env()
    assert create["hnswConfig"]["m"] == str(ix.m) and create["hnswConfig"]["payloadM"] == str(ix.payload_m)
    assert create["quantizationConfig"]["scalar"]["type"] == "Int8"
    assert create["vectorsConfig"]["paramsMap"]["map"]["dense"]["size"] == "8"
    up = seen["upsert"][0]
    assert up["wait"] is True and set(up["points"][0]["vectors"]["vectors"]["vectors"]) == {"dense", "lexical"}
    assert up["points"][0]["payload"]["tenant"] == {"stringValue": "a"}
    search, hybrid = seen["query"]
    assert search["using"] == "dense" and search["limit"] == "5"
    keys = {c["field"]["key"]: c["field"]["match"]["keyword"] for c in search["filter"]["must"]}
    assert keys == {"tenant": "a", "metadata.source": "pdf"}
    assert hybrid["query"]["rrf"]["k"] == 60
    assert [p["using"] for p in hybrid["prefetch"]] == ["dense", "lexical"]
    dele = seen["delete"][0]
    assert dele["wait"] is True
    assert {c["field"]["key"] for c in dele["points"]["filter"]["must"]} == {"tenant", "doc_id"}


def test_wire_payloads_travel_as_json_and_bad_json_is_refused() -> None:
    from vien.store import wire
    from vien.store.base import Hit
    from vien.v1 import store_pb2

    payload = {"tenant": "t", "doc_id": "d", "chunk_index": 3, "text": "Tiếng Việt có dấu", "version": 7,
               "metadata": {"k": "v"}, "n_chunks": 4}
    p = Point(chunk_id("t", "d", 3), np.ones(4, np.float32), payload)
    msg = wire.point_to_pb(p)
    assert msg.payload_json and not msg.HasField("payload")
    assert wire.point_from_pb(store_pb2.StorePoint.FromString(msg.SerializeToString())).payload == payload
    for as_json in (True, False):  # the Struct form (older peers) still reads back, integers restored
        raw = wire.hits_to_pb([Hit(p.id, 0.5, payload)], as_json).SerializeToString()
        resp = store_pb2.HitsResponse.FromString(raw)
        assert wire.hits_from_pb(resp)[0].payload == payload
    for bad, problem in ((b"[1, 2]", "must be a JSON object"), (b"{", "not valid JSON")):
        with pytest.raises(InvalidArgument) as exc:
            wire.point_from_pb(store_pb2.StorePoint(id=p.id, vector=msg.vector, payload_json=bad), "points[2]")
        assert exc.value.field == "points[2].payload_json" and problem in exc.value.message


def test_the_store_service_drops_a_collection_and_selects_payloads_like_the_engine(tmp_path: Path) -> None:
    """RemoteStore (what search and ingest use under `vien up`) implements the whole interface."""
    from conftest import serve_process

    from vien.store.remote import RemoteStore
    from vien_tools.cli.processes import free_port

    port = free_port()
    proc = serve_process("store", port, {"VIEN_STORE_BACKEND": f"edge:{tmp_path / 'edge'}", "VIEN_TRACING": "0"})
    remote = RemoteStore(f"127.0.0.1:{port}", timeout_s=30)
    try:
        remote.ensure_collection("gone", 8, sparse=False)
        assert remote.collections() == {"gone": 8}
        assert remote.drop_collection("gone") is True
        assert remote.drop_collection("gone") is False
        assert remote.collections() == {}
        check_payload_selection(remote)  # the new fields of Query and the Retrieve RPC, over gRPC
        from vien.v1 import store_pb2

        hybrid = store_pb2.QueryRequest(collection="sel", mode=store_pb2.STORE_QUERY_MODE_HYBRID, top_k=5,
                                        vector=np.ones(D, "<f4").tobytes(), sparse=store_pb2.StoreSparseVector(
                                            indices=[1], values=[1.0]), payload_fields=store_pb2.PayloadFields())
        with pytest.raises(InvalidArgument) as exc:  # the engine's own RRF: no payload selection there
            remote._call("Query", hybrid)
        assert exc.value.field == "payload_fields"
        with pytest.raises(InvalidArgument) as exc:
            remote.retrieve("sel", [chunk_id("a", "d", i) for i in range(10_001)])
        assert exc.value.field == "ids" and "10000" in exc.value.message
    finally:
        remote.close()
        proc.terminate()
        proc.wait(timeout=30)

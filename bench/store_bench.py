"""`vien bench store`: the vector store layer on its own (no embedding), both adapters.

(a) EdgeStore (Qdrant Edge, on disk in a temp dir, durable=True: flushed after every batch):
    upsert N random unit vectors (default 100,000 × 384, 3 tenants, batches of 1,000), then 500
    tenant-filtered top-10 searches through the store API (payload returned) on the freshly written
    appendable segment (exact scan), then `optimize()` (HNSW build) and the same searches again, then
    reopened with hnsw_ef=256 and searched again; recall@1/@10 against numpy's exact answer;
(b) QdrantStore in qdrant-client local mode (pure Python) at a smaller N (default 20,000), for contrast.

Queries are corpus vectors plus noise (a near neighbour exists), filtered to one tenant (1/3 of points).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services"))

from vien.store import Point, SearchFilter, VectorStore
from vien.store.edge import EdgeStore
from vien.store.qdrant import QdrantStore

TENANTS = ("t0", "t1", "t2")
COLLECTION = "bench"


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1e3, p))


def _load(store: VectorStore, X: np.ndarray, ids: list[str], batch: int) -> float:
    store.ensure_collection(COLLECTION, X.shape[1], sparse=False)
    t0 = time.perf_counter()
    for b in range(0, len(X), batch):
        store.upsert(
            COLLECTION,
            [
                Point(
                    id=ids[i],
                    vector=X[i],
                    payload={
                        "tenant": TENANTS[i % 3],
                        "doc_id": f"d{i}",
                        "chunk_index": 0,
                        "lang": "vi",
                        "text": f"chunk {i}",
                        "version": 1,
                    },
                )
                for i in range(b, min(b + batch, len(X)))
            ],
        )
    return time.perf_counter() - t0


def _queries(rng: np.random.Generator, X: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    rows = rng.integers(0, len(X), n)
    Q = X[rows] + 0.5 * _unit(rng, n, X.shape[1]) / np.sqrt(2)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    return Q.astype(np.float32), rows


def _search(store: VectorStore, Q: np.ndarray, rows: np.ndarray, X: np.ndarray, ids: list[str]) -> dict:
    """Latency of tenant-filtered top-10 searches; recall against numpy's exact answer on the first 100.

    recall@1: the planted neighbour (the corpus vector the query was made from) comes first.
    recall@10: overlap with the exact top-10; on random data ranks 2-10 sit at noise-level similarity,
    the worst case for an approximate (HNSW) index, so read it as a lower bound.
    """
    lat, r1, r10 = [], [], []
    tenant_of = np.arange(len(X)) % 3
    for j, q in enumerate(Q):
        t = int(rows[j] % 3)
        t0 = time.perf_counter()
        hits = store.search(COLLECTION, q, 10, SearchFilter(tenant=TENANTS[t]))
        lat.append(time.perf_counter() - t0)
        assert all(h.payload["tenant"] == TENANTS[t] for h in hits)
        if j < 100:
            sims = X @ q
            sims[tenant_of != t] = -2.0
            truth = {ids[i] for i in np.argpartition(-sims, 10)[:10]}
            r1.append(bool(hits) and hits[0].id == ids[int(np.argmax(sims))])
            r10.append(len(truth & {h.id for h in hits}) / 10)
    return {
        "search_p50_ms": _pct(lat, 50),
        "search_p99_ms": _pct(lat, 99),
        "recall_at_1": float(np.mean(r1)),
        "recall_at_10": float(np.mean(r10)),
    }


def _data(n: int, dims: int, queries: int, seed: int) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = _unit(rng, n, dims)
    ids = [str(uuid.UUID(int=int(rng.integers(0, 2**62)) << 64 | i)) for i in range(n)]
    Q, rows = _queries(rng, X, queries)
    return X, ids, Q, rows


def _load_and_search(store: VectorStore, X: np.ndarray, ids: list[str], Q: np.ndarray, rows: np.ndarray) -> dict:
    upsert_s = _load(store, X, ids, 1000)
    out: dict = {"points": len(X), "dims": X.shape[1], "batch": 1000, "queries": len(Q), "upsert_s": upsert_s}
    out["points_per_s"] = len(X) / upsert_s
    store.search(COLLECTION, Q[0], 10, SearchFilter(tenant="t0"))  # warm
    out.update(_search(store, Q, rows, X, ids))
    assert store.count(COLLECTION) == len(X)
    return out


def bench_edge(n: int, dims: int, queries: int, optimize: bool, hnsw_ef: int, seed: int = 1) -> dict:
    X, ids, Q, rows = _data(n, dims, queries, seed)
    with tempfile.TemporaryDirectory(prefix="vien-store-bench-") as tmp:
        store = EdgeStore(Path(tmp) / "edge")  # durable=True: flushed after every batch
        try:
            out = _load_and_search(store, X, ids, Q, rows)  # appendable segment: exact scan
            if optimize:
                t0 = time.perf_counter()
                store.optimize(COLLECTION)  # HNSW build
                out["optimize_s"] = time.perf_counter() - t0
                out.update({f"hnsw_{k}": v for k, v in _search(store, Q, rows, X, ids).items()})
        finally:
            store.close()
        if optimize:
            t0 = time.perf_counter()
            store = EdgeStore(Path(tmp) / "edge", hnsw_ef=hnsw_ef)
            out["reopen_s"] = time.perf_counter() - t0
            try:
                out.update({f"hnsw_ef{hnsw_ef}_{k}": v for k, v in _search(store, Q, rows, X, ids).items()})
            finally:
                store.close()
    return out


def bench_local(n: int, dims: int, queries: int, seed: int = 2) -> dict:
    X, ids, Q, rows = _data(n, dims, queries, seed)
    store = QdrantStore(location=":memory:")
    try:
        return _load_and_search(store, X, ids, Q, rows)
    finally:
        store.close()


def run(ns: argparse.Namespace | None = None) -> dict:
    n_edge = getattr(ns, "store_points", None) or 100_000
    n_local = getattr(ns, "store_local_points", None) or 20_000
    dims = getattr(ns, "store_dims", None) or 384
    queries = getattr(ns, "store_queries", None) or 500
    optimize = not getattr(ns, "no_optimize", False)
    hnsw_ef = getattr(ns, "store_hnsw_ef", None) or 256
    edge = bench_edge(n_edge, dims, queries, optimize, hnsw_ef)
    # local mode scans in Python (~25 ms a query at 2k points): fewer queries keep the run short
    local_queries = getattr(ns, "store_local_queries", None) or min(queries, 100)
    local = bench_local(n_local, dims, local_queries)
    result = {"bench": "store", "cpus": os.cpu_count(), "edge": edge, "qdrant_local": local}

    def rnd(d: dict) -> dict:
        return {k: rnd(v) if isinstance(v, dict) else round(v, 3) if isinstance(v, float) else v for k, v in d.items()}

    return rnd(result)


if __name__ == "__main__":
    import json

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--points", dest="store_points", type=int, help="EdgeStore points (default 100000)")
    p.add_argument("--local-points", dest="store_local_points", type=int, help="local-mode points (default 20000)")
    p.add_argument("--dims", dest="store_dims", type=int)
    p.add_argument("--queries", dest="store_queries", type=int)
    p.add_argument("--local-queries", dest="store_local_queries", type=int, help="local-mode queries (default 100)")
    p.add_argument("--no-optimize", action="store_true", help="skip the HNSW build and the searches after it")
    p.add_argument("--hnsw-ef", dest="store_hnsw_ef", type=int, help="ef of the last Edge search pass (default 256)")
    print(json.dumps(run(p.parse_args())))

"""`vien bench store`: the vector store alone (Qdrant Edge in process, no embedding), at 100k-1M points.

Data (`--data`): `realistic` (default; bench/realistic.py: derived from real e5 embeddings of the eval
corpora, unequal tenants, lexical vectors) or `random` (independent unit vectors: the labelled worst case).

1. Fill N points (batches of 1,000, each acknowledged = flushed), payload as ingest writes it; RSS after.
2. Exact phase (no index yet; automatic build held off): `--queries` tenant-filtered top-10 searches,
   dense and hybrid, timed; their exact answers (brute force, full vectors) kept as the truth.
3. Index build as the store runs it (child process on a copy; `optimize()` = the same build, waited for)
   while a thread keeps searching: build time, and the search latency during the build vs before it.
4. Indexed phase, for each ef of `--ef` (default 32,64,128,256): p50/p99 and recall@10 against the exact
   truth, dense and hybrid (RRF over dense + lexical candidates: the truth is the same fusion with the
   dense side exact).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import qdrant_edge as qe
import realistic

from vien.store import SearchFilter
from vien.store.edge import EdgeStore
from vien.store.indexing import IndexSettings

COLLECTION = "bench"


def _pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(xs), p)) if xs else float("nan")


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _du_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def _timed(fn: Any, qs: list[tuple[np.ndarray, Any]]) -> tuple[list[float], list[list[str]]]:
    lat, ids = [], []
    for v, sv in qs:
        t0 = time.perf_counter()
        hits = fn(v, sv)
        lat.append((time.perf_counter() - t0) * 1e3)
        ids.append([h.id for h in hits])
    return lat, ids


def _recall(got: list[list[str]], truth: list[list[str]]) -> float:
    return float(np.mean([len(set(g) & set(t)) / max(1, len(t)) for g, t in zip(got, truth, strict=True)]))


def _tie_recall(got: list[list[str]], truth20: list[list[Any]], k: int = 10) -> float:
    """recall@k where a hit whose exact fused score ties the exact k-th score counts as right: RRF gives
    equal scores to different documents (rank r on one side only), and which of them lands in the top k
    is arbitrary in both answers."""
    out = []
    for g, t in zip(got, truth20, strict=True):
        score = {h.id: h.score for h in t}
        kth = t[k - 1].score if len(t) >= k else -1.0
        top = {h.id for h in t[:k]}
        out.append(sum(1 for i in g if i in top or score.get(i, -2.0) >= kth - 1e-9) / max(1, min(k, len(t))))
    return float(np.mean(out))


def bench_edge(n: int, data: str, n_queries: int, efs: list[int], quantization: str, share: float,
               build: bool = True) -> dict:
    dims = 384
    base = realistic.load_base() if data == "realistic" else None
    qs = realistic.queries(base, n_queries, dims)
    flt = SearchFilter(tenant=realistic.SEARCHED)
    # the build is started below, on cue; threads etc. from the environment (VIEN_INDEX_THREADS, ...)
    ix = dataclasses.replace(IndexSettings.from_env(), threshold=0, quantization=quantization)
    out: dict[str, Any] = {"points": n, "data": data, "dims": dims, "queries": n_queries,
                           "quantization": quantization, "index": {"m": ix.m, "payload_m": ix.payload_m,
                                                                   "ef_construct": ix.ef_construct,
                                                                   "threads": ix.threads}}
    if base is not None:
        out["base"] = base.source
    with tempfile.TemporaryDirectory(prefix="vien-store-bench-") as tmp:
        store = EdgeStore(Path(tmp) / "edge", index=ix)
        try:
            store.ensure_collection(COLLECTION, dims, sparse=True)
            rss0 = _rss_mb()
            t0 = time.perf_counter()
            for batch in realistic.points(base, n, dims, share):
                store.upsert(COLLECTION, batch)
            out["fill_s"] = time.perf_counter() - t0
            out["fill_points_per_s"] = n / out["fill_s"]
            out["tenant_points"] = store.count(COLLECTION, flt)
            out["rss_after_fill_mb"] = _rss_mb()
            out["rss_growth_fill_mb"] = out["rss_after_fill_mb"] - rss0
            out["disk_mb"] = _du_mb(Path(tmp))

            def dense(v: np.ndarray, sv: Any) -> list:
                return store.search(COLLECTION, v, 10, flt)

            def hybrid(v: np.ndarray, sv: Any) -> list:
                return store.search_hybrid(COLLECTION, v, sv, 10, flt, prefetch_k=40)

            dense(*qs[0])
            lat_d, truth_d = _timed(dense, qs)
            lat_h, _truth_h = _timed(hybrid, qs)
            _, exact_d = _timed(lambda v, sv: store.search_exact(COLLECTION, v, 10, flt), qs)
            _, exact_h = _timed(lambda v, sv: store.search_hybrid(COLLECTION, v, sv, 10, flt, 40, exact=True), qs)
            exact_h20 = [store.search_hybrid(COLLECTION, v, sv, 20, flt, 40, exact=True) for v, sv in qs]
            out["exact_dense_p50_ms"], out["exact_dense_p99_ms"] = _pct(lat_d, 50), _pct(lat_d, 99)
            out["exact_hybrid_p50_ms"], out["exact_hybrid_p99_ms"] = _pct(lat_h, 50), _pct(lat_h, 99)
            out["exact_scan_recall_check"] = _recall(truth_d, exact_d)  # plain segments: 1.0
            if not build:
                return out

            # the build, under a steady query load
            during: list[float] = []
            done = threading.Event()

            def load() -> None:
                k = 0
                while not done.is_set():
                    v, _sv = qs[k % len(qs)]
                    t1 = time.perf_counter()
                    store.search(COLLECTION, v, 10, flt)
                    during.append((time.perf_counter() - t1) * 1e3)
                    k += 1
                    time.sleep(0.02)

            th = threading.Thread(target=load, daemon=True)
            th.start()
            t0 = time.perf_counter()
            store.optimize(COLLECTION)
            out["build_s"] = time.perf_counter() - t0
            done.set()
            th.join()
            out["during_build_searches"] = len(during)
            out["during_build_p50_ms"], out["during_build_max_ms"] = _pct(during, 50), max(during)
            out["during_build_worst_extra_ms"] = max(during) - _pct(lat_d, 50)
            out["rss_after_build_mb"] = _rss_mb()
            out["disk_after_build_mb"] = _du_mb(Path(tmp))
            out["index_status"] = store.index_status(COLLECTION)
            curve = []
            for ef in efs:
                quant = (qe.QuantizationSearchParams(rescore=True, oversampling=ix.oversampling)
                         if quantization != "none" else None)
                store._params = qe.SearchParams(hnsw_ef=ef, quantization=quant)
                dense(*qs[0])
                ld, gd = _timed(dense, qs)
                lh, gh = _timed(hybrid, qs)
                curve.append({"ef": ef, "dense_p50_ms": _pct(ld, 50), "dense_p99_ms": _pct(ld, 99),
                              "dense_recall_at_10": _recall(gd, exact_d), "hybrid_p50_ms": _pct(lh, 50),
                              "hybrid_p99_ms": _pct(lh, 99), "hybrid_recall_at_10": _recall(gh, exact_h),
                              "hybrid_recall_at_10_ties": _tie_recall(gh, exact_h20),
                              # queries answered with fewer than 10 hits although the tenant has thousands
                              "dense_short_answers": sum(len(g) < 10 for g in gd),
                              "hybrid_short_answers": sum(len(g) < 10 for g in gh)})
            out["curve"] = curve
        finally:
            store.close()
    out["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run(ns: argparse.Namespace | None = None) -> dict:
    n = getattr(ns, "points", None) or 100_000
    data = getattr(ns, "data", None) or "realistic"
    queries = getattr(ns, "store_queries", None) or 200
    efs = [int(x) for x in (getattr(ns, "ef", None) or "32,64,128,256").split(",")]
    quant = getattr(ns, "quantization", None) or "int8"
    share = getattr(ns, "tenant_share", None) or 0.5
    build = not getattr(ns, "no_build", False)
    result = {"bench": "store", "cpus": os.cpu_count(),
              "edge": bench_edge(n, data, queries, efs, quant, share, build)}

    def rnd(d: Any) -> Any:
        if isinstance(d, dict):
            return {k: rnd(v) for k, v in d.items()}
        if isinstance(d, list):
            return [rnd(v) for v in d]
        return round(d, 3) if isinstance(d, float) else d

    return rnd(result)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=int, help="points (default 100000)")
    p.add_argument("--data", choices=["realistic", "random"], help="default realistic")
    p.add_argument("--queries", dest="store_queries", type=int, help="queries per figure (default 200)")
    p.add_argument("--ef", help="comma-separated hnsw_ef values (default 32,64,128,256)")
    p.add_argument("--quantization", choices=["int8", "none"], help="default int8")
    p.add_argument("--tenant-share", dest="tenant_share", type=float, help="searched tenant's share (default 0.5)")
    p.add_argument("--no-build", dest="no_build", action="store_true", help="fill and exact searches only")
    print(json.dumps(run(p.parse_args())))

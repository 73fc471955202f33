"""Where the hybrid store stage goes: candidate payloads and store-service hops (issue "search at scale").

`python bench/hybrid_payload_bench.py --points 30000 --queries 100`

One `vien serve store` (Qdrant Edge, real gRPC on loopback) filled with N realistic points (bench/realistic.py,
the searched tenant holding half), indexed; derived queries (dense vector + lexical terms of a real chunk).

1. Per call, through the store service, then on the same shard in this process: dense / sparse top-100
   candidates with their full payloads, with `lang` only, with none (sparse: plus the best hit's full
   payload, `full_head=1`), `retrieve` of 10 ids, dense top-10 (what a dense search costs).
2. The search service's store stage of a hybrid search (`Searcher._hybrid`, weighted fusion, tenant filter),
   interleaved in one process: as before this change (every candidate with its full payload, fused hits
   keep those payloads: the same traffic as the code before); with only the best lexical candidate's full
   payload and one `retrieve` for the final top-10 every time (`head1_retrieve`); and now (the first top-10
   of each list with their full payloads, the others with the fields the fusion reads, a `retrieve` only
   for final hits from further down both lists); with the dense top-10 call as the yardstick; and the
   split of the new path (each candidate call as its caller sees it, the fusion, the retrieves).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services"))

from vien.runtime.config import Settings
from vien.store.base import Hit, SearchFilter

K = 100  # prefetch_k of the shipped profile


def p50(xs: list[float]) -> float:
    return round(float(np.percentile(np.asarray(xs), 50)), 3)


def per_call(store: Any, coll: str, probes: list[Any], flt: SearchFilter) -> dict[str, float]:
    def timed(fn: Callable[[Any, Any], object]) -> float:
        xs = []
        for v, sv in probes:
            t = time.perf_counter()
            fn(v, sv)
            xs.append((time.perf_counter() - t) * 1e3)
        return p50(xs)

    top10 = {id(v): [h.id for h in store.search(coll, v, 10, flt, [])] for v, _ in probes}
    return {
        "dense10_full": timed(lambda v, sv: store.search(coll, v, 10, flt)),
        "dense100_full": timed(lambda v, sv: store.search(coll, v, K, flt)),
        "dense100_lang": timed(lambda v, sv: store.search(coll, v, K, flt, ["lang"])),
        "dense100_none": timed(lambda v, sv: store.search(coll, v, K, flt, [])),
        "sparse100_full": timed(lambda v, sv: store.search_sparse(coll, sv, K, flt)),
        "sparse100_none_head1": timed(lambda v, sv: store.search_sparse(coll, sv, K, flt, [], 1)),
        "dense100_lang_head10": timed(lambda v, sv: store.search(coll, v, K, flt, ["lang"], 10)),
        "sparse100_none_head10": timed(lambda v, sv: store.search_sparse(coll, sv, K, flt, [], 10)),
        "retrieve10": timed(lambda v, sv: store.retrieve(coll, top10[id(v)], flt)),
    }


def run(ns: argparse.Namespace) -> dict[str, Any]:
    import realistic
    from conftest import serve_process

    from vien.store.edge import EdgeStore
    from vien.store.remote import RemoteStore
    from vien_search import fusion
    from vien_search.logic import Searcher
    from vien_tools.cli.processes import free_port

    class FullCandidates:
        """The store as the search service used it before: every candidate with its full payload."""

        def __init__(self, store: Any) -> None:
            self.store = store

        def search(self, c: str, v: Any, k: int, f: Any = None, fields: Any = None, head: int = 0) -> list[Hit]:
            return self.store.search(c, v, k, f)

        def search_sparse(self, c: str, sv: Any, k: int, f: Any = None, fields: Any = None,
                          head: int = 0) -> list[Hit]:
            return self.store.search_sparse(c, sv, k, f)

    class Before(Searcher):
        async def _full_payloads(self, coll: str, hits: list[Hit], flt: SearchFilter, known: list[Hit]) -> list[Hit]:
            return hits  # the fused hits keep their candidates' (full) payloads

    class Head1(Searcher):
        """Only the best lexical hit's payload with the candidates: the final ones always from a retrieve."""

        @staticmethod
        def _full_head(top_k: int) -> int:
            return 1

    class Timed:
        """Times the calls the new path makes (as its caller sees them)."""

        def __init__(self, store: Any, split: dict[str, list[float]]) -> None:
            self.store, self.split = store, split

        def _t(self, name: str, fn: Callable[..., Any], *a: Any) -> Any:
            t = time.perf_counter()
            out = fn(*a)
            self.split.setdefault(name, []).append((time.perf_counter() - t) * 1e3)
            return out

        def search(self, *a: Any) -> list[Hit]:
            return self._t("dense_candidates", self.store.search, *a)

        def search_sparse(self, *a: Any) -> list[Hit]:
            return self._t("sparse_candidates", self.store.search_sparse, *a)

        def retrieve(self, *a: Any) -> dict[str, Any]:
            return self._t("retrieve", self.store.retrieve, *a)

    settings = Settings.from_env()
    cfg = settings.config
    prof = cfg.profiles[cfg.routing.default]
    coll = prof.collection
    base = realistic.load_base()
    probes = realistic.queries(base, ns.queries, prof.dims)
    assert base is not None
    texts = [" ".join((base.payloads[i]["text"] or "x").split()[:6]) for i in range(len(probes))]
    flt = SearchFilter(tenant=realistic.SEARCHED)
    tmp = Path(tempfile.mkdtemp(prefix="vien-hybrid-payload-bench-"))
    port = free_port()
    proc = serve_process("store", port, {"VIEN_STORE_BACKEND": f"edge:{tmp / 'edge'}", "VIEN_TRACING": "0"})
    remote = RemoteStore(f"127.0.0.1:{port}", timeout_s=3600)
    out: dict[str, Any] = {"bench": "hybrid_payload", "points": ns.points, "queries": len(probes)}
    try:
        remote.ensure_collection(coll, prof.dims, True)
        for batch in realistic.points(base, ns.points, prof.dims, 0.5):
            remote.upsert(coll, batch)
        remote.optimize(coll)
        out["service"] = per_call(remote, coll, probes, flt)

        split: dict[str, list[float]] = {}
        now, before = Searcher(cfg, None, Timed(remote, split)), Before(cfg, None, FullCandidates(remote))
        head1 = Head1(cfg, None, remote)
        lat: dict[str, list[float]] = {"dense10": [], "hybrid_before": [], "hybrid_head1_retrieve": [],
                                       "hybrid_now": [], "fusion": []}
        weighted_sum = fusion.weighted_sum

        def timed_fusion(lists: Any) -> list[Hit]:
            t = time.perf_counter()
            fused = weighted_sum(lists)
            lat["fusion"].append((time.perf_counter() - t) * 1e3)
            return fused

        async def one(i: int) -> None:
            v, sv = probes[i]
            t = time.perf_counter()
            await asyncio.to_thread(remote.search, coll, v, 10, flt)
            lat["dense10"].append((time.perf_counter() - t) * 1e3)
            order: list[tuple[str, Searcher]] = [("hybrid_before", before), ("hybrid_head1_retrieve", head1),
                                                 ("hybrid_now", now)]
            results = {}
            for name, s in order[i % 3:] + order[:i % 3]:
                t = time.perf_counter()
                results[name] = await s._hybrid(prof, v, sv, 10, flt, texts[i], "vi")
                lat[name].append((time.perf_counter() - t) * 1e3)
            # same ids, scores and payloads
            assert results["hybrid_now"] == results["hybrid_before"] == results["hybrid_head1_retrieve"]

        async def main() -> None:
            for _ in range(ns.rounds):
                for i in range(len(probes)):
                    await one(i)

        fusion.weighted_sum = timed_fusion
        try:
            asyncio.run(main())
        finally:
            fusion.weighted_sum = weighted_sum
        stage = {k: p50(x) for k, x in lat.items()}
        stage.update({k: p50(x) for k, x in split.items()})
        stage["before_over_dense10"] = round(stage["hybrid_before"] / stage["dense10"], 2)
        stage["now_over_dense10"] = round(stage["hybrid_now"] / stage["dense10"], 2)
        stage["now_over_before"] = round(stage["hybrid_now"] / stage["hybrid_before"], 2)
        stage["head1_retrieve_over_before"] = round(stage["hybrid_head1_retrieve"] / stage["hybrid_before"], 2)
        stage["retrieves_now"] = len(split.get("retrieve", []))  # searches whose final hits left both heads
        out["stage"] = stage
    finally:
        remote.close()
        proc.terminate()
        proc.wait(timeout=60)
    try:
        edge = EdgeStore(tmp / "edge")  # the same shard, in this process
        try:
            out["inprocess"] = per_call(edge, coll, probes, flt)
        finally:
            edge.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=int, default=30000, help="points in the collection (default 30000)")
    p.add_argument("--queries", type=int, default=100, help="derived queries (default 100)")
    p.add_argument("--rounds", type=int, default=3, help="passes over the queries for the stage figures (3)")
    print(json.dumps(run(p.parse_args()), ensure_ascii=False))

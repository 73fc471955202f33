"""`vien bench query`: latency and throughput of the query path, measured as ratios in one run.

(a) raw in-process onnxruntime (tokenise + run) for one short query, the floor;
(b) the same texts through client -> router -> query-embedder over gRPC with a real cache miss
    (Redis flushed before each timed call, the flush not timed); (a) and (b) are interleaved call by
    call so machine noise hits both alike;
(c) cache hits; (d) throughput at concurrency 1, 8 and 32 (distinct texts, cache lookups bypassed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from vien.embedding.encoders import load_onnx_encoder
from vien.runtime.config import Settings
from vien.v1 import common_pb2, router_pb2, router_pb2_grpc
from vien_tools.build.setup import ensure_builtin_models

SHORT_QUERIES = [
    "giá vàng hôm nay", "cách làm hộ chiếu online", "thời tiết Đà Lạt tuần này", "luật giao thông mới nhất",
    "mua điện thoại cũ ở đâu", "học tiếng Anh giao tiếp", "best pho in hanoi", "how to renew a passport",
    "cheap flights to saigon", "lai suat vay mua nha", "benh vien nhi trung uong", "visa requirements vietnam",
    "triệu chứng sốt xuất huyết", "python list comprehension", "cong thuc banh flan", "tax refund deadline",
    "tuyển dụng kế toán Hà Nội", "điểm chuẩn đại học 2025", "weather in da nang", "sửa máy lạnh tại nhà",
]
Q = common_pb2.EMBED_KIND_QUERY


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1e3, p))


async def throughput(address: str, concurrency: int, seconds: float, offset: int) -> float:
    texts = [f"{SHORT_QUERIES[i % len(SHORT_QUERIES)]} {offset + i}" for i in range(20000)]
    done = 0
    stop_at = time.perf_counter() + seconds
    async with grpc.aio.insecure_channel(address) as ch:
        stub = router_pb2_grpc.RouterStub(ch)
        await stub.Embed(router_pb2.EmbedRequest(texts=["warm"], kind=Q), timeout=30)
        it = iter(texts)
        t0 = time.perf_counter()

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop_at:
                await stub.Embed(router_pb2.EmbedRequest(texts=[next(it)], kind=Q, bypass_cache=True), timeout=30)
                done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.perf_counter() - t0)


def run(ns: argparse.Namespace | None = None) -> dict:
    n = getattr(ns, "requests", 300)
    seconds = getattr(ns, "seconds", 8.0)
    from conftest import start_mesh, stop_mesh  # the same `vien up` the tests use

    settings = Settings.from_env()
    ensure_builtin_models(settings)
    prof = settings.config.profiles[settings.config.routing.default]
    enc_cfg = settings.config.encoders[prof.query_encoder]
    encoder = load_onnx_encoder(enc_cfg, settings)

    mesh = start_mesh(Path(tempfile.mkdtemp(prefix="vien-bench-")))
    try:
        r = redis.Redis.from_url(f"redis://{mesh.addrs['redis']}/0")
        with grpc.insecure_channel(mesh.router) as ch:
            stub = router_pb2_grpc.RouterStub(ch)
            for q in SHORT_QUERIES:  # warm both paths
                stub.Embed(router_pb2.EmbedRequest(texts=[q], kind=Q), timeout=30)
                encoder.embed_ids(encoder.tokenize([prof.prompt("query", q)]))
            raw, miss, hit = [], [], []
            for i in range(n):
                q = SHORT_QUERIES[i % len(SHORT_QUERIES)]
                t0 = time.perf_counter()
                encoder.embed_ids(encoder.tokenize([prof.prompt("query", q)]))
                raw.append(time.perf_counter() - t0)
                r.flushdb()
                t0 = time.perf_counter()
                e = stub.Embed(router_pb2.EmbedRequest(texts=[q], kind=Q), timeout=30).embeddings[0]
                miss.append(time.perf_counter() - t0)
                assert not e.cache_hit
                time.sleep(0.002)  # the cache write lands after the reply (untimed)
                t0 = time.perf_counter()
                e = stub.Embed(router_pb2.EmbedRequest(texts=[q], kind=Q), timeout=30).embeddings[0]
                hit.append(time.perf_counter() - t0)
                assert e.cache_hit
        qps = {c: asyncio.run(throughput(mesh.router, c, seconds, offset=c * 10000)) for c in (1, 8, 32)}
    finally:
        stop_mesh(mesh)

    result = {
        "bench": "query",
        "model": f"{encoder.model_id} ({encoder.variant})",
        "requests": n,
        "cpus": os.cpu_count(),
        "raw_p50_ms": pct(raw, 50), "raw_p99_ms": pct(raw, 99),
        "mesh_miss_p50_ms": pct(miss, 50), "mesh_miss_p99_ms": pct(miss, 99),
        "cache_hit_p50_ms": pct(hit, 50), "cache_hit_p99_ms": pct(hit, 99),
        "qps_c1": qps[1], "qps_c8": qps[8], "qps_c32": qps[32],
    }
    result["ratio_mesh_over_raw"] = result["mesh_miss_p50_ms"] / result["raw_p50_ms"]
    result["ratio_c32_over_c1"] = qps[32] / qps[1]
    result["targets_met"] = {
        "mesh_p50_le_1.5x_raw": result["ratio_mesh_over_raw"] <= 1.5,
        "cache_hit_p50_le_1.5ms": result["cache_hit_p50_ms"] <= 1.5,
        "c32_ge_2x_c1": result["ratio_c32_over_c1"] >= 2.0,
    }
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}


if __name__ == "__main__":
    import json

    print(json.dumps(run()))

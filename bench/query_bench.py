"""`vien bench query`: latency and throughput of the query path, measured as ratios in one run.

One ladder, a rung per hop, interleaved call by call so machine noise hits every rung alike:
(a) raw in-process onnxruntime (tokenise + run) for one short query, the floor, configured like the
    service (same model file, VIEN_ORT_THREADS / VIEN_ORT_SPIN);
(b) client -> query-embedder over gRPC (cache lookup skipped, as the router asks for it);
(c) client -> router -> query-embedder over gRPC with a real cache miss (Redis flushed before each timed
    call, the flush not timed);
(d) client -> HTTP gateway -> router -> query-embedder (`/v1/embeddings`, one kept-alive connection),
    a real cache miss too;
each hop's cost is the difference of neighbouring rungs' medians, and each server's own stage timings
(the `timings` of its reply) say how much of a hop is the server's work and how much transport.
Then cache hits, and throughput at concurrency 1, 8 and 32 (distinct texts, cache lookups bypassed).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import json
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
from vien.runtime import env
from vien.runtime.config import Settings
from vien.v1 import common_pb2, embedder_pb2, embedder_pb2_grpc, router_pb2, router_pb2_grpc
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


def _median_stages(replies: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for r in replies for k in r})
    return {k: round(float(np.median([r.get(k, 0.0) for r in replies])), 3) for k in keys}


def _spin_env(setting: str) -> dict[str, str]:
    """`off`, `on` or `on:US` -> the VIEN_ORT_SPIN* variables of that setting."""
    on, _, us = setting.strip().partition(":")
    if on not in ("off", "on") or (us and (on == "off" or not us.isdigit())):
        raise ValueError(f"--ort-spin: {setting!r} is not off, on or on:MICROSECONDS")
    return {"VIEN_ORT_SPIN": "1" if on == "on" else "0", "VIEN_ORT_SPIN_US": us or "0"}


def run(ns: argparse.Namespace | None = None) -> dict:
    """One ladder per `--ort-spin` setting (each with its own mesh; the variables reach `vien up`'s
    children and the in-process raw session alike), or one with the environment's settings."""
    settings = [x for x in (getattr(ns, "ort_spin", "") or "").split(",") if x.strip()]
    if not settings:
        return run_one(ns)
    saved = {k: os.environ.get(k) for k in ("VIEN_ORT_SPIN", "VIEN_ORT_SPIN_US")}
    out: dict = {"bench": "query", "settings": {}}
    try:
        for setting in settings:
            os.environ.update(_spin_env(setting))
            out["settings"][setting.strip()] = run_one(ns)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    keys = ("raw_p50_ms", "router_p50_ms", "http_p50_ms", "cache_hit_p50_ms", "qps_c1", "qps_c8", "qps_c32",
            "ratio_mesh_over_raw", "ratio_c32_over_c1")
    out["summary"] = {s: {k: r[k] for k in keys} for s, r in out["settings"].items()}
    return out


def run_one(ns: argparse.Namespace | None = None) -> dict:
    n = getattr(ns, "requests", 300)
    seconds = getattr(ns, "seconds", 8.0)
    from conftest import start_mesh, stop_mesh  # the same `vien up` the tests use

    settings = Settings.from_env()
    ensure_builtin_models(settings)
    pname = settings.config.routing.default
    prof = settings.config.profiles[pname]
    enc_cfg = settings.config.encoders[prof.query_encoder]
    encoder = load_onnx_encoder(enc_cfg, settings)

    mesh = start_mesh(Path(tempfile.mkdtemp(prefix="vien-bench-")))
    try:
        r = redis.Redis.from_url(f"redis://{mesh.addrs['redis']}/0")
        host, port = mesh.addrs["http"].rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        with grpc.insecure_channel(mesh.router) as ch, grpc.insecure_channel(mesh.addrs["query-embedder"]) as ech:
            stub = router_pb2_grpc.RouterStub(ch)
            estub = embedder_pb2_grpc.QueryEmbedderStub(ech)
            stages: dict[str, list[dict[str, float]]] = {"router": [], "query_embedder": []}

            def misses() -> int:
                return int(r.info("stats")["keyspace_misses"])

            def raw(q: str) -> bool:
                encoder.embed_ids(encoder.tokenize([prof.prompt("query", q)]))
                return True

            def embedder(q: str) -> bool:
                rep = estub.Encode(embedder_pb2.EncodeRequest(texts=[q], profile=pname, bypass_cache=True),
                                   timeout=30)
                stages["query_embedder"].append(dict(rep.timings.stage_ms))
                return True

            def router(q: str) -> bool:
                rep = stub.Embed(router_pb2.EmbedRequest(texts=[q], kind=Q, profile=pname), timeout=30)
                if rep.embeddings[0].cache_hit:
                    return False
                stages["router"].append(dict(rep.timings.stage_ms))
                return True

            def gateway(q: str) -> bool:
                before = misses()
                conn.request("POST", "/v1/embeddings", json.dumps(
                    {"model": pname, "input": q, "encoding_format": "base64"}).encode(),
                    {"Content-Type": "application/json"})
                resp = conn.getresponse()
                body = resp.read()
                assert resp.status == 200, body
                assert len(base64.b64decode(json.loads(body)["data"][0]["embedding"])) == 4 * prof.dims
                return misses() > before

            rungs = {"raw": raw, "embedder": embedder, "router": router, "http": gateway}
            for q in SHORT_QUERIES:  # warm every rung
                for fn in rungs.values():
                    r.flushdb()
                    fn(q)
            for v in stages.values():
                v.clear()
            times: dict[str, list[float]] = {k: [] for k in rungs}
            retaken = 0
            hit: list[float] = []
            names = list(rungs)
            for i in range(n):
                q = SHORT_QUERIES[i % len(SHORT_QUERIES)]
                order = names[i % 4:] + names[:i % 4]
                for name in order:
                    for _attempt in range(5):
                        # Every rung is a cache miss. The embedder writes the cache after it replies, so a
                        # write of the previous rung can land after this flush: such a sample is retaken.
                        r.flushdb()
                        time.sleep(0.003)  # let the previous rung's trailing work (cache write) finish
                        t0 = time.perf_counter()
                        missed = rungs[name](q)
                        dt = time.perf_counter() - t0
                        if missed:
                            break
                        retaken += 1
                    times[name].append(dt)
                stub.Embed(router_pb2.EmbedRequest(texts=[q], kind=Q, profile=pname), timeout=30)  # fill (untimed)
                for _attempt in range(5):
                    time.sleep(0.002)  # the cache write lands after the reply
                    t0 = time.perf_counter()
                    e = stub.Embed(router_pb2.EmbedRequest(texts=[q], kind=Q, profile=pname),
                                   timeout=30).embeddings[0]
                    dt = time.perf_counter() - t0
                    if e.cache_hit:
                        break
                    retaken += 1
                assert e.cache_hit, "the cache never answered"
                hit.append(dt)
        conn.close()
        qps = {c: asyncio.run(throughput(mesh.router, c, seconds, offset=c * 10000)) for c in (1, 8, 32)}
    finally:
        stop_mesh(mesh)

    result: dict = {
        "bench": "query",
        "model": f"{encoder.model_id} ({encoder.variant})",
        "requests": n,
        "cpus": os.cpu_count(),
        "ort_threads": env.get("VIEN_ORT_THREADS") or "auto",
        "ort_spin": bool(env.get("VIEN_ORT_SPIN")),
        "ort_spin_us": env.get("VIEN_ORT_SPIN_US") or "onnxruntime default",
        "samples_retaken": retaken,
    }
    for name, xs in times.items():
        result[f"{name}_p50_ms"], result[f"{name}_p99_ms"] = pct(xs, 50), pct(xs, 99)
    result["mesh_miss_p50_ms"], result["mesh_miss_p99_ms"] = result["router_p50_ms"], result["router_p99_ms"]
    result["cache_hit_p50_ms"], result["cache_hit_p99_ms"] = pct(hit, 50), pct(hit, 99)
    # what each hop adds at the median, and what its server spends inside (the rest is transport)
    result["hop_ms"] = {
        "query_embedder": round(result["embedder_p50_ms"] - result["raw_p50_ms"], 3),
        "router": round(result["router_p50_ms"] - result["embedder_p50_ms"], 3),
        "gateway": round(result["http_p50_ms"] - result["router_p50_ms"], 3),
    }
    result["server_stage_ms_p50"] = {k: _median_stages(v) for k, v in stages.items()}
    result.update({"qps_c1": qps[1], "qps_c8": qps[8], "qps_c32": qps[32]})
    result["ratio_mesh_over_raw"] = result["router_p50_ms"] / result["raw_p50_ms"]
    result["ratio_http_over_raw"] = result["http_p50_ms"] / result["raw_p50_ms"]
    result["ratio_c32_over_c1"] = qps[32] / qps[1]
    result["targets_met"] = {
        "mesh_p50_le_1.25x_raw": result["ratio_mesh_over_raw"] <= 1.25,
        "cache_hit_p50_le_0.7ms": result["cache_hit_p50_ms"] <= 0.7,
        "c32_ge_2x_c1": result["ratio_c32_over_c1"] >= 2.0,
    }
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}


if __name__ == "__main__":
    print(json.dumps(run()))

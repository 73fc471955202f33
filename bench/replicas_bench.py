"""`vien bench replicas`: throughput with 1 and 2 replicas on the same machine, as ratios in one run.

(a) query: a fresh mesh (`vien up --no-redis`, then `--replicas query-embedder=2`); distinct short
    queries through the router at concurrency 16 for `--seconds`, cache bypassed; queries/s.
(b) ingest: a fresh mesh (then `--replicas ingest=2`, one consumer group on a 4-partition topic);
    the generated documents of `vien bench ingest` (400 by default, `--docs`) published with
    `vien publish`, timed until the store holds every chunk (bench/ingest_bench.py's pipeline
    measurement); documents/s.

What 2 cores allow: onnxruntime in one query-embedder already runs its batches on both cores, and the
router, the client and the other processes share them, so a second query-embedder can only add the time
the first leaves idle between batches (gRPC, Python, batching waits): expect a ratio near 1 here, and
about 2 on machines where each replica has cores of its own (as in Kubernetes, one pod per 2 cores). The
ingest path is bounded by the one doc-embedder's inference on the same cores, so a second ingest worker
overlaps Kafka polling, chunking and store writes with inference, no more.

`--threads N` gives every ONNX encoder N intra-op threads (a copy of the profiles file, VIEN_CONFIG):
with 1, one replica computes on one core, as if each replica had a core of its own, which shows what
the balancing adds when there is CPU to spare.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest_bench import chunk_texts, generate_documents, pipeline_throughput
from query_bench import throughput

from vien.embedding.encoders import resolve_model_source
from vien.models.onnx_encoder import TokenCounter
from vien.runtime.config import Settings, default_config_path
from vien_tools.build.setup import ensure_builtin_models

CONCURRENCY = 16


def config_with_threads(settings: Settings, threads: int) -> Path:
    """A copy of the profiles file with `intra_op_threads: threads` on every ONNX encoder."""
    raw = yaml.safe_load((settings.config_path or default_config_path()).read_text(encoding="utf-8"))
    for enc in raw["encoders"].values():
        if enc.get("backend", "onnx") == "onnx":
            enc["intra_op_threads"] = threads
    path = Path(tempfile.mkdtemp(prefix="vien-bench-replicas-")) / "profiles.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def query_qps(replicas: int, seconds: float) -> float:
    from conftest import start_mesh, stop_mesh  # the same `vien up` the tests use

    extra = ["--no-redis"] + (["--replicas", f"query-embedder={replicas}"] if replicas > 1 else [])
    mesh = start_mesh(Path(tempfile.mkdtemp(prefix="vien-bench-replicas-")), extra=extra)
    try:
        assert len(mesh.addrs["query-embedder"].split(",")) == replicas
        asyncio.run(throughput(mesh.router, CONCURRENCY, 2.0, offset=90000))  # warm every replica
        return asyncio.run(throughput(mesh.router, CONCURRENCY, seconds, offset=replicas * 20000))
    finally:
        stop_mesh(mesh)


def run(ns: argparse.Namespace | None = None) -> dict:
    seconds = getattr(ns, "seconds", 8.0)
    n_docs = getattr(ns, "docs", None) or 400
    threads = getattr(ns, "threads", None)
    settings = Settings.from_env()
    if threads:  # the meshes (child processes) read VIEN_CONFIG from the environment
        os.environ["VIEN_CONFIG"] = str(config_with_threads(settings, threads))
    ensure_builtin_models(settings)
    prof = settings.config.profiles[settings.config.routing.default]
    enc_cfg = settings.config.encoders[prof.document_encoder]
    if enc_cfg.backend != "onnx":
        enc_cfg = settings.config.encoders[prof.query_encoder]
    counter = TokenCounter(str(resolve_model_source(enc_cfg.model, settings)))
    docs = generate_documents(n_docs, counter)
    chunks = sum(len(c) for c in chunk_texts(docs, prof, counter))

    qps = {n: query_qps(n, seconds) for n in (1, 2)}
    ingest = {}
    for n in (1, 2):
        up_args = ["--no-redis"] + (["--replicas", f"ingest={n}"] if n > 1 else [])
        ingest[n] = n_docs / pipeline_throughput(settings, prof, docs, chunks, False, up_args)["seconds"]
    result = {
        "bench": "replicas",
        "cpus": os.cpu_count(),
        "ort_threads_per_replica": threads or "default (physical cores)",
        "query_concurrency": CONCURRENCY,
        "query_seconds": seconds,
        "qps_1_query_embedder": qps[1],
        "qps_2_query_embedders": qps[2],
        "ratio_query_2_over_1": qps[2] / qps[1],
        "ingest_docs": n_docs,
        "ingest_chunks": chunks,
        "docs_per_s_1_ingest_worker": ingest[1],
        "docs_per_s_2_ingest_workers": ingest[2],
        "ratio_ingest_2_over_1": ingest[2] / ingest[1],
    }
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}


if __name__ == "__main__":
    import json

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--docs", type=int, default=400)
    p.add_argument("--threads", type=int, default=None, help="ONNX intra-op threads per replica")
    print(json.dumps(run(p.parse_args()), ensure_ascii=False))

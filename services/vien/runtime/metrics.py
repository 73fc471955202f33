"""Prometheus metrics of every vien service, all names in this one module.

Each process serves its own registry on VIEN_METRICS_PORT (`vien up` assigns one per service and
prints them on its `vien metrics` line); Prometheus adds the job/instance labels, so a metric only
carries a `service` label where one process could report it for several roles. docs/observability.md
lists every series and what it means.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger("vien.metrics")

# --- every gRPC server (observed once, in runtime/grpc_server.py, for every RPC of every service)
RPC_LATENCY = Histogram(
    "vien_rpc_latency_seconds", "Server-side latency per RPC, by final status code",
    ["service", "method", "code"],
    buckets=(0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0, 2.0, 5.0, 10.0, 30.0),
)

# --- embedders (query-embedder, doc-embedder)
BATCH_SIZE = Histogram(
    "vien_batch_size", "Texts per inference batch run by the model", ["service"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
QUEUE_DEPTH = Gauge("vien_queue_depth", "Texts waiting for inference", ["service"])
TOKENS = Counter("vien_tokens_total", "Tokens embedded (rate() = tokens/s)", ["service", "profile"])
TEXTS = Counter("vien_texts_total", "Texts embedded", ["service", "profile"])
REJECTED = Counter("vien_rejected_total", "Requests rejected for overload (RESOURCE_EXHAUSTED)", ["service"])
SPACE_GUARD_OK = Gauge(
    "vien_space_guard_ok",
    "Space guard per profile: 1 passed, 0 failed (encoders disagree; profile refused), -1 not yet checked",
    ["profile"],
)
BREAKER_STATE = Gauge(
    "vien_breaker_state", "Circuit breaker of a remote encoder: 0 closed, 1 half-open, 2 open", ["encoder"],
)
BREAKER_OPENS = Counter("vien_breaker_opens_total", "Times a remote encoder's circuit breaker opened", ["encoder"])
BREAKER_REJECTED = Counter(
    "vien_breaker_rejected_total", "Requests failed fast (UNAVAILABLE) while the circuit was open", ["encoder"],
)
DEADLINE_DROPPED = Counter(
    "vien_deadline_dropped_total", "Texts dropped from an inference queue because their deadline passed", ["service"],
)
BACKEND_REQUESTS = Counter(
    "vien_backend_requests_total", "HTTP requests to remote embedding backends by outcome",
    ["encoder", "outcome"],  # ok|retry_429|retry_5xx|retry_connect|retry_timeout|rejected|failed
)

# --- query cache (router reads, query-embedder reads and writes)
CACHE_REQUESTS = Counter("vien_cache_requests_total", "Query cache lookups per text", ["result"])  # hit|miss|error
CACHE_UP = Gauge("vien_cache_up", "1 when the query cache (Redis) is reachable, 0 when serving uncached")

# --- ingest
INGEST_EVENTS = Counter("vien_ingest_events_total", "Document events applied, by outcome", ["outcome"])
INGEST_RETRIES = Counter("vien_ingest_retries_total", "Batches retried after a transient failure")
SHORT_INDEXED_ANSWERS = Counter(
    "vien_store_short_answers_total",
    "Filtered indexed searches that returned fewer hits than asked while more points matched (answered "
    "again by exact search)")
INGEST_BATCH = Histogram(
    "vien_ingest_batch_events", "Kafka records per ingest batch (one poll)",
    buckets=(1, 4, 16, 64, 128, 256, 512, 1024),
)
CONSUMER_LAG = Gauge(
    "vien_consumer_lag", "Records in the partition not yet consumed by the ingest group (high watermark - position)",
    ["topic", "partition"],
)
ASSIGNED_PARTITIONS = Gauge(
    "vien_ingest_assigned_partitions", "Partitions of the documents topic this ingest worker owns in its group",
)
DLQ_EVENTS = Counter("vien_dlq_events_total", "Events sent to the dead-letter topic, by reason code", ["code"])


def serve_metrics(port: int | None, host: str = "0.0.0.0") -> None:
    if port:
        start_http_server(port, addr=host)
        log.info("metrics on http://%s:%d/metrics", host, port)

"""Prometheus metrics shared by the services; served on VIEN_METRICS_PORT when it is set."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger("vien.metrics")

RPC_LATENCY = Histogram(
    "vien_rpc_latency_seconds", "Server-side latency per RPC", ["service", "method"],
    buckets=(0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0, 2.0, 5.0),
)
BATCH_SIZE = Histogram(
    "vien_batch_size", "Texts per inference batch", ["service"], buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
QUEUE_DEPTH = Gauge("vien_queue_depth", "Texts waiting for inference", ["service"])
TOKENS = Counter("vien_tokens_total", "Tokens embedded", ["service", "profile"])
TEXTS = Counter("vien_texts_total", "Texts embedded", ["service", "profile"])
REJECTED = Counter("vien_rejected_total", "Requests rejected for overload", ["service"])
CACHE_REQUESTS = Counter("vien_cache_requests_total", "Query cache lookups", ["result"])  # hit|miss|error
CACHE_UP = Gauge("vien_cache_up", "1 when the query cache (Redis) is reachable, 0 when serving uncached")
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


def serve_metrics(port: int | None, host: str = "0.0.0.0") -> None:
    if port:
        start_http_server(port, addr=host)
        log.info("metrics on http://%s:%d/metrics", host, port)
INGEST_EVENTS = Counter("vien_ingest_events_total", "Document events applied, by outcome", ["outcome"])
INGEST_RETRIES = Counter("vien_ingest_retries_total", "Batches retried after a transient failure")
DLQ_EVENTS = Counter("vien_dlq_events_total", "Events sent to the dead-letter topic, by reason code", ["code"])

"""Tracing end to end and Prometheus metrics on a real mesh (`vien up`, every service its own process).

The mesh exports spans over OTLP/gRPC to a receiver in this test process. Its batch span processors
are told to wait 10 minutes between exports (OTEL_BSP_SCHEDULE_DELAY), so the services' spans can only
arrive through the flush at SIGTERM: the tests check that too. The traffic is one `vien publish` of
two documents plus a poison event, and the same `vien search` twice (a cache miss, then a hit).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from conftest import start_mesh, stop_mesh
from otlp_fixtures import OtlpReceiver, ReceivedSpan, Trace
from prometheus_client.parser import text_string_to_metric_families

from vien.v1 import search_pb2, search_pb2_grpc

TENANT = "obs"
DOCS = [
    {"op": "upsert", "doc_id": "obs-vi", "version": 1, "tenant": TENANT, "title": "Giờ mở cửa thư viện",
     "text": "Thư viện thành phố mở cửa từ tám giờ sáng đến chín giờ tối, kể cả cuối tuần."},
    {"op": "upsert", "doc_id": "obs-en", "version": 1, "tenant": TENANT, "title": "Library opening hours",
     "text": "The city library opens at eight in the morning and closes at nine in the evening."},
]
QUERY = "thư viện mở cửa lúc mấy giờ"
SERVICES = ("router", "query-embedder", "doc-embedder", "store", "search", "ingest", "http")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(address: str) -> Samples:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sum over the samples named `name` whose labels include `labels` (None when there is none)."""
    found = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls]
    return sum(found) if found else None


@dataclass
class Observed:
    spans: list[ReceivedSpan]            # everything the receiver got, after the mesh stopped
    before_stop: list[ReceivedSpan]      # what it had while the mesh was still running
    metrics: dict[str, Samples]          # service -> its /metrics, scraped after the traffic
    stop_rc: int


def _vien(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vien_tools", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def _publish_poison(kafka: str) -> None:
    from aiokafka import AIOKafkaProducer

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka)
        await producer.start()
        try:
            await producer.send_and_wait("vien.documents", b"\x08\x01\x12not-a-document-event", key=b"obs/poison")
        finally:
            await producer.stop()

    asyncio.run(send())


def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def observed(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    receiver = OtlpReceiver().start()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "600000"}
    log_dir = tmp_path_factory.mktemp("obs-mesh")
    mesh = start_mesh(log_dir, env=env)
    try:
        assert set(mesh.metrics) == set(SERVICES), mesh.metrics
        events = log_dir / "docs.jsonl"
        events.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in DOCS), encoding="utf-8")
        out = _vien(env, "publish", str(events), "--kafka", mesh.addrs["kafka"])
        assert out.returncode == 0, out.stderr
        _publish_poison(mesh.addrs["kafka"])

        def ingested() -> bool:
            m = scrape(mesh.metrics["ingest"])
            return ((value(m, "vien_ingest_events_total", outcome="upserted") or 0) >= len(DOCS)
                    and (value(m, "vien_dlq_events_total") or 0) >= 1
                    and value(m, "vien_consumer_lag", topic="vien.documents") == 0)

        _wait(ingested, 120, "both documents upserted, the poison event dead-lettered and no lag")
        for _ in range(2):  # the same query twice: the router answers the second from the cache
            out = _vien(env, "search", "--search", mesh.addrs["search"], "--tenant", TENANT, "--top-k", "2", QUERY)
            assert out.returncode == 0, out.stderr
            assert json.loads(out.stdout)["hits"], out.stdout
        with grpc.insecure_channel(mesh.addrs["search"]) as ch, pytest.raises(grpc.RpcError):
            search_pb2_grpc.SearchStub(ch).Search(search_pb2.SearchRequest(query=QUERY, tenant=TENANT, top_k=10_000),
                                                  timeout=30)
        metrics = {name: scrape(addr) for name, addr in mesh.metrics.items()}
        before_stop = receiver.spans()
    finally:
        rc = stop_mesh(mesh)
    expected = {"vien-router", "vien-query-embedder", "vien-doc-embedder", "vien-store", "vien-search", "vien-ingest"}
    spans = receiver.wait_for(lambda got: expected <= {s.service for s in got}, timeout=30)
    receiver.stop()
    yield Observed(spans, before_stop, metrics, rc)


def _publish_trace(obs: Observed) -> Trace:
    roots = [s for s in obs.spans if s.name == "vien publish" and s.service == "vien-publish"]
    assert len(roots) == 1, roots
    return Trace(obs.spans, roots[0].trace_id)


def test_one_trace_runs_from_vien_publish_through_kafka_ingest_doc_embedder_and_store(observed):
    t = _publish_trace(observed)
    root = t.one("vien publish")
    producers = t.find("publish vien.documents", "PRODUCER", "vien-publish")
    assert {p.attributes["vien.doc_id"] for p in producers} == {d["doc_id"] for d in DOCS}
    assert all(t.parent(p) is root for p in producers)
    # ingest continues the trace from the record headers: one CONSUMER span per record, child of its producer
    consumers = t.find("process vien.documents", "CONSUMER", "vien-ingest")
    assert len(consumers) == len(DOCS), t.spans
    for c in consumers:
        producer = t.parent(c)
        assert producer.kind == "PRODUCER" and producer.attributes["vien.doc_id"] == c.attributes["vien.doc_id"]
        assert c.attributes["vien.profile"] == "e5-small" and c.attributes["vien.lang"] in ("vi", "en")
        assert c.attributes["messaging.destination.name"] == "vien.documents"
    assert {c.attributes["vien.lang"] for c in consumers} == {"vi", "en"}
    # doc-embedder Encode: server span <- ingest's client span <- ingest.embed <- a document's process span
    encode = t.one("/vien.v1.DocEmbedder/Encode", "SERVER", "vien-doc-embedder")
    client = t.parent(encode)
    assert client.kind == "CLIENT" and client.service == "vien-ingest" and client.name == encode.name
    embed = t.parent(client)
    assert embed.name == "ingest.embed" and t.parent(embed) in consumers
    assert encode.attributes["vien.profile"] == "e5-small"
    assert encode.attributes["vien.batch_size"] == embed.attributes["vien.batch_size"] >= 1
    assert encode.attributes["vien.tokens"] > encode.attributes["vien.batch_size"]  # > 1 token per text
    docs_in_request = embed.attributes["vien.docs"]
    assert len(embed.links) == docs_in_request - 1  # the other documents of the batched request are linked
    # store Upsert: server span in the store service <- ingest's client span <- ingest.store_write
    upsert = t.one("/vien.v1.VectorStore/Upsert", "SERVER", "vien-store")
    upsert_client = t.parent(upsert)
    assert upsert_client.kind == "CLIENT" and upsert_client.service == "vien-ingest"
    write = t.parent(upsert_client)
    assert write.name == "ingest.store_write" and t.parent(write) in consumers
    assert upsert.attributes["vien.points"] >= 1 and upsert.attributes["vien.collection"]


def _search_traces(obs: Observed) -> list[Trace]:
    roots = [s for s in obs.spans if s.service == "vien-search-cli" and s.name == "/vien.v1.Search/Search"]
    assert len(roots) == 2 and all(r.kind == "CLIENT" and not r.parent_id for r in roots), roots
    return [Trace(obs.spans, r.trace_id) for r in roots]


def test_one_trace_runs_from_a_search_client_through_search_router_query_embedder_and_store(observed):
    traces = {t.one("/vien.v1.Router/Embed", "SERVER").attributes["vien.cache_hit"]: t
              for t in _search_traces(observed)}
    assert set(traces) == {False, True}, "expected one cache miss and one cache hit"
    t = traces[False]
    client = t.one("/vien.v1.Search/Search", "CLIENT", "vien-search-cli")
    search = t.one("/vien.v1.Search/Search", "SERVER", "vien-search")
    assert t.parent(search) is client
    assert search.attributes["vien.profile"] == "e5-small" and search.attributes["vien.lang"] == "vi"
    assert search.attributes["vien.hits"] >= 1
    # search -> router
    router = t.one("/vien.v1.Router/Embed", "SERVER", "vien-router")
    router_client = t.parent(router)
    assert router_client.kind == "CLIENT" and router_client.service == "vien-search"
    assert t.parent(router_client) is search
    assert router.attributes["vien.lang"] == "vi" and router.attributes["vien.profile"] == "e5-small"
    assert router.attributes["vien.batch_size"] == 1 and router.attributes["vien.cache_hit"] is False
    # router -> query-embedder
    qe = t.one("/vien.v1.QueryEmbedder/Encode", "SERVER", "vien-query-embedder")
    qe_client = t.parent(qe)
    assert qe_client.kind == "CLIENT" and qe_client.service == "vien-router" and t.parent(qe_client) is router
    assert qe.attributes["vien.profile"] == "e5-small" and qe.attributes["vien.batch_size"] == 1
    assert qe.attributes["vien.cache_hit"] is False and qe.attributes["vien.tokens"] >= 3
    assert router.attributes["vien.tokens"] == qe.attributes["vien.tokens"]
    # search -> store Query: the profile's default mode is hybrid, so two queries (dense and lexical), each
    # fetching search.prefetch_k candidates for the fusion
    assert search.attributes["vien.mode"] == "hybrid"
    queries = t.find("/vien.v1.VectorStore/Query", "SERVER", "vien-store")
    assert len(queries) == 2
    for query in queries:
        query_client = t.parent(query)
        assert query_client.kind == "CLIENT" and query_client.service == "vien-search"
        assert t.parent(query_client) is search
        assert query.attributes["vien.top_k"] == 100 and query.attributes["vien.collection"]
    # the repeated query: the router answers from the cache; no hop to the query-embedder
    hit = traces[True]
    hit_router = hit.one("/vien.v1.Router/Embed", "SERVER", "vien-router")
    assert hit_router.attributes["vien.cache_hits"] == 1 and hit_router.attributes["vien.tokens"] >= 3
    assert not hit.find("/vien.v1.QueryEmbedder/Encode")
    assert hit.one("/vien.v1.VectorStore/Query", "SERVER", "vien-store")


def test_service_spans_are_flushed_on_sigterm_and_health_checks_are_not_traced(observed):
    assert observed.stop_rc == 0
    services = {"vien-router", "vien-query-embedder", "vien-doc-embedder", "vien-store", "vien-search", "vien-ingest"}
    # the services' exporters wait 10 minutes between batches: nothing had arrived while they were running
    assert not [s for s in observed.before_stop if s.service in services]
    assert services <= {s.service for s in observed.spans}
    assert not [s for s in observed.spans if s.name.startswith("/grpc.health.v1.Health/")]


def test_every_service_serves_prometheus_metrics_that_count_the_traffic(observed):
    m = observed.metrics
    assert set(m) == set(SERVICES)

    def latency_count(service: str, method: str, code: str = "OK") -> float:
        return value(m[service], "vien_rpc_latency_seconds_count", service=service, method=method, code=code) or 0

    # request latency per RPC, with the status code
    assert latency_count("search", "Search") == 2
    assert latency_count("search", "Search", "INVALID_ARGUMENT") == 1
    assert latency_count("router", "Embed") >= 2
    assert latency_count("query-embedder", "Encode") >= 1
    assert latency_count("doc-embedder", "Encode") >= 1
    assert latency_count("store", "Upsert") >= 1 and latency_count("store", "Query") >= 2
    search_sum = value(m["search"], "vien_rpc_latency_seconds_sum", method="Search", code="OK")
    assert search_sum is not None and 0 < search_sum < 60
    # batch sizes, queue depth, tokens (rate() of the counter is tokens/s)
    for svc in ("query-embedder", "doc-embedder"):
        assert (value(m[svc], "vien_batch_size_count", service=svc) or 0) >= 1, svc
        assert value(m[svc], "vien_queue_depth", service=svc) == 0, svc
        assert (value(m[svc], "vien_tokens_total", service=svc, profile="e5-small") or 0) > 0, svc
    # the query cache: the first search misses in the query-embedder, the repeat hits in the router
    assert (value(m["query-embedder"], "vien_cache_requests_total", result="miss") or 0) >= 1
    assert (value(m["router"], "vien_cache_requests_total", result="hit") or 0) >= 1
    assert value(m["query-embedder"], "vien_cache_up") == 1
    # ingest: events, batches, consumer lag, DLQ
    assert value(m["ingest"], "vien_ingest_events_total", outcome="upserted") == len(DOCS)
    assert (value(m["ingest"], "vien_ingest_batch_events_count") or 0) >= 1
    assert value(m["ingest"], "vien_consumer_lag", topic="vien.documents") == 0
    assert value(m["ingest"], "vien_dlq_events_total") == 1
    # the space guard of the served profile passed
    assert value(m["doc-embedder"], "vien_space_guard_ok", profile="e5-small") == 1
    # the HTTP gateway (its readiness probe was answered during startup)
    assert (value(m["http"], "vien_http_requests_total", route="/healthz", status="200") or 0) >= 1


def test_tracing_off_costs_nothing():
    """VIEN_TRACING=0: no SDK provider, no interceptors, spans are the API's no-op, no headers injected."""
    code = """
import grpc
from opentelemetry import trace
from vien.kafka.tracing import inject_headers
from vien.runtime.telemetry import client_interceptors, server_interceptors, setup_tracing, traced_channel
assert setup_tracing("x") is None
assert server_interceptors() == [] and client_interceptors() == []
ch = grpc.insecure_channel("127.0.0.1:9")
assert traced_channel(ch) is ch
with trace.get_tracer("t").start_as_current_span("s") as span:
    assert not span.is_recording()
    assert inject_headers([("k", b"v")]) == [("k", b"v")]
print("off")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "VIEN_TRACING": "0", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    assert out.returncode == 0 and out.stdout.strip() == "off", out.stderr

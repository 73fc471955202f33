"""One trace covers client -> router -> embedder (OpenTelemetry interceptors on every hop)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import grpc
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from vien.runtime.grpc_server import run_app
from vien.runtime.telemetry import setup_tracing, traced_channel
from vien.v1 import common_pb2, router_pb2, router_pb2_grpc
from vien_tools.cli.registry import SERVICES
from vien_tools.cli.supervisor import free_port


def test_one_trace_spans_client_router_and_embedders(settings):
    exporter = InMemorySpanExporter()
    setup_tracing("test", extra_processors=[SimpleSpanProcessor(exporter)])
    names = ("query-embedder", "doc-embedder", "router")  # the query path; documents have their own test
    ports = {n: free_port() for n in names}
    s = dataclasses.replace(
        settings, redis_url=None, **{SERVICES[n].address_attr: f"127.0.0.1:{p}" for n, p in ports.items()}
    )
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = {n: asyncio.Event() for n in names}

    async def main() -> None:
        await asyncio.gather(*(run_app(SERVICES[n].create(s), s, ports[n], ready=ready[n], stop=stop)
                               for n in names))

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        async def wait_ready() -> None:
            await asyncio.gather(*(e.wait() for e in ready.values()))

        asyncio.run_coroutine_threadsafe(wait_ready(), loop).result(timeout=120)
        tracer = trace.get_tracer("test")
        with grpc.insecure_channel(f"127.0.0.1:{ports['router']}") as raw:
            stub = router_pb2_grpc.RouterStub(traced_channel(raw))
            with tracer.start_as_current_span("client-request") as root:
                stub.Embed(router_pb2.EmbedRequest(texts=["tra cứu mã số thuế"], kind=common_pb2.EMBED_KIND_QUERY),
                           timeout=60)
                stub.Embed(router_pb2.EmbedRequest(texts=["a contract"], kind=common_pb2.EMBED_KIND_DOCUMENT),
                           timeout=60)
        trace_id = root.get_span_context().trace_id
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=60)

    spans = [sp for sp in exporter.get_finished_spans() if sp.context.trace_id == trace_id]
    by_id = {sp.context.span_id: sp for sp in spans}
    servers = {sp.name: sp for sp in spans if sp.kind == trace.SpanKind.SERVER}
    assert {"/vien.v1.Router/Embed", "/vien.v1.QueryEmbedder/Encode", "/vien.v1.DocEmbedder/Encode"} <= set(servers)

    def ancestors(sp) -> list[str]:
        names = []
        while sp.parent is not None and sp.parent.span_id in by_id:
            sp = by_id[sp.parent.span_id]
            names.append(sp.name)
        return names

    for name in ("/vien.v1.QueryEmbedder/Encode", "/vien.v1.DocEmbedder/Encode"):
        chain = ancestors(servers[name])
        assert "/vien.v1.Router/Embed" in chain and chain[-1] == "client-request", chain
    assert ancestors(servers["/vien.v1.Router/Embed"])[-1] == "client-request"

"""OpenTelemetry setup shared by every service and client.

Spans are always created (the interceptors are cheap); they are exported over OTLP/gRPC only when
OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, the standard variables.
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_provider: TracerProvider | None = None


def setup_tracing(service: str, extra_processors: list[SpanProcessor] | None = None) -> TracerProvider:
    """Install a tracer provider for this process (idempotent: later calls only add processors)."""
    global _provider
    if _provider is None:
        resource = Resource.create(
            {"service.name": f"vien-{service}", "service.namespace": "vien", "service.version": "0.1.0"}
        )
        _provider = TracerProvider(resource=resource)
        endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        if endpoint:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(_provider)
    for p in extra_processors or []:
        _provider.add_span_processor(p)
    return _provider


def shutdown_tracing() -> None:
    if _provider is not None:
        _provider.shutdown()


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def tracing_enabled() -> bool:
    """VIEN_TRACING=0 drops the interceptors entirely (no spans, no context propagation)."""
    return os.environ.get("VIEN_TRACING", "1") != "0"


def server_interceptors() -> list[Any]:
    if not tracing_enabled():
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor()]


def client_interceptors() -> list[Any]:
    if not tracing_enabled():
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors())


def traced_channel(channel: Any) -> Any:
    """Wrap a blocking grpc.Channel so each call gets a client span and propagates the context."""
    from opentelemetry.instrumentation.grpc import client_interceptor
    from opentelemetry.instrumentation.grpc.grpcext import intercept_channel

    return intercept_channel(channel, client_interceptor())

"""OpenTelemetry setup shared by every service and client.

Spans are created and propagated (gRPC metadata, Kafka headers) whenever tracing is on; they are
exported over OTLP/gRPC only when OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is
set, the standard variables (the standard OTEL_BSP_* variables tune the batching). VIEN_TRACING=0 turns
it all off: no SDK provider (every span is the API's no-op), no interceptors, no header parsing.

Span attribute names shared by the services are the ATTR_* constants below (docs/observability.md).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.util.types import AttributeValue

from vien.runtime import env

ATTR_PROFILE = "vien.profile"          # the embedding profile(s) that served the request
ATTR_LANG = "vien.lang"                # detected (or given) language(s)
ATTR_BATCH_SIZE = "vien.batch_size"    # texts in the request
ATTR_TOKENS = "vien.tokens"            # tokens embedded (sum over the texts)
ATTR_CACHE_HIT = "vien.cache_hit"      # every text of the request came from the query cache
ATTR_CACHE_HITS = "vien.cache_hits"    # how many texts came from the query cache

_provider: TracerProvider | None = None


def tracing_enabled() -> bool:
    """VIEN_TRACING=0 drops tracing entirely (no spans, no context propagation)."""
    return bool(env.get("VIEN_TRACING"))


def setup_tracing(service: str, extra_processors: list[SpanProcessor] | None = None) -> TracerProvider | None:
    """Install a tracer provider for this process (idempotent: later calls only add processors).

    Returns None when tracing is disabled: the API's no-op tracer then makes every span free.
    """
    global _provider
    if not tracing_enabled():
        return None
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
    """Flush and stop the exporters (BatchSpanProcessor.shutdown exports what is still queued)."""
    if _provider is not None:
        _provider.shutdown()


def annotate(attributes: Mapping[str, AttributeValue]) -> None:
    """Set attributes on the current span (the RPC's server span inside a servicer); free when not recording."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(attributes)


def joined(values: Any) -> str:
    """Distinct values, sorted and comma-joined: one attribute value for a request that mixes profiles/langs."""
    return ",".join(sorted({str(v) for v in values}))


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def _traced_calls() -> Any:
    """Health checks and reflection are not traced: probes every few seconds would bury the real traces."""
    from opentelemetry.instrumentation.grpc.filters import any_of, health_check, negate, service_prefix

    return negate(any_of(health_check(), service_prefix("grpc.reflection")))


def server_interceptors() -> list[Any]:
    if not tracing_enabled():
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor(filter_=_traced_calls())]


def client_interceptors() -> list[Any]:
    if not tracing_enabled():
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors(filter_=_traced_calls()))


def traced_channel(channel: Any) -> Any:
    """Wrap a blocking grpc.Channel so each call gets a client span and propagates the context."""
    if not tracing_enabled():
        return channel
    from opentelemetry.instrumentation.grpc import client_interceptor
    from opentelemetry.instrumentation.grpc.grpcext import intercept_channel

    return intercept_channel(channel, client_interceptor(filter_=_traced_calls()))

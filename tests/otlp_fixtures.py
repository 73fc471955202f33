"""A real OTLP/gRPC trace receiver in the test process (what an OpenTelemetry collector's otlp receiver
does): services export to it with their ordinary OTLPSpanExporter over loopback gRPC."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2

from vien_tools.cli.supervisor import free_port

KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


def _value(v: common_pb2.AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, which) if which else None


@dataclass(frozen=True)
class ReceivedSpan:
    service: str          # resource service.name
    name: str
    kind: str             # SERVER, CLIENT, PRODUCER, CONSUMER, INTERNAL
    trace_id: str
    span_id: str
    parent_id: str        # "" for a root span
    attributes: dict[str, Any]
    links: list[tuple[str, str]] = field(default_factory=list)  # (trace_id, span_id)
    status_code: int = 0  # 0 unset, 1 ok, 2 error

    def __repr__(self) -> str:
        return f"<{self.service} {self.kind} {self.name} {self.span_id}<-{self.parent_id or 'root'}>"


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink: OtlpReceiver) -> None:
        self.sink = sink

    def Export(self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
               ) -> trace_service_pb2.ExportTraceServiceResponse:
        got = []
        for rs in request.resource_spans:
            res = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    got.append(ReceivedSpan(
                        service=str(res.get("service.name", "")), name=sp.name, kind=KINDS.get(sp.kind, str(sp.kind)),
                        trace_id=sp.trace_id.hex(), span_id=sp.span_id.hex(), parent_id=sp.parent_span_id.hex(),
                        attributes={kv.key: _value(kv.value) for kv in sp.attributes},
                        links=[(lk.trace_id.hex(), lk.span_id.hex()) for lk in sp.links],
                        status_code=sp.status.code,
                    ))
        self.sink.add(got)
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                                   options=[("grpc.max_receive_message_length", 64 << 20)])
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), self._server)
        self._server.add_insecure_port(f"127.0.0.1:{self.port}")

    def start(self) -> OtlpReceiver:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=1)

    def add(self, spans: list[ReceivedSpan]) -> None:
        with self._lock:
            self._spans.extend(spans)

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def wait_for(self, pred: Callable[[list[ReceivedSpan]], bool], timeout: float = 30.0) -> list[ReceivedSpan]:
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if pred(spans) or time.monotonic() > deadline:
                return spans
            time.sleep(0.2)


class Trace:
    """The spans of one trace id, with navigation by name/kind/service and parent links."""

    def __init__(self, spans: list[ReceivedSpan], trace_id: str) -> None:
        self.trace_id = trace_id
        self.spans = [s for s in spans if s.trace_id == trace_id]
        self.by_id = {s.span_id: s for s in self.spans}

    def find(self, name: str, kind: str | None = None, service: str | None = None) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.name == name and (kind is None or s.kind == kind)
                and (service is None or s.service == service)]

    def one(self, name: str, kind: str | None = None, service: str | None = None) -> ReceivedSpan:
        found = self.find(name, kind, service)
        assert found, f"no {kind or ''} span {name!r} from {service or 'any service'} in trace {self.trace_id}: " \
                      f"{self.spans}"
        return found[0]

    def parent(self, span: ReceivedSpan) -> ReceivedSpan:
        assert span.parent_id in self.by_id, f"parent of {span!r} not in trace {self.trace_id}: {self.spans}"
        return self.by_id[span.parent_id]

    def children(self, span: ReceivedSpan) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.parent_id == span.span_id]

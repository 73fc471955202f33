"""gRPC server bootstrap shared by every service.

Each service is a `GrpcApp`: plain logic plus a thin servicer. This module gives all of them the
same server: OpenTelemetry interceptor, message size limits, grpc.health.v1 (NOT_SERVING until the
app has loaded its models), reflection, graceful shutdown on SIGTERM/SIGINT, and one error mapping
(domain errors -> status codes, undecodable requests -> INVALID_ARGUMENT, never a bare INTERNAL for
a client's mistake). Edges (an app with `edge = True`: router, search) check API keys on every call
of their own services (vien.runtime.auth); health and reflection stay open. TLS/mTLS from Settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import trace

from vien.runtime.auth import ApiKeys, Caller, authorization_of, set_caller
from vien.runtime.config import Settings
from vien.runtime.errors import ResourceExhausted, VienError
from vien.runtime.metrics import RPC_LATENCY
from vien.runtime.telemetry import server_interceptors
from vien.runtime.tls import server_credentials

log = logging.getLogger("vien.server")

# grpc.health.v1 service names. "" (and each service's full name) is readiness: NOT_SERVING until the app has
# started and whenever it says a dependency is down (a breaker open, a failed space guard). LIVENESS is SERVING
# for as long as the server answers at all: what a liveness probe should ask, since restarting a process
# does not bring its dependency back (Kubernetes: `grpc: {port: P, service: liveness}`).
LIVENESS = "liveness"


class HealthReporter:
    """Lets an app flip its own serving state (e.g. when a backend or the space guard fails)."""

    def __init__(self, servicer: health.aio.HealthServicer, names: list[str]) -> None:
        self._servicer = servicer
        self._names = ["", *names]
        self.serving = False
        # Set by the app (hold_down) to stay NOT_SERVING after start() returns, e.g. a failed space guard.
        self.held_down: str | None = None

    async def hold_down(self, reason: str) -> None:
        """NOT_SERVING until release(); run_app does not flip it back to SERVING after start()."""
        self.held_down = reason
        await self.set(False, reason)

    async def release(self) -> None:
        self.held_down = None
        await self.set(True)

    async def set(self, serving: bool, reason: str = "") -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        if serving != self.serving or reason:
            log.info("health %s%s", "SERVING" if serving else "NOT_SERVING", f": {reason}" if reason else "")
        self.serving = serving
        for n in self._names:
            await self._servicer.set(n, status)


class GrpcApp(Protocol):
    name: str

    def services(self) -> list[tuple[ServiceDescriptor, object]]: ...

    async def start(self, health: HealthReporter) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True)
class _Undecodable:
    type_name: str
    error: str


def _safe_deserializer(cls: type[Message]) -> Callable[[bytes], Message | _Undecodable]:
    def deserialize(data: bytes) -> Message | _Undecodable:
        try:
            return cls.FromString(data)
        except (DecodeError, ValueError, UnicodeDecodeError) as exc:
            # Invalid UTF-8 in a string field lands here too.
            return _Undecodable(cls.DESCRIPTOR.full_name, str(exc) or type(exc).__name__)

    return deserialize


def _status_of(exc: BaseException) -> grpc.StatusCode:
    return exc.code if isinstance(exc, VienError) else grpc.StatusCode.INTERNAL


async def _abort_for(exc: BaseException, context: grpc.aio.ServicerContext) -> None:
    if isinstance(exc, ResourceExhausted):
        context.set_trailing_metadata((("retry-after-ms", str(exc.retry_after_ms)),))
        await context.abort(exc.code, exc.message)
    if isinstance(exc, VienError):
        await context.abort(exc.code, exc.message)
    span = trace.get_current_span()
    ctx = span.get_span_context()
    trace_id = f"{ctx.trace_id:032x}" if ctx.is_valid else "-"
    log.exception("unhandled error", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error (trace_id {trace_id}); see server log")


def _aborted_code(context: grpc.aio.ServicerContext) -> str:
    """The status a servicer set itself with context.abort()."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    for c in grpc.StatusCode:
        if c.value[0] == code:
            return c.name
    return "UNKNOWN"


def _undecodable_message(req: _Undecodable) -> str:
    return f"request: not a valid {req.type_name} message ({req.error})"


class _RpcTimer:
    """vien_rpc_latency_seconds{service, method, code}: one observation per RPC, with its final status."""

    def __init__(self, service: str, method: str) -> None:
        self.service, self.method = service, method
        self.t0 = time.perf_counter()
        self.code = "OK"

    def done(self) -> None:
        RPC_LATENCY.labels(self.service, self.method, self.code).observe(time.perf_counter() - self.t0)


async def _authenticate(keys: ApiKeys | None, context: grpc.aio.ServicerContext, method: str) -> None:
    """Check the caller's key (edges only) and remember the caller for this RPC's task."""
    if keys is None or not keys.enabled:
        set_caller(None)
        return
    authorization = authorization_of(context.invocation_metadata())
    try:
        tenant = keys.authenticate(authorization)
    except VienError as exc:
        # The peer, never the key: a log line must not leak what was sent.
        log.warning("unauthenticated call to %s from %s: %s", method, context.peer(), exc.message)
        await context.abort(exc.code, exc.message)
    set_caller(Caller(tenant, authorization or ""))


class StartGate:
    """Closed until the app's start() returned. The port is bound (and connectable) before that, and a
    round_robin client sends requests to every replica it can connect to: until then they are answered
    UNAVAILABLE, which callers retry on another replica (vien.runtime.balancing)."""

    def __init__(self, is_open: bool = False) -> None:
        self.is_open = is_open

    async def check(self, service: str, context: grpc.aio.ServicerContext, timer: _RpcTimer) -> None:
        if not self.is_open:
            timer.code = "UNAVAILABLE"
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{service} is starting")


_OPEN = StartGate(True)


@contextlib.asynccontextmanager
async def _status_of_handler(timer: _RpcTimer, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    """What both handler kinds do with an outcome: record its status code on `timer`, and turn a domain error
    into its gRPC status (never INTERNAL/UNKNOWN for a client mistake)."""
    try:
        yield
    except asyncio.CancelledError:
        timer.code = "CANCELLED"
        raise
    except grpc.aio.AbortError:
        if timer.code == "OK":  # an abort that already named its code (undecodable, starting) keeps it
            timer.code = _aborted_code(context)
        raise
    except Exception as exc:
        timer.code = _status_of(exc).name
        await _abort_for(exc, context)
    finally:
        timer.done()


def _wrap_unary(fn: Callable[..., Awaitable[Any]], service: str, method: str, keys: ApiKeys | None = None,
                full_method: str = "", gate: StartGate = _OPEN) -> Callable[..., Awaitable[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        timer = _RpcTimer(service, method)
        async with _status_of_handler(timer, context):
            await gate.check(service, context, timer)
            await _authenticate(keys, context, full_method)
            if isinstance(request, _Undecodable):
                timer.code = "INVALID_ARGUMENT"
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _undecodable_message(request))
            return await fn(request, context)

    return handler


def _wrap_stream(fn: Callable[..., AsyncIterator[Any]], service: str, method: str, keys: ApiKeys | None = None,
                 full_method: str = "", gate: StartGate = _OPEN) -> Callable[..., AsyncIterator[Any]]:
    async def handler(request_iterator: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        timer = _RpcTimer(service, method)

        async def checked() -> AsyncIterator[Any]:
            async for req in request_iterator:
                if isinstance(req, _Undecodable):
                    timer.code = "INVALID_ARGUMENT"
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _undecodable_message(req))
                yield req

        async with _status_of_handler(timer, context):
            await gate.check(service, context, timer)
            await _authenticate(keys, context, full_method)
            async for resp in fn(checked(), context):
                yield resp

    return handler


def _method_handler(method: MethodDescriptor, impl: object, service: str, keys: ApiKeys | None = None,
                    gate: StartGate = _OPEN) -> grpc.RpcMethodHandler:
    req_cls = message_factory.GetMessageClass(method.input_type)
    resp_cls = message_factory.GetMessageClass(method.output_type)
    fn = getattr(impl, method.name)
    deser = _safe_deserializer(req_cls)
    ser = resp_cls.SerializeToString
    if method.client_streaming and method.server_streaming:
        return grpc.stream_stream_rpc_method_handler(
            _wrap_stream(fn, service, method.name, keys, method.full_name, gate), deser, ser)
    if method.client_streaming or method.server_streaming:
        raise NotImplementedError(f"{method.full_name}: half-streaming methods are not used by vien")
    return grpc.unary_unary_rpc_method_handler(
        _wrap_unary(fn, service, method.name, keys, method.full_name, gate), deser, ser)


def add_service(server: grpc.aio.Server, service: ServiceDescriptor, impl: object, app_name: str = "",
                keys: ApiKeys | None = None, gate: StartGate = _OPEN) -> None:
    """Register `impl` for `service`; its RPCs are timed as vien_rpc_latency_seconds{service=app_name} and,
    on an edge, checked against `keys`; they are answered UNAVAILABLE while `gate` is closed."""
    handlers = {m.name: _method_handler(m, impl, app_name or service.name, keys, gate) for m in service.methods}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))


def server_options(settings: Settings) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.http2.max_pings_without_data", 0),
        # Clients ping every 30 s (channel_options). gRPC servers by default accept a ping without data
        # only every 5 min and answer the third early one with GOAWAY "too_many_pings": a call that
        # computes for minutes without sending data (a 256 x 512-token doc-embedder batch on a CPU) then
        # failed with UNAVAILABLE. Accept the clients' own keepalive.
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.so_reuseport", 0),
    ]
    if settings.max_connection_age_s > 0:  # clients reconnect and re-resolve: new replicas get their share
        options += [("grpc.max_connection_age_ms", settings.max_connection_age_s * 1000),
                    ("grpc.max_connection_age_grace_ms", settings.max_connection_age_grace_s * 1000)]
    return options


def edge_keys(app: GrpcApp, settings: Settings) -> ApiKeys | None:
    """The API keys an edge app checks (None for an internal service); warns once in open mode."""
    if not getattr(app, "edge", False):
        return None
    keys = ApiKeys.load(settings.config, os.environ)
    if not keys.enabled:
        log.warning("no API keys configured (auth.api_keys, VIEN_API_KEYS): %s is open to anyone who can "
                    "reach it, and requests choose their own tenant", app.name)
    else:
        log.info("%s checks API keys (%d key(s))", app.name, len(keys))
    return keys


async def run_app(app: GrpcApp, settings: Settings, port: int, host: str | None = None,
                  ready: asyncio.Event | None = None, stop: asyncio.Event | None = None) -> None:
    """Serve `app` until SIGTERM/SIGINT (or `stop` is set); health is NOT_SERVING until start() returns."""
    keys = edge_keys(app, settings)
    creds = server_credentials(settings)
    server = grpc.aio.server(interceptors=server_interceptors(), options=server_options(settings),
                             maximum_concurrent_rpcs=settings.max_concurrent_rpcs or None)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = []
    gate = StartGate()
    for desc, impl in app.services():
        add_service(server, desc, impl, app.name, keys, gate)
        names.append(desc.full_name)
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )
    address = f"{host or settings.host}:{port}"
    bound = server.add_insecure_port(address) if creds is None else server.add_secure_port(address, creds)
    if bound == 0:
        raise OSError(f"cannot bind {address}")
    reporter = HealthReporter(health_servicer, names)
    await reporter.set(False)
    await health_servicer.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
    await server.start()
    log.info("listening on %s:%d (%s, %s)", host or settings.host, bound, app.name,
             "plaintext" if creds is None else ("mTLS" if settings.tls_client_auth else "TLS"))

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    try:
        await app.start(reporter)
        gate.is_open = True
        if not stop.is_set() and reporter.held_down is None:
            await reporter.set(True)
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        log.info("shutting down %s", app.name)
        await reporter.set(False)
        await server.stop(grace=5)
        await app.stop()

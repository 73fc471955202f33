"""The ASGI layer of the gateway: routes, body reading, auth header, the router call, error bodies.

A bare ASGI callable (no framework) served by uvicorn with httptools and uvloop: the gateway adds one
HTTP hop in front of the router, and this keeps that hop's cost to a few hundred microseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
import orjson
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import propagate, trace
from prometheus_client import Counter

from vien.embedding.requests import KIND_TO_PB
from vien.runtime.auth import AUTHORIZATION, ApiKeys
from vien.runtime.config import Settings
from vien.runtime.grpc_client import channel_options
from vien.runtime.metrics import RPC_LATENCY
from vien.runtime.telemetry import tracing_enabled
from vien.runtime.tls import aio_channel_for
from vien.v1 import router_pb2, router_pb2_grpc
from vien_gateway.logic import (
    ApiError,
    EmbedCall,
    Sparse,
    authenticate,
    client_timeout,
    embeddings_response,
    error_from_status,
    model_object,
    models_list,
    parse_embeddings_request,
    request_timeout,
    resolve_model,
    router_batches,
    with_texts,
)
from vien_gateway.token_arrays import TokenArrayError, TokenEncodings, encoding_name

log = logging.getLogger("vien.gateway")
HTTP_REQUESTS = Counter("vien_http_requests_total", "OpenAI-compatible HTTP requests by route, status and tenant",
                        ["route", "status", "tenant"])

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# Router requests of one HTTP request in flight at once: enough to overlap the hops, few enough that a
# 2,048-input request holds at most this many router batches of vectors in the router and embedders.
BATCHES_IN_FLIGHT = 2
_JSON = (b"content-type", b"application/json")


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return str(v.decode("latin-1"))
    return None


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"request body: larger than the limit of {limit} bytes (VIEN_MAX_MESSAGE_BYTES)",
                    param=None, code="request_too_large")


async def _read_body(receive: Receive, limit: int, content_length: str | None = None) -> bytes:
    # A declared length over the limit is refused before reading a byte; chunked bodies are counted.
    if content_length is not None and content_length.strip().isdigit() and int(content_length) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ApiError(400, "client disconnected", code="disconnected")
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not msg.get("more_body", False):
            return b"".join(chunks)


class GatewayApp:
    """ASGI app: `POST /v1/embeddings`, `GET /v1/models[/{id}]`, `GET /healthz`."""

    def __init__(self, settings: Settings, api_keys: ApiKeys | None = None) -> None:
        self.settings = settings
        self.config = settings.config
        self.keys = api_keys if api_keys is not None else ApiKeys.load(self.config, os.environ)
        self.max_body = settings.max_message_bytes
        self.channel: grpc.aio.Channel | None = None
        self.stub: router_pb2_grpc.RouterStub | None = None
        self.health: health_pb2_grpc.HealthStub | None = None
        self.tracer = trace.get_tracer("vien.gateway") if tracing_enabled() else None
        self._models = orjson.dumps(models_list(self.config))
        self.encodings = TokenEncodings()

    async def startup(self) -> None:
        # No client interceptor: grpc.aio interceptors cost ~0.3 ms a call, so the span and the trace
        # context (metadata) are done by hand in _embeddings.
        self.channel = aio_channel_for(self.settings.router_addr, self.settings, channel_options(self.settings))
        self.stub = router_pb2_grpc.RouterStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        log.info("gateway to router at %s (%d API key(s))", self.settings.router_addr, len(self.keys))

    async def shutdown(self) -> None:
        if self.channel is not None:
            await self.channel.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # uvicorn logs it and exits
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _respond(self, send: Send, status: int, body: bytes, extra: Sequence[tuple[str, str]] = ()) -> None:
        headers = [_JSON, (b"content-length", str(len(body)).encode())]
        headers += [(k.encode(), v.encode()) for k, v in extra]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        route, tenant = path, ""
        try:
            if path in ("/v1/embeddings", "/embeddings"):
                route = "/v1/embeddings"
                self._method(method, "POST", path)
                authorization = _header(scope, b"authorization")
                tenant = authenticate(self.keys, authorization)
                body = await _read_body(receive, self.max_body, _header(scope, b"content-length"))
                status, payload = 200, await self._embeddings(scope, body, authorization)
            elif path in ("/v1/models", "/models"):
                route = "/v1/models"
                self._method(method, "GET", path)
                tenant = authenticate(self.keys, _header(scope, b"authorization"))
                status, payload = 200, self._models
            elif path.startswith(("/v1/models/", "/models/")):
                route = "/v1/models/{id}"
                self._method(method, "GET", path)
                tenant = authenticate(self.keys, _header(scope, b"authorization"))
                model_id = path.split("/models/", 1)[1]
                resolve_model(self.config, model_id)
                status, payload = 200, orjson.dumps(model_object(self.config, model_id))
            elif path in ("/healthz", "/health"):
                route = "/healthz"
                status, payload = await self._healthz()
            else:
                route = "other"
                raise ApiError(404, f"Unknown request URL: {method} {path}.", code="unknown_url")
            await self._respond(send, status, payload)
        except ApiError as err:
            status = err.status
            await self._respond(send, status, orjson.dumps(err.body()), err.headers())
        except Exception:
            log.exception("unhandled error on %s %s", method, path)
            status = 500
            internal = ApiError(500, "internal error in the vien gateway; see its log", "server_error",
                                code="internal")
            await self._respond(send, status, orjson.dumps(internal.body()))
        HTTP_REQUESTS.labels(route, str(status), tenant).inc()

    @staticmethod
    def _method(got: str, want: str, path: str) -> None:
        if got != want:
            raise ApiError(405, f"{path}: method {got} not allowed; use {want}", code="method_not_allowed")

    async def _embeddings(self, scope: Scope, body: bytes, authorization: str | None) -> bytes:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"We could not parse the JSON body of your request ({exc}).",
                           code="invalid_json") from None
        call = parse_embeddings_request(data, self.config)
        if call.token_arrays is not None:
            try:
                texts = await self.encodings.decode(encoding_name(self.config, call.model), call.token_arrays)
            except TokenArrayError as exc:
                raise ApiError(400, exc.message, param=exc.param, code=exc.code) from None
            call = with_texts(call, texts, self.config)
        header = _header(scope, b"x-stainless-read-timeout") or _header(scope, b"x-request-timeout")
        total = client_timeout(header)
        deadline = None if total is None else time.monotonic() + total
        per_call = request_timeout(header, self.settings.http_timeout_s)
        timeout = (per_call, deadline)
        # The caller's own key goes on to the router, an edge that checks it too (same key set). gRPC
        # metadata is printable ASCII only: anything else cannot be a key the router knows.
        forward = authorization is not None and authorization.isascii() and authorization.isprintable()
        metadata: list[tuple[str, str]] = [(AUTHORIZATION, authorization.strip())] if forward and authorization else []
        if self.tracer is None:
            return await self._embed_batches(call, timeout, metadata)
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        with self.tracer.start_as_current_span("POST /v1/embeddings", context=propagate.extract(carrier),
                                               kind=trace.SpanKind.SERVER) as span:
            span.set_attribute("vien.profile", call.profile)
            span.set_attribute("vien.texts", len(call.texts))
            out: dict[str, str] = {}
            propagate.inject(out)  # traceparent for the router's server interceptor
            return await self._embed_batches(call, timeout, metadata + list(out.items()))

    async def _embed_batches(self, call: EmbedCall, timeout: tuple[float, float | None],
                             metadata: list[tuple[str, str]]) -> bytes:
        """Up to `openai.max_inputs` texts as router-sized requests (limits.max_texts_per_request), at most
        BATCHES_IN_FLIGHT at a time; answers in input order with one usage total."""
        batches = router_batches(len(call.texts), self.config.limits.max_texts_per_request)
        vectors: list[bytes] = [b""] * len(call.texts)
        sparse: list[Sparse] | None = [((), ())] * len(call.texts) if call.sparse else None
        tokens = 0
        gate = asyncio.Semaphore(BATCHES_IN_FLIGHT)

        async def one(positions: range) -> None:
            nonlocal tokens
            async with gate:
                resp = await self._embed_once(call, positions, timeout, metadata)
            for i, e in zip(positions, resp.embeddings, strict=True):
                vectors[i] = e.vector
                tokens += e.token_count
                if sparse is not None:
                    sparse[i] = (e.sparse.indices, e.sparse.values)

        tasks = [asyncio.ensure_future(one(r)) for r in batches]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:  # the first failure answers; the other batches are not waited for
                t.cancel()
        return embeddings_response(call.model, vectors, tokens, call.encoding_format, sparse)

    async def _embed_once(self, call: EmbedCall, positions: range, timeout: tuple[float, float | None],
                          metadata: list[tuple[str, str]]) -> router_pb2.EmbedResponse:
        # each router call: at most VIEN_HTTP_TIMEOUT_S, and never past the client's deadline for the request
        per_call, deadline = timeout
        wait = per_call if deadline is None else max(0.0, min(per_call, deadline - time.monotonic()))
        req = router_pb2.EmbedRequest(texts=call.texts[positions.start:positions.stop], kind=KIND_TO_PB[call.kind],
                                      profile=call.profile, dimensions=call.dimensions, strict=call.strict,
                                      sparse=call.sparse)
        assert self.stub is not None
        t0 = time.perf_counter()
        code = "OK"  # the router's status, for vien_rpc_latency_seconds{service="gateway"}
        try:
            return await self.stub.Embed(req, timeout=wait, metadata=metadata or None)
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
            retry_ms = None
            for k, v in exc.trailing_metadata() or ():
                if k == "retry-after-ms":
                    with contextlib.suppress(ValueError):
                        retry_ms = int(v)
            raise error_from_status(code, exc.details() or "", retry_ms, call.single, positions.start) from None
        finally:
            RPC_LATENCY.labels("gateway", "Embeddings", code).observe(time.perf_counter() - t0)

    async def _healthz(self) -> tuple[int, bytes]:
        assert self.health is not None
        try:
            r = await self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
            serving = r.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.aio.AioRpcError as exc:
            return 503, orjson.dumps({"status": "unavailable", "router": exc.code().name})
        if not serving:
            return 503, orjson.dumps({"status": "unavailable", "router": "NOT_SERVING"})
        return 200, orjson.dumps({"status": "ok", "router": "SERVING"})

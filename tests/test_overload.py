"""Overload and deadlines on the query path (non-timing properties; the figures are in `vien bench overload`):
- texts whose caller's deadline passed while queued are dropped from the batcher, never computed;
- the router passes the caller's remaining time on as the query-embedder call's deadline;
- far beyond capacity, the query-embedder answers only OK or RESOURCE_EXHAUSTED (with retry-after-ms),
  and its queue never holds more than its bound.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

import grpc
import pytest

from vien.embedding.cache import QueryCache
from vien.runtime.errors import DeadlineExceeded
from vien.runtime.grpc_server import run_app
from vien.v1 import common_pb2, embedder_pb2, embedder_pb2_grpc, router_pb2, router_pb2_grpc
from vien_query_embedder.grpc_app import QueryEmbedderApp
from vien_query_embedder.logic import QueryEmbedder
from vien_router.grpc_app import RouterApp
from vien_tools.cli.supervisor import free_port


def test_expired_texts_are_dropped_from_the_queue_not_computed(settings):
    """A long request keeps the model busy; 30 short ones with a 50 ms deadline queue behind it (another
    length bucket). They must fail with DeadlineExceeded and the model must never see them."""
    s = dataclasses.replace(settings, query_max_batch=4, query_max_queue=512)

    async def scenario() -> None:
        qe = QueryEmbedder(s, s.config, QueryCache(None))
        await qe.start()
        try:
            batcher = qe.batchers[s.config.profiles["e5-small"].query_encoder]
            long_texts = [f"đoạn văn dài số {i}: " + "hợp đồng lao động và bảo hiểm xã hội " * 20 for i in range(8)]
            busy = asyncio.create_task(qe.encode(long_texts, "e5-small"))
            await asyncio.sleep(0)  # queued first
            short = [qe.encode([f"câu hỏi {i}"], "e5-small", timeout=0.05) for i in range(30)]
            results = await asyncio.gather(*short, return_exceptions=True)
            assert len((await busy).items) == 8
            assert all(isinstance(r, DeadlineExceeded) for r in results), [type(r) for r in results]
            assert "dropped without computing" in str(results[0])
            assert batcher.stats.texts == 8 and batcher.stats.expired == 30
            ok = await qe.encode(["sau khi hết hạn"], "e5-small", timeout=5)  # the service goes on
            assert ok.items[0].vector.shape == (384,)
        finally:
            await qe.close()

    asyncio.run(scenario())


class FakeQueryEmbedder:
    """fake_query_embedder: a stand-in that records the deadline each call arrives with, then waits
    past it (a hung embedder). No model behind it: only the transport's deadline is under test."""

    def __init__(self) -> None:
        self.remaining: list[float | None] = []
        self.cancelled = 0

    async def Encode(self, request: embedder_pb2.EncodeRequest, context: grpc.aio.ServicerContext
                     ) -> embedder_pb2.EncodeResponse:
        self.remaining.append(context.time_remaining())
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return embedder_pb2.EncodeResponse()


async def _serve_fake(fake: FakeQueryEmbedder, port: int) -> grpc.aio.Server:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("vien.v1.QueryEmbedder", {
        "Encode": grpc.unary_unary_rpc_method_handler(
            fake.Encode, embedder_pb2.EncodeRequest.FromString, embedder_pb2.EncodeResponse.SerializeToString),
    }),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


def test_client_deadline_is_honoured_and_propagated_router_to_query_embedder(settings):
    fake = FakeQueryEmbedder()
    q_port, r_port = free_port(), free_port()
    s = dataclasses.replace(settings, query_embedder_addr=f"127.0.0.1:{q_port}", redis_url=None)

    async def scenario() -> None:
        server = await _serve_fake(fake, q_port)
        ready, stop = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(run_app(RouterApp(s), s, r_port, host="127.0.0.1", ready=ready, stop=stop))
        try:
            await asyncio.wait_for(ready.wait(), 60)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{r_port}") as ch:
                stub = router_pb2_grpc.RouterStub(ch)
                for deadline_s in (0.4, 1.5):
                    t0 = time.perf_counter()
                    with pytest.raises(grpc.aio.AioRpcError) as ei:
                        await stub.Embed(router_pb2.EmbedRequest(texts=["giá vàng hôm nay"],
                                                                 kind=common_pb2.EMBED_KIND_QUERY),
                                         timeout=deadline_s)
                    took = time.perf_counter() - t0
                    assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                    assert took < deadline_s + 1.0, f"answered after {took:.2f}s for a {deadline_s}s deadline"
                    got = fake.remaining[-1]
                    assert got is not None and 0 < got <= deadline_s, (got, deadline_s)
            deadline = time.monotonic() + 5  # the hung downstream call was cancelled, not left running
            while fake.cancelled < 2:
                assert time.monotonic() < deadline, fake.cancelled
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await task
            await server.stop(0)

    asyncio.run(scenario())


def test_far_beyond_capacity_only_ok_or_resource_exhausted_with_retry_advice(settings):
    """400 concurrent requests (~10x what the embedder answers in the same time) against a real
    query-embedder with a 16-text queue and a 30 ms wait budget."""
    port = free_port()
    s = dataclasses.replace(settings, query_max_queue=16, query_max_wait_ms=30, redis_url=None)

    async def scenario() -> tuple[dict[str, int], list[str], int]:
        app = QueryEmbedderApp(s)
        ready, stop = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(run_app(app, s, port, host="127.0.0.1", ready=ready, stop=stop))
        codes: dict[str, int] = {}
        hints: list[str] = []
        try:
            await asyncio.wait_for(ready.wait(), 60)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                stub = embedder_pb2_grpc.QueryEmbedderStub(ch)

                async def one(i: int) -> None:
                    call = stub.Encode(embedder_pb2.EncodeRequest(texts=[f"truy vấn quá tải số {i}"],
                                                                  profile="e5-small", bypass_cache=True), timeout=30)
                    try:
                        await call
                        codes["OK"] = codes.get("OK", 0) + 1
                    except grpc.aio.AioRpcError as exc:
                        codes[exc.code().name] = codes.get(exc.code().name, 0) + 1
                        if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                            md = dict(await call.trailing_metadata() or ())
                            hints.append(str(md.get("retry-after-ms", "")))

                await asyncio.gather(*(one(i) for i in range(400)))
                r = await stub.Encode(embedder_pb2.EncodeRequest(texts=["sau quá tải"], profile="e5-small"),
                                      timeout=30)
                assert len(r.results) == 1  # still serving afterwards
            peak = max(b.stats.peak_depth for b in app.logic.batchers.values())
        finally:
            stop.set()
            await task
        return codes, hints, peak

    codes, hints, peak = asyncio.run(scenario())
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, codes
    assert codes.get("OK", 0) > 0 and codes.get("RESOURCE_EXHAUSTED", 0) > 0, codes
    assert len(hints) == codes["RESOURCE_EXHAUSTED"] and all(h.isdigit() and int(h) > 0 for h in hints), hints[:5]
    assert peak <= 16

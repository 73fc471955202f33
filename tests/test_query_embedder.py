"""query-embedder logic with the real ONNX model and a real redis-server (no network between them)."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest

from vien.embedding.cache import QueryCache
from vien.runtime.errors import InvalidArgument, ResourceExhausted
from vien.runtime.metrics import CACHE_UP
from vien_query_embedder.logic import QueryEmbedder

QUERIES = [f"câu hỏi số {i} về luật đất đai" for i in range(12)] + [f"question {i} about tax law" for i in range(12)]


def make(settings, cache_url=None, **overrides) -> QueryEmbedder:
    s = dataclasses.replace(settings, **overrides) if overrides else settings
    return QueryEmbedder(s, s.config, QueryCache(cache_url, retry_after_s=0.2))


def test_cache_hit_and_redis_outage_do_not_fail_requests(settings, redis_server):
    async def scenario() -> None:
        qe = make(settings, redis_server.url)
        await qe.start()
        try:
            assert qe.cache.up
            a = await qe.encode(["phí trước bạ xe máy"], "e5-small")
            await qe.drain()  # cache writes happen after the reply
            b = await qe.encode(["phí trước bạ xe máy"], "e5-small")
            assert not a.items[0].cache_hit and b.items[0].cache_hit
            assert np.array_equal(a.items[0].vector, b.items[0].vector)
            assert b.items[0].token_count == a.items[0].token_count

            redis_server.kill()
            c = await qe.encode(["phí trước bạ xe máy", "thuế thu nhập cá nhân"], "e5-small")
            assert [i.cache_hit for i in c.items] == [False, False]
            assert not qe.cache.up and CACHE_UP._value.get() == 0
            assert float(c.items[0].vector @ a.items[0].vector) > 0.999

            redis_server.start()  # same port, empty
            await asyncio.sleep(0.3)
            await qe.encode(["thuế thu nhập cá nhân"], "e5-small")
            await qe.drain()
            d = await qe.encode(["thuế thu nhập cá nhân"], "e5-small")
            assert qe.cache.up and d.items[0].cache_hit and CACHE_UP._value.get() == 1
        finally:
            await qe.close()

    asyncio.run(scenario())


def test_without_redis_the_service_serves_uncached(settings):
    async def scenario() -> None:
        qe = make(settings, "redis://127.0.0.1:1/0")
        await qe.start()
        try:
            r = await qe.encode(["xin chào"], "e5-small")
            assert r.items[0].vector.shape == (384,) and not qe.cache.up
        finally:
            await qe.close()

    asyncio.run(scenario())


def test_concurrent_requests_are_batched_and_match_single_requests(settings):
    async def scenario() -> None:
        qe = make(settings)
        await qe.start()
        try:
            singles = [(await qe.encode([q], "e5-small")).items[0].vector for q in QUERIES]
            batches_before = qe.batchers["e5-small-fp32"].stats.batches
            together = await asyncio.gather(*(qe.encode([q], "e5-small") for q in QUERIES))
            batches = qe.batchers["e5-small-fp32"].stats.batches - batches_before
            assert batches < len(QUERIES), "concurrent requests were not batched"
            for s, t in zip(singles, together, strict=True):
                assert float(s @ t.items[0].vector) > 0.999
        finally:
            await qe.close()

    asyncio.run(scenario())


def test_full_queue_answers_resource_exhausted_with_retry_hint(settings):
    async def scenario() -> None:
        qe = make(settings, query_max_queue=8, query_max_batch=4)
        await qe.start()
        try:
            results = await asyncio.gather(
                *(qe.encode([f"{q} {i}"], "e5-small") for i, q in enumerate(QUERIES * 3)), return_exceptions=True
            )
            rejected = [r for r in results if isinstance(r, ResourceExhausted)]
            served = [r for r in results if not isinstance(r, Exception)]
            assert rejected and served
            assert all(r.retry_after_ms > 0 and "queue full" in r.message for r in rejected)
            assert not [r for r in results if isinstance(r, Exception) and not isinstance(r, ResourceExhausted)]
            # and it recovers once the burst is over
            assert (await qe.encode(["sau đợt cao điểm"], "e5-small")).items[0].vector.shape == (384,)
        finally:
            await qe.close()

    asyncio.run(scenario())


def test_strict_mode_names_the_callers_index_even_after_cache_hits(settings, redis_server):
    async def scenario() -> None:
        qe = make(settings, redis_server.url)
        await qe.start()
        try:
            await qe.encode(["đã có trong cache"], "e5-small")
            await qe.drain()
            with pytest.raises(InvalidArgument) as err:
                await qe.encode(["đã có trong cache", "dài " * 800], "e5-small", strict=True)
            assert err.value.field == "texts[1]"
        finally:
            await qe.close()

    asyncio.run(scenario())


def test_a_lone_short_query_runs_on_the_loop_thread_and_concurrent_ones_are_still_batched(settings):
    """The hand-off to the inference thread is skipped only for a short query with nothing else in progress;
    long queries and concurrent ones go through the batcher's thread (and get batched). Same vectors either
    way."""
    import threading

    threads: list[str] = []

    def recording_loader(cfg, s):
        from vien.embedding.encoders import load_onnx_encoder

        enc = load_onnx_encoder(cfg, s)
        embed_ids = enc.embed_ids

        def recorded(batch):
            threads.append(threading.current_thread().name)
            return embed_ids(batch)

        enc.embed_ids = recorded
        return enc

    async def scenario() -> None:
        s = dataclasses.replace(settings, query_inline_tokens=32)
        qe = QueryEmbedder(s, s.config, QueryCache(None), loader=recording_loader)
        await qe.start()
        loop_thread = threading.current_thread().name
        try:
            threads.clear()
            lone = (await qe.encode([QUERIES[0]], "e5-small")).items[0].vector
            assert threads == [loop_thread]
            threads.clear()
            await qe.encode([" ".join(QUERIES)], "e5-small")                # over 32 tokens: handed off
            assert threads and loop_thread not in threads
            threads.clear()
            together = await asyncio.gather(*(qe.encode([q], "e5-small") for q in QUERIES))
            assert loop_thread not in threads and len(threads) < len(QUERIES), threads
            assert float(lone @ together[0].items[0].vector) > 0.999
            off = dataclasses.replace(settings, query_inline_tokens=0)
            qe_off = QueryEmbedder(off, off.config, QueryCache(None), loader=recording_loader)
            await qe_off.start()
            try:
                threads.clear()
                await qe_off.encode([QUERIES[0]], "e5-small")
                assert threads and loop_thread not in threads
            finally:
                await qe_off.close()
        finally:
            await qe.close()

    asyncio.run(scenario())

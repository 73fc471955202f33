"""Query embedding without transport: validate, prompt, cache, batch, truncate."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from vien.embedding.batcher import Batcher
from vien.embedding.cache import CachedVector, QueryCache, cache_key
from vien.embedding.encoders import TextEncoder, load_onnx_encoder, prepare
from vien.embedding.requests import check_texts, resolve_dims, resolve_profile
from vien.embedding.results import EncodedItem, EncodeResult
from vien.embedding.vectors import truncate
from vien.runtime.config import QUERY, EncoderConfig, Settings, VienConfig
from vien.runtime.errors import DeadlineExceeded, InvalidArgument
from vien.runtime.metrics import DEADLINE_DROPPED, TEXTS, TOKENS

log = logging.getLogger("vien.query_embedder")

EncoderLoader = Callable[[EncoderConfig, Settings], TextEncoder]


class QueryEmbedder:
    def __init__(self, settings: Settings, config: VienConfig, cache: QueryCache,
                 loader: EncoderLoader = load_onnx_encoder) -> None:
        self.settings = settings
        self.config = config
        self.cache = cache
        self._loader = loader
        self.encoders: dict[str, TextEncoder] = {}
        self.batchers: dict[str, Batcher] = {}
        self._writes: set[asyncio.Task[None]] = set()
        self._in_flight = 0  # encode() calls in progress

    async def start(self) -> None:
        names = sorted({p.query_encoder for p in self.config.profiles.values()})
        for name in names:
            cfg = self.config.encoders[name]
            if cfg.backend != "onnx":
                raise ValueError(f"encoders.{name}: the query-embedder runs ONNX encoders only, got {cfg.backend!r}")
            t0 = time.perf_counter()
            enc = await asyncio.to_thread(self._loader, cfg, self.settings)
            log.info("loaded query encoder %s (%s %s, %d dims) in %.1fs", name, enc.model_id, enc.variant,
                     enc.dims, time.perf_counter() - t0)
            self.encoders[name] = enc
            b = Batcher(enc, max_batch_texts=self.settings.query_max_batch,
                        max_queue=self.settings.query_max_queue, name=f"q-{name}", service="query-embedder",
                        max_wait_s=self.settings.query_max_wait_ms / 1e3,
                        inline_tokens=self.settings.query_inline_tokens)
            b.start()
            self.batchers[name] = b
        for pname, p in self.config.profiles.items():
            enc = self.encoders[p.query_encoder]
            if enc.dims != p.dims:
                raise ValueError(f"profiles.{pname}.dims: {p.dims} but encoder {p.query_encoder!r} outputs {enc.dims}")
        await self.cache.ping()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._writes.add(task)  # keep a reference until done (asyncio holds tasks weakly)
        task.add_done_callback(self._writes.discard)

    async def drain(self) -> None:
        """Wait for the cache writes still in flight."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    async def close(self) -> None:
        await self.drain()
        for b in self.batchers.values():
            await b.close()
        await self.cache.close()

    async def encode(self, texts: list[str], profile: str, dimensions: int = 0, strict: bool = False,
                     bypass_cache: bool = False, timeout: float | None = None) -> EncodeResult:
        """`timeout`: seconds the caller still waits (its gRPC deadline); texts still queued when it
        passes are dropped from the batcher (DeadlineExceeded) instead of computed for nobody."""
        self._in_flight += 1
        try:
            return await self._encode(texts, profile, dimensions, strict, bypass_cache, timeout)
        finally:
            self._in_flight -= 1

    async def _alone(self) -> bool:
        """No other request in progress here, after one loop turn that lets requests which arrived
        together (while the loop computed inline) come in: only then may a short query run inline."""
        if not self.settings.query_inline_tokens:
            return False
        await asyncio.sleep(0)
        return self._in_flight == 1

    async def _encode(self, texts: list[str], profile: str, dimensions: int, strict: bool,
                      bypass_cache: bool, timeout: float | None) -> EncodeResult:
        t_start = time.perf_counter()
        if not profile:
            raise InvalidArgument("profile", "is required")
        pname, prof = resolve_profile(self.config, profile)
        dims = resolve_dims(pname, prof, dimensions)
        check_texts(texts, self.config.limits)
        enc_name = prof.query_encoder
        enc = self.encoders[enc_name]
        prompted = [prof.prompt(QUERY, t) for t in texts]
        keys = [cache_key(enc.model_id, enc.revision, enc.variant, t) for t in prompted]

        t0 = time.perf_counter()
        cached: list[CachedVector | None] = (
            [None] * len(texts) if bypass_cache else await self.cache.get_many(keys, enc.dims)
        )
        t_cache = time.perf_counter() - t0
        if strict:
            for i, c in enumerate(cached):
                if c is not None and c.truncated:
                    raise InvalidArgument(f"texts[{i}]", f"{c.token_count}+ tokens exceeds the limit of "
                                          f"{prof.max_tokens} tokens of profile {pname!r} (strict mode)")
        miss = [i for i, c in enumerate(cached) if c is None]
        t_infer = 0.0
        if miss:
            prepared = prepare(enc, [prompted[i] for i in miss], prof.max_tokens, strict, pname, indices=miss)
            batcher = self.batchers[enc_name]
            t0 = time.perf_counter()
            if timeout is not None:
                timeout -= time.perf_counter() - t_start
            try:
                vectors = await batcher.embed([p.ids for p in prepared], timeout=timeout,
                                              alone=len(prepared) == 1 and await self._alone())
            except DeadlineExceeded:
                DEADLINE_DROPPED.labels("query-embedder").inc(len(prepared))
                raise
            t_infer = time.perf_counter() - t0
            fresh = [CachedVector(v, p.token_count, p.truncated) for v, p in zip(vectors, prepared, strict=True)]
            for i, entry in zip(miss, fresh, strict=True):
                cached[i] = entry
            # Written after the reply is on its way: the caller does not wait for Redis.
            self._spawn(self.cache.set_many([(keys[i], e) for i, e in zip(miss, fresh, strict=True)]))
            TOKENS.labels("query-embedder", pname).inc(sum(p.token_count for p in prepared))
        TEXTS.labels("query-embedder", pname).inc(len(texts))

        missed = set(miss)
        items = []
        for i, c in enumerate(cached):
            assert c is not None
            vec = truncate(c.vector, dims)
            items.append(EncodedItem(vec, c.token_count, c.truncated, cache_hit=i not in missed))
        stage = {"cache": t_cache * 1e3, "inference": t_infer * 1e3,
                 "total": (time.perf_counter() - t_start) * 1e3}
        return EncodeResult(items, f"{enc.model_id}@{enc.revision}", stage)

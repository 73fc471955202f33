"""Query-vector cache in Redis that degrades to "no cache" instead of failing requests.

Key: model id + revision + variant + sha256(prompted text). The full-dimension vector is stored,
so one entry serves every truncated `dimensions` of the same query. When Redis is absent or down,
lookups report misses, the `vien_cache_up` gauge drops to 0, one warning is logged, and the
connection is retried after a back-off, so the service keeps answering at model speed.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from vien.runtime.metrics import CACHE_REQUESTS, CACHE_UP

log = logging.getLogger("vien.cache")


_HEADER = struct.Struct("<IB")  # token count, truncated flag; then the float32 vector


@dataclass(frozen=True)
class CachedVector:
    vector: np.ndarray
    token_count: int
    truncated: bool

    def encode(self) -> bytes:
        return _HEADER.pack(self.token_count, int(self.truncated)) + np.asarray(self.vector, "<f4").tobytes()

    @classmethod
    def decode(cls, raw: bytes, dims: int) -> CachedVector | None:
        if len(raw) != _HEADER.size + dims * 4:
            return None  # written by another model/version: treat as a miss
        count, truncated = _HEADER.unpack_from(raw)
        return cls(np.frombuffer(raw, dtype="<f4", offset=_HEADER.size), count, bool(truncated))


def cache_key(model_id: str, revision: str, variant: str, prompted_text: str) -> str:
    digest = hashlib.sha256(prompted_text.encode("utf-8")).hexdigest()
    return f"vien:q:v1:{model_id}:{revision}:{variant}:{digest}"


class QueryCache:
    def __init__(self, url: str | None, ttl_s: int = 7 * 24 * 3600, retry_after_s: float = 2.0,
                 op_timeout_s: float = 0.05) -> None:
        self.url = url
        self.ttl_s = ttl_s
        self.retry_after_s = retry_after_s
        self._client: aioredis.Redis | None = None
        self._down_until = 0.0
        self._up = False
        if url:
            # Short timeouts: a slow cache must never cost more than the model it saves.
            self._client = aioredis.Redis.from_url(
                url, socket_timeout=op_timeout_s, socket_connect_timeout=op_timeout_s * 4,
                health_check_interval=0,
            )
        else:
            log.warning("query cache disabled: VIEN_REDIS_URL is not set; serving uncached")
        CACHE_UP.set(0)

    @property
    def up(self) -> bool:
        return self._up

    def _available(self) -> bool:
        return self._client is not None and time.monotonic() >= self._down_until

    def _mark_down(self, exc: Exception) -> None:
        if self._up or self._down_until == 0.0:
            log.warning("query cache unavailable (%s: %s); serving uncached, retrying in %.0fs",
                        type(exc).__name__, exc, self.retry_after_s)
        self._up = False
        self._down_until = time.monotonic() + self.retry_after_s
        CACHE_UP.set(0)

    def _mark_up(self) -> None:
        if not self._up:
            log.info("query cache connected (%s)", self.url)
        self._up = True
        CACHE_UP.set(1)

    async def ping(self) -> bool:
        if not self._available():
            return False
        assert self._client is not None
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            self._mark_down(exc)
            return False
        self._mark_up()
        return True

    async def get_many(self, keys: Sequence[str], dims: int) -> list[CachedVector | None]:
        if not keys:
            return []
        if not self._available():
            CACHE_REQUESTS.labels("error").inc(len(keys))
            return [None] * len(keys)
        assert self._client is not None
        try:
            raw = await self._client.mget(list(keys))
        except (RedisError, OSError) as exc:
            self._mark_down(exc)
            CACHE_REQUESTS.labels("error").inc(len(keys))
            return [None] * len(keys)
        self._mark_up()
        out: list[CachedVector | None] = []
        for value in raw:
            hit = CachedVector.decode(value, dims) if isinstance(value, bytes) else None
            out.append(hit)
            CACHE_REQUESTS.labels("hit" if hit is not None else "miss").inc()
        return out

    async def set_many(self, items: Sequence[tuple[str, CachedVector]]) -> None:
        if not items or not self._available():
            return
        assert self._client is not None
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, entry in items:
                    pipe.set(key, entry.encode(), ex=self.ttl_s)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._mark_down(exc)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

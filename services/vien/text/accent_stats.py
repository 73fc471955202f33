"""Where accent-restoration statistics live, and the restorer the router keeps per tenant.

Ingest adds the syllable counts of every document it writes (`AccentStats.add`, per tenant and for all
tenants together, scope `ALL`); the router reads a scope's counts (`load`) into an `AccentModel` on top of
the general prior and keeps it in memory, refreshed in the background when the scope's version moved
(at most every `refresh_s`), so the request path never waits on the store.

Implementations: `MemoryAccentStats` (one process: the evaluation, tests) and `RedisAccentStats` (the mesh:
hashes `vien:accents:v1:<scope>` with HINCRBY, so several ingest workers add concurrently without a
rebuild). Counts only grow: a deleted or replaced document's syllables stay counted (statistics of what the
tenant writes, not an index). Redis down: ingest goes on without counting, the router keeps the model it has
(or the general prior), one warning each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from vien.text.accents import AccentModel, Restoration, SyllableCounts, load_prior, restore

log = logging.getLogger("vien.accents")
ALL = "*"            # every tenant's documents together
_VERSION = "#v"      # hash field: bumped by every add


class AccentStats(Protocol):
    async def add(self, tenant: str, counts: SyllableCounts) -> None: ...

    async def version(self, scope: str) -> int | None: ...

    async def load(self, scope: str) -> SyllableCounts | None: ...

    async def close(self) -> None: ...


class MemoryAccentStats:
    def __init__(self) -> None:
        self._counts: dict[str, SyllableCounts] = {}
        self._versions: dict[str, int] = {}

    async def add(self, tenant: str, counts: SyllableCounts) -> None:
        for scope in (tenant, ALL):
            self._counts.setdefault(scope, SyllableCounts()).update(counts)
            self._versions[scope] = self._versions.get(scope, 0) + 1

    async def version(self, scope: str) -> int | None:
        return self._versions.get(scope)

    async def load(self, scope: str) -> SyllableCounts | None:
        c = self._counts.get(scope)
        return None if c is None else SyllableCounts(c.unigrams.copy(), c.bigrams.copy())

    async def close(self) -> None:
        return None


class RedisAccentStats:
    def __init__(self, url: str, op_timeout_s: float = 2.0, retry_after_s: float = 5.0) -> None:
        self.url = url
        self._client = aioredis.Redis.from_url(url, socket_timeout=op_timeout_s,
                                               socket_connect_timeout=op_timeout_s, health_check_interval=0)
        self._down_until = 0.0
        self._warned = False
        self.retry_after_s = retry_after_s

    @staticmethod
    def key(scope: str) -> str:
        return f"vien:accents:v1:{scope}"

    def _failed(self, exc: Exception) -> None:
        if not self._warned:
            log.warning("accent statistics in Redis unavailable (%s: %s); going on without them",
                        type(exc).__name__, exc)
            self._warned = True
        self._down_until = time.monotonic() + self.retry_after_s

    def _up(self) -> bool:
        return time.monotonic() >= self._down_until

    async def add(self, tenant: str, counts: SyllableCounts) -> None:
        fields = counts.fields()
        if not fields or not self._up():
            return
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for scope in (tenant, ALL):
                    key = self.key(scope)
                    for f, n in fields.items():
                        pipe.hincrby(key, f, n)
                    pipe.hincrby(key, _VERSION, 1)
                await pipe.execute()
            self._warned = False
        except (RedisError, OSError) as exc:
            self._failed(exc)

    async def version(self, scope: str) -> int | None:
        if not self._up():
            return None
        try:
            v = await self._client.hget(self.key(scope), _VERSION)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return None
        return int(v) if v is not None else None

    async def load(self, scope: str) -> SyllableCounts | None:
        if not self._up():
            return None
        try:
            raw = await self._client.hgetall(self.key(scope))
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return None
        if not raw:
            return None
        fields = {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in raw.items()}
        fields.pop(_VERSION, None)
        return SyllableCounts.from_fields(fields)

    async def close(self) -> None:
        await self._client.aclose()


def open_accent_stats(redis_url: str | None) -> AccentStats | None:
    return RedisAccentStats(redis_url) if redis_url else None


class AccentRestorer:
    """Per-scope `AccentModel`s over one general prior; `restore` is synchronous and never waits on the store."""

    def __init__(self, prior: dict[str, float], stats: AccentStats | None = None, refresh_s: float = 30.0) -> None:
        self.prior = prior
        self.stats = stats
        self.refresh_s = refresh_s
        self.general = AccentModel(prior)
        self._models: dict[str, tuple[AccentModel, int | None, float]] = {}  # scope -> model, version, checked at
        self._refreshing: dict[str, asyncio.Task[AccentModel]] = {}

    @classmethod
    def from_models_dir(cls, models_dir: Path, stats: AccentStats | None = None) -> AccentRestorer:
        prior = load_prior(models_dir)
        if not prior:
            log.warning("no general accent prior (%s has no default model): restoring from document statistics "
                        "only", models_dir)
        return cls(prior, stats)

    def model(self, scope: str) -> AccentModel:
        """The scope's model as it is now ("" = the general prior alone); a refresh is started when it is older
        than `refresh_s`."""
        if not scope:
            return self.general
        entry = self._models.get(scope)
        if self.stats is not None and (entry is None or time.monotonic() - entry[2] >= self.refresh_s):
            self._schedule(scope)
        return entry[0] if entry is not None else self.general

    def _schedule(self, scope: str) -> None:
        if scope in self._refreshing:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self.refresh(scope))
        self._refreshing[scope] = task
        task.add_done_callback(lambda _t: self._refreshing.pop(scope, None))

    async def refresh(self, scope: str) -> AccentModel:
        """Reload the scope's counts if their version changed; returns the model now in use."""
        if self.stats is None:
            return self.general
        entry = self._models.get(scope)
        version = await self.stats.version(scope)
        if entry is not None and (version is None or version == entry[1]):
            self._models[scope] = (entry[0], entry[1], time.monotonic())
            return entry[0]
        counts = await self.stats.load(scope) if version is not None else None
        model = (await asyncio.to_thread(AccentModel, self.prior, counts)) if counts is not None else self.general
        self._models[scope] = (model, version, time.monotonic())
        return model

    def restore(self, text: str, scope: str = ALL) -> Restoration:
        return restore(text, self.model(scope))

    async def close(self) -> None:
        for task in list(self._refreshing.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.stats is not None:
            await self.stats.close()

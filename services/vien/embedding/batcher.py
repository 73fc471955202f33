"""Dynamic batching of inference across concurrent requests.

There is no fixed wait window: while the model runs one batch, new texts queue up, and the next
batch takes what has accumulated. An idle service therefore adds no latency, a busy one batches
more. Texts are batched with others of a similar length (power-of-two buckets) because padding
costs time and, with dynamic int8 quantisation, shifts activation scales and so the vector itself:
bucketing keeps a query's embedding the same whether it was batched or not, which the cache needs.

A lone short text at an idle batcher can run on the event loop's own thread (`inline_tokens`, when the
caller says it is alone): handing it to the inference thread and back costs two thread wake-ups (~0.5 ms
measured here, a tenth of a short query's model time). Anything longer, concurrent or arriving while the
model is busy goes through the queue (and gets batched), so the loop is never blocked for more than one
short inference.

The queue is bounded in texts; beyond it callers get ResourceExhausted at once with a retry hint.
A text whose caller's deadline has passed by the time a batch is formed is dropped (DeadlineExceeded),
never computed: under overload the model only works on answers someone is still waiting for.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from vien.embedding.encoders import TextEncoder
from vien.runtime.errors import DeadlineExceeded, ResourceExhausted
from vien.runtime.metrics import BATCH_SIZE, QUEUE_DEPTH, REJECTED


def length_bucket(n_tokens: int) -> int:
    b = 16
    while b < n_tokens:
        b <<= 1
    return b


@dataclass
class _Item:
    ids: list[int]
    future: asyncio.Future[np.ndarray]
    enqueued: float = field(default_factory=time.perf_counter)
    deadline: float = float("inf")  # time.perf_counter() by which the caller needs the answer

    @property
    def bucket(self) -> int:
        return length_bucket(len(self.ids))


@dataclass
class BatchStats:
    batches: int = 0
    texts: int = 0
    tokens: int = 0
    busy_s: float = 0.0
    last_batch_size: int = 0
    rejected: int = 0
    peak_depth: int = 0       # most texts ever queued at once (bounded by max_queue)
    expired: int = 0          # texts dropped from the queue because their deadline had passed
    per_text_s: float = 0.005  # EWMA, seeds the retry hint


class Batcher:
    def __init__(
        self,
        encoder: TextEncoder,
        max_batch_texts: int = 32,
        max_batch_tokens: int = 8192,
        max_queue: int = 512,
        name: str = "batcher",
        service: str = "",
        max_wait_s: float = 0.0,
        inline_tokens: int = 0,
    ) -> None:
        self.encoder = encoder
        self.inline_tokens = inline_tokens  # see the module docstring; 0 = never inline
        self.max_batch_texts = max_batch_texts
        self.max_batch_tokens = max_batch_tokens
        self.max_queue = max_queue
        self.max_wait_s = max_wait_s  # admission by expected queueing delay; 0 = off
        self.stats = BatchStats()
        self._pending: deque[_Item] = deque()
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._task: asyncio.Task[None] | None = None
        self._busy = False  # a batch is on the inference thread
        # the `service` label of vien_batch_size / vien_queue_depth / vien_rejected_total ("" = not reported)
        self.service = service

    def _report_depth(self) -> None:
        if self.service:
            QUEUE_DEPTH.labels(self.service).set(len(self._pending))

    @property
    def depth(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._report_depth()  # 0 from the start: a lone query served inline never touches the queue
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for item in self._pending:
            if not item.future.done():
                item.future.cancel()
        self._pending.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def retry_after_ms(self) -> int:
        return max(5, int(1000 * self.stats.per_text_s * max(1, self.depth)))

    def expected_wait_s(self, extra: int = 0) -> float:
        return self.stats.per_text_s * (self.depth + extra)

    async def embed(self, batch: Sequence[list[int]], timeout: float | None = None,
                    alone: bool = False) -> list[np.ndarray]:
        """Embed token-id lists; returns one vector per list. Raises ResourceExhausted when full (or, with
        max_wait_s, when the expected wait is too long), and DeadlineExceeded when `timeout` seconds pass
        before the texts' batch starts. `alone`: the caller knows no other request is on its way here (then a
        short text may run inline, see the module docstring)."""
        if self.depth + len(batch) > self.max_queue:
            self.stats.rejected += 1
            if self.service:
                REJECTED.labels(self.service).inc()
            raise ResourceExhausted(
                f"embedding queue full ({self.depth} of {self.max_queue} texts queued); retry later",
                retry_after_ms=self.retry_after_ms(),
            )
        if self.max_wait_s and self.depth and self.expected_wait_s(len(batch)) > self.max_wait_s:
            self.stats.rejected += 1
            if self.service:
                REJECTED.labels(self.service).inc()
            raise ResourceExhausted(
                f"embedding queue busy (expected wait {1e3 * self.expected_wait_s(len(batch)):.0f} ms > "
                f"{1e3 * self.max_wait_s:.0f} ms for {self.depth} queued texts); retry later",
                retry_after_ms=self.retry_after_ms(),
            )
        if (alone and len(batch) == 1 and len(batch[0]) <= self.inline_tokens and not self._busy
                and not self._pending and (timeout is None or timeout > 0)):
            return [self._embed_inline(batch[0])]
        loop = asyncio.get_running_loop()
        deadline = float("inf") if timeout is None else time.perf_counter() + timeout
        items = [_Item(ids, loop.create_future(), deadline=deadline) for ids in batch]
        self._pending.extend(items)
        self._report_depth()
        self.stats.peak_depth = max(self.stats.peak_depth, len(self._pending))
        self._wake.set()
        try:
            return list(await asyncio.gather(*(i.future for i in items)))
        except asyncio.CancelledError:
            # The caller gave up (deadline): drop its queued texts so no work is wasted on them.
            for i in items:
                i.future.cancel()
            raise

    def _embed_inline(self, ids: list[int]) -> np.ndarray:
        if self.service:
            BATCH_SIZE.labels(self.service).observe(1)
        t0 = time.perf_counter()
        vector = self.encoder.embed_ids([ids])[0]
        self._record(time.perf_counter() - t0, [ids])
        return vector

    def _record(self, dt: float, ids: list[list[int]]) -> None:
        s = self.stats
        s.batches += 1
        s.texts += len(ids)
        s.tokens += sum(len(x) for x in ids)
        s.busy_s += dt
        s.last_batch_size = len(ids)
        s.per_text_s = 0.8 * s.per_text_s + 0.2 * (dt / len(ids))

    def _expire(self) -> None:
        now = time.perf_counter()
        for item in self._pending:
            if item.deadline <= now and not item.future.done():
                self.stats.expired += 1
                item.future.set_exception(DeadlineExceeded(
                    f"deadline passed after {1e3 * (now - item.enqueued):.0f} ms in the embedding queue; "
                    "dropped without computing"))

    def _take_batch(self) -> list[_Item]:
        self._expire()
        while self._pending and self._pending[0].future.done():
            self._pending.popleft()
        if not self._pending:
            return []
        bucket = self._pending[0].bucket
        taken: list[_Item] = []
        keep: deque[_Item] = deque()
        tokens = 0
        while self._pending:
            item = self._pending.popleft()
            if item.future.done():
                continue
            fits = (
                item.bucket == bucket
                and len(taken) < self.max_batch_texts
                and (not taken or tokens + bucket <= self.max_batch_tokens)
            )
            if fits:
                taken.append(item)
                tokens += bucket
            else:
                keep.append(item)
        self._pending = keep
        return taken

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = self._take_batch()
            if not batch:
                self._wake.clear()
                await self._wake.wait()
                continue
            ids = [i.ids for i in batch]
            self._report_depth()
            if self.service:
                BATCH_SIZE.labels(self.service).observe(len(batch))
            t0 = time.perf_counter()
            self._busy = True
            try:
                vectors = await loop.run_in_executor(self._executor, self.encoder.embed_ids, ids)
            except Exception as exc:  # a model failure fails this batch only
                for i in batch:
                    if not i.future.done():
                        i.future.set_exception(exc)
                continue
            finally:
                self._busy = False
            self._record(time.perf_counter() - t0, ids)
            for i, v in zip(batch, vectors, strict=True):
                if not i.future.done():
                    i.future.set_result(v)

"""Document embedding without transport: validate, prompt, token-budget batching, truncate dims."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vien.embedding.batcher import Batcher
from vien.embedding.encoders import TextEncoder, load_onnx_encoder, prepare
from vien.embedding.requests import check_texts, resolve_dims, resolve_profile
from vien.embedding.vectors import truncate
from vien.runtime.config import EncoderConfig, Settings, VienConfig
from vien.runtime.errors import InvalidArgument
from vien.runtime.metrics import BATCH_SIZE, QUEUE_DEPTH, TEXTS, TOKENS

log = logging.getLogger("vien.doc_embedder")

EncoderLoader = Callable[[EncoderConfig, Settings], TextEncoder]


@dataclass(frozen=True)
class DocItem:
    vector: np.ndarray
    token_count: int
    truncated: bool


@dataclass(frozen=True)
class DocResult:
    items: list[DocItem]
    model_id: str
    stage_ms: dict[str, float]


class DocEmbedder:
    def __init__(self, settings: Settings, config: VienConfig, loader: EncoderLoader = load_onnx_encoder,
                 max_queue: int = 4096) -> None:
        self.settings = settings
        self.config = config
        self._loader = loader
        self.max_queue = max_queue
        self.encoders: dict[str, TextEncoder] = {}
        self.batchers: dict[str, Batcher] = {}

    async def start(self) -> None:
        for name in sorted({p.document_encoder for p in self.config.profiles.values()}):
            cfg = self.config.encoders[name]
            if cfg.backend != "onnx":
                log.warning("encoders.%s: backend %r is not served by this doc-embedder build; skipped",
                            name, cfg.backend)
                continue
            t0 = time.perf_counter()
            enc = await asyncio.to_thread(self._loader, cfg, self.settings)
            log.info("loaded document encoder %s (%s %s) in %.1fs", name, enc.model_id, enc.variant,
                     time.perf_counter() - t0)
            self.encoders[name] = enc
            b = Batcher(enc, max_batch_texts=cfg.max_batch_texts, max_batch_tokens=cfg.max_batch_tokens,
                        max_queue=self.max_queue, name=f"d-{name}")
            b.start()
            self.batchers[name] = b

    async def close(self) -> None:
        for b in self.batchers.values():
            await b.close()

    async def encode(self, texts: list[str], profile: str, dimensions: int = 0,
                     strict: bool = False) -> DocResult:
        t_start = time.perf_counter()
        if not profile:
            raise InvalidArgument("profile", "is required")
        pname, prof = resolve_profile(self.config, profile)
        dims = resolve_dims(pname, prof, dimensions)
        check_texts(texts, self.config.limits)
        enc_name = prof.document_encoder
        if enc_name not in self.encoders:
            raise InvalidArgument("profile", f"profile {pname!r} uses encoder {enc_name!r}, "
                                  "which this doc-embedder does not serve")
        enc = self.encoders[enc_name]
        t0 = time.perf_counter()
        prepared = prepare(enc, [prof.prompt("document", t) for t in texts], prof.max_tokens, strict, pname)
        t_tok = time.perf_counter() - t0
        batcher = self.batchers[enc_name]
        QUEUE_DEPTH.labels("doc-embedder").set(batcher.depth)
        t0 = time.perf_counter()
        vectors = await batcher.embed([p.ids for p in prepared])
        t_inf = time.perf_counter() - t0
        BATCH_SIZE.labels("doc-embedder").observe(batcher.stats.last_batch_size)
        TOKENS.labels("doc-embedder", pname).inc(sum(p.token_count for p in prepared))
        TEXTS.labels("doc-embedder", pname).inc(len(texts))
        items = [DocItem(truncate(v, dims), p.token_count, p.truncated)
                 for v, p in zip(vectors, prepared, strict=True)]
        stage = {"tokenize": t_tok * 1e3, "inference": t_inf * 1e3,
                 "total": (time.perf_counter() - t_start) * 1e3}
        return DocResult(items, f"{enc.model_id}@{enc.revision}", stage)

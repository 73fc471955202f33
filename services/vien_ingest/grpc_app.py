"""The ingest worker as a service: grpc.health.v1 (SERVING once it consumes) around the Kafka loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

import grpc
import numpy as np

from vien.embedding.encoders import resolve_model_source
from vien.models.onnx_encoder import TokenCounter
from vien.runtime import env
from vien.runtime.config import Settings, VienConfig
from vien.runtime.errors import TRANSIENT_CODES, Unavailable, upstream_error
from vien.runtime.grpc_client import aio_channel
from vien.runtime.grpc_server import HealthReporter
from vien.store.base import VectorStore
from vien.store.factory import open_store
from vien.text.accent_stats import AccentStats, open_accent_stats
from vien.text.langid import detect
from vien.v1 import embedder_pb2, embedder_pb2_grpc
from vien_ingest.processor import CountTokens, IngestProcessor
from vien_ingest.worker import IngestWorker

log = logging.getLogger("vien.ingest")


class GrpcDocEncoder:
    def __init__(self, address: str, stub: embedder_pb2_grpc.DocEmbedderStub, timeout_s: float = 120.0) -> None:
        self.address = address
        self.stub = stub
        self.timeout_s = timeout_s

    async def encode(self, texts: list[str], profile: str) -> list[np.ndarray]:
        try:
            resp = await self.stub.Encode(embedder_pb2.EncodeRequest(texts=texts, profile=profile),
                                          timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            err = upstream_error(exc, f"doc-embedder at {self.address}")
            if err.code in TRANSIENT_CODES:  # the batch is retried later, nothing committed
                raise Unavailable(err.message) from None
            raise err from None
        return [np.frombuffer(r.vector, "<f4") for r in resp.results]


def token_counters(config: VienConfig, settings: Settings) -> dict[str, CountTokens]:
    """Per profile, the tokenizer of its document side (the query encoder's when documents are remote)."""
    out: dict[str, CountTokens] = {}
    cache: dict[str, TokenCounter] = {}
    for name, prof in config.profiles.items():
        enc = config.encoders[prof.document_encoder]
        if enc.backend != "onnx":
            enc = config.encoders[prof.query_encoder]
        src = str(resolve_model_source(enc.model, settings))
        if src not in cache:
            cache[src] = TokenCounter(src)
        out[name] = cache[src].count
    return out


class IngestApp:
    name = "ingest"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.worker: IngestWorker | None = None
        self._task: asyncio.Task[None] | None = None
        self._store: VectorStore | None = None
        self._channel: grpc.aio.Channel | None = None
        self._accent_stats: AccentStats | None = None

    def services(self) -> list[tuple[object, object]]:
        return []

    async def start(self, health: HealthReporter) -> None:
        s = self.settings
        self._store = await asyncio.to_thread(open_store, s.vector_store_spec)
        self._channel = aio_channel(s.doc_embedder_addr, s)
        encoder = GrpcDocEncoder(s.doc_embedder_addr, embedder_pb2_grpc.DocEmbedderStub(self._channel))
        counters = await asyncio.to_thread(token_counters, s.config, s)
        if any(p.accents.document_statistics for p in s.config.profiles.values()):
            self._accent_stats = open_accent_stats(s.redis_url)
        processor = IngestProcessor(s.config, self._store, encoder, counters, detect, accent_stats=self._accent_stats)
        self.worker = IngestWorker(s, processor, local_broker=bool(env.get("VIEN_KAFKA_LOCAL")))
        await self.worker.connect()

        async def run() -> None:
            assert self.worker is not None
            try:
                await self.worker.run()
            except Exception:
                log.exception("ingest loop failed; exiting so the supervisor restarts the worker")
                os._exit(3)

        self._task = asyncio.get_running_loop().create_task(run())

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.worker is not None:
            await self.worker.close()
        if self._channel is not None:
            await self._channel.close()
        if self._accent_stats is not None:
            await self._accent_stats.close()
        if self._store is not None:
            await asyncio.to_thread(self._store.close)

"""The pipelined ingest worker on a real tansu broker, the real ONNX encoder and Qdrant Edge in process:
batch N+1 is prepared while batch N embeds, offsets are committed per batch, in order, only after the
store acknowledged the batch, and a document changed by two consecutive batches ends as the newer one."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from test_faults import ThreadedDocEncoder, committed_total, doc_events, publish, until
from test_ingest_processor import LONG

from vien.store.base import Point, SearchFilter
from vien.store.edge import EdgeStore
from vien.text.langid import detect
from vien.v1.documents_pb2 import DocumentEvent
from vien_ingest.grpc_app import token_counters
from vien_ingest.processor import IngestProcessor, Record
from vien_ingest.worker import IngestWorker

COLL = "vien_e5_small"


class RecordingStore(EdgeStore):
    """Qdrant Edge, noting the order of lookups and acknowledged writes."""

    def __init__(self, path: Path, log: list[tuple[str, object]]) -> None:
        super().__init__(path)
        self.log = log

    def doc_chunks(self, collection: str, tenant: str, doc_id: str) -> list:
        self.log.append(("lookup", doc_id))
        return super().doc_chunks(collection, tenant, doc_id)

    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        super().upsert(collection, points)
        self.log.append(("acked", {p.payload.get("doc_id") for p in points}))


class GatedEncoder(ThreadedDocEncoder):
    """The real encoder; its first call waits for `gate` (so a batch is held in its embedding step)."""

    def __init__(self, settings, gate: asyncio.Event) -> None:
        super().__init__(settings)
        self.gate = gate
        self.started = asyncio.Event()

    async def encode(self, texts: list[str], profile: str) -> list[np.ndarray]:
        self.started.set()
        await self.gate.wait()
        return await super().encode(texts, profile)


class RecordingWorker(IngestWorker):
    def __init__(self, *a, log: list[tuple[str, object]], **kw) -> None:
        super().__init__(*a, **kw)
        self.log = log

    async def commit(self, records: list[Record]) -> None:
        await super().commit(records)
        self.log.append(("commit", (self.offsets(records), {doc for _, doc in self._keys(records)})))


def test_next_batch_is_prepared_during_embedding_and_commits_follow_acks_in_order(settings, kafka_topics, tmp_path):
    t = kafka_topics
    tenant = "pipe"
    log: list[tuple[str, object]] = []

    async def scenario() -> None:
        gate = asyncio.Event()
        store = RecordingStore(tmp_path / "edge", log)
        s = dataclasses.replace(settings, kafka_bootstrap=t.bootstrap, documents_topic=t.documents,
                                dlq_topic=t.dlq, ingest_group=t.group)
        enc = GatedEncoder(settings, gate)
        proc = IngestProcessor(s.config, store, enc, token_counters(s.config, s), detect)
        worker = RecordingWorker(s, proc, local_broker=True, max_records=16, log=log)
        await worker.connect()
        run = asyncio.create_task(worker.run())
        try:
            # batch 1: a long document "x" (several chunks) and a few short ones
            first = [DocumentEvent(op=DocumentEvent.OP_UPSERT, doc_id="x", tenant=tenant, version=1, text=LONG),
                     *doc_events(tenant, 0, 5)]
            await publish(t.bootstrap, t.documents, first)
            await asyncio.wait_for(enc.started.wait(), 120)  # a batch is in its embedding step, held there
            # the next events: "x" again, shorter (its surplus chunks must go), and new documents
            second = [DocumentEvent(op=DocumentEvent.OP_UPSERT, doc_id="x", tenant=tenant, version=2,
                                    text="Bản ngắn của tài liệu x."), *doc_events(tenant, 100, 5)]
            await publish(t.bootstrap, t.documents, second)

            async def next_batch_prepared() -> bool:
                return any(kind == "lookup" and doc in ("d100", "d104") for kind, doc in log)

            await until(next_batch_prepared, 60, "the next batch's store lookups while the first one embeds")
            assert not any(kind in ("acked", "commit") for kind, _ in log), "written or committed before embedding"
            assert await committed_total(t.bootstrap, t.documents, t.group) == 0
            gate.set()

            async def all_committed() -> bool:
                return await committed_total(t.bootstrap, t.documents, t.group) == len(first) + len(second)

            await until(all_committed, 180, "every event committed")
        finally:
            worker.stopping.set()
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
            await worker.close()
        try:
            # every committed record's batch was acknowledged by the store before its commit
            acked_before: set[str] = set()
            committed: dict[object, int] = {}
            for kind, what in log:
                if kind == "acked":
                    acked_before |= what  # type: ignore[operator]
                elif kind == "commit":
                    offsets, docs = what  # type: ignore[misc]
                    assert docs <= acked_before, f"committed before the store acknowledged {docs - acked_before}"
                    for tp, offset in offsets.items():
                        assert offset > committed.get(tp, -1), "commits out of order"
                        committed[tp] = offset
            assert sum(1 for kind, _ in log if kind == "commit") >= 2  # per batch, not one at the end
            assert {f"d{i}" for i in (*range(5), *range(100, 105))} <= acked_before
            # "x" ends as version 2 only: one chunk, no surplus of version 1 left behind
            chunks = store.doc_chunks(COLL, tenant, "x")
            assert [(h.payload["version"], h.payload["chunk_index"]) for h in chunks] == [(2, 0)]
            assert store.count(COLL, SearchFilter(tenant=tenant)) == 11
        finally:
            store.close()

    asyncio.run(scenario())

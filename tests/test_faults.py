"""Fault tests on real parts over loopback, each asserting that nothing is lost:
- the store service down for a while during ingest: the worker backs off, commits nothing, loses nothing;
- the broker (tansu) restarted under the worker: it reconnects and goes on consuming;
- Redis killed (SIGKILL) and restarted by `vien up` during query load: every query succeeds, the cache
  resumes.
(The ingest worker's kill -9 test is in test_documents_e2e.py; the embedder's circuit breaker in
test_breaker.py; overload and deadlines in test_overload.py.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from conftest import child_processes, serve_process
from test_ingest_processor import LocalDocEncoder

from vien.kafka.topics import DEFAULT_DOCUMENT_PARTITIONS, ensure_topics
from vien.runtime.config import Settings
from vien.runtime.metrics import INGEST_RETRIES
from vien.store.base import SearchFilter
from vien.store.remote import RemoteStore
from vien.text.langid import detect
from vien.v1 import common_pb2, router_pb2, router_pb2_grpc
from vien.v1.documents_pb2 import DocumentEvent
from vien_ingest.grpc_app import token_counters
from vien_ingest.processor import IngestProcessor
from vien_ingest.worker import IngestWorker
from vien_tools.cli.supervisor import free_port, redis_ready
from vien_tools.cli.tansu import LocalBroker

COLL = "vien_e5_small"


async def until(pred: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.25)


class StoreService:
    """The real store service (`vien serve store`, Qdrant Edge) as its own process on a fixed loopback
    port: kill() is a crash (SIGKILL), start() brings it back on the same data directory."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir, self.port = data_dir, port
        self.address = f"127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = serve_process("store", self.port, {"VIEN_STORE_BACKEND": f"edge:{self.data_dir}",
                                                       "VIEN_TRACING": "0"}, timeout=60)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def doc_events(tenant: str, start: int, n: int) -> list[DocumentEvent]:
    return [DocumentEvent(op=DocumentEvent.OP_UPSERT, doc_id=f"d{i}", tenant=tenant, version=1,
                          text=f"Tài liệu kiểm thử lỗi số {i}, chủ đề {i % 7}.") for i in range(start, start + n)]


async def publish(bootstrap: str, topic: str, events: list[DocumentEvent]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for ev in events:
            await producer.send(topic, ev.SerializeToString(), key=f"{ev.tenant}/{ev.doc_id}".encode())
        await producer.flush()
    finally:
        await producer.stop()


async def committed_total(bootstrap: str, topic: str, group: str) -> int:
    """Sum of the group's committed offsets over the topic's partitions (OffsetFetch, no group join)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return sum([(await consumer.committed(TopicPartition(topic, p))) or 0
                    for p in range(DEFAULT_DOCUMENT_PARTITIONS)])
    finally:
        await consumer.stop()


class ThreadedDocEncoder(LocalDocEncoder):
    """The doc-embedder's ONNX model in process, run off the event loop like the real gRPC client is
    (a blocking encode would starve the Kafka heartbeats and cost the worker its group membership)."""

    async def encode(self, texts: list[str], profile: str) -> list[np.ndarray]:
        ids = self.encoder.tokenize([self.profile.prompt("document", t) for t in texts], max_tokens=512)
        return list(await asyncio.to_thread(self.encoder.embed_ids, ids))


def make_worker(settings: Settings, store: RemoteStore, bootstrap: str, topics: tuple[str, str, str]
                ) -> IngestWorker:
    documents, dlq, group = topics
    s = dataclasses.replace(settings, kafka_bootstrap=bootstrap, documents_topic=documents, dlq_topic=dlq,
                            ingest_group=group)
    processor = IngestProcessor(s.config, store, ThreadedDocEncoder(settings), token_counters(s.config, s), detect)
    return IngestWorker(s, processor, local_broker=True, max_records=32)


def test_store_down_during_ingest_backs_off_commits_nothing_and_loses_nothing(settings, kafka_topics, tmp_path):
    tenant, t = "outage", kafka_topics
    svc = StoreService(tmp_path / "store", free_port())

    async def scenario() -> dict[str, float]:
        await asyncio.to_thread(svc.start)
        store = RemoteStore(svc.address, timeout_s=30)
        worker = make_worker(settings, store, t.bootstrap, (t.documents, t.dlq, t.group))
        await worker.connect()
        run = asyncio.create_task(worker.run())

        async def count() -> int:
            try:
                return await asyncio.to_thread(store.count, COLL, SearchFilter(tenant=tenant))
            except Exception:
                return -1

        try:
            await publish(t.bootstrap, t.documents, doc_events(tenant, 0, 60))
            await until(lambda: _eq(committed_total(t.bootstrap, t.documents, t.group), 60), 120, "first 60 events")
            assert await count() == 60

            svc.kill()                            # the store crashes ...
            retries0 = INGEST_RETRIES._value.get()
            await publish(t.bootstrap, t.documents, doc_events(tenant, 60, 140))
            outage_s = 8.0
            await asyncio.sleep(outage_s)         # ... for a while, with events waiting
            retries = INGEST_RETRIES._value.get() - retries0
            assert not run.done(), "the worker loop died during the outage"
            assert await committed_total(t.bootstrap, t.documents, t.group) == 60, "committed during the outage"
            # backed off (exponential, full jitter, 0.2 s base) rather than spinning: a handful of retries
            assert 2 <= retries <= 20, retries

            t_back = time.monotonic()
            await asyncio.to_thread(svc.start)    # back, same data directory
            await until(lambda: _eq(committed_total(t.bootstrap, t.documents, t.group), 200), 120,
                        "the 140 events held back during the outage")
            recovered_s = time.monotonic() - t_back
            assert await count() == 200
            for i in (0, 59, 60, 199):
                hits = await asyncio.to_thread(store.doc_chunks, COLL, tenant, f"d{i}")
                assert len(hits) == 1, (i, len(hits))
            return {"outage_s": outage_s, "retries": retries, "recovered_s": recovered_s}
        finally:
            worker.stopping.set()
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
            await worker.close()
            store.close()
            svc.kill()

    figures = asyncio.run(scenario())
    print(f"store outage: {figures}")


async def _eq(value: Awaitable[int], want: int) -> bool:
    return await value == want


def test_broker_restart_worker_reconnects_and_goes_on(settings, tmp_path):
    """tansu's storage here is memory:// (the only local engine in this build, see vien_tools/cli/tansu.py):
    a restart comes back empty. What holds: the worker survives it, reconnects, finds the re-created topics
    (as `vien up` re-creates them) and ingests what is published after the restart; every document from
    before the restart stays in the store."""
    port = free_port()
    # die_with_parent=False: its preexec_fn makes the restart fork this process while gRPC's threads
    # run, and gRPC's fork handlers then sometimes abort the child (seen: tansu exited with -6)
    broker = LocalBroker(log_path=tmp_path / "tansu.log", die_with_parent=False).start(port=port, timeout=30)
    topics = ("vien.documents", "vien.documents.dlq", "vien-ingest")
    svc = StoreService(tmp_path / "store", free_port())
    tenant = "restart"

    async def scenario() -> None:
        await ensure_topics(broker.bootstrap, {topics[0]: DEFAULT_DOCUMENT_PARTITIONS, topics[1]: 1})
        await asyncio.to_thread(svc.start)
        store = RemoteStore(svc.address, timeout_s=30)
        worker = make_worker(settings, store, broker.bootstrap, topics)
        await worker.connect()
        run = asyncio.create_task(worker.run())

        async def count() -> int:
            return await asyncio.to_thread(store.count, COLL, SearchFilter(tenant=tenant))

        try:
            await publish(broker.bootstrap, topics[0], doc_events(tenant, 0, 40))
            await until(lambda: _eq(committed_total(broker.bootstrap, topics[0], topics[2]), 40), 120, "40 events")
            assert worker.consumer is not None
            coordinator = worker.consumer._coordinator
            member_before = coordinator.member_id
            await asyncio.to_thread(broker.stop)
            await asyncio.sleep(2.0)              # the worker sees the broker gone
            await asyncio.to_thread(broker.start, "127.0.0.1", port, 30)
            await ensure_topics(broker.bootstrap, {topics[0]: DEFAULT_DOCUMENT_PARTITIONS, topics[1]: 1})

            # Publish once the worker is a member of the new broker's group with partitions assigned.
            # Earlier, its fetch positions are the old broker's, and records the empty new log already
            # holds below them would be skipped (a loss of memory storage, see docs/reliability.md).
            async def rejoined() -> bool:
                return coordinator.member_id not in ("", member_before) and bool(worker.consumer.assignment())

            await until(rejoined, 60, "the worker to rejoin the group on the restarted broker")
            await asyncio.sleep(1.0)
            await publish(broker.bootstrap, topics[0], doc_events(tenant, 40, 40))
            # (the store is polled, not the group's offsets: an OffsetFetch for the group while the
            # worker rejoins it after the restart left tansu's group stuck in some runs)
            await until(lambda: _eq(count(), 80), 120, "the events published after the restart")
            await until(lambda: _eq(committed_total(broker.bootstrap, topics[0], topics[2]), 40), 60,
                        "their offsets to be committed")
            assert not run.done(), "the worker loop died with the broker"
        finally:
            worker.stopping.set()
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
            await worker.close()
            store.close()
            svc.kill()

    try:
        asyncio.run(scenario())
    finally:
        broker.close()


def _child_pid(mesh, marker: str) -> int:
    return next(pid for pid, argv in child_processes(mesh.proc.pid) if marker in " ".join(argv) + " ")


def test_redis_killed_and_restarted_during_query_load(mesh):
    """SIGKILL of the mesh's redis-server while 4 clients send queries through the router: every query
    succeeds (served uncached), the supervisor restarts Redis, and repeated queries are cache hits again."""
    redis_addr = mesh.addrs["redis"]
    queries = [f"câu hỏi tải {i} về thuế" for i in range(40)]

    async def scenario() -> dict[str, int]:
        seen = {"ok": 0, "failed": 0, "hits_after": 0}
        stop = asyncio.Event()
        async with grpc.aio.insecure_channel(mesh.router) as ch:
            stub = router_pb2_grpc.RouterStub(ch)

            async def embed(q: str) -> router_pb2.EmbedResponse:
                return await stub.Embed(router_pb2.EmbedRequest(texts=[q], kind=common_pb2.EMBED_KIND_QUERY),
                                        timeout=10)

            async def client(k: int) -> None:
                i = k
                while not stop.is_set():
                    try:
                        await embed(queries[i % len(queries)])
                        seen["ok"] += 1
                    except grpc.aio.AioRpcError as exc:
                        seen["failed"] += 1
                        print("query failed:", exc.code(), exc.details())
                    i += 4

            load = [asyncio.create_task(client(k)) for k in range(4)]
            await asyncio.sleep(1.5)
            os.kill(_child_pid(mesh, "redis-server"), signal.SIGKILL)
            await asyncio.sleep(0.3)
            down_ok = seen["ok"]
            await until(lambda: asyncio.to_thread(redis_ready, redis_addr), 30, "redis restarted by vien up")
            await asyncio.sleep(2.0)              # load goes on against the fresh (empty) Redis
            stop.set()
            await asyncio.gather(*load)
            assert seen["ok"] > down_ok
            # the cache works again: a query asked twice is a hit the second time
            deadline = time.monotonic() + 20
            while True:
                q = f"sau khi redis khởi động lại {time.monotonic()}"
                await embed(q)
                await asyncio.sleep(0.2)           # the cache write lands after the reply
                if (await embed(q)).embeddings[0].cache_hit:
                    seen["hits_after"] += 1
                    break
                assert time.monotonic() < deadline, "the cache did not resume"
        return seen

    seen = asyncio.run(scenario())
    print(f"redis kill under load: {seen}")
    assert seen["failed"] == 0 and seen["ok"] > 50 and seen["hits_after"] == 1, seen


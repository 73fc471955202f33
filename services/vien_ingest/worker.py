"""The Kafka loop around IngestProcessor: poll, process, dead-letter, commit; back off on faults.

Offsets are committed only after the store acknowledged every change of the batch and every poison
event is on the DLQ. A transient fault (embedder or store unavailable, broker hiccup) retries the same
batch with exponential back-off and jitter, without committing and without polling further.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from vien.kafka.broker import close_consumer, local_group_kwargs
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
from vien_ingest.processor import BatchOutcome, IngestProcessor, Record

log = logging.getLogger("vien.ingest")


class IngestWorker:
    def __init__(self, settings: Settings, processor: IngestProcessor, local_broker: bool,
                 max_records: int = 256) -> None:
        self.settings = settings
        self.processor = processor
        self.local_broker = local_broker
        self.max_records = max_records
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

    async def run(self) -> None:
        assert self.consumer is not None
        while not self.stopping.is_set():
            batch = await self.consumer.getmany(timeout_ms=500, max_records=self.max_records)
            records = [Record(m.topic, m.partition, m.offset, m.value, list(m.headers or ()))
                       for msgs in batch.values() for m in msgs]
            if not records:
                await self.report_lag()
                continue
            INGEST_BATCH.observe(len(records))
            outcome = await self._process_with_retry(records)
            await self._dead_letter(outcome)
            try:
                await self.consumer.commit()
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
            log.info("committed %d events: %d upserted (%d chunks), %d deleted, %d stale, %d unchanged, %d dead; %s",
                     len(records), outcome.upserted_docs, outcome.chunks, outcome.deleted_docs, outcome.stale,
                     outcome.unchanged, len(outcome.dead), stages)

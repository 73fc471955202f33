"""A real tansu Kafka broker for tests (import the fixtures from conftest.py).

    from kafka_fixtures import kafka_broker, kafka_topics  # noqa: F401

`kafka_broker` is one broker per test session (memory storage, free loopback port); tests isolate
themselves with their own topic and group names (`kafka_topics` gives fresh ones per test).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vien.kafka.topics import DEFAULT_DOCUMENT_PARTITIONS, ensure_topics
from vien_tools.cli.tansu import LocalBroker

_seq = itertools.count()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    log = Path(tmp_path_factory.mktemp("tansu")) / "tansu.log"
    broker = LocalBroker(log_path=log).start(timeout=30)
    try:
        yield broker
    finally:
        broker.close()


@dataclass(frozen=True)
class KafkaTopics:
    bootstrap: str
    documents: str
    dlq: str
    group: str


@pytest.fixture
def kafka_topics(kafka_broker: LocalBroker) -> KafkaTopics:
    """Fresh `vien.documents`-like and DLQ topics (created, 4 + 1 partitions) and a fresh group id."""
    n = next(_seq)
    t = KafkaTopics(kafka_broker.bootstrap, f"vien.documents.t{n}", f"vien.documents.t{n}.dlq", f"vien-ingest-t{n}")
    asyncio.run(ensure_topics(t.bootstrap, {t.documents: DEFAULT_DOCUMENT_PARTITIONS, t.dlq: 1}))
    return t

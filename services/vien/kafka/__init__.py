"""Kafka plumbing for the document path: a local broker for tests/`vien up`, topics, trace headers.

Importing this package does not import aiokafka; the admin/consumer helpers import it when called.
"""

from vien.kafka.broker import (
    DEFAULT_DOCUMENT_PARTITIONS,
    DLQ_TOPIC,
    DOCUMENTS_TOPIC,
    LocalBroker,
    TansuNotFound,
    close_consumer,
    default_topics,
    ensure_topics,
    find_tansu,
    local_group_kwargs,
)
from vien.kafka.tracing import Headers, extract_context, inject_headers, trace_headers

__all__ = [
    "DEFAULT_DOCUMENT_PARTITIONS",
    "DLQ_TOPIC",
    "DOCUMENTS_TOPIC",
    "Headers",
    "LocalBroker",
    "TansuNotFound",
    "close_consumer",
    "default_topics",
    "ensure_topics",
    "extract_context",
    "find_tansu",
    "inject_headers",
    "local_group_kwargs",
    "trace_headers",
]

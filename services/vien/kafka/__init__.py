"""Kafka plumbing for the document path: topics, consumer-group helpers, trace headers (the local broker
that tests and `vien up` run is a tool: `vien_tools.cli.tansu`).

Importing this package does not import aiokafka; the admin/consumer helpers import it when called.
"""

from vien.kafka.topics import (
    DEFAULT_DOCUMENT_PARTITIONS,
    DLQ_TOPIC,
    DOCUMENTS_TOPIC,
    close_consumer,
    default_topics,
    ensure_topics,
    local_group_kwargs,
)
from vien.kafka.tracing import Headers, extract_context, inject_headers, trace_headers

__all__ = [
    "DEFAULT_DOCUMENT_PARTITIONS",
    "DLQ_TOPIC",
    "DOCUMENTS_TOPIC",
    "Headers",
    "close_consumer",
    "default_topics",
    "ensure_topics",
    "extract_context",
    "inject_headers",
    "local_group_kwargs",
    "trace_headers",
]

"""Topic names and setup, and consumer-group helpers, for the document path on any Kafka-protocol broker.

The local broker that tests and `vien up` run (tansu) is a tool: `vien_tools.cli.tansu`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

DOCUMENTS_TOPIC = "vien.documents"
DLQ_TOPIC = "vien.documents.dlq"
DEFAULT_DOCUMENT_PARTITIONS = 4
DLQ_PARTITIONS = 1


def default_topics(document_partitions: int = DEFAULT_DOCUMENT_PARTITIONS) -> dict[str, int]:
    return {DOCUMENTS_TOPIC: document_partitions, DLQ_TOPIC: DLQ_PARTITIONS}


async def ensure_topics(bootstrap: str, topics: Mapping[str, int], replication_factor: int = 1,
                        timeout_ms: int = 10_000, **admin_kwargs: Any) -> list[str]:
    """Create the topics that do not exist yet ({name: partitions}); returns the names created.

    Idempotent: existing topics are left as they are (a partition count that differs is *not* changed;
    more partitions would move doc_id keys between partitions and break per-document ordering).
    A create that races another creator (TopicAlreadyExists) counts as success.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms, **admin_kwargs)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(name=n, num_partitions=p, replication_factor=replication_factor)
                   for n, p in topics.items() if n not in existing]
        created: list[str] = []
        for t in missing:  # one at a time so that one "already exists" does not hide the others' errors
            try:
                resp = await admin.create_topics([t], timeout_ms=timeout_ms)
            except TopicAlreadyExistsError:
                continue
            for name, code, *_ in getattr(resp, "topic_errors", []) or getattr(resp, "topics", []):
                if code == 0:
                    created.append(name)
                elif code != TopicAlreadyExistsError.errno:
                    raise RuntimeError(f"creating topic {name!r} failed with Kafka error code {code}")
        return created
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def local_group_kwargs(session_timeout_ms: int = 3000) -> dict[str, int]:
    """Consumer-group timings for the local broker (tests, `vien up`); production keeps Kafka's defaults.

    tansu holds a JoinGroup open for about half the session timeout before it answers, so aiokafka's
    default (10 s session) makes every group join take ~5 s; 3 s gives ~1.5 s. A member that vanishes
    without LeaveGroup is evicted after the session timeout.
    """
    return {
        "session_timeout_ms": session_timeout_ms,
        "heartbeat_interval_ms": max(100, session_timeout_ms // 6),
        "rebalance_timeout_ms": session_timeout_ms,
    }


async def close_consumer(consumer: Any) -> None:
    """Stop an AIOKafkaConsumer so that its group can rebalance at once.

    tansu numbers the first generation of a group 0, while aiokafka only sends LeaveGroup when its
    generation is > 0 (Kafka starts at 1). Without this the first member of a group leaves silently and
    the next member to join waits for its session to expire (session timeout + a join round). On a real
    Kafka cluster the extra request is never sent (generation is never 0 after a join).
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is not None and getattr(coordinator, "generation", None) == 0 and getattr(
            coordinator, "member_id", ""):
        try:
            if getattr(consumer, "_enable_auto_commit", False):
                await consumer.commit()  # what stop() would do, but while still a member
            from aiokafka.protocol.group import LeaveGroupRequest

            await coordinator._send_req(LeaveGroupRequest(coordinator.group_id, coordinator.member_id))
        except Exception:  # best effort, like aiokafka's own LeaveGroup
            pass
    await consumer.stop()

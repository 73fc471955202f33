"""Dead-letter records for ``vien.documents.dlq``.

The DLQ record keeps the original value bytes untouched (so it can be fixed and replayed) and the
original headers (trace context included, so the DLQ write joins the producer's trace), and adds:

* ``vien-dlq-reason``: why it was rejected (UTF-8, at most 4 KiB)
* ``vien-dlq-source``: ``topic/partition/offset`` of the original record (topic names cannot hold ``/``)
* ``vien-dlq-time``:   when it was dead-lettered, ISO 8601 UTC with milliseconds
* ``vien-dlq-code``:   a short label of the reason, when the caller has one (PoisonEvent.code)

Earlier ``vien-dlq-*`` headers are replaced (a replayed record that fails again records only the latest
failure). The caller produces the record with the original key, so a document's failures share a partition.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from dataclasses import dataclass

REASON = "vien-dlq-reason"
SOURCE = "vien-dlq-source"
TIME = "vien-dlq-time"
CODE = "vien-dlq-code"
_PREFIX = "vien-dlq-"
MAX_REASON_BYTES = 4096


def _now_iso(now: _dt.datetime | None) -> str:
    t = now or _dt.datetime.now(_dt.UTC)
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    return t.astimezone(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _truncate_utf8(s: str, limit: int) -> bytes:
    b = s.encode("utf-8", "replace")
    if len(b) <= limit:
        return b
    return b[: limit - 3].decode("utf-8", "ignore").encode("utf-8") + b"..."


def dlq_record(original_value: bytes | None, original_headers: Iterable[tuple[str, bytes | None]] | None,
               reason: str, topic: str, partition: int, offset: int, *, code: str | None = None,
               now: _dt.datetime | None = None) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    """(value, headers) to produce to the DLQ for a record that cannot be processed."""
    headers = [(k, v if v is not None else b"") for k, v in (original_headers or ())
               if not k.lower().startswith(_PREFIX)]
    headers.append((REASON, _truncate_utf8(reason, MAX_REASON_BYTES)))
    headers.append((SOURCE, f"{topic}/{partition}/{offset}".encode()))
    headers.append((TIME, _now_iso(now).encode()))
    if code:
        headers.append((CODE, code.encode("utf-8", "replace")))
    return original_value, headers


@dataclass(frozen=True)
class DlqInfo:
    reason: str
    topic: str
    partition: int
    offset: int
    time: str
    code: str | None


def parse_dlq_headers(headers: Iterable[tuple[str, bytes | None]]) -> DlqInfo:
    """Read the ``vien-dlq-*`` headers back (for replay tools and tests). Raises ValueError if absent."""
    h = {k.lower(): (v or b"").decode("utf-8", "replace") for k, v in headers}
    if REASON not in h or SOURCE not in h:
        raise ValueError("not a vien DLQ record (no vien-dlq-reason / vien-dlq-source header)")
    topic, partition, offset = h[SOURCE].rsplit("/", 2)
    return DlqInfo(h[REASON], topic, int(partition), int(offset), h.get(TIME, ""), h.get(CODE))

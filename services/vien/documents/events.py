"""Document events: decoding and validation, JSONL input, point ids and content hashes.

Decisions (the ingest worker relies on them):

* **Poison vs. transient.** Everything here is a property of the event bytes alone, so a failure is
  permanent: :class:`PoisonEvent` means "dead-letter it with ``reason`` and move on", never "retry".
* **version 0 is allowed** and means "unversioned". proto3 cannot tell 0 from unset, and a producer that
  does not version its documents should not have every event dead-lettered. The worker's stale rule is
  "skip when ``version < stored version``" (strictly less), so an event with the *same* version is applied
  again (idempotent: same point ids, same vectors) and unversioned producers get last-writer-wins in
  partition order, which keying by doc_id makes per-document order.
* **Deletes** need op, doc_id and tenant; any text/title on a delete is ignored, not an error.
* **Kafka tombstones** (null value) are rejected: a delete must say which tenant it is for, and a key
  alone does not. Producers send ``OP_DELETE`` instead.
* **Unknown fields** in the protobuf are ignored (a newer producer stays compatible); an unknown ``op``
  number is poison.
* **Identity is (tenant, doc_id).** :func:`point_id` hashes ``f"{tenant}/{doc_id}#{chunk_index}"``, so doc
  "1" of tenant a and doc "1" of tenant b are different points and never overwrite each other. For that
  string to be unambiguous a tenant may not contain ``/`` (doc ids may contain anything but control
  characters: the tenant ends at the first ``/`` and the chunk index starts after the last ``#``). The
  tenant and doc id rules are :mod:`vien.documents.identity`, shared with search and the CLI.
"""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.protobuf.message import DecodeError

from vien.documents.identity import IdentityError, check_doc_id, check_tenant
from vien.v1.documents_pb2 import DocumentEvent

#: Fixed namespace of vien point ids (uuid5(NAMESPACE_URL, "https://vien.dev/ns/point"), frozen here:
#: changing it re-keys every stored point).
VIEN_POINT_NAMESPACE = uuid.UUID("4cb69da2-8d11-5655-a856-2208869ba60f")

HeadersIn = Sequence[tuple[str, bytes | None]] | None


@dataclass(frozen=True)
class EventLimits:
    """Hard limits on one event (lengths in Unicode code points; metadata in serialized bytes)."""

    max_text_chars: int = 1_000_000
    max_title_chars: int = 10_000
    max_lang_chars: int = 16
    max_profile_chars: int = 64
    max_metadata_bytes: int = 64 * 1024


DEFAULT_LIMITS = EventLimits()


class PoisonEvent(Exception):
    """An event that can never be processed; ``reason`` goes into the DLQ header ``vien-dlq-reason``.

    ``code`` is a short stable label (for metrics), ``reason`` the human-readable explanation.
    """

    def __init__(self, reason: str, code: str = "invalid") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


# ---------------------------------------------------------------------------------------------- decoding

def decode_event(value: bytes | None, headers: HeadersIn = None,
                 limits: EventLimits = DEFAULT_LIMITS) -> DocumentEvent:
    """Parse a Kafka record value as a ``vien.v1.DocumentEvent`` and validate it.

    ``headers`` are accepted for symmetry with the consumer loop (and future content-type negotiation);
    validation does not depend on them today. Raises :class:`PoisonEvent`.
    """
    if value is None:
        raise PoisonEvent("null record value (Kafka tombstone): send an OP_DELETE event with tenant and doc_id",
                          "tombstone")
    try:
        event = DocumentEvent.FromString(bytes(value))
    except DecodeError as e:
        raise PoisonEvent(f"undecodable: not a vien.v1.DocumentEvent protobuf ({e})", "undecodable") from e
    validate_event(event, limits)
    return event


def _bad_chars(s: str) -> str | None:
    for ch in s:
        if unicodedata.category(ch) == "Cc" or ch in "\u2028\u2029":
            return f"U+{ord(ch):04X}"
    return None


def _check_id(name: str, s: str, max_len: int, *, required: bool, code: str) -> None:
    if not s:
        if required:
            raise PoisonEvent(f"{name} is missing", f"missing_{name}")
        return
    if len(s) > max_len:
        raise PoisonEvent(f"{name} too long: {len(s)} characters > {max_len}", f"{code}_too_long")
    bad = _bad_chars(s)
    if bad:
        raise PoisonEvent(f"{name} contains a control character ({bad})", f"{code}_control_char")
    if s != s.strip():
        raise PoisonEvent(f"{name} has leading or trailing whitespace", f"{code}_whitespace")


def validate_event(event: DocumentEvent, limits: EventLimits = DEFAULT_LIMITS) -> None:
    """Raise :class:`PoisonEvent` unless `event` can be processed (see the module notes)."""
    if event.op == DocumentEvent.OP_UNSPECIFIED:
        raise PoisonEvent("op is unspecified (OP_UNSPECIFIED): expected OP_UPSERT or OP_DELETE", "op_unspecified")
    if event.op not in (DocumentEvent.OP_UPSERT, DocumentEvent.OP_DELETE):
        raise PoisonEvent(f"unknown op {int(event.op)}: expected OP_UPSERT (1) or OP_DELETE (2)", "op_unknown")
    try:
        check_doc_id(event.doc_id)
        check_tenant(event.tenant)
    except IdentityError as e:
        raise PoisonEvent(e.reason, e.reason_code) from e
    if event.op == DocumentEvent.OP_DELETE:
        return
    _check_id("lang", event.lang, limits.max_lang_chars, required=False, code="lang")
    _check_id("profile", event.profile, limits.max_profile_chars, required=False, code="profile")
    if not event.text.strip():
        raise PoisonEvent("upsert with empty text", "empty_text")
    if len(event.text) > limits.max_text_chars:
        raise PoisonEvent(f"text too long: {len(event.text)} characters > {limits.max_text_chars}", "text_too_long")
    if len(event.title) > limits.max_title_chars:
        raise PoisonEvent(f"title too long: {len(event.title)} characters > {limits.max_title_chars}",
                          "title_too_long")
    if event.HasField("metadata"):
        size = event.metadata.ByteSize()
        if size > limits.max_metadata_bytes:
            raise PoisonEvent(f"metadata too large: {size} bytes > {limits.max_metadata_bytes}", "metadata_too_large")
        bad = _non_finite(event.metadata, "metadata")
        if bad:
            # Not JSON: it could never be stored, and raising later would stop the partition for good.
            raise PoisonEvent(f"{bad}: NaN and Infinity are not allowed in metadata (not JSON)", "metadata_not_finite")


def _non_finite(value: struct_pb2.Struct | struct_pb2.ListValue | struct_pb2.Value, where: str) -> str | None:
    """The path of the first NaN/Infinity number in a Struct, or None."""
    if isinstance(value, struct_pb2.Struct):
        items: Any = ((f"{where}.{k}", v) for k, v in value.fields.items())
    elif isinstance(value, struct_pb2.ListValue):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value.values))
    else:
        kind = value.WhichOneof("kind")
        if kind == "number_value":
            return None if math.isfinite(value.number_value) else where
        if kind == "struct_value":
            return _non_finite(value.struct_value, where)
        if kind == "list_value":
            return _non_finite(value.list_value, where)
        return None
    for path, v in items:
        bad = _non_finite(v, path)
        if bad:
            return bad
    return None


# ------------------------------------------------------------------------------------------- JSON lines

_OPS = {"upsert": DocumentEvent.OP_UPSERT, "delete": DocumentEvent.OP_DELETE}
_JSON_FIELDS = ("op", "doc_id", "version", "tenant", "lang", "title", "text", "metadata", "event_time_ms", "profile")


def _where(line: int | None) -> str:
    return f"line {line}: " if line is not None else ""


def event_from_json(obj: Any, line: int | None = None, limits: EventLimits = DEFAULT_LIMITS) -> DocumentEvent:
    """Build a DocumentEvent from one JSONL object (the CLI's input format)::

        {"op": "upsert"|"delete", "doc_id": str|int, "version": int>=0 (default 0), "tenant": str,
         "lang"?: str, "title"?: str, "text": str (upserts), "metadata"?: object,
         "event_time_ms"?: int, "profile"?: str}

    Raises ValueError("line N: field 'x': ...") naming the field; unknown keys are errors (typos such as
    "txt" would otherwise index empty documents). Integer doc ids are turned into their decimal string.
    Metadata numbers become doubles (protobuf Struct), so integers beyond 2**53 lose precision.
    The result has passed :func:`validate_event`.
    """
    at = _where(line)
    if not isinstance(obj, dict):
        raise ValueError(f"{at}expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(_JSON_FIELDS))
    if unknown:
        raise ValueError(f"{at}unknown field(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(_JSON_FIELDS)}")

    def field_error(name: str, msg: str) -> ValueError:
        return ValueError(f"{at}field '{name}': {msg}")

    def opt_str(name: str) -> str:
        v = obj.get(name)
        if v is None:
            return ""
        if not isinstance(v, str):
            raise field_error(name, f"must be a string, got {type(v).__name__}")
        return v

    def opt_int(name: str, lo: int, hi: int) -> int:
        v = obj.get(name)
        if v is None:
            return 0
        if isinstance(v, bool) or not isinstance(v, int):
            raise field_error(name, f"must be an integer, got {type(v).__name__}")
        if not lo <= v <= hi:
            raise field_error(name, f"must be between {lo} and {hi}, got {v}")
        return v

    if "op" not in obj:
        raise field_error("op", 'is required ("upsert" or "delete")')
    op = obj["op"]
    if not isinstance(op, str) or op.lower() not in _OPS:
        raise field_error("op", f'must be "upsert" or "delete", got {op!r}')
    event = DocumentEvent(op=_OPS[op.lower()])

    if "doc_id" not in obj or obj["doc_id"] is None:
        raise field_error("doc_id", "is required")
    doc_id = obj["doc_id"]
    if isinstance(doc_id, bool) or not isinstance(doc_id, str | int):
        raise field_error("doc_id", f"must be a string (or integer), got {type(doc_id).__name__}")
    event.doc_id = str(doc_id)
    if "tenant" not in obj or obj["tenant"] is None:
        raise field_error("tenant", "is required")
    event.tenant = opt_str("tenant")
    event.version = opt_int("version", 0, 2**64 - 1)
    event.event_time_ms = opt_int("event_time_ms", 0, 2**63 - 1)
    event.lang = opt_str("lang")
    event.title = opt_str("title")
    event.profile = opt_str("profile")
    if event.op == DocumentEvent.OP_UPSERT and obj.get("text") is None:
        raise field_error("text", "is required for an upsert")
    event.text = opt_str("text")
    md = obj.get("metadata")
    if md is not None:
        if not isinstance(md, dict):
            raise field_error("metadata", f"must be an object, got {type(md).__name__}")
        try:
            event.metadata.update(md)
        except (ValueError, TypeError) as e:
            raise field_error("metadata", f"not representable as JSON/Struct: {e}") from e
    try:
        validate_event(event, limits)
    except PoisonEvent as e:
        name = next((f for f in _JSON_FIELDS if e.reason.startswith(f)), None)
        if name is None and e.code == "empty_text":
            name = "text"
        if name is not None:
            raise field_error(name, e.reason) from e
        raise ValueError(f"{at}{e.reason}") from e
    return event


def event_from_json_line(text: str, line: int | None = None, limits: EventLimits = DEFAULT_LIMITS) -> DocumentEvent:
    """:func:`event_from_json` on one raw JSONL line (raises ValueError "line N: invalid JSON: ...")."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{_where(line)}invalid JSON: {e.msg} (column {e.colno})") from e
    return event_from_json(obj, line, limits)


# --------------------------------------------------------------------------------------- ids and hashes

def point_id(tenant: str, doc_id: str, chunk_index: int) -> str:
    """Qdrant point id of one chunk: uuid5(VIEN_POINT_NAMESPACE, f"{tenant}/{doc_id}#{chunk_index}").

    Stable across processes and versions of vien (re-ingesting a document overwrites its points: at-least-once
    delivery is idempotent) and tenant-scoped (see the module notes).
    """
    if chunk_index < 0:
        raise ValueError("chunk_index must be >= 0")
    if "/" in tenant:
        raise ValueError("tenant may not contain '/'")
    return str(uuid.uuid5(VIEN_POINT_NAMESPACE, f"{tenant}/{doc_id}#{chunk_index}"))


def _floats(v: Any) -> Any:
    """Numbers as floats, as a protobuf Struct holds them, so that {"n": 1} and Struct n=1.0 hash alike."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, Mapping):
        return {str(k): _floats(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_floats(x) for x in v]
    raise TypeError(f"metadata value of type {type(v).__name__} is not JSON")


def _metadata_obj(metadata: Mapping[str, Any] | struct_pb2.Struct | None) -> Any:
    if metadata is None:
        return {}
    if isinstance(metadata, struct_pb2.Struct):
        return _floats(json_format.MessageToDict(metadata))
    return _floats(metadata)


def content_hash(title: str, text: str, metadata: Mapping[str, Any] | struct_pb2.Struct | None,
                 profile: str, salt: str = "") -> str:
    """sha256 (hex) of what determines a document's stored points: title, text, metadata, profile.

    The worker stores it in the payload and skips re-embedding when an upsert carries the same hash.
    ``salt`` folds in anything else that changes the vectors or chunks (model revision, chunker settings).
    Metadata is hashed as canonical JSON (sorted keys), so key order does not matter; a dict and the
    equivalent Struct hash alike (numbers are compared as doubles, which is all a Struct holds).
    Text is hashed as given (no normalisation: a different byte string re-embeds, which is only wasteful).
    """
    canon = json.dumps(
        {"v": 1, "profile": profile, "salt": salt, "title": title, "text": text, "metadata": _metadata_obj(metadata)},
        sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False,
    )
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def event_content_hash(event: DocumentEvent, profile: str | None = None, salt: str = "") -> str:
    return content_hash(event.title, event.text, event.metadata if event.HasField("metadata") else None,
                        event.profile if profile is None else profile, salt)

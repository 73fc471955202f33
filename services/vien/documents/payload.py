"""What a stored chunk carries: one definition that ingest writes and search, the store and the eval read.

A delete leaves a :class:`Tombstone` (tenant, doc_id, version) in the store's tombstone collection, so an older
upsert replayed after the delete (a backfill, a producer re-sending an old version) cannot bring the document
back: the ingest rule "skip an event older than what the store holds" then also holds for deleted documents.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

#: Collection holding one tombstone point per deleted document (1-d placeholder vector; never searched).
TOMBSTONE_COLLECTION = "vien_tombstones"
TOMBSTONE_DIMS = 1
_TOMBSTONE_NS = uuid.UUID("8f0d2b57-3c8e-5b55-9d6e-2a1f1f0b7a3e")


@dataclass(frozen=True)
class ChunkPayload:
    tenant: str
    doc_id: str
    chunk_index: int
    lang: str
    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    version: int = 0
    content_hash: str = ""
    n_chunks: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, p: Mapping[str, Any]) -> ChunkPayload:
        """Typed view of a stored payload; fields missing from points written by older versions get defaults."""
        return cls(tenant=str(p.get("tenant", "")), doc_id=str(p.get("doc_id", "")),
                   chunk_index=int(p.get("chunk_index", 0)), lang=str(p.get("lang", "")),
                   title=str(p.get("title", "")), text=str(p.get("text", "")),
                   metadata=dict(p.get("metadata") or {}), version=int(p.get("version", 0)),
                   content_hash=str(p.get("content_hash", "")), n_chunks=int(p.get("n_chunks", 1)))



@dataclass(frozen=True)
class Tombstone:
    tenant: str
    doc_id: str
    version: int

    @property
    def point_id(self) -> str:
        return str(uuid.uuid5(_TOMBSTONE_NS, f"{self.tenant}/{self.doc_id}"))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "deleted": True}

    @classmethod
    def from_dict(cls, p: Mapping[str, Any]) -> Tombstone:
        return cls(tenant=str(p.get("tenant", "")), doc_id=str(p.get("doc_id", "")), version=int(p.get("version", 0)))

"""Corpus embeddings cached on disk, so evaluating the same set again (another mode, another query encoder,
other dims) skips the document encoder, by far the slowest part of a run.

`CachingDocEncoder` is the ingest processor's `DocEncoder`: it asks the doc-embedder's own logic
(`vien_doc_embedder.logic.DocEmbedder`: prompt, token limit, batching) for the vectors it does not have.
Key: sha256 over the document encoder's model id and revision, its variant, the profile's full dims and
token limit, and the document-prompted text, i.e. everything that changes the vector. The full-dims vector
is stored; truncated dims (MRL) are cut from it with the same `truncate` the embedders use.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from vien.embedding.vectors import truncate
from vien.runtime.config import VienConfig
from vien_doc_embedder.logic import DocEmbedder

_SCHEMA = "CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, dims INTEGER NOT NULL, vec BLOB NOT NULL)"
_LOOKUP = 500  # keys per SELECT (SQLite's default limit on host parameters is far above)


class EmbeddingCache:
    """key -> float32 vector in one SQLite file (None = caching off)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
            self._db.commit()

    def get_many(self, keys: Sequence[str], dims: int) -> dict[str, np.ndarray]:
        if self._db is None or not keys:
            return {}
        out: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        for i in range(0, len(unique), _LOOKUP):
            part = unique[i:i + _LOOKUP]
            rows = self._db.execute(f"SELECT key, dims, vec FROM vectors WHERE key IN ({','.join('?' * len(part))})",
                                    part).fetchall()
            for key, d, blob in rows:
                if d == dims and len(blob) == dims * 4:
                    out[key] = np.frombuffer(blob, "<f4")
        return out

    def put_many(self, items: Sequence[tuple[str, np.ndarray]]) -> None:
        if self._db is None or not items:
            return
        self._db.executemany("INSERT OR REPLACE INTO vectors (key, dims, vec) VALUES (?, ?, ?)",
                             [(k, int(v.shape[-1]), np.asarray(v, "<f4").tobytes()) for k, v in items])
        self._db.commit()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class CachingDocEncoder:
    """The ingest processor's document encoder: the in-process doc-embedder behind the on-disk cache.

    `config` is the configuration the doc-embedder runs with; `dims` gives, per profile, the dims the vectors
    are indexed at (the profile's own unless truncated for an MRL measurement).
    """

    def __init__(self, embedder: DocEmbedder, config: VienConfig, cache: EmbeddingCache, dims: dict[str, int],
                 on_progress: Callable[[int], None] | None = None) -> None:
        self.embedder = embedder
        self.config = config
        self.cache = cache
        self.dims = dims
        self.on_progress = on_progress
        self.hits = 0
        self.encoded = 0

    def key(self, profile: str, text: str) -> str:
        prof = self.config.profiles[profile]
        model_id = self.embedder.backends[prof.document_encoder].model_id
        variant = self.config.encoders[prof.document_encoder].variant
        ident = f"{model_id}\x1f{variant}\x1f{prof.dims}\x1f{prof.max_tokens}\x1f{prof.prompt('document', text)}"
        return hashlib.sha256(ident.encode("utf-8")).hexdigest()

    async def encode(self, texts: list[str], profile: str) -> list[np.ndarray]:
        full = self.config.profiles[profile].dims
        keys = [self.key(profile, t) for t in texts]
        found = self.cache.get_many(keys, full)
        miss = [i for i, k in enumerate(keys) if k not in found]
        if miss:
            res = await self.embedder.encode([texts[i] for i in miss], profile)
            fresh = [(keys[i], item.vector) for i, item in zip(miss, res.items, strict=True)]
            self.cache.put_many(fresh)
            found.update(fresh)
        self.hits += len(texts) - len(miss)
        self.encoded += len(miss)
        if self.on_progress is not None:
            self.on_progress(len(texts))
        dims = self.dims.get(profile, full)
        return [truncate(np.asarray(found[k], np.float32), dims) for k in keys]

"""`VectorStore` on Qdrant Edge (qdrant-edge-py): Qdrant's engine in-process, persistent on disk.

Layout: ``<root>/<collection>/`` is one Edge shard (its own WAL, segments and ``edge_config.json``).

Single-owner rule: an Edge shard takes an exclusive lock on its WAL when loaded. A second `EdgeShard.load`
of the same directory, from another process or from this one, fails with
``failed to open WAL …: Can't init WAL: Kind(WouldBlock)`` (surfaced here as `StoreUnavailable`). The lock
goes with the process (also on a crash; the WAL is replayed on the next load). So exactly one process
may own an Edge store directory: writers and readers in other processes must go through that process.
(A shard created with ``wal_enabled=False`` has no lock, but a second process then reads the snapshot
it loaded and never sees later writes: unusable for a writer + reader pair, so this adapter never
disables the WAL.)

Indexing: Edge has no background optimizer. Points land in an appendable segment searched exactly
(brute force over the filtered points: 100k × 384, tenant filter 1/3, top-10 p50 6.4 ms on 2 cores);
`optimize()` builds the HNSW index and vacuums deletes (20k × 384: 7-17 s; 100k: 65 s on 2 shared cores).
CAUTION: qdrant-edge-py 0.9.0 holds the GIL for the whole of `optimize()`: every other thread of the
process, an asyncio loop included, stops until it returns (measured: a 10 ms ticker thread stalled for
the full 11.5 s). Searches stay exact and fast enough without it at laptop scale; call it only where a
pause of that length is acceptable (idle ingest, maintenance command).
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from vien.store.base import (
    DENSE,
    DISTANCE,
    PAYLOAD_INDEXES,
    RRF_K,
    SPARSE,
    CollectionInfo,
    CollectionMismatch,
    CollectionNotFound,
    Hit,
    Point,
    SearchFilter,
    SparseVector,
    StoreUnavailable,
    check_collection_name,
    check_dims,
    check_top_k,
    dense,
    dense_batch,
    point_id,
    sort_chunks,
)

_CONFIG_FILE = "edge_config.json"
_SCROLL_PAGE = 256


@dataclass
class _Shard:
    shard: qe.EdgeShard
    dims: int
    sparse: bool


def _config(dims: int, sparse: bool) -> qe.EdgeConfig:
    return qe.EdgeConfig(
        vectors={DENSE: qe.EdgeVectorParams(size=dims, distance=qe.Distance.Cosine)},
        sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)} if sparse else None,
    )


def _index_schema(kind: str) -> Any:
    if kind == "tenant":
        return qe.KeywordIndexParams(is_tenant=True)
    if kind == "keyword":
        return qe.PayloadSchemaType.Keyword
    if kind == "integer":
        return qe.PayloadSchemaType.Integer
    raise ValueError(kind)


def _filter(flt: SearchFilter | None) -> qe.Filter | None:
    if flt is None:
        return None
    conds = flt.conditions()
    if not conds:
        return None
    return qe.Filter(must=[qe.FieldCondition(key, match=qe.MatchValue(value)) for key, value in conds])


def _sparse(sv: SparseVector) -> qe.SparseVector:
    return qe.SparseVector(indices=[int(i) for i in sv.indices], values=[float(v) for v in sv.values])


def _hits(points: Sequence[Any]) -> list[Hit]:
    return [Hit(id=str(p.id), score=float(p.score), payload=dict(p.payload or {})) for p in points]


class EdgeStore:
    """Collections as Edge shards under `path`. Thread-safe; owned by one process (see module doc).

    `durable=True` flushes the shard after every write so that an acknowledged upsert/delete survives a
    power loss, not only a process crash (the WAL alone covers the latter); it costs ~10 ms per call.
    """

    def __init__(self, path: Path | str, durable: bool = True, hnsw_ef: int | None = None) -> None:
        self.root = Path(path)
        # HNSW beam width of dense searches once `optimize()` has built the index (None: the engine's
        # default). Exact scans before that ignore it.
        self._params = qe.SearchParams(hnsw_ef=hnsw_ef) if hnsw_ef else None
        self.root.mkdir(parents=True, exist_ok=True)
        self.durable = durable
        self._lock = threading.RLock()
        self._shards: dict[str, _Shard] = {}
        self._closed = False
        try:
            for sub in sorted(self.root.iterdir()):
                if (sub / _CONFIG_FILE).is_file():
                    self._shards[sub.name] = self._load(sub)
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------------------------- shard registry

    @staticmethod
    def _load(path: Path) -> _Shard:
        cfg = json.loads((path / _CONFIG_FILE).read_text())
        vectors = cfg.get("vectors") or {}
        if DENSE not in vectors:
            raise CollectionMismatch(f"{path}: Edge shard has no {DENSE!r} vector (vectors: {sorted(vectors)})")
        try:
            shard = qe.EdgeShard.load(str(path))
        except Exception as exc:  # the bindings raise a bare Exception
            if "WouldBlock" in str(exc):
                raise StoreUnavailable(
                    f"Edge shard {path} is open in another process (WAL locked); "
                    "an Edge store directory has exactly one owning process"
                ) from exc
            raise StoreUnavailable(f"cannot open Edge shard {path}: {exc}") from exc
        return _Shard(shard=shard, dims=int(vectors[DENSE]["size"]), sparse=SPARSE in (cfg.get("sparse_vectors") or {}))

    def _get(self, name: str) -> _Shard:
        check_collection_name(name)
        if self._closed:
            raise StoreUnavailable("store is closed")
        s = self._shards.get(name)
        if s is None:
            raise CollectionNotFound(name)
        return s

    def _write(self, s: _Shard, op: Any) -> None:
        s.shard.update(op)
        if self.durable:
            s.shard.flush()

    # -------------------------------------------------------------------------------------- collections

    def ensure_collection(self, name: str, dims: int, sparse: bool = True) -> None:
        check_collection_name(name)
        check_dims(dims)
        with self._lock:
            if self._closed:
                raise StoreUnavailable("store is closed")
            s = self._shards.get(name)
            if s is not None:
                if s.dims != dims:
                    raise CollectionMismatch(f"collection {name!r} exists with dims {s.dims}, not {dims}")
                if sparse and not s.sparse:
                    raise CollectionMismatch(f"collection {name!r} exists without the {SPARSE!r} sparse vector")
                return
            path = self.root / name
            shard = qe.EdgeShard.create(str(path), _config(dims, sparse))
            s = _Shard(shard=shard, dims=dims, sparse=sparse)
            for fname, kind in PAYLOAD_INDEXES.items():
                shard.update(qe.UpdateOperation.create_field_index(fname, _index_schema(kind)))
            shard.flush()
            self._shards[name] = s

    def drop_collection(self, name: str) -> bool:
        check_collection_name(name)
        with self._lock:
            s = self._shards.pop(name, None)
            if s is None:
                return False
            s.shard.close()
            shutil.rmtree(self.root / name, ignore_errors=True)
            return True

    def collections(self) -> dict[str, int]:
        with self._lock:
            return {name: s.dims for name, s in sorted(self._shards.items())}

    def collection_info(self, name: str) -> CollectionInfo:
        s = self._get(name)
        return CollectionInfo(name=name, dims=s.dims, distance=DISTANCE, sparse=s.sparse, points=self.count(name))

    def optimize(self, collection: str) -> bool:
        """Build HNSW / vacuum now. Freezes the whole process while it runs (GIL held; see module doc)."""
        s = self._get(collection)
        changed = bool(s.shard.optimize())
        s.shard.flush()
        return changed

    # ------------------------------------------------------------------------------------------ writes

    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        s = self._get(collection)
        if not points:
            return
        batch = []
        vectors = dense_batch([p.vector for p in points], s.dims)
        for p, v in zip(points, vectors, strict=True):
            vec: dict[str, Any] = {DENSE: v}
            if p.sparse is not None:
                if not s.sparse:
                    raise CollectionMismatch(f"collection {collection!r} has no {SPARSE!r} sparse vector")
                vec[SPARSE] = _sparse(p.sparse)
            batch.append(qe.Point(point_id(p.id), vec, dict(p.payload)))
        self._write(s, qe.UpdateOperation.upsert_points(batch))

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        s = self._get(collection)
        if ids:
            self._write(s, qe.UpdateOperation.delete_points([point_id(i) for i in ids]))

    def delete_by_doc(self, collection: str, tenant: str, doc_id: str) -> None:
        s = self._get(collection)
        flt = _filter(SearchFilter(tenant=tenant, doc_id=doc_id))
        assert flt is not None
        self._write(s, qe.UpdateOperation.delete_points_by_filter(flt))

    # ------------------------------------------------------------------------------------------- reads

    def doc_chunks(self, collection: str, tenant: str, doc_id: str) -> list[Hit]:
        s = self._get(collection)
        flt = _filter(SearchFilter(tenant=tenant, doc_id=doc_id))
        out: list[Hit] = []
        offset = None
        while True:
            records, offset = s.shard.scroll(
                qe.ScrollRequest(offset=offset, limit=_SCROLL_PAGE, filter=flt, with_payload=True, with_vector=False)
            )
            out.extend(Hit(id=str(r.id), score=0.0, payload=dict(r.payload or {})) for r in records)
            if offset is None:
                return sort_chunks(out)

    def search(self, collection: str, vector: np.ndarray, top_k: int, flt: SearchFilter | None = None) -> list[Hit]:
        s = self._get(collection)
        q = qe.QueryRequest(
            limit=check_top_k(top_k),
            query=qe.Query.Nearest(dense(vector, s.dims), using=DENSE),
            filter=_filter(flt),
            params=self._params,
            with_payload=True,
        )
        return _hits(s.shard.query(q))

    def search_sparse(
        self, collection: str, sparse: SparseVector, top_k: int, flt: SearchFilter | None = None
    ) -> list[Hit]:
        s = self._sparse_shard(collection)
        q = qe.QueryRequest(
            limit=check_top_k(top_k),
            query=qe.Query.Nearest(_sparse(sparse), using=SPARSE),
            filter=_filter(flt),
            with_payload=True,
        )
        return _hits(s.shard.query(q))

    def search_hybrid(
        self,
        collection: str,
        vector: np.ndarray,
        sparse: SparseVector,
        top_k: int,
        flt: SearchFilter | None = None,
        prefetch_k: int | None = None,
    ) -> list[Hit]:
        s = self._sparse_shard(collection)
        top_k = check_top_k(top_k)
        pk = check_top_k(prefetch_k or max(top_k * 4, 20))
        f = _filter(flt)
        q = qe.QueryRequest(
            limit=top_k,
            prefetches=[
                qe.Prefetch(
                    limit=pk, query=qe.Query.Nearest(dense(vector, s.dims), using=DENSE), filter=f, params=self._params
                ),
                qe.Prefetch(limit=pk, query=qe.Query.Nearest(_sparse(sparse), using=SPARSE), filter=f),
            ],
            query=qe.Fusion.Rrf(k=RRF_K),  # type: ignore[arg-type]  # the stub omits nested Fusion kinds
            filter=f,
            with_payload=True,
        )
        return _hits(s.shard.query(q))

    def _sparse_shard(self, collection: str) -> _Shard:
        s = self._get(collection)
        if not s.sparse:
            raise CollectionMismatch(
                f"collection {collection!r} has no {SPARSE!r} sparse vector (created before lexical search); "
                "dense search still works, re-index into a new collection for sparse or hybrid"
            )
        return s

    def count(self, collection: str, flt: SearchFilter | None = None) -> int:
        s = self._get(collection)
        return int(s.shard.count(qe.CountRequest(exact=True, filter=_filter(flt))))

    # ------------------------------------------------------------------------------------------ close

    def close(self) -> None:
        with self._lock:
            self._closed = True
            shards, self._shards = self._shards, {}
        for s in shards.values():
            try:
                s.shard.flush()
            finally:
                s.shard.close()

    def __enter__(self) -> EdgeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

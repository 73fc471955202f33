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

Indexing: Edge has no background optimizer of its own. Points land in an appendable segment searched
exactly (brute force over the filtered points). Once `IndexSettings.threshold` points are not indexed
(default 20,000; `VIEN_INDEX_THRESHOLD`), this adapter builds the index in the background: it copies the
shard (writes wait for the copy, 1-4 s per 100k points; searches do not), builds HNSW + tenant graphs +
int8 quantization on the copy in a child process (qdrant-edge-py 0.9.0 holds the GIL for the whole of
`optimize()`, so an in-process build would stop every search), journals the writes made meanwhile,
replays them onto the built shard and swaps it in under the write lock. Searches are answered
throughout (exact on the old shard until the swap), except for one pause: the bindings also hold the GIL
in `EdgeShard.load` of the built shard and `close` of the old one (0.5-1 s here at 10k-100k points on 2
shared cores; bench/RESULTS.md). A write acknowledged after the swap went to the new shard; one before
it went to the old shard and the journal, replayed onto the new one before the swap.
The built shard lives in ``<root>/<collection>@<generation>/``; the file
``<root>/<collection>.current`` names it (written atomically after the replay, so a crash at any point
leaves one complete shard; leftovers are removed at the next start). `optimize()` runs the same build
now and waits for it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from vien.runtime.metrics import SHORT_INDEXED_ANSWERS
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
    check_full_head,
    check_ids,
    check_payload_fields,
    check_top_k,
    dense,
    dense_batch,
    matches,
    payload_selector,
    point_id,
    sort_chunks,
    with_full_head,
)
from vien.store.indexing import IndexSettings

log = logging.getLogger("vien.store")

_CONFIG_FILE = "edge_config.json"
_CURRENT = ".current"  # <root>/<collection>.current: JSON {"dir": ..., "points": points when built}
_SCROLL_PAGE = 256
_RETRY_AFTER_FAILED_BUILD_S = 300.0


@dataclass
class _Shard:
    shard: qe.EdgeShard
    dims: int
    sparse: bool
    path: Path
    users: int = 0         # searches/reads in flight on this shard (a retired shard closes at 0)
    retired: bool = False


@dataclass
class _Build:
    """One background index build of a collection (see the module doc)."""

    generation: int
    journal: list[Any] = field(default_factory=list)  # update operations applied since the copy
    journal_points: int = 0
    proc: subprocess.Popen[str] | None = None
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False
    started: float = field(default_factory=time.monotonic)


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
    `index` sets the background index build and search parameters (default: `IndexSettings.from_env()`);
    `hnsw_ef` overrides its search beam.
    """

    def __init__(self, path: Path | str, durable: bool = True, hnsw_ef: int | None = None,
                 index: IndexSettings | None = None) -> None:
        self.root = Path(path)
        self.index = index or IndexSettings.from_env()
        ef = hnsw_ef or self.index.hnsw_ef
        quant = (qe.QuantizationSearchParams(rescore=True, oversampling=self.index.oversampling)
                 if self.index.quantization != "none" else None)
        # Used by dense searches once the index is built; exact scans of plain segments ignore it.
        self._params = qe.SearchParams(hnsw_ef=ef, quantization=quant)
        self.root.mkdir(parents=True, exist_ok=True)
        self.durable = durable
        self._lock = threading.RLock()  # registry and writes (a swap happens under it)
        self._ref = threading.Condition()  # shard references and their in-flight reads (held for µs)
        self._shards: dict[str, _Shard] = {}
        self._unindexed: dict[str, int] = {}
        self._builds: dict[str, _Build] = {}
        self._retry_at: dict[str, float] = {}
        self._threads: list[threading.Thread] = []
        self.builds_done: dict[str, int] = {}
        self._closed = False
        try:
            self._open_all()
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------------------------- shard registry

    def _open_all(self) -> None:
        dirs: dict[str, list[Path]] = {}
        for sub in sorted(self.root.iterdir()):
            if sub.is_dir():
                dirs.setdefault(sub.name.split("@", 1)[0], []).append(sub)
        for name, subs in dirs.items():
            current, built_points = self._read_current(name)
            chosen = next((d for d in subs if d.name == current and (d / _CONFIG_FILE).is_file()), None)
            if chosen is None:
                chosen = next((d for d in subs if d.name == name and (d / _CONFIG_FILE).is_file()), None)
                built_points = 0
            for d in subs:  # an interrupted build, or the shard a finished build replaced
                if d is not chosen and "@" in d.name:
                    shutil.rmtree(d, ignore_errors=True)
            if chosen is not None:
                s = self._load(chosen)
                self._shards[name] = s
                self._unindexed[name] = max(0, int(s.shard.info().points_count) - built_points)

    def _read_current(self, name: str) -> tuple[str, int]:
        try:
            data = json.loads((self.root / f"{name}{_CURRENT}").read_text())
            return str(data["dir"]), int(data.get("points", 0))
        except (OSError, ValueError, KeyError, TypeError):
            return name, 0

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
        return _Shard(shard=shard, dims=int(vectors[DENSE]["size"]),
                      sparse=SPARSE in (cfg.get("sparse_vectors") or {}), path=path)

    def _get(self, name: str) -> _Shard:
        check_collection_name(name)
        if self._closed:
            raise StoreUnavailable("store is closed")
        s = self._shards.get(name)
        if s is None:
            raise CollectionNotFound(name)
        return s

    @contextlib.contextmanager
    def _use(self, name: str) -> Iterator[_Shard]:
        """The collection's current shard, kept open for the duration (a swap retires it only after)."""
        with self._ref:
            s = self._get(name)
            s.users += 1
        try:
            yield s
        finally:
            with self._ref:
                s.users -= 1
                if s.retired and s.users == 0:
                    self._ref.notify_all()

    def _write(self, name: str, op: Any, points: int = 0) -> None:
        with self._lock:
            s = self._get(name)
            s.shard.update(op)
            if self.durable:
                s.shard.flush()
            b = self._builds.get(name)
            if b is not None:
                b.journal.append(op)
                b.journal_points += points
            self._unindexed[name] = self._unindexed.get(name, 0) + points
            self._maybe_build(name)

    # --------------------------------------------------------------------------- background index build

    def _maybe_build(self, name: str) -> None:
        th = self.index.threshold
        if (th > 0 and self._unindexed.get(name, 0) >= th and name not in self._builds
                and time.monotonic() >= self._retry_at.get(name, 0.0)):
            self._start_build(name)

    def _start_build(self, name: str) -> _Build:
        """Copy the shard and start the child build (caller holds `_lock`); the rest runs in a thread."""
        s = self._get(name)
        s.shard.flush()
        b = _Build(generation=time.time_ns() // 1000)
        build_dir = self.root / f"{name}@{b.generation}.build"
        shutil.rmtree(build_dir, ignore_errors=True)
        t0 = time.perf_counter()
        shutil.copytree(s.path, build_dir)
        copied = int(s.shard.info().points_count)
        log.info("index build of %s: copied %d points in %.2fs; building in a child process", name, copied,
                 time.perf_counter() - t0)
        self._builds[name] = b
        self._unindexed[name] = 0  # from here on counted again by the writes (journaled)
        t = threading.Thread(target=self._run_build, args=(name, b, build_dir, s, copied), daemon=True,
                             name=f"vien-index-{name}")
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()
        return b

    def _run_build(self, name: str, b: _Build, build_dir: Path, old: _Shard, copied: int) -> None:
        final_dir = self.root / f"{name}@{b.generation}"
        new: _Shard | None = None
        try:
            import vien

            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join([str(Path(vien.__file__).resolve().parents[1]),
                                                 env.get("PYTHONPATH", "")])
            b.proc = subprocess.Popen(
                [sys.executable, "-m", "vien.store.indexing", str(build_dir), self.index.to_json(), str(old.dims),
                 "1" if old.sparse else "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            out, err = b.proc.communicate()
            if b.proc.returncode != 0 or self._closed:
                raise RuntimeError(f"child exited {b.proc.returncode}: {err.strip()[-2000:]}")
            build_dir.rename(final_dir)
            new = self._load(final_dir)  # outside the write lock: writes go on to the old shard + journal
            done = 0
            while True:
                with self._lock:
                    pending = b.journal[done:]
                    if len(pending) <= 8 or self._closed:
                        for op in pending:
                            new.shard.update(op)
                        new.shard.flush()
                        if self._closed or self._shards.get(name) is not old:
                            raise RuntimeError("store closed or collection dropped during the build")
                        self._swap(name, old, new, copied, b)
                        b.ok = True
                        break
                for op in pending:  # most of the journal without holding writes up
                    new.shard.update(op)
                done += len(pending)
            log.info("index build of %s done in %.1fs (%s); %d writes replayed", name,
                     time.monotonic() - b.started, out.strip(), len(b.journal))
        except Exception as exc:
            log.warning("index build of %s failed: %s; searches stay exact, next try in %.0fs", name, exc,
                        _RETRY_AFTER_FAILED_BUILD_S)
            self._retry_at[name] = time.monotonic() + _RETRY_AFTER_FAILED_BUILD_S
            if new is not None and not b.ok:
                with contextlib.suppress(Exception):
                    new.shard.close()
            shutil.rmtree(build_dir, ignore_errors=True)
            if not b.ok:  # never swapped in: the old shard stays current
                shutil.rmtree(final_dir, ignore_errors=True)
        finally:
            with self._lock:
                if self._builds.get(name) is b:
                    del self._builds[name]
                if b.ok:
                    self.builds_done[name] = self.builds_done.get(name, 0) + 1
                    if not self._closed and name in self._shards:
                        self._maybe_build(name)  # writes during this build may have passed the threshold
            b.done.set()
        if b.ok:
            self._retire(old)

    def _swap(self, name: str, old: _Shard, new_shard: _Shard, copied: int, b: _Build) -> None:
        """Make `new_shard` current (caller holds `_lock`, the journal fully replayed and flushed)."""
        tmp = self.root / f"{name}{_CURRENT}.tmp"
        tmp.write_text(json.dumps({"dir": new_shard.path.name, "points": copied}))
        os.replace(tmp, self.root / f"{name}{_CURRENT}")
        with self._ref:
            self._shards[name] = new_shard
            old.retired = True
        self._unindexed[name] = b.journal_points

    def _retire(self, old: _Shard) -> None:
        with self._ref:
            self._ref.wait_for(lambda: old.users == 0, timeout=60.0)
        old.shard.close()
        shutil.rmtree(old.path, ignore_errors=True)

    def index_status(self, collection: str) -> dict[str, Any]:
        """building (a build is running), builds (finished builds since open), unindexed (points written
        since the last copy), indexed (vectors in HNSW segments of the current shard)."""
        with self._use(collection) as s:
            info = s.shard.info()
        return {"building": collection in self._builds, "builds": self.builds_done.get(collection, 0),
                "unindexed": self._unindexed.get(collection, 0), "indexed": int(info.indexed_vectors_count),
                "points": int(info.points_count)}

    def wait_index(self, collection: str, timeout: float | None = None) -> bool:
        """Wait for the running build (if any) of `collection`; True if none is left running."""
        b = self._builds.get(collection)
        return True if b is None else b.done.wait(timeout)

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
            s = _Shard(shard=shard, dims=dims, sparse=sparse, path=path)
            for fname, kind in PAYLOAD_INDEXES.items():
                shard.update(qe.UpdateOperation.create_field_index(fname, _index_schema(kind)))
            shard.flush()
            with self._ref:
                self._shards[name] = s
            self._unindexed[name] = 0

    def drop_collection(self, name: str) -> bool:
        check_collection_name(name)
        with self._lock:
            b = self._builds.get(name)
            if b is not None and b.proc is not None:
                b.proc.kill()
            with self._ref:
                s = self._shards.pop(name, None)
            if s is None:
                return False
            s.shard.close()
            shutil.rmtree(s.path, ignore_errors=True)
            (self.root / f"{name}{_CURRENT}").unlink(missing_ok=True)
            self._unindexed.pop(name, None)
            return True

    def collections(self) -> dict[str, int]:
        with self._lock:
            return {name: s.dims for name, s in sorted(self._shards.items())}

    def collection_info(self, name: str) -> CollectionInfo:
        s = self._get(name)
        return CollectionInfo(name=name, dims=s.dims, distance=DISTANCE, sparse=s.sparse, points=self.count(name))

    def optimize(self, collection: str) -> bool:
        """Build the index now (in a child process, as the automatic build) and wait for it. Searches and
        writes go on meanwhile. True if a new index was swapped in."""
        changed, started = False, False
        while True:
            with self._lock:
                s = self._get(collection)
                running = self._builds.get(collection)
                if running is None:
                    info = s.shard.info()
                    if started or int(info.points_count) == 0:
                        return changed
                    if self._unindexed.get(collection, 0) == 0 and int(info.indexed_vectors_count) > 0:
                        return changed  # nothing written since the last build
                    running, started = self._start_build(collection), True
            running.done.wait()
            if not running.ok:
                return changed
            changed = True

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
        self._write(collection, qe.UpdateOperation.upsert_points(batch), len(batch))

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        self._get(collection)
        if ids:
            self._write(collection, qe.UpdateOperation.delete_points([point_id(i) for i in ids]))

    def delete_by_doc(self, collection: str, tenant: str, doc_id: str) -> None:
        self._get(collection)
        flt = _filter(SearchFilter(tenant=tenant, doc_id=doc_id))
        assert flt is not None
        self._write(collection, qe.UpdateOperation.delete_points_by_filter(flt))

    # ------------------------------------------------------------------------------------------- reads

    def doc_chunks(self, collection: str, tenant: str, doc_id: str) -> list[Hit]:
        flt = _filter(SearchFilter(tenant=tenant, doc_id=doc_id))
        out: list[Hit] = []
        offset = None
        with self._use(collection) as s:
            while True:
                records, offset = s.shard.scroll(qe.ScrollRequest(offset=offset, limit=_SCROLL_PAGE, filter=flt,
                                                                  with_payload=True, with_vector=False))
                out.extend(Hit(id=str(r.id), score=0.0, payload=dict(r.payload or {})) for r in records)
                if offset is None:
                    return sort_chunks(out)

    def search(self, collection: str, vector: np.ndarray, top_k: int, flt: SearchFilter | None = None,
               payload_fields: Sequence[str] | None = None, full_head: int = 0) -> list[Hit]:
        fields, head = check_payload_fields(payload_fields), check_full_head(full_head)
        limit, f = check_top_k(top_k), _filter(flt)
        with self._use(collection) as s:
            def query(params: Any) -> list[Hit]:
                return _hits(s.shard.query(qe.QueryRequest(
                    limit=limit, query=qe.Query.Nearest(dense(vector, s.dims), using=DENSE), filter=f,
                    params=params, with_payload=payload_selector(fields))))

            hits = query(self._params)
            if len(hits) < limit and f is not None:
                # A filtered HNSW walk can stop short of `limit` (one end-to-end search answered 2 of 10 hits
                # for a tenant of 10k points, bench/RESULTS.md). A short answer is right only when no more
                # points match; otherwise it is answered again exactly (and counted, and logged).
                matching = int(s.shard.count(qe.CountRequest(exact=True, filter=f)))
                if matching > len(hits):
                    SHORT_INDEXED_ANSWERS.inc()
                    log.warning("indexed search of %s answered %d of %d hits while %d points match the filter; "
                                "answered by exact search", collection, len(hits), limit, matching)
                    hits = query(qe.SearchParams(exact=True))
            return self._full_head(s, hits, fields, head)

    @staticmethod
    def _full_head(s: _Shard, hits: list[Hit], fields: list[str] | None, head: int) -> list[Hit]:
        if fields is None or not head or not hits:
            return hits
        return with_full_head(hits, EdgeStore._payloads(s, [h.id for h in hits[:head]]))

    @staticmethod
    def _payloads(s: _Shard, ids: list[str]) -> dict[str, dict[str, Any]]:
        records = s.shard.retrieve(ids, with_payload=True, with_vector=False)  # type: ignore[arg-type]
        return {str(r.id): dict(r.payload or {}) for r in records}

    def retrieve(self, collection: str, ids: Sequence[str],
                 flt: SearchFilter | None = None) -> dict[str, dict[str, Any]]:
        wanted = check_ids(ids)
        if not wanted:
            self._get(collection)
            return {}
        with self._use(collection) as s:
            found = self._payloads(s, wanted)
        # Edge's retrieve takes no filter: the filter is checked on each payload (see VectorStore.retrieve)
        return {i: p for i, p in found.items() if matches(p, flt)}

    def search_exact(self, collection: str, vector: np.ndarray, top_k: int,
                     flt: SearchFilter | None = None) -> list[Hit]:
        """`search` by brute force over full vectors, index or not (the truth recall is measured against)."""
        with self._use(collection) as s:
            q = qe.QueryRequest(limit=check_top_k(top_k), query=qe.Query.Nearest(dense(vector, s.dims), using=DENSE),
                                filter=_filter(flt), params=qe.SearchParams(exact=True), with_payload=False)
            return _hits(s.shard.query(q))

    def search_sparse(
        self, collection: str, sparse: SparseVector, top_k: int, flt: SearchFilter | None = None,
        payload_fields: Sequence[str] | None = None, full_head: int = 0,
    ) -> list[Hit]:
        fields, head = check_payload_fields(payload_fields), check_full_head(full_head)
        with self._use(collection) as s:
            self._need_sparse(collection, s)
            q = qe.QueryRequest(
                limit=check_top_k(top_k),
                query=qe.Query.Nearest(_sparse(sparse), using=SPARSE),
                filter=_filter(flt),
                with_payload=payload_selector(fields),
            )
            return self._full_head(s, _hits(s.shard.query(q)), fields, head)

    def search_hybrid(
        self,
        collection: str,
        vector: np.ndarray,
        sparse: SparseVector,
        top_k: int,
        flt: SearchFilter | None = None,
        prefetch_k: int | None = None,
        exact: bool = False,
    ) -> list[Hit]:
        """`exact=True` scans the dense side by brute force (the truth recall is measured against)."""
        top_k = check_top_k(top_k)
        pk = check_top_k(prefetch_k or max(top_k * 4, 20))
        f = _filter(flt)
        params = qe.SearchParams(exact=True) if exact else self._params
        with self._use(collection) as s:
            self._need_sparse(collection, s)
            q = qe.QueryRequest(
                limit=top_k,
                prefetches=[
                    qe.Prefetch(limit=pk, query=qe.Query.Nearest(dense(vector, s.dims), using=DENSE), filter=f,
                                params=params),
                    qe.Prefetch(limit=pk, query=qe.Query.Nearest(_sparse(sparse), using=SPARSE), filter=f),
                ],
                query=qe.Fusion.Rrf(k=RRF_K),  # type: ignore[arg-type]  # the stub omits nested Fusion kinds
                filter=f,
                with_payload=True,
            )
            return _hits(s.shard.query(q))

    @staticmethod
    def _need_sparse(collection: str, s: _Shard) -> None:
        if not s.sparse:
            raise CollectionMismatch(
                f"collection {collection!r} has no {SPARSE!r} sparse vector (created before lexical search); "
                "dense search still works, re-index into a new collection for sparse or hybrid"
            )

    def count(self, collection: str, flt: SearchFilter | None = None) -> int:
        with self._use(collection) as s:
            return int(s.shard.count(qe.CountRequest(exact=True, filter=_filter(flt))))

    # ------------------------------------------------------------------------------------------ close

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for b in self._builds.values():
                if b.proc is not None and b.proc.poll() is None:
                    b.proc.kill()
        for t in self._threads:
            t.join(timeout=30)
        with self._lock, self._ref:
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

"""Vector index settings shared by both engines, and Qdrant Edge's background index build.

`IndexSettings` is what the embedded store builds on its own and what a Qdrant server gets at collection
creation (`QdrantStore.ensure_collection`), so production runs with the settings the bench measured
(bench/RESULTS.md, "Search at scale"). Its environment (`VIEN_INDEX_THRESHOLD`, `VIEN_HNSW_*`,
`VIEN_QUANTIZATION`, `VIEN_INDEX_THREADS`) is declared, with defaults and ranges, in vien.runtime.env.

Why a child process on Edge: qdrant-edge-py 0.9.0 holds the GIL for the whole of `EdgeShard.optimize()`,
so an in-process build would stop every search of the store service for minutes. The build therefore
runs on a copy of the shard in a child process (`python -m vien.store.indexing BUILD_DIR SETTINGS_JSON`);
the owning process keeps serving searches (exact scan) and writes from the old shard, journals the writes
made after the copy, replays them onto the built shard and swaps it in (see `vien.store.edge`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import asdict, dataclass
from typing import Any

from vien.runtime import env
from vien.runtime.errors import InvalidArgument


@dataclass(frozen=True)
class IndexSettings:
    threshold: int = 20_000
    m: int = 16
    payload_m: int = 16
    ef_construct: int = 100
    hnsw_ef: int = 256
    quantization: str = "int8"  # "int8" | "none"
    oversampling: float = 2.0
    threads: int = 1

    def __post_init__(self) -> None:
        if self.quantization not in ("int8", "none"):
            raise InvalidArgument("VIEN_QUANTIZATION", f"{self.quantization!r}: expected 'int8' or 'none'")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> IndexSettings:
        """From VIEN_INDEX_THRESHOLD, VIEN_HNSW_*, VIEN_QUANTIZATION, VIEN_INDEX_THREADS (declared, with their
        ranges, in vien.runtime.env)."""
        return cls(threshold=env.get("VIEN_INDEX_THRESHOLD", environ), m=env.get("VIEN_HNSW_M", environ),
                   payload_m=env.get("VIEN_HNSW_PAYLOAD_M", environ),
                   ef_construct=env.get("VIEN_HNSW_EF_CONSTRUCT", environ), hnsw_ef=env.get("VIEN_HNSW_EF", environ),
                   quantization=env.get("VIEN_QUANTIZATION", environ), threads=env.get("VIEN_INDEX_THREADS", environ))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> IndexSettings:
        data: dict[str, Any] = json.loads(text)
        return cls(**data)


# ------------------------------------------------------------------------------------ Edge child build


def edge_index_config(settings: IndexSettings, dims: int, sparse: bool) -> Any:
    """The EdgeConfig a shard is (re)loaded with to build its index."""
    import qdrant_edge as qe

    from vien.store.base import DENSE, SPARSE

    quant = (qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99, always_ram=True)
             if settings.quantization == "int8" else None)
    return qe.EdgeConfig(
        vectors={DENSE: qe.EdgeVectorParams(size=dims, distance=qe.Distance.Cosine)},
        sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)} if sparse else None,
        hnsw_config=qe.HnswIndexConfig(m=settings.m, ef_construct=settings.ef_construct, full_scan_threshold=10_000,
                                       max_indexing_threads=settings.threads, payload_m=settings.payload_m),
        quantization_config=quant,
        # index every segment the optimizer looks at (the default threshold leaves small ones plain)
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1),
    )


def build_in_place(path: str, settings: IndexSettings, dims: int, sparse: bool) -> dict[str, int]:
    """Load the shard copy at `path` with the index settings, build, flush, close (run in the child)."""
    import qdrant_edge as qe

    shard = qe.EdgeShard.load(path, edge_index_config(settings, dims, sparse))
    try:
        shard.optimize()
        shard.flush()
        info = shard.info()
        return {"points": int(info.points_count), "indexed": int(info.indexed_vectors_count),
                "segments": int(info.segments_count)}
    finally:
        shard.close()


def main(argv: list[str]) -> int:
    path, settings_json, dims, sparse = argv[0], argv[1], int(argv[2]), argv[3] == "1"
    with contextlib.suppress(OSError):
        os.nice(5)  # searches of the parent come first
    print(json.dumps(build_in_place(path, IndexSettings.from_json(settings_json), dims, sparse)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

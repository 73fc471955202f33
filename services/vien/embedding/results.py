"""What an embedder returns, for both the query-embedder and the doc-embedder: one result type and one
translation to the `vien.v1.EncodeResponse` both serve."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vien.embedding.vectors import pack
from vien.v1 import common_pb2, embedder_pb2


@dataclass(frozen=True)
class EncodedItem:
    vector: np.ndarray
    token_count: int
    truncated: bool
    cache_hit: bool = False      # the query-embedder's Redis cache; never for documents


@dataclass(frozen=True)
class EncodeResult:
    items: list[EncodedItem]
    model_id: str
    stage_ms: dict[str, float]


def encode_response(res: EncodeResult) -> embedder_pb2.EncodeResponse:
    return embedder_pb2.EncodeResponse(
        results=[embedder_pb2.EncodedText(vector=pack(i.vector), dims=int(i.vector.shape[-1]),
                                          token_count=i.token_count, truncated=i.truncated, cache_hit=i.cache_hit)
                 for i in res.items],
        model_id=res.model_id,
        timings=common_pb2.Timings(total_ms=res.stage_ms["total"], stage_ms=res.stage_ms),
    )
